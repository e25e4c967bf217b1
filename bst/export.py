"""Export a trained run as a versioned SavedModel for TensorFlow Serving: ``python -m bst.export``.

    python -m bst.export --run-dir runs/ml1m --model-dir saved_models/bst [--top-k 10]

Writes ``<out>/<version>/`` with the next integer version, built in a temporary
folder beside it and renamed into place in one step, so a server watching
``<out>`` never sees half a model. Signatures (all inputs are strings, raw
MovieLens ids):

* ``serving_default``: ``history`` ``[batch, n]`` (time order, ``""`` pads anywhere,
  unknown ids ignored; the model reads the newest ``max_len``) → ``movie_ids``
  ``[batch, K]``, ``titles`` ``[batch, K]``, ``scores`` ``[batch, K]`` (float32), every
  movie of the whole history excluded.
* ``with_profile``: the same plus the data's profile features ``[batch]`` (``""`` =
  unknown): MovieLens' ``gender``, ``age``, ``occupation``, ``zip``, or the columns of
  a generic users table; absent when the data has no profile. TF Serving requires
  every input a signature declares, so the profile is a second signature rather than
  optional inputs.
* ``score``: ``history`` + ``candidates`` ``[batch, m]`` → ``scores`` ``[batch, m]``;
  an unknown candidate scores ``UNKNOWN_SCORE`` (-1e9), below every known movie.

New movies: ``--add-movies CSV`` appends the movies of a CSV that the run's catalog
lacks (``bst.new_movies``: ``movie_id``, ``title``, ``overview`` [, ``year``,
``genres``]). They were never rated, so they have no id embedding: each is embedded
from its overview, genres and year (:meth:`bst.layers.ItemEmbedding.content`), and
from then on it is recommended, scored as a candidate and read in a history like any
movie, and the answer carries its title.

``assets.extra/tf_serving_warmup_requests`` holds warm-up requests for each
signature, so the first real request does not pay for tracing.

Cost per request: the catalog's item vectors are computed once, here, and saved
as a variable; the servable reads only the history columns some row of the
request needs (leading all-padding columns are dropped) and runs the top
transformer block, the final norm and the MLP head at the newest position only
(``model.encoder(..., last_only=True)``, :class:`bst.model.Encoder`). Scores equal the in-memory model's to float
rounding (``tests/test_export.py``).
"""

from __future__ import annotations

from bst import cli

if __name__ == "__main__":
    cli.early("export")  # --help and mistakes answer before TensorFlow starts

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import bst  # noqa: F401  (Keras 2 before TensorFlow)
from bst import features as F
from bst.data.records import tokens_of
from bst.errors import UsageError, cli_errors, writable_dir
from bst.model import load_run, weights_digest
from bst.new_movies import NewMovies, read_new_movies
from bst.tempdirs import clean_stale, make_temp_dir, remove_temp_dir
from bst.versions import ORIGIN_FILE, describe_origin, newest_version, next_version, read_origin
from bst.vocab import lookup_tokens

import tensorflow as tf  # isort: skip
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # isort: skip

log = logging.getLogger("bst.export")

UNKNOWN_SCORE = -1e9
PROFILE_INPUTS = F.PROFILE_FEATURES


def _lookup(tokens: Sequence[str], name: str) -> tf.keras.layers.StringLookup:
    return tf.keras.layers.StringLookup(
        vocabulary=lookup_tokens(tokens), mask_token="", num_oov_indices=1, name=f"{name}_lookup"
    )


