"""Movies added to an export without any ratings: read, checked and turned into side features.

    python -m bst.export --run-dir runs/ml1m-text --add-movies new_movies.csv

A CSV with a header and the columns ``movie_id``, ``title`` and ``overview`` (``year``
and ``genres``, ``|``-separated as in ``movies.dat``, are optional; the enriched table of
``pipelines.enrich`` has the right columns). Each row whose id the run's catalog lacks
becomes a content-only catalog entry: no id embedding (it was never trained), embedded
from its genres, year and overview (tokenized with the run's text vocabulary: a word it
lacks is out of vocabulary, the vocabulary never grows). Rows already in the catalog and
rows without an overview are skipped and counted, never silently.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bst import features as F
from bst.data.prepared import TEXT_VOCAB_FILE, VOCAB_DIR, Prepared
from bst.errors import DataError
from bst.text import MAX_OVERVIEW_TOKENS, tokenize_overviews
from bst.vocab import UNKNOWN_TOKEN, index_of, read_vocabulary, year_token

log = logging.getLogger("bst.export")

REQUIRED = ("movie_id", "title", "overview")


@dataclass(frozen=True)
class NewMovies:
    """Movies to append to an exported catalog (rows in file order).

    ``genres`` ``[n, MAX_GENRES]``, ``years`` ``[n]`` and ``words`` ``[n, T]`` are indices
    into the run's vocabularies (0-padded), what :meth:`bst.layers.ItemEmbedding.content`
    takes.
    """

    ids: list[str]
    titles: list[str]
    genres: np.ndarray
    years: np.ndarray
    words: np.ndarray | None
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fingerprint(self) -> str:
        """sha256 of the added ids, titles and side features (in the export's origin)."""
        digest = hashlib.sha256()
        for i, movie in enumerate(self.ids):
            digest.update(f"{movie}\t{self.titles[i]}\n".encode())
        for array in (self.genres, self.years, self.words):
            if array is not None:
                digest.update(np.ascontiguousarray(array, np.int32).tobytes())
        return digest.hexdigest()


def read_new_movies(path: str | Path, prepared: Prepared, text: bool = True) -> NewMovies:
    """The movies of ``path`` that ``prepared``'s catalog lacks (see the module docstring).

    Raises:
        DataError: the file is missing, not UTF-8, lacks a column, has an empty or
            repeated id, or adds no movie at all; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise DataError(
                    f"expected the columns {', '.join(REQUIRED)} (and optionally year, genres); "
                    f"missing {', '.join(missing)}",
                    path,
                    1,
                )
            rows = [(line, row) for line, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason} at byte {err.start})", path) from None
    except csv.Error as err:
        raise DataError(f"not a readable CSV: {err}", path) from None

    known = set(prepared.vocabs[F.MOVIE_ID])
    genre_index = index_of(prepared.vocabs[F.GENRES])
    year_index = index_of(prepared.vocabs[F.YEAR])
    seen: dict[str, int] = {}
    skipped = {"already in the catalog": 0, "no overview": 0}
    ids, titles, genres, years, overviews = [], [], [], [], []
    for line, row in rows:
        movie = (row.get("movie_id") or "").strip()
        if not movie or any(c.isspace() for c in movie):
            raise DataError(f"movie_id {movie!r} is empty or has a space", path, line)
        if movie in seen:
            raise DataError(f"movie_id {movie} repeats (first on line {seen[movie]})", path, line)
        seen[movie] = line
        overview = (row.get("overview") or "").strip()
        if movie in known:
            skipped["already in the catalog"] += 1
            continue
        if not overview:
            skipped["no overview"] += 1
            continue
        year = (row.get("year") or "").strip()
        if year and not (year.isdigit() and len(year) == 4):
            raise DataError(f"year {year!r} is not a four-digit year", path, line)
        names = [g for g in (row.get("genres") or "").split("|") if g.strip()]
        ids.append(movie)
        titles.append((row.get("title") or "").strip() or movie)
        slots = [genre_index.get(g.strip(), F.OOV) for g in names][: F.MAX_GENRES]
        genres.append(slots + [F.PAD] * (F.MAX_GENRES - len(slots)))
        token = year_token(int(year)) if year else UNKNOWN_TOKEN
        years.append(year_index.get(token, F.OOV))
        overviews.append(overview)
    if not ids:
        raise DataError(
            f"adds no movie: {len(rows)} rows, "
            + ", ".join(f"{n} {why}" for why, n in skipped.items()),
            path,
        )
    words = None
    vocab_file = prepared.folder / VOCAB_DIR / TEXT_VOCAB_FILE
    if text and vocab_file.is_file():
        tokens = tokenize_overviews(overviews, read_vocabulary(vocab_file), MAX_OVERVIEW_TOKENS)
        words = np.zeros((len(ids), MAX_OVERVIEW_TOKENS), np.int32)
        for i, row_ids in enumerate(tokens):
            words[i, : len(row_ids)] = row_ids
    else:
        log.warning(
            "the run has no overview text: the new movies are embedded from genres and year only"
        )
    result = NewMovies(
        ids=ids,
        titles=titles,
        genres=np.array(genres, np.int32),
        years=np.array(years, np.int32),
        words=words,
        skipped={k: v for k, v in skipped.items() if v},
        source=str(path),
    )
    log.info(
        "adding %d new movie(s) from %s%s",
        len(result),
        path,
        "".join(f"; skipped {n} {why}" for why, n in result.skipped.items()),
    )
    return result
