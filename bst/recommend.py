"""What should this person watch next? ``python -m bst.recommend``.

    python -m bst.recommend --run-dir runs/ml1m --user 42                  # in-process model
    python -m bst.recommend --run-dir runs/ml1m --movies 1193,661,914      # a brand-new user
    python -m bst.recommend --run-dir runs/ml1m --user 42 --model-dir saved_models/bst
    python -m bst.recommend --run-dir runs/ml1m --user 42 --server http://127.0.0.1:8501

Prints the person's recent history (title, year, genres, rating; ``--history N``,
default 10), the model's top ``--k`` (default 10) and the most popular movies,
both excluding every movie in the history. A known user's history is all of their
events in ``sequences.tsv`` (train, validation and test: "what next, now"); the run
folder also gives the movie table and the training popularity.

Model sources:

* default: the run's weights, in process. A known user is scored with everything
  the model was trained on (time gaps, ratings, profile); a ``--movies`` list with
  movie ids only, the rest unknown, exactly as the exported model does.
* ``--model-dir DIR``: the newest integer version under ``DIR`` (or ``DIR`` itself when
  it holds ``saved_model.pb``), as written by ``python -m bst.export``.
* ``--server URL``: TF Serving's REST API (``tensorflow/serving`` or
  ``python -m bst.serve``) through :class:`bst.client.BSTClient`.

An exported model sees movie ids (and, for a known user, the profile through its
``with_profile`` signature), not time gaps or ratings; it excludes only the movies
in its last ``max_len`` history positions, so its top K is filtered here, and when
fewer than K remain the whole unseen catalog is ranked with its ``score``
signature instead.
"""

from __future__ import annotations

from bst import cli

if __name__ == "__main__":
    cli.early("recommend")  # --help and mistakes answer before TensorFlow starts

import logging
import math
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import config as config_lib
from bst import features as F
from bst.baselines import Popularity
from bst.client import BSTClient, ServingError
from bst.config import Config
from bst.data.prepared import SEQUENCES_FILE, Events, Prepared
from bst.data.records import tokens_of
from bst.errors import UsageError, cli_errors
from bst.metrics import top_k
from bst.model import load_run, model_inputs
from bst.pipeline import Featurizer, gap_buckets, rating_indices
from bst.versions import ORIGIN_FILE, describe_origin, is_savedmodel, newest_version, read_origin

import tensorflow as tf  # isort: skip

log = logging.getLogger("bst.recommend")

DEFAULT_K = cli.DEFAULT_K
DEFAULT_HISTORY = cli.DEFAULT_HISTORY
TITLE_WIDTH = 38
GENRES_WIDTH = 26


# --- data ----------------------------------------------------------------------------


def parse_movie_ids(text: str) -> list[str]:
    """``"1193, 661,914"`` → ``["1193", "661", "914"]`` (empty pieces dropped)."""
    return [piece.strip() for piece in text.replace(" ", ",").split(",") if piece.strip()]


class Catalog:
    """Movie titles, years and genres by raw id, and the training vocabulary."""

    def __init__(self, prepared) -> None:
        movies = prepared.movies
        years = movies["year"].astype("float64").to_numpy()
        self.info = {
            str(mid): (str(title), None if math.isnan(year) else int(year), str(genres))
            for mid, title, year, genres in zip(
                movies["movie_id"], movies["title"], years, movies["genres"], strict=True
            )
        }
        self.vocab = list(prepared.vocabs[F.MOVIE_ID])
        self.index = {m: i + F.NUM_RESERVED for i, m in enumerate(self.vocab)}

    def describe(self, movie_id: str) -> dict:
        title, year, genres = self.info.get(movie_id, (f"movie {movie_id}", None, ""))
        return {"movie_id": movie_id, "title": title, "year": year, "genres": genres}


# --- model sources ---------------------------------------------------------------------


