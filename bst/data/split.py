"""Leave-one-out split by time, per user: last = test, second-last = validation."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
MIN_EVALUATED = 3  # a user with fewer events keeps them all in train


def split_sizes(events: int) -> tuple[int, int, int]:
    """A user's number of events → (train, validation, test) sizes: the rule of
    :func:`split_by_time` for one user (the Beam runner applies it per user)."""
    return (events - 2, 1, 1) if events >= MIN_EVALUATED else (events, 0, 0)


@dataclass
class SplitReport:
    train: int
    validation: int
    test: int
    users: int
    users_train_only: int  # fewer than 3 interactions: everything stays in train

    def to_dict(self) -> dict:
        return asdict(self)


def order_events(ratings: pd.DataFrame) -> pd.DataFrame:
    """Sort by (user, time), ties kept in file order (stable sort).

    The time is ``order_key`` when the reader gave one (a time finer than the seconds of
    ``timestamp``, such as milliseconds), else ``timestamp``.
    """
    ratings = ratings.reset_index(drop=True)
    time = ratings["order_key" if "order_key" in ratings else "timestamp"].to_numpy()
    order = np.lexsort((np.arange(len(ratings)), time, ratings["user_id"].to_numpy()))
    return ratings.iloc[order].reset_index(drop=True)


def split_by_time(ratings: pd.DataFrame) -> tuple[pd.DataFrame, SplitReport]:
    """Add a ``split`` column; rows come back ordered by user, then time.

    A user's last event is ``test``, the one before ``validation``, the rest
    ``train``. Users with fewer than 3 events keep all of them in ``train``.
    """
    events = order_events(ratings)
    # position from the end within each user: 0 = last event
    sizes = events.groupby("user_id", sort=False).size()
    counts = np.repeat(sizes.to_numpy(), sizes.to_numpy())
    from_end = counts - 1 - events.groupby("user_id", sort=False).cumcount().to_numpy()
    split = np.full(len(events), TRAIN, dtype=object)
    eligible = counts >= MIN_EVALUATED
    split[eligible & (from_end == 0)] = TEST
    split[eligible & (from_end == 1)] = VALIDATION
    events["split"] = split
    report = SplitReport(
        train=int((split == TRAIN).sum()),
        validation=int((split == VALIDATION).sum()),
        test=int((split == TEST).sum()),
        users=int(len(sizes)),
        users_train_only=int((sizes.to_numpy() < MIN_EVALUATED).sum()),
    )
    if report.users_train_only:
        log.warning(
            "%d users have fewer than 3 interactions: kept in train only, not evaluated",
            report.users_train_only,
        )
    return events, report
