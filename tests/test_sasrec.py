"""The SASRec benchmark format: 'user item' lines in time order, optional id maps."""

from __future__ import annotations

import pytest

from bst.data.sasrec import load_sasrec
from bst.errors import DataError
from tests.conftest import write_dat


def test_reads_with_and_without_maps(tmp_path, synthetic_dir):
    write_dat(tmp_path, "ml-1m.txt", ["1 1", "1 2", "1 3", "2 2", "2 1"])
    ml = load_sasrec(tmp_path)
    assert ml.ratings[["user_id", "movie_id"]].values.tolist() == [
        [1, 1],
        [1, 2],
        [1, 3],
        [2, 2],
        [2, 1],
    ]
    assert (ml.ratings.timestamp == -1).all() and (ml.ratings.rating == 0).all()
    assert len(ml.movies) == 3 and len(ml.users) == 2

    write_dat(tmp_path, "sas_to_original_items.txt", ["1 5", "2 6", "3 7"])
    write_dat(tmp_path, "sas_to_original_users.txt", ["1 4", "2 3"])
    ml = load_sasrec(tmp_path, side_data_dir=synthetic_dir)
    assert ml.ratings.movie_id.tolist() == [5, 6, 7, 6, 5]
    assert ml.ratings.user_id.tolist() == [4, 4, 4, 3, 3]
    assert len(ml.movies) == 20  # from the side data's movies.dat


@pytest.mark.parametrize(
    "lines, message",
    [
        (["1 1", "1 2 3"], "ml-1m.txt line 2: expected 2 fields separated by a space"),
        (["1 1", "a 2"], "ml-1m.txt line 2: expected an integer user_id, got 'a'"),
    ],
)
def test_malformed(tmp_path, lines, message):
    write_dat(tmp_path, "ml-1m.txt", lines)
    with pytest.raises(DataError, match=message):
        load_sasrec(tmp_path)


def test_unmapped_id(tmp_path):
    write_dat(tmp_path, "ml-1m.txt", ["1 1", "1 9"])
    write_dat(tmp_path, "sas_to_original_items.txt", ["1 5"])
    write_dat(tmp_path, "sas_to_original_users.txt", ["1 4"])
    with pytest.raises(
        DataError, match="ml-1m.txt line 2: movie_id 9 has no entry in sas_to_original_items.txt"
    ):
        load_sasrec(tmp_path)