class InProcess:
    """The run's Keras model; full features for a known user, movie ids only otherwise."""

    name = "in-process model"

    def __init__(self, run_dir: Path) -> None:
        self.cfg, self.model, prepared = load_run(run_dir)
        self.featurizer = Featurizer(prepared, self.cfg.model.max_len)
        self.profile_rule = prepared.profile_rule
        self.label = f"{self.name} ({run_dir})"

    def scores(self, events: Events, profile: dict[str, str] | None) -> np.ndarray:
        """float32 ``[N]`` scores over the item indices."""
        items = self.featurizer.items(tf.constant(events.movie_ids, tf.string))  # (n,)
        if profile is None:  # movie ids only: as bst.export's serving signatures
            items = tf.boolean_mask(items, items != F.OOV)
            unknown = tf.fill(tf.shape(items), F.UNKNOWN)
            feats = self.featurizer.sequence(items, unknown, unknown)
            feats.update({n: tf.constant(F.UNKNOWN) for n in self.featurizer.profile_features})
        else:
            feats = self.featurizer.sequence(
                items,
                gap_buckets(tf.constant(events.timestamps)),
                rating_indices(tf.constant(events.ratings), self.featurizer.rating_levels),
            )
            feats.update(self.profile_features(profile))
        inputs = {k: v[tf.newaxis] for k, v in model_inputs(feats).items()}  # batch of 1
        return self.model(inputs, training=False)["scores"][0].numpy()  # (N,)

    def profile_features(self, profile: dict[str, str]) -> dict[str, tf.Tensor]:
        """Raw profile values → the model's profile indices (:func:`records.tokens_of`)."""
        names = self.featurizer.profile_features
        raw = {name: tf.constant([profile.get(name, "")]) for name in names}
        tokens = {name: value[0] for name, value in tokens_of(raw, self.profile_rule).items()}
        return self.featurizer.profile(tokens)

    def recommend(
        self,
        events: Events,
        profile: dict[str, str] | None,
        seen: set[str],
        catalog: Catalog,
        k: int,
    ) -> list[tuple[str, float]]:
        scores = self.scores(events, profile)[np.newaxis]  # (1, N)
        seen_idx = np.array([catalog.index[m] for m in seen if m in catalog.index], np.int64)
        best = top_k(scores, [seen_idx], k)[0]  # (k,)
        ids = ["", "", *catalog.vocab]
        return [(ids[i], float(scores[0, i])) for i in best if i >= F.NUM_RESERVED]


class _Exported:
    """Shared logic of the SavedModel and the REST sources: filter seen, fall back to ``score``."""

    titles: dict[str, str]  # movie id → title, as the model answered them

    def _top(self, history: list[str], profile: dict[str, str] | None) -> list[tuple[str, float]]:
        raise NotImplementedError

    def check_catalog(self, prepared: Prepared, run_dir: Path) -> None:
        """Refuse a model whose answers name movies differently from the run's catalog
        (ids that mean other movies, e.g. the tiny demo's model shown with ML-1M titles)."""
        labels = prepared.movie_labels
        added = getattr(self, "origin", None) or {}
        for movie_id, title in self.titles.items():
            if movie_id not in labels and added.get("added_movies"):
                continue  # a movie added at export (bst.export --add-movies)
            if movie_id and labels.get(movie_id) != title:
                here = labels.get(movie_id)
                raise UsageError(
                    f"the {self.label} does not belong to {run_dir}: it calls movie "
                    f"{movie_id} {title!r}, the run "
                    + (f"{here!r}" if here else "has no such movie")
                    + "; use a model exported from this run (python -m bst.export "
                    f"--run-dir {run_dir})"
                )

    def _score(self, history: list[str], candidates: list[str]) -> list[float]:
        raise NotImplementedError

    def recommend(
        self,
        events: Events,
        profile: dict[str, str] | None,
        seen: set[str],
        catalog: Catalog,
        k: int,
    ) -> list[tuple[str, float]]:
        history = list(events.movie_ids)
        top = self._top(history, profile)
        kept = [(m, s) for m, s in top if m and m not in seen]
        if len(kept) >= k:
            return kept[:k]
        # The servable's K is fixed at export and it masks only its last max_len history
        # positions: rank every unseen movie with the `score` signature instead.
        candidates = [m for m in catalog.vocab if m not in seen]
        if not candidates:
            return []
        log.info(
            "the exported top %d has %d unseen movies; ranking all %d unseen movies with the "
            "`score` signature (movie ids only, no profile)",
            len(top),
            len(kept),
            len(candidates),
        )
        scores = np.asarray(self._score(history, candidates), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(candidates[i], float(scores[i])) for i in order]


