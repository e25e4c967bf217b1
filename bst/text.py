"""Overview text as a model feature: a vocabulary learnt from training movies only, and
per-movie token ids (the text counterpart of :mod:`bst.vocab`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import tensorflow as tf  # bst/__init__.py has already made tf.keras Keras 2

MAX_OVERVIEW_TOKENS = 64  # longest token list kept per overview


def build_overview_tokens(
    enriched: pd.DataFrame,
    train_movie_ids: Iterable[int],
    vocab_size: int = 20000,
    max_tokens: int = MAX_OVERVIEW_TOKENS,
) -> tuple[list[str], dict[int, list[int]]]:
    """Token ids of every movie's overview, with a vocabulary learnt from training movies only.

    A ``tf.keras.layers.TextVectorization`` (lower-case, punctuation stripped, split on
    whitespace) is adapted on the overviews of ``train_movie_ids``, so no word seen only
    in validation or test movies enters the vocabulary; every movie is then tokenized
    with it, so a movie with few ratings can still be embedded from its text.

    Args:
        enriched: the output of :func:`join_catalogs` (``movie_id``, ``overview``).
        train_movie_ids: movies whose overviews build the vocabulary.
        vocab_size: int. Vocabulary size including index 0 (``''``, padding) and 1
            (``'[UNK]'``, out of vocabulary). Defaults to 20000.
        max_tokens: int. Longest token list kept per movie; longer ones are truncated.
            Defaults to 64.

    Returns:
        ``(vocabulary, tokens)``: the vocabulary in index order and, for every movie in
        ``enriched``, its token ids (no padding; 1 for unknown words; an empty list when
        the movie has no overview). Deterministic: ties in word counts break by the word.
    """
    if vocab_size < 3:
        raise ValueError(f"`vocab_size` must be at least 3. Received: vocab_size={vocab_size}")
    if max_tokens < 1:
        raise ValueError(f"`max_tokens` must be positive. Received: max_tokens={max_tokens}")
    missing = [c for c in ("movie_id", "overview") if c not in enriched.columns]
    if missing:
        raise ValueError(
            f"`enriched` needs columns movie_id and overview; missing {', '.join(missing)}. "
            f"Received columns: {list(enriched.columns)}"
        )

    frame = enriched[["movie_id", "overview"]].copy()
    frame["movie_id"] = frame["movie_id"].astype(np.int64)
    frame["overview"] = frame["overview"].fillna("").astype(str).str.strip()
    if frame["movie_id"].duplicated().any():
        dup = int(frame["movie_id"][frame["movie_id"].duplicated()].iloc[0])
        raise ValueError(f"`enriched` must have one row per movie; movie_id {dup} repeats")
    frame = frame.sort_values("movie_id", kind="stable")
    train = set(int(i) for i in train_movie_ids)
    train_texts = frame["overview"][frame["movie_id"].isin(train) & frame["overview"].ne("")]

    vectorizer = _vectorizer(max_tokens, max_tokens=vocab_size)
    if len(train_texts):
        vectorizer.adapt(tf.constant(train_texts.tolist()), batch_size=256)
    vocabulary = [
        t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in vectorizer.get_vocabulary()
    ]

    tokens: dict[int, list[int]] = {int(i): [] for i in frame["movie_id"]}
    has_text = frame[frame["overview"].ne("")]
    rows = _token_rows(vectorizer, has_text["overview"].tolist())
    for movie_id, row in zip(has_text["movie_id"].tolist(), rows, strict=True):
        tokens[int(movie_id)] = row
    return vocabulary, tokens


def tokenize_overviews(
    texts: list[str], vocabulary: list[str], max_tokens: int = MAX_OVERVIEW_TOKENS
) -> list[list[int]]:
    """Token ids of ``texts`` with a fixed ``vocabulary`` (a prepared folder's
    ``vocab/text.txt``, index order, ``''`` and ``'[UNK]'`` first): what
    :func:`build_overview_tokens` gives a movie, for movies added after training (a word
    the vocabulary lacks is 1, out of vocabulary; the vocabulary never grows)."""
    if len(vocabulary) < 2 or vocabulary[0] != "" or vocabulary[1] != "[UNK]":
        raise ValueError(
            "`vocabulary` must start with '' and '[UNK]' (vocab/text.txt). "
            f"Received: {vocabulary[:2]!r}"
        )
    vectorizer = _vectorizer(max_tokens, vocabulary=vocabulary)
    return _token_rows(vectorizer, [str(t).strip() for t in texts])


def _vectorizer(length: int, **kwargs) -> tf.keras.layers.TextVectorization:
    """Lower-case, punctuation stripped, split on whitespace, ``length`` ids per text."""
    return tf.keras.layers.TextVectorization(
        standardize="lower_and_strip_punctuation",
        split="whitespace",
        output_mode="int",
        output_sequence_length=length,
        name="overview_vectorizer",
        **kwargs,
    )


def _token_rows(vectorizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    ids = vectorizer(tf.constant(texts)).numpy()  # (texts, length)
    return [np.trim_zeros(row, "b").astype(int).tolist() for row in ids]