class ExportModule(tf.Module):
    """The servable: raw string ids in, top-K movie ids, titles and scores out."""

    def __init__(
        self,
        model: tf.keras.Model,
        prepared,
        max_len: int,
        k: int = 10,
        new_movies: NewMovies | None = None,
    ):
        super().__init__(name="bst")
        vocab = list(prepared.vocabs[F.MOVIE_ID])
        labels = prepared.movie_labels
        titles = [labels.get(m, m) for m in vocab]
        # The catalog's item vectors do not depend on the request: computed once
        # here (about 1.5 ms of every request otherwise), saved as a variable.
        catalog = tf.cast(model.encoder.items.all_items(), tf.float32)  # (N, D)
        if new_movies is not None and len(new_movies):
            content = model.encoder.items.content(
                new_movies.genres, new_movies.years, new_movies.words
            )  # (n, D): no id term, they were never trained
            catalog = tf.concat([catalog, tf.cast(content, tf.float32)], axis=0)
            vocab += new_movies.ids
            titles += new_movies.titles
        if k < 1:
            raise UsageError(f"`k` must be positive. Received: k={k}")
        self.model = model
        self.max_len = int(max_len)
        self.num_items = len(vocab) + F.NUM_RESERVED
        self.k = min(int(k), len(vocab))
        self.movie_lookup = _lookup(vocab, F.MOVIE_ID)
        self.profile_inputs = tuple(prepared.profile_features)
        self.profile_rule = prepared.profile_rule
        self.profile_lookups = {n: _lookup(prepared.vocabs[n], n) for n in self.profile_inputs}
        if self.profile_inputs:  # the profile's names are the data's: built here, not declared
            names = self.profile_inputs

            def with_profile(history, *values):
                return self._recommend(history, dict(zip_(names, values)))

            self.with_profile = tf.function(
                with_profile,
                input_signature=[
                    tf.TensorSpec([None, None], tf.string, name="history"),
                    *[tf.TensorSpec([None], tf.string, name=n) for n in names],
                ],
            )
        self.ids = tf.constant(["", "[UNK]", *vocab])
        self.titles = tf.constant(["", "", *titles])
        self.catalog = tf.Variable(catalog, trainable=False, name="catalog")
        reserved = np.zeros(self.num_items, np.float32)
        reserved[: F.NUM_RESERVED] = -np.inf
        self.reserved = tf.constant(reserved)

    def _history(self, history: tf.Tensor) -> tf.Tensor:
        """Item indices (B, n + 1), unknown ids dropped, real events packed to the right.

        The model sees the newest ``max_len`` of them; the whole row is "seen".
        """
        idx = tf.cast(self.movie_lookup(history), tf.int32)  # (B, n)
        idx = tf.where(idx == F.OOV, F.PAD, idx)
        idx = tf.pad(idx, [[0, 0], [1, 0]])  # at least one column
        order = tf.argsort(tf.cast(idx > 0, tf.int32), axis=1, stable=True)  # pads first
        return tf.gather(idx, order, batch_dims=1)  # (B, n + 1)

    def _scores(self, idx: tf.Tensor, profile: dict[str, tf.Tensor]) -> tf.Tensor:
        """(B, N) float32 scores of every item after the packed histories ``idx``.

        The model reads the newest ``max_len`` columns, and not the leading
        columns that are padding in every row (padding is never attended, so
        dropping it changes nothing but the cost); only the newest position's
        query is computed (``model.encoder(..., last_only=True)``, :class:`bst.model.Encoder`).
        """
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(idx > 0, tf.int32), axis=1))
        width = tf.clip_by_value(longest, 1, self.max_len)
        idx = idx[:, tf.shape(idx)[1] - width :]  # (B, L)
        unknown = tf.where(idx > 0, F.UNKNOWN, F.PAD)
        inputs = {F.MOVIE_ID: idx, F.TIME_GAP: unknown, F.RATING: unknown, **profile}
        query = self.model.encoder(inputs, training=False, last_only=True, catalog=self.catalog)
        query = tf.cast(query[:, 0], tf.float32)  # (B, D)
        return tf.matmul(query, self.catalog, transpose_b=True)  # (B, N)

    def _profile(self, batch: tf.Tensor, values: dict[str, tf.Tensor] | None) -> dict:
        if values is None:
            return {name: tf.fill([batch], F.UNKNOWN) for name in self.profile_inputs}
        tokens = tokens_of(values, self.profile_rule)
        return {
            name: tf.cast(self.profile_lookups[name](tokens[name]), tf.int32)
            for name in self.profile_inputs
        }

    def _recommend(self, history: tf.Tensor, profile: dict | None) -> dict[str, tf.Tensor]:
        idx = self._history(history)
        scores = self._scores(idx, self._profile(tf.shape(idx)[0], profile))
        rows = tf.broadcast_to(tf.range(tf.shape(idx)[0])[:, tf.newaxis], tf.shape(idx))
        seen = tf.scatter_nd(
            tf.stack([tf.reshape(rows, [-1]), tf.reshape(idx, [-1])], axis=1),
            tf.ones([tf.size(idx)], tf.float32),
            tf.shape(scores),
        )  # (B, N) > 0 where seen (column 0 collects the padding)
        masked = tf.where(seen > 0, -np.inf, scores) + self.reserved
        top, where = tf.math.top_k(masked, k=self.k)  # (B, K)
        return {
            "movie_ids": tf.gather(self.ids, where),
            "titles": tf.gather(self.titles, where),
            "scores": top,
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def serving_default(self, history):
        return self._recommend(history, None)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([None, None], tf.string, name="candidates"),
        ]
    )
    def score(self, history, candidates):
        idx = self._history(history)
        scores = self._scores(idx, self._profile(tf.shape(idx)[0], None))  # (B, N)
        cand = tf.cast(self.movie_lookup(candidates), tf.int32)  # (B, m)
        picked = tf.gather(scores, cand, batch_dims=1)  # (B, m)
        return {"scores": tf.where(cand >= F.NUM_RESERVED, picked, UNKNOWN_SCORE)}


def zip_(*args):
    return zip(*args, strict=True)


def signatures(module: ExportModule) -> dict:
    """The SavedModel's signatures (``with_profile`` only when the data has a profile)."""
    out = {"serving_default": module.serving_default.get_concrete_function()}
    if module.profile_inputs:
        out["with_profile"] = module.with_profile.get_concrete_function()
    out["score"] = module.score.get_concrete_function()
    return out