def savedmodel_path(path: Path) -> Path:
    """``path`` itself when it is a SavedModel, else its newest version (:mod:`bst.versions`)."""
    if is_savedmodel(path):
        return path
    newest = newest_version(path)
    if newest is None:
        raise UsageError(
            f"no SavedModel under {path}: expected {path}/<version>/saved_model.pb "
            "(write one with python -m bst.export)"
        )
    return newest


class SavedModelSource(_Exported):
    """The newest exported version under a folder, called in process."""

    def __init__(self, path: Path) -> None:
        self.path = savedmodel_path(path)
        self.label = f"SavedModel {self.path}"
        self.origin = read_origin(self.path)
        self.loaded = tf.saved_model.load(str(self.path))
        self.signatures = self.loaded.signatures
        self.titles = {}

    def check_catalog(self, prepared: Prepared, run_dir: Path) -> None:
        if self.origin is None:
            log.warning(
                "%s has no origin record (%s): checking its catalog by the titles it answers",
                self.path,
                ORIGIN_FILE,
            )
        elif self.origin.get("catalog_sha256") != prepared.catalog_fingerprint:
            raise UsageError(
                f"{self.path} was exported from {describe_origin(self.origin)}, whose movie "
                f"catalog is not {run_dir}'s ({len(prepared.vocabs[F.MOVIE_ID]):,} movies): its "
                f"ids would be shown with the wrong titles; use a model exported from this run "
                f"(python -m bst.export --run-dir {run_dir})"
            )
        super().check_catalog(prepared, run_dir)

    def _top(self, history: list[str], profile: dict[str, str] | None) -> list[tuple[str, float]]:
        row = tf.constant([history or [""]], tf.string)  # (1, n)
        if profile is not None and "with_profile" in self.signatures:
            names = [
                n
                for n in self.signatures["with_profile"].structured_input_signature[1]
                if n != "history"
            ]
            values = {n: tf.constant([profile.get(n, "")], tf.string) for n in names}
            out = self.signatures["with_profile"](history=row, **values)
        else:
            out = self.signatures["serving_default"](history=row)
        ids = [m.decode() for m in out["movie_ids"].numpy()[0]]
        titles = [t.decode() for t in out["titles"].numpy()[0]]
        self.titles = dict(zip(ids, titles, strict=True))
        return list(zip(ids, out["scores"].numpy()[0].astype(float).tolist(), strict=True))

    def _score(self, history: list[str], candidates: list[str]) -> list[float]:
        out = self.signatures["score"](
            history=tf.constant([history], tf.string),
            candidates=tf.constant([candidates], tf.string),
        )
        return out["scores"].numpy()[0].tolist()


class ServerSource(_Exported):
    """A TF Serving REST endpoint (``tensorflow/serving`` or ``python -m bst.serve``)."""

    def __init__(self, url: str) -> None:
        try:
            self.client = BSTClient(url, timeout=60.0)
        except ValueError:  # the client's own wording names its argument, not the flag
            raise UsageError(
                f"--server must be a REST base URL such as http://127.0.0.1:8501, got {url!r}"
            ) from None
        self.label = f"server {self.client.base_url}"
        self.titles = {}

    def _top(self, history: list[str], profile: dict[str, str] | None) -> list[tuple[str, float]]:
        answer = self.client.recommend([history], [profile] if profile else None)[0]
        self.titles = dict(zip(answer["movie_ids"], answer["titles"], strict=True))
        return list(zip(answer["movie_ids"], answer["scores"], strict=True))

    def _score(self, history: list[str], candidates: list[str]) -> list[float]:
        return self.client.score([history], [candidates])[0]


# --- the recommendation ---------------------------------------------------------------


