"""The one list of feature names, dtypes and index conventions.

The same strings name the TFRecord fields written by ``bst.data.prepare``, the
tensors ``bst.pipeline.make_dataset`` yields, the model's inputs and the serving
signature's inputs.

Index conventions (every lookup in bst follows them):

* ``PAD = 0``: padding (sequences are padded on the left, so the most recent event
  is always the last position).
* ``OOV = 1``: a value that is not in the training vocabulary (an unknown movie id,
  a new zip prefix, ...). For features a request may not carry (time gap, rating,
  profile) the same index means "unknown"; the model is trained to handle it.
* ``2 ..``: vocabulary entries, in the order of the vocabulary file.
"""

from __future__ import annotations

import math

PAD = 0
OOV = 1
UNKNOWN = OOV
NUM_RESERVED = 2

# --- per-event (sequence) features, shape [L] per example --------------------
MOVIE_ID = "movie_id"  # item index
GENRES = "genres"  # [L, MAX_GENRES] genre indices of the item, 0-padded
YEAR = "year"  # release-year index
TIME_GAP = "time_gap"  # bucketed seconds since the user's previous event
RATING = "rating"  # PAD, UNKNOWN, or 2 + (rating - 1) for ratings 1..5

SEQUENCE_FEATURES = (MOVIE_ID, GENRES, YEAR, TIME_GAP, RATING)

# --- per-user (profile) features, scalar per example --------------------------
GENDER = "gender"
AGE = "age"
OCCUPATION = "occupation"
ZIP = "zip"  # zip-code prefix (first ZIP_PREFIX_LEN characters)

PROFILE_FEATURES = (GENDER, AGE, OCCUPATION, ZIP)

USER_ID = "user_id"  # raw user id string, passed through for evaluation; not a model input

# --- TFRecord-only fields (bst.data.records): raw values the pipeline turns into features
TIMESTAMP = "timestamp"  # int64 [n] seconds since the epoch, -1 = unknown
TARGET_MOVIE_ID = "target_movie_id"  # evaluation records: the held-out event ([1]; [] in train)
TARGET_TIMESTAMP = "target_timestamp"
TARGET_RATING = "target_rating"

# --- labels --------------------------------------------------------------------
NEXT_MOVIE = "next_movie"  # train: [L] target item per position (PAD = none); eval: scalar
NEXT_RATING = "next_rating"  # same layout, rating index as in RATING

# Vocabularies written by bst.data.prepare (one token per line, in index order from 2).
VOCAB_FILES = {
    MOVIE_ID: "movie_id.txt",
    GENRES: "genres.txt",
    YEAR: "year.txt",
    GENDER: "gender.txt",
    AGE: "age.txt",
    OCCUPATION: "occupation.txt",
    ZIP: "zip.txt",
}

MAX_GENRES = 6  # ML-1M movies have at most 6 genres
ZIP_PREFIX_LEN = 3
NUM_RATINGS = 5
RATING_VOCAB = NUM_RESERVED + NUM_RATINGS

# Time gaps: bucket = 2 + floor(log2(1 + seconds)), capped; PAD/UNKNOWN as above.
# 2**30 s is 34 years, so the cap never bites on real data.
MAX_GAP_LOG2 = 30
TIME_GAP_VOCAB = NUM_RESERVED + MAX_GAP_LOG2 + 1


def time_gap_bucket(seconds: float | None) -> int:
    """Bucket index for a gap in seconds (None or negative → UNKNOWN).

    >>> [time_gap_bucket(s) for s in (None, 0, 1, 3, 86400)]
    [1, 2, 3, 4, 18]
    """
    if seconds is None or seconds < 0:
        return UNKNOWN
    return NUM_RESERVED + min(int(math.log2(1 + seconds)), MAX_GAP_LOG2)


def rating_index(rating: int | None) -> int:
    """Index of a 1..5 rating (None or 0 → UNKNOWN)."""
    if not rating:
        return UNKNOWN
    return NUM_RESERVED + int(rating) - 1
