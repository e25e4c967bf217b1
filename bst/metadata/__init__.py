"""Join MovieLens-1M movies to catalogs of movie metadata (plot overviews) by title and year.

A naive join (raw title + year) links only about half of ML-1M, because ML-1M writes
``American President, The``, ``City of Lost Children, The (Cité des enfants perdus, La)``
or ``Seven (Se7en)`` where a catalog writes ``The American President``, ``La Cité des
Enfants Perdus`` or ``Se7en``. This module normalizes both sides, then matches in two
stages:

1. **exact**: a normalized name of the movie equals a normalized name of a catalog row
   (its ``title`` or ``original_title``) and the years are equal;
2. **fuzzy**: for movies still unmatched, every catalog row released within
   ``YEAR_TOLERANCE`` years is scored with rapidfuzz ``process.cdist`` (one matrix per
   year block, never a Python double loop) and pairs scoring at least
   ``MATCH_THRESHOLD`` become candidates.

Sequel numbers must agree (``Friday the 13th`` is not ``Friday the 13th Part 2``), and
partial names (a title's head before a colon, its part after a possessive credit such
as ``Wes Craven's``) score with a penalty. Each stage assigns one-to-one, greedily from
the best pair down: a catalog row serves one movie, unless two movies are the same film
listed twice (sharing a name and a year, see :func:`film_groups`). With several
catalogs, each is matched on its own and a movie keeps the best of its matches (see
:func:`join_catalogs`).

Catalogs are CSV files described by a :class:`CatalogSpec`; its defaults fit both TMDB
files in ``shared/data/catalogs`` (The Movies Dataset and TMDB 5000). Bad rows are
skipped and counted in :class:`CatalogStats`, never dropped silently; a file that
cannot be read as specified raises :class:`~bst.errors.DataError`.

Modules: :mod:`~bst.metadata.normalize` (title keys), :mod:`~bst.metadata.catalogs`
(reading catalog CSVs), :mod:`~bst.metadata.match` (one catalog against the movies),
:mod:`~bst.metadata.report` (several catalogs, the join report). The overview
tokenizer that turns the joined text into a model feature is :mod:`bst.text`.
"""

from bst.metadata.catalogs import Catalog, CatalogSpec, CatalogStats, load_catalog
from bst.metadata.match import (
    MATCH_THRESHOLD,
    METHODS,
    NAME_KINDS,
    PARTIAL_PENALTY,
    SCORER,
    UNKNOWN_YEAR_PENALTY,
    YEAR_TOLERANCE,
    film_groups,
    fuzzy_key,
    match_catalog,
)
from bst.metadata.normalize import normalize_title, partial_names, title_keys, title_names
from bst.metadata.report import (
    OUTPUT_COLUMNS,
    JoinReport,
    join_catalogs,
    load_catalogs,
    naive_matches,
)

__all__ = [
    "MATCH_THRESHOLD",
    "METHODS",
    "NAME_KINDS",
    "OUTPUT_COLUMNS",
    "PARTIAL_PENALTY",
    "SCORER",
    "UNKNOWN_YEAR_PENALTY",
    "YEAR_TOLERANCE",
    "Catalog",
    "CatalogSpec",
    "CatalogStats",
    "JoinReport",
    "film_groups",
    "fuzzy_key",
    "join_catalogs",
    "load_catalog",
    "load_catalogs",
    "match_catalog",
    "naive_matches",
    "normalize_title",
    "partial_names",
    "title_keys",
    "title_names",
]