def popular(counts: np.ndarray, catalog: Catalog, seen: set[str], k: int) -> list[tuple[str, int]]:
    """The ``k`` movies with most training events, not in ``seen`` (ties: vocabulary order)."""
    order = np.argsort(-counts[F.NUM_RESERVED :], kind="stable")
    out = []
    for i in order:
        movie_id = catalog.vocab[i]
        if movie_id not in seen:
            out.append((movie_id, int(counts[i + F.NUM_RESERVED])))
            if len(out) == k:
                break
    return out


def _describe(catalog: Catalog, source, movie_id: str) -> dict:
    """The run's description of a movie, or for a movie added at export (``bst.export
    --add-movies``), which the run does not know, the title the model answered."""
    row = catalog.describe(movie_id)
    answered = getattr(source, "titles", {}) or {}
    if movie_id not in catalog.info and movie_id in answered:
        row["title"] = answered[movie_id]
    return row


def _run_config(run_dir: Path) -> Config:
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} not found")
    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"{path} not found: is {run_dir} a `python -m bst.train` run?")
    return config_lib.load(path)


def recommend(
    run_dir: str | Path,
    user: str | None = None,
    movies: Sequence[str] | None = None,
    model_dir: str | Path | None = None,
    server: str | None = None,
    k: int = DEFAULT_K,
    history: int = DEFAULT_HISTORY,
) -> dict:
    """Recommendations for a known ``user`` or a list of ``movies``; see the module docstring.

    Returns:
        ``{"user", "source", "history" (the last ``history`` events shown), "history_length",
        "model" (top ``k``, with scores), "popular" (top ``k``, with training counts),
        "ignored" (unknown movie ids dropped from ``movies``)}``; each movie is a dict with
        ``movie_id``, ``title``, ``year``, ``genres``.

    Raises:
        UsageError: unknown user, no known movie, empty history, no SavedModel, ...
    """
    if (user is None) == (movies is None):
        raise UsageError("give either a user id or a list of movie ids")
    if k < 1:
        raise UsageError(f"`k` must be positive. Received: k={k}")
    run_dir = Path(run_dir)
    cfg = _run_config(run_dir)
    prepared = Prepared.open(cfg.data.prepared_dir)
    catalog = Catalog(prepared)
    ignored: list[str] = []
    profile = None
    if user is not None:
        user = str(user).strip()
        events = prepared.user_events(user)
        if events is None:
            raise UsageError(f"user {user!r} is not in {prepared.folder / SEQUENCES_FILE}")
        if not events.movie_ids:
            raise UsageError(f"user {user!r} has no events in {prepared.folder / SEQUENCES_FILE}")
        profile = prepared.user_profile(user)
    else:
        given = [str(m) for m in movies]
        if not given:
            raise UsageError("the movie list is empty: give ids like --movies 1193,661,914")
        known = [m for m in given if m in catalog.index]
        ignored = [m for m in given if m not in catalog.index]
        if not known:
            raise UsageError(
                f"none of the {len(given)} movie ids is known to the model (not in the "
                f"training vocabulary): {', '.join(given[:10])}"
            )
        if ignored:
            log.warning(
                "ignored %d of %d movie ids unknown to the model: %s",
                len(ignored),
                len(given),
                ", ".join(ignored[:10]) + (" ..." if len(ignored) > 10 else ""),
            )
        n = len(known)
        events = Events(known, np.full(n, -1, np.int64), np.zeros(n, np.int64))
    seen = set(events.movie_ids)

    if server:
        source = ServerSource(server)
    elif model_dir:
        source = SavedModelSource(Path(model_dir))
    else:
        source = InProcess(run_dir)
    picks = source.recommend(events, profile, seen, catalog, k)
    if isinstance(source, _Exported):
        source.check_catalog(prepared, run_dir)
    counts = Popularity().fit(prepared).popularity
    shown = []
    start = max(len(events.movie_ids) - history, 0)
    scale = prepared.manifest.get("rating_scale") or list(range(1, F.NUM_RATINGS + 1))
    for movie_id, ts, rating in zip(
        events.movie_ids[start:], events.timestamps[start:], events.ratings[start:], strict=True
    ):
        shown.append(
            {
                **catalog.describe(movie_id),
                "rating": _number(scale[rating - 1]) if 0 < rating <= len(scale) else None,
                "rating_max": _number(scale[-1]),
                "timestamp": int(ts) if ts >= 0 else None,
            }
        )
    return {
        "user": user,
        "source": source.label,
        "history_length": len(events.movie_ids),
        "splits": events.splits,
        "history": shown,
        "model": [{**_describe(catalog, source, m), "score": s} for m, s in picks],
        "popular": [
            {**catalog.describe(m), "count": c} for m, c in popular(counts, catalog, seen, k)
        ],
        "ignored": ignored,
    }


