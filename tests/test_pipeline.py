"""tf.data pipeline: shapes, dtypes, left padding, shifted targets, OOV, windows, shuffling, sharding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from bst import config
from bst import features as F
from bst.data import prepare as prep
from bst.data.prepared import Prepared
from bst.errors import DataError
from bst.pipeline import make_dataset
from tests.conftest import write_dat


def sequences(prepared_dir):
    rows = (prepared_dir / "sequences.tsv").read_text().splitlines()[1:]
    out = {}
    for row in rows:
        uid, n_train, _, _, ids, times, ratings = row.split("\t")
        out[uid] = (
            int(n_train),
            ids.split(),
            [int(t) for t in times.split()],
            [int(r) for r in ratings.split()],
        )
    return out


def left_pad(x, width):
    if x.ndim < 2 or x.dtype.kind in "SO":
        return x
    pad = [(0, 0), (width - x.shape[1], 0)] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad)


def collect(ds, width=6):
    """Concatenate every batch (bucketed batches are left-padded back to ``width``)."""
    feats, labels = {}, {}
    for f, lab in ds:
        for k, v in f.items():
            feats.setdefault(k, []).append(left_pad(v.numpy(), width))
        for k, v in lab.items():
            labels.setdefault(k, []).append(left_pad(v.numpy(), width))
    return (
        {k: np.concatenate(v) for k, v in feats.items()},
        {k: np.concatenate(v) for k, v in labels.items()},
    )


def test_train_shapes_and_dtypes(tiny_cfg):
    # unbucketed: every batch is max_len wide (bucketed widths are tested below)
    tiny_cfg = config.replace(tiny_cfg, {"data.bucket_by_length": False})
    f, lab = next(iter(make_dataset(tiny_cfg, "train", batch_size=4)))
    L = tiny_cfg.model.max_len
    expected = {
        F.MOVIE_ID: [4, L],
        F.GENRES: [4, L, F.MAX_GENRES],
        F.YEAR: [4, L],
        F.TIME_GAP: [4, L],
        F.RATING: [4, L],
        F.GENDER: [4],
        F.AGE: [4],
        F.OCCUPATION: [4],
        F.ZIP: [4],
    }
    assert {k: v.shape.as_list() for k, v in f.items()} == expected
    assert all(v.dtype == tf.int32 for v in f.values())
    assert {k: v.shape.as_list() for k, v in lab.items()} == {
        F.NEXT_MOVIE: [4, L],
        F.NEXT_RATING: [4, L],
    }


def test_eval_examples_match_sequences(tiny_cfg, prepared_dir):
    prepared = Prepared.open(prepared_dir)
    index = {t: i + 2 for i, t in enumerate(prepared.vocabs[F.MOVIE_ID])}
    seqs = sequences(prepared_dir)
    L = tiny_cfg.model.max_len
    for split, offset in (("validation", 0), ("test", 1)):
        f, lab = collect(make_dataset(tiny_cfg, split, batch_size=7))
        assert len(f[F.USER_ID]) == 30
        for row, uid in enumerate(f[F.USER_ID]):
            n_train, ids, times, ratings = seqs[uid.decode()]
            hist = ids[: n_train + offset]
            expect = [index.get(m, F.OOV) for m in hist][-L:]
            expect = [0] * (L - len(expect)) + expect  # left padded
            assert f[F.MOVIE_ID][row].tolist() == expect
            assert lab[F.NEXT_MOVIE][row] == index.get(ids[n_train + offset], F.OOV)
            assert lab[F.NEXT_RATING][row] == F.rating_index(ratings[n_train + offset])
            gaps = [F.UNKNOWN] + [
                F.time_gap_bucket(b - a) for a, b in zip(times, times[1:], strict=False)
            ]
            gaps = gaps[: n_train + offset][-L:]
            assert f[F.TIME_GAP][row].tolist() == [0] * (L - len(gaps)) + gaps
            rated = [F.rating_index(r) for r in ratings[: n_train + offset]][-L:]
            assert f[F.RATING][row].tolist() == [0] * (L - len(rated)) + rated
            genres, years = prepared.item_tables
            assert (f[F.GENRES][row] == genres[f[F.MOVIE_ID][row]]).all()
            assert (f[F.YEAR][row][f[F.MOVIE_ID][row] == 0] == 0).all()


def test_train_windows_cover_whole_histories(tiny_cfg, prepared_dir):
    seqs = sequences(prepared_dir)
    L = tiny_cfg.model.max_len
    f, lab = collect(make_dataset(tiny_cfg, "train", batch_size=16, shuffle=False))
    expected_windows = sum(math.ceil((n - 1) / L) for n, *_ in seqs.values() if n >= 2)
    assert len(f[F.MOVIE_ID]) == expected_windows
    targets = sum(n - 1 for n, *_ in seqs.values() if n >= 2)
    assert int((lab[F.NEXT_MOVIE] > 0).sum()) == targets  # every training event after the first
    # the target at each position is the input at the next position
    ids, nxt = f[F.MOVIE_ID], lab[F.NEXT_MOVIE]
    both = (ids[:, 1:] > 0) & (nxt[:, :-1] > 0)
    assert (ids[:, 1:][both] == nxt[:, :-1][both]).all()
    # padding only on the left; inputs and targets pad at the same positions
    assert ((ids > 0) == (nxt > 0)).all()
    assert (np.diff((ids > 0).astype(int), axis=1) >= 0).all()
    newest = config.replace(tiny_cfg, {"data.all_windows": False})
    f1, _ = collect(make_dataset(newest, "train", batch_size=16, shuffle=False))
    assert len(f1[F.MOVIE_ID]) == sum(1 for n, *_ in seqs.values() if n >= 2)


def test_oov_movie_maps_to_one(tmp_path):
    folder = tmp_path / "raw"
    write_dat(folder, "movies.dat", [f"{m}::Movie {m} (1995)::Drama" for m in range(1, 5)])
    write_dat(folder, "users.dat", ["1::F::1::10::48067"])
    write_dat(folder, "ratings.dat", ["1::1::5::10", "1::2::4::20", "1::3::3::30", "1::4::3::40"])
    prep.prepare(folder, tmp_path / "p", num_shards=1)
    cfg = config.replace(
        config.tiny(), {"data.prepared_dir": str(tmp_path / "p"), "model.max_len": 4}
    )
    f, lab = next(iter(make_dataset(cfg, "test")))
    assert f[F.MOVIE_ID].numpy().tolist() == [[0, 2, 3, F.OOV]]  # movie 3 was only in validation
    assert lab[F.NEXT_MOVIE].numpy().tolist() == [F.OOV]
    assert f[F.YEAR].numpy()[0, -1] == F.UNKNOWN and f[F.GENRES].numpy()[0, -1].sum() == 0


def test_seeded_shuffle_is_reproducible(tiny_cfg):
    first = [
        collect(make_dataset(tiny_cfg, "train", batch_size=8))[0][F.MOVIE_ID] for _ in range(2)
    ]
    np.testing.assert_array_equal(first[0], first[1])
    other = config.replace(tiny_cfg, {"train.seed": 7})
    assert not np.array_equal(
        first[0], collect(make_dataset(other, "train", batch_size=8))[0][F.MOVIE_ID]
    )


@pytest.mark.parametrize("workers", [2, 3])  # 2 shards: file sharding; 3 workers: example sharding
def test_workers_read_disjoint_data(tiny_cfg, workers):
    seen = []
    for i in range(workers):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=workers, input_pipeline_id=i, num_replicas_in_sync=workers
        )
        f, _ = collect(
            make_dataset(tiny_cfg, "validation", input_context=ctx, batch_size=workers * 2)
        )
        seen.append(set(f[F.USER_ID].tolist()))
    assert sum(len(s) for s in seen) == 30
    assert len(set.union(*seen)) == 30


def test_bad_split_and_missing_folder(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        make_dataset(tiny_cfg, "dev")
    with pytest.raises(DataError, match="run python -m pipelines.prepare"):
        make_dataset(config.replace(tiny_cfg, {"data.prepared_dir": str(tmp_path)}), "train")


def test_length_buckets_only_cut_padding(tiny_cfg):
    from bst.pipeline import bucket_boundaries

    plain = config.replace(tiny_cfg, {"data.bucket_by_length": False})
    f0, l0 = collect(make_dataset(plain, "train", batch_size=4, shuffle=False))
    widths, examples = set(), []
    for f, lab in make_dataset(tiny_cfg, "train", batch_size=4, shuffle=False):
        ids = f[F.MOVIE_ID].numpy()
        widths.add(ids.shape[1])
        assert ids.shape == lab[F.NEXT_MOVIE].shape == f[F.GENRES].shape[:2]
        bounds = [0] + bucket_boundaries(6)
        lower = bounds[bounds.index(ids.shape[1]) - 1]
        assert ((ids > 0).sum(axis=1) > lower).all()  # every example belongs to this bucket
        examples += [tuple(left_pad(ids, 6)[i]) for i in range(len(ids))]
    assert widths <= set(bucket_boundaries(6)) and len(widths) > 1
    assert sorted(examples) == sorted(map(tuple, f0[F.MOVIE_ID]))