WARMUP_PROFILE = {"gender": "F", "age": "25", "occupation": "4", "zip": "94110"}


def warmup_requests(sample: list[str], profile: tuple[str, ...] = PROFILE_INPUTS) -> list[bytes]:
    """Serialized PredictionLog records, one per signature, for assets.extra."""
    history = [sample]
    inputs = {"serving_default": {"history": history}}
    if profile:
        values = {n: [WARMUP_PROFILE.get(n, "")] for n in profile}
        inputs["with_profile"] = {"history": history, **values}
    inputs["score"] = {"history": history, "candidates": [sample[:2]]}
    return prediction_logs(inputs)


def prediction_logs(inputs: dict[str, dict[str, list]], model_name: str = "bst") -> list[bytes]:
    """Serialized ``PredictionLog`` records: signature name → {input name: string values}."""
    records = []
    for name, tensors in inputs.items():
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name)
        )
        for key, value in tensors.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=tf.string))
        log_ = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log_.SerializeToString())
    return records


EXPORT_PREFIX = ".export-"


def origin_record(
    run_dir: str | Path, cfg, model, prepared, k: int, new_movies: NewMovies | None = None
) -> dict:
    """What :data:`bst.versions.ORIGIN_FILE` says about an export."""
    added = None
    if new_movies is not None:
        added = {
            "movies": len(new_movies),
            "source": new_movies.source,
            "sha256": new_movies.fingerprint,
        }
    return {
        "run_dir": str(Path(run_dir).resolve()),
        "preset": cfg.preset,
        "synthetic": bool(cfg.data.synthetic),
        "data_dir": cfg.data.data_dir,
        "prepared_dir": cfg.data.prepared_dir,
        "movies": len(prepared.vocabs[F.MOVIE_ID]),
        "catalog_sha256": prepared.catalog_fingerprint,
        "weights_sha256": weights_digest(model),
        "k": int(k),
        "added_movies": added,
        "bst_version": bst.__version__,
    }


def export(
    run_dir: str | Path,
    out: str | Path,
    k: int = 10,
    force: bool = False,
    add_movies: str | Path | None = None,
) -> Path:
    """Write the next version of the SavedModel under ``out``; returns its folder.

    When the newest version already holds this run's weights (same catalog, same ``k``,
    the same added movies), nothing is written and that version is returned, unless
    ``force``. ``add_movies``: a CSV of new movies (:mod:`bst.new_movies`).
    """
    return export_version(run_dir, out, k, force, add_movies)[0]


def export_version(
    run_dir: str | Path,
    out: str | Path,
    k: int = 10,
    force: bool = False,
    add_movies: str | Path | None = None,
) -> tuple[Path, bool]:
    """:func:`export`, and whether a new version was written."""
    cfg, model, prepared = load_run(run_dir)
    new_movies = read_new_movies(add_movies, prepared, cfg.model.text) if add_movies else None
    origin = origin_record(run_dir, cfg, model, prepared, k, new_movies)
    base = writable_dir(out, "model folder")
    newest = newest_version(base)
    if newest is not None and not force:
        old = read_origin(newest) or {}
        same = ("weights_sha256", "catalog_sha256", "k", "added_movies")
        if all(old.get(key) == origin[key] for key in same):
            log.info(
                "version %s already holds these weights (from %s): not writing a copy "
                "(--force writes one anyway)",
                newest.name,
                describe_origin(old),
            )
            return newest, False
    module = ExportModule(model, prepared, cfg.model.max_len, k, new_movies)
    clean_stale(base, EXPORT_PREFIX)
    tmp = make_temp_dir(base, EXPORT_PREFIX)
    try:
        tf.saved_model.save(module, str(tmp / "model"), signatures=signatures(module))
        extra = tmp / "model" / "assets.extra"
        extra.mkdir(exist_ok=True)
        sample = prepared.vocabs[F.MOVIE_ID][:5]
        with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
            for record in warmup_requests(sample, module.profile_inputs):
                writer.write(record)
        (tmp / "model" / ORIGIN_FILE).write_text(json.dumps(origin, indent=2) + "\n")
        version = next_version(base)
        final = base / str(version)
        (tmp / "model").rename(final)  # one step: a watching server sees all or nothing
    finally:
        remove_temp_dir(tmp)
    log.info("exported %s as version %d: %s", run_dir, version, final)
    return final, True


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m bst.export``: arguments as in :func:`bst.cli.export_parser`."""
    with cli_errors():
        args = cli.parse("export", argv)
        cli.setup_logging(args.verbose)
        path, written = export_version(
            args.run_dir, args.model_dir, args.top_k, args.force, args.add_movies
        )
    if written:
        print(f"exported {path}")
    else:
        print(f"{path} already holds this run's weights: nothing written (--force to write a copy)")
    return path


if __name__ == "__main__":
    main()