# --- text output -----------------------------------------------------------------------


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _number(value: float) -> int | float:
    """A rating as the data wrote it: 4, not 4.0; 3.5 stays."""
    return int(value) if float(value).is_integer() else float(value)


def _movie_cells(movie: dict) -> list[str]:
    return [
        _fit(movie["title"], TITLE_WIDTH),
        "" if movie["year"] is None else str(movie["year"]),
        _fit(movie["genres"], GENRES_WIDTH),
    ]


def format_result(result: dict, width: int | None = None) -> str:
    """The plain-text view: history, then the model's and the popular top K side by side
    (one under the other when that does not fit in ``width`` columns)."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    who = f"User {result['user']}" if result["user"] else "New user"
    n = result["history_length"]
    if result["splits"]:
        tr, va, te = result["splits"]
        detail = f"{n} ratings (train {tr}, validation {va}, test {te})"
    else:
        detail = f"{n} movies given"
    history_rows = []
    first = n - len(result["history"]) + 1
    for i, movie in enumerate(result["history"], start=first):
        date = (
            datetime.fromtimestamp(movie["timestamp"], tz=timezone.utc).strftime("%Y-%m-%d")
            if movie["timestamp"] is not None
            else ""
        )
        rating = (
            ""
            if movie["rating"] is None
            else f"{movie['rating']:g}/{movie.get('rating_max', F.NUM_RATINGS):g}"
        )
        history_rows.append([str(i), date, *_movie_cells(movie), rating])
    header = ["#", "date", "title", "year", "genres", "rating"]
    if result["user"] is None:  # a movie list: no dates, no ratings
        header = header[:1] + header[2:5]
        history_rows = [row[:1] + row[2:5] for row in history_rows]
    blocks = [
        f"{who}: {detail}; the last {len(result['history'])}, oldest first:",
        *("  " + line for line in _table(header, history_rows, right={0, 5})),
        "",
    ]
    model_lines = [f"Top {len(result['model'])} from the {result['source']}:"] + _table(
        ["#", "title", "year", "genres", "score"],
        [
            [str(i), *_movie_cells(m), f"{m['score']:.3f}"]
            for i, m in enumerate(result["model"], start=1)
        ],
        right={0, 4},
    )
    popular_lines = ["Most popular (training events), unseen:"] + _table(
        ["#", "title", "year", "genres", "count"],
        [
            [str(i), *_movie_cells(m), str(m["count"])]
            for i, m in enumerate(result["popular"], start=1)
        ],
        right={0, 4},
    )
    left = max(len(line) for line in model_lines)
    right_width = max(len(line) for line in popular_lines)
    gap = "  |  "
    if left + len(gap) + right_width <= width:
        for i in range(max(len(model_lines), len(popular_lines))):
            a = model_lines[i] if i < len(model_lines) else ""
            b = popular_lines[i] if i < len(popular_lines) else ""
            blocks.append(f"{a.ljust(left)}{gap}{b}".rstrip())
    else:
        blocks += [*model_lines, "", *popular_lines]
    if result["ignored"]:
        blocks += [
            "",
            f"Ignored {len(result['ignored'])} unknown movie ids: {', '.join(result['ignored'])}",
        ]
    return "\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m bst.recommend``: arguments as in :func:`bst.cli.recommend_parser`."""
    with cli_errors(ServingError):
        args = cli.parse("recommend", argv)
        cli.setup_logging(args.verbose)
        result = recommend(
            args.run_dir,
            user=args.user,
            movies=None if args.movies is None else parse_movie_ids(args.movies),
            model_dir=args.model_dir,
            server=args.server,
            k=args.k,
            history=args.history,
        )
    print(format_result(result))
    return result


if __name__ == "__main__":
    main()
