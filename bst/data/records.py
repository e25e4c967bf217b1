"""The TFRecord schema of the prepared folder: one ``tf.train.Example`` per user and split.

Every field name comes from :mod:`bst.features`. A record holds raw values (movie
id strings, profile tokens, timestamps, ratings); :mod:`bst.pipeline` turns them
into model features. Written by :mod:`bst.data.prepare`, read by
:func:`parse` in ``tf.data``:

* ``user_id``, ``gender``, ``age``, ``occupation``, ``zip``: bytes ``[1]``; the profile
  fields are the tokens of :func:`profile_tokens`;
* ``movie_id`` bytes ``[n]``, ``timestamp`` int64 ``[n]``, ``rating`` int64 ``[n]``: the
  history in time order;
* ``target_movie_id`` bytes, ``target_timestamp`` and ``target_rating`` int64: ``[1]``
  in validation and test records (the held-out event), ``[]`` in training records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

from bst import features as F
from bst.vocab import UNKNOWN_TOKEN

PROFILE_INPUT_COLUMNS = ("gender", "age", "occupation", "zip")  # users.dat / users.tsv columns
# How raw profile values become tokens (the prepared folder's manifest ``profile.rule``):
MOVIELENS_RULE = "movielens"  # profile_tokens: no gender = no profile, zip prefix
PLAIN_RULE = "plain"  # plain_tokens: each value is its own token, empty = unknown


def parse_spec(profile: Sequence[str] = F.PROFILE_FEATURES) -> dict:
    """The TFRecord fields of a prepared folder whose profile features are ``profile``."""
    return {
        F.USER_ID: tf.io.FixedLenFeature([], tf.string),
        **{name: tf.io.FixedLenFeature([], tf.string) for name in profile},
        F.MOVIE_ID: tf.io.RaggedFeature(tf.string),
        F.TIMESTAMP: tf.io.RaggedFeature(tf.int64),
        F.RATING: tf.io.RaggedFeature(tf.int64),
        F.TARGET_MOVIE_ID: tf.io.RaggedFeature(tf.string),
        F.TARGET_TIMESTAMP: tf.io.RaggedFeature(tf.int64),
        F.TARGET_RATING: tf.io.RaggedFeature(tf.int64),
    }


PARSE_SPEC = parse_spec()  # MovieLens' profile


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def profile_tokens(
    gender: tf.Tensor, age: tf.Tensor, occupation: tf.Tensor, zip_code: tf.Tensor
) -> dict[str, tf.Tensor]:
    """The one rule from raw profile values to vocabulary tokens, string tensors of one shape.

    Used by the prepare step (all users at once), by ``bst.recommend`` and inside the
    exported model, so a person's profile is tokenized the same on every path:

    * no gender means no profile: gender, age and occupation become UNKNOWN (``"?"``);
    * an empty value is UNKNOWN too (never ``""``, which is padding);
    * the zip code becomes its first ``ZIP_PREFIX_LEN`` characters, kept even without a
      gender (it is known on its own).
    """
    gender = tf.strings.strip(gender)
    known = tf.not_equal(gender, "")

    def token(value: tf.Tensor) -> tf.Tensor:
        value = tf.strings.strip(value)
        return tf.where(known & tf.not_equal(value, ""), value, UNKNOWN_TOKEN)

    zip_code = tf.strings.substr(tf.strings.strip(zip_code), 0, F.ZIP_PREFIX_LEN, unit="UTF8_CHAR")
    return {
        F.GENDER: token(gender),
        F.AGE: token(age),
        F.OCCUPATION: token(occupation),
        F.ZIP: tf.where(tf.equal(zip_code, ""), UNKNOWN_TOKEN, zip_code),
    }


def plain_tokens(values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The profile rule of a generic users table: each stripped value is its own token,
    an empty one is UNKNOWN (``"?"``)."""
    out = {}
    for name, value in values.items():
        value = tf.strings.strip(value)
        out[name] = tf.where(tf.equal(value, ""), UNKNOWN_TOKEN, value)
    return out


def tokens_of(values: dict[str, tf.Tensor], rule: str = MOVIELENS_RULE) -> dict[str, tf.Tensor]:
    """Raw profile values (one string tensor per feature) → tokens, by the folder's rule."""
    if rule == MOVIELENS_RULE:
        return profile_tokens(*(values[n] for n in PROFILE_INPUT_COLUMNS))
    return plain_tokens(values)


def profile_token_rows(
    columns: dict[str, Sequence[str]],
    names: Sequence[str] = F.PROFILE_FEATURES,
    rule: str = MOVIELENS_RULE,
) -> list[tuple[str, ...]]:
    """:func:`tokens_of` over plain Python columns → one token tuple per row, in ``names``
    order (for MovieLens ``(gender, age, occupation, zip)``)."""
    tensors = tokens_of(
        {c: tf.constant([str(v) for v in columns[c]], tf.string) for c in names}, rule
    )
    decoded = [[v.decode("utf-8") for v in tensors[n].numpy()] for n in names]
    return list(zip(*decoded, strict=True))


def serialize(
    user_id: str | int,
    profile: tuple[str, str, str, str] | dict[str, str],
    movie_ids: Sequence[str],
    timestamps: Sequence[int],
    ratings: Sequence[int],
    target: tuple[str, int, int] | None = None,
) -> bytes:
    """One record, serialized deterministically (same inputs, same bytes).

    ``profile``: MovieLens' ``(gender, age, occupation, zip)`` tokens, or a dict of a
    prepared folder's profile features."""

    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))

    def i(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    if not isinstance(profile, dict):
        profile = dict(zip(F.PROFILE_FEATURES, profile, strict=True))
    feats = {
        F.USER_ID: b([str(user_id)]),
        **{name: b([token]) for name, token in profile.items()},
        F.MOVIE_ID: b(movie_ids),
        F.TIMESTAMP: i(timestamps),
        F.RATING: i(ratings),
        F.TARGET_MOVIE_ID: b([] if target is None else [target[0]]),
        F.TARGET_TIMESTAMP: i([] if target is None else [target[1]]),
        F.TARGET_RATING: i([] if target is None else [target[2]]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


def parse(serialized: tf.Tensor, spec: dict | None = None) -> dict[str, tf.Tensor]:
    """One serialized record → its fields (``tf.data`` map function; ``spec``:
    :func:`parse_spec` of the folder's profile, MovieLens' by default)."""
    return tf.io.parse_single_example(serialized, spec or PARSE_SPEC)


def parse_batch(serialized: tf.Tensor, spec: dict | None = None) -> dict[str, tf.Tensor]:
    """A ``[B]`` batch of serialized records → their fields, ragged ``[B, None]`` sequences."""
    return tf.io.parse_example(serialized, spec or PARSE_SPEC)


class ShardWriters:
    """``count`` TFRecord writers per split under ``folder``; closes them all on exit."""

    def __init__(self, folder: Path, splits: Sequence[str], count: int):
        self.writers = {
            s: [tf.io.TFRecordWriter(str(folder / shard_name(s, k, count))) for k in range(count)]
            for s in splits
        }

    def write(self, split: str, shard: int, record: bytes) -> None:
        self.writers[split][shard].write(record)

    def __enter__(self) -> ShardWriters:
        return self

    def __exit__(self, *exc) -> None:
        for writers in self.writers.values():
            for w in writers:
                w.close()
