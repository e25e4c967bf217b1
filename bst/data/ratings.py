"""Ratings → levels of the data's scale: the rule the prepare step (in memory and on
Beam) writes into the TFRecords and ``sequences.tsv``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bst import features as F
from bst.data.movielens import HALF_STARS
from bst.data.tabular import MAX_RATING_LEVELS
from bst.errors import DataError


def rating_levels(ratings: pd.Series) -> tuple[np.ndarray, list[float]]:
    """Ratings → int64 levels ``1..n`` (0 = unknown) and the scale (level ``k`` is
    ``scale[k - 1]``): what the TFRecords and ``sequences.tsv`` hold.

    Unknown is 0 in an integer column (the SASRec file) and NaN in a float one. Whole
    stars 1-5 are their own level (ML-1M's files are unchanged); half stars 0.5-5.0
    are levels 1-10; any other scale is its distinct values in order, at most
    :data:`bst.data.tabular.MAX_RATING_LEVELS` of them.
    """
    values = ratings.to_numpy()
    known = known_ratings(values)
    scale = rating_scale(np.unique(values[known].astype(np.float64)))
    levels = np.zeros(len(values), dtype=np.int64)
    levels[known] = np.searchsorted(scale, values[known].astype(np.float64)) + 1
    return levels, [float(v) for v in scale] if known.any() else []


def known_ratings(values: np.ndarray) -> np.ndarray:
    """bool: which ratings are known (0 in an integer column and NaN are unknown)."""
    return ~pd.isna(values) & ((values != 0) if values.dtype.kind in "iu" else True)


def rating_scale(distinct: np.ndarray) -> np.ndarray:
    """The sorted distinct known ratings → the scale of :func:`rating_levels`."""
    if np.isin(distinct, np.arange(1, F.NUM_RATINGS + 1)).all():
        return np.arange(1, F.NUM_RATINGS + 1, dtype=np.float64)
    if np.isin(distinct, HALF_STARS).all():
        return HALF_STARS
    if len(distinct) <= MAX_RATING_LEVELS:
        return distinct
    raise DataError(
        f"ratings take {len(distinct)} distinct values; bst embeds a rating as one of at "
        f"most {MAX_RATING_LEVELS} levels: round them, or set data.rating_column='' to "
        "train without ratings"
    )
