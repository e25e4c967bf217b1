"""The real MovieLens-1M files, when present (../shared/data or $BST_DATA_DIR); skipped otherwise."""

from __future__ import annotations

import hashlib
import json

import pytest

from bst.data import prepare as prep
from bst.data.movielens import load_movielens
from bst.data.sasrec import load_sasrec
from bst.data.split import split_by_time
from tests.conftest import real_ml1m, real_sasrec

pytestmark = pytest.mark.realdata

ML1M_OUTPUTS_DIGEST = "91ae61cc4dbe4a46bdc62fc83069844ddd5f478ad69341d811318a2077786be3"


def test_ml1m_counts_and_split():
    ml = load_movielens(real_ml1m())
    assert len(ml.ratings) == 1_000_209
    assert ml.ratings.user_id.nunique() == 6_040
    assert ml.ratings.movie_id.nunique() == 3_706
    assert len(ml.movies) == 3_883
    assert ml.report.duplicate_pairs == 0 and ml.report.unknown_movie_ratings == 0
    events, report = split_by_time(ml.ratings)
    assert (report.train, report.validation, report.test) == (988_129, 6_040, 6_040)
    assert report.users_train_only == 0
    title = ml.movies.loc[ml.movies.movie_id == 1001, ["title", "year"]].iloc[0].tolist()
    assert title == ["Associate, The (L'Associe)", 1982]


@pytest.mark.slow
def test_sasrec_counts():
    ml = load_sasrec(real_sasrec(), side_data_dir=real_ml1m())
    assert len(ml.ratings) == 999_611
    assert ml.ratings.user_id.nunique() == 6_040
    assert ml.ratings.movie_id.nunique() == 3_416
    _, report = split_by_time(ml.ratings)
    assert (report.validation, report.test) == (6_040, 6_040)


@pytest.mark.slow
def test_prepare_real(tmp_path):
    manifest = prep.prepare(real_ml1m(), tmp_path / "p", num_shards=4)
    assert manifest["counts"]["ratings"] == 1_000_209
    assert manifest["counts"]["users"] == 6_040 and manifest["counts"]["movies"] == 3_706
    assert manifest["splits"]["train"]["events"] == 988_129
    assert manifest["splits"]["test"]["examples"] == 6_040
    assert json.loads((tmp_path / "p" / "manifest.json").read_text()) == manifest
    # every output file byte for byte as before the bounded-memory prepare step (the
    # digest of the manifest's per-file sha256 list; pinned from the earlier code)
    listing = "".join(f"{k}:{v}\n" for k, v in sorted(manifest["outputs"].items()))
    assert len(manifest["outputs"]) == 22
    assert hashlib.sha256(listing.encode()).hexdigest() == ML1M_OUTPUTS_DIGEST


# Other releases, when a copy lies under the data root (their GroupLens folder names).
RELEASES = {  # folder: (format, ratings, users) as GroupLens publishes them; None = changes
    "ml-100k": ("ml-100k", 100_000, 943),
    "ml-10M100K": ("ml-10m", 10_000_054, 69_878),
    "ml-20m": ("ml-csv", 20_000_263, 138_493),
    "ml-25m": ("ml-csv", 25_000_095, 162_541),
    "ml-latest-small": ("ml-csv", None, None),
}


@pytest.mark.slow
@pytest.mark.parametrize("folder", RELEASES)
def test_other_releases_read_natively(folder):
    from bst.data import formats
    from tests.conftest import real_data_root

    path = real_data_root() / folder
    if not path.is_dir():
        pytest.skip(f"{folder} not found under {real_data_root()} (set BST_DATA_DIR)")
    fmt, found = formats.resolve(path)
    expected_format, ratings, users = RELEASES[folder]
    assert (fmt.name, found) == (expected_format, path)
    ml, _ = fmt.load(found, formats.Options())
    assert ml.report.unknown_movie_ratings == 0
    if ratings is not None:
        assert len(ml.ratings) == ratings and ml.ratings.user_id.nunique() == users
