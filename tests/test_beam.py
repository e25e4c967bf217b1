"""The prepare step on Apache Beam (``--runner beam``) against the in-memory one.

Needs the ``beam`` extra (CI installs it); the tests that need Beam skip without it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bst.data import synthetic_scale
from bst.data.prepare import prepare
from bst.data.synthetic import generate
from bst.errors import DataError, UsageError


def _beam():
    return pytest.importorskip("apache_beam", reason="the beam extra is not installed")


def _records(folder: Path, split: str) -> list[bytes]:
    import tensorflow as tf

    shards = sorted((folder / "tfrecords").glob(f"{split}-*.tfrecord"))
    return sorted(r.numpy() for r in tf.data.TFRecordDataset([str(s) for s in shards]))


def _same_contents(memory: Path, beam: Path) -> None:
    """Equal vocabularies, side tables, split sizes, sequences and decoded records."""
    for name in ("vocab", "movies.tsv", "users.tsv"):
        for path in (
            sorted((memory / name).rglob("*")) if (memory / name).is_dir() else [memory / name]
        ):
            other = beam / path.relative_to(memory)
            assert other.read_bytes() == path.read_bytes(), path.relative_to(memory)
    a, b = ((p / "sequences.tsv").read_text(encoding="utf-8").splitlines() for p in (memory, beam))
    assert a[0] == b[0] and sorted(a[1:]) == sorted(b[1:]) and len(a) > 1
    for split in ("train", "validation", "test"):
        shards = sorted(p.name for p in (beam / "tfrecords").glob(f"{split}-*"))
        assert shards == sorted(p.name for p in (memory / "tfrecords").glob(f"{split}-*"))
        records = _records(memory, split)
        assert records and _records(beam, split) == records, split
    m, n = (json.loads((p / "manifest.json").read_text()) for p in (memory, beam))
    assert n["config"].pop("runner") == "beam"
    for key in ("outputs", "inputs"):
        m.pop(key), n.pop(key)
    assert n == m


@pytest.fixture(scope="module")
def ml1m(tmp_path_factory):
    """Tiny ML-1M-format files with what the reconciliation counts: a rating of an
    unknown movie and one of an unknown user, a duplicate pair and a tie in time."""
    raw = tmp_path_factory.mktemp("beam") / "ml1m"
    generate(raw, users=40, movies=30, seed=5)
    ratings = raw / "ratings.dat"
    lines = ratings.read_text().splitlines()
    user, movie, _, ts = lines[10].split("::")
    lines += [
        f"{user}::9999::4::{ts}",  # unknown movie
        f"99999::{movie}::3::{ts}",  # unknown user
        f"{user}::{movie}::2::{ts}",  # a duplicate pair, tied in time with its first
    ]
    ratings.write_text("\n".join(lines) + "\n")
    return raw


@pytest.mark.slow
def test_beam_prepares_ml1m_as_in_memory(ml1m, tmp_path):
    _beam()
    from bst.data import beam, beam_steps

    memory = tmp_path / "memory"
    prepare(ml1m, memory, num_shards=2)
    old = beam.RANGE_BYTES, beam_steps.PIECE_BYTES
    beam.RANGE_BYTES, beam_steps.PIECE_BYTES = 4096, 1024  # many ranges and pieces on tiny data
    try:
        manifest = beam.prepare(ml1m, tmp_path / "new" / "beam", num_shards=2)
    finally:
        beam.RANGE_BYTES, beam_steps.PIECE_BYTES = old
    report = manifest["read_report"]
    assert report["unknown_movie_ratings"] == 1 and report["unknown_user_ratings"] == 1
    assert report["duplicate_pairs"] >= 1
    _same_contents(memory, tmp_path / "new" / "beam")  # its parent made, as in memory


@pytest.mark.slow
def test_beam_prepares_the_csv_releases_as_in_memory(tmp_path):
    _beam()
    from bst.data import beam, beam_steps

    raw = tmp_path / "raw"
    synthetic_scale.generate_at_scale(raw, users=50, movies=80, ratings=1500, seed=2)
    (raw / "links.csv").write_text("movieId,imdbId,tmdbId\n")  # noted as not used
    prepare(raw, tmp_path / "memory", num_shards=3)
    old = beam.RANGE_BYTES, beam_steps.PIECE_BYTES
    beam.RANGE_BYTES, beam_steps.PIECE_BYTES = 8192, 2048
    try:
        beam.prepare(raw, tmp_path / "beam", num_shards=3)
    finally:
        beam.RANGE_BYTES, beam_steps.PIECE_BYTES = old
    _same_contents(tmp_path / "memory", tmp_path / "beam")


@pytest.mark.slow
def test_a_bad_line_deep_in_the_file_names_its_line_and_keeps_the_old_outputs(ml1m, tmp_path):
    _beam()
    from bst.data import beam

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("users.dat", "movies.dat"):
        (raw / name).write_bytes((ml1m / name).read_bytes())
    lines = (ml1m / "ratings.dat").read_text().splitlines()
    bad = len(lines) - 5
    lines[bad] = lines[bad].replace("::", "::x", 1)
    (raw / "ratings.dat").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    prepare(ml1m, out, num_shards=1)
    before = (out / "manifest.json").read_bytes()
    old = beam.RANGE_BYTES
    beam.RANGE_BYTES = 2048
    try:
        with pytest.raises(DataError) as err:
            beam.prepare(raw, out, num_shards=1)
    finally:
        beam.RANGE_BYTES = old
    assert err.value.line == bad + 1 and "ratings.dat" in str(err.value)
    assert "MovieID" in err.value.reason
    assert (out / "manifest.json").read_bytes() == before
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_the_runner_flag_is_checked_before_any_work(tmp_path, monkeypatch, capsys):
    from pipelines import prepare as cli

    args = ["--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)]
    with pytest.raises(UsageError, match="add --runner beam"):
        cli.parse([*args, "--", "--direct_num_workers=2"])
    with pytest.raises(UsageError, match="--catalog.*needs --runner in-memory"):
        cli.parse([*args, "--runner", "beam", "--catalog", __file__])
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if the extra were absent
    with pytest.raises(UsageError, match=r"pip install -e '\.\[beam\]'"):
        cli.parse([*args, "--runner", "beam"])


def test_beam_refuses_options_it_does_not_know(tmp_path):
    _beam()
    from pipelines import prepare as cli

    args = ["--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--runner", "beam"]
    assert cli.parse([*args, "--", "--direct_num_workers=2"]).beam_args == [
        "--direct_num_workers=2"
    ]
    with pytest.raises(UsageError, match="not known to Beam: --no_such_option"):
        cli.parse([*args, "--", "--no_such_option=1"])


def test_beam_refuses_formats_it_does_not_read(tmp_path):
    _beam()
    from bst.data import beam

    sasrec = tmp_path / "sasrec"
    sasrec.mkdir()
    (sasrec / "ml-1m.txt").write_text("1 1\n1 2\n1 3\n")
    with pytest.raises(UsageError, match="formats ml1m, ml-csv.*--runner in-memory"):
        beam.prepare(sasrec, tmp_path / "out")


@pytest.mark.slow
def test_bst_train_prepares_with_the_runner_it_is_given(tmp_path):
    _beam()
    from bst import config
    from bst.data.prepare import ensure_prepared

    cfg = config.replace(config.tiny(), {"data.runner": "beam"})
    cfg = ensure_prepared(cfg, tmp_path / "run")
    manifest = json.loads((Path(cfg.data.prepared_dir) / "manifest.json").read_text())
    assert manifest["config"]["runner"] == "beam" and manifest["counts"]["ratings"] > 0


def _remote_filesystem(root: Path):
    """A Beam filesystem of scheme ``bsttest://`` kept in ``root``: what a bucket is to
    the pipeline (paths with a scheme, no local folders), without a cloud."""
    from apache_beam.io.filesystem import FileMetadata
    from apache_beam.io.localfilesystem import LocalFileSystem

    prefix = "bsttest://"

    def local(path: str) -> str:
        return str(root / path[len(prefix) :]) if path.startswith(prefix) else path

    def remote(path: str) -> str:
        return prefix + str(Path(path).relative_to(root))

    class Remote(LocalFileSystem):
        @classmethod
        def scheme(cls):
            return "bsttest"

        def join(self, basepath, *paths):
            return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

        def split(self, path):
            head, _, tail = path.rstrip("/").rpartition("/")
            return head, tail

        def mkdirs(self, path):
            return super().mkdirs(local(path))

        def _list(self, dir_or_prefix):
            for m in super()._list(local(dir_or_prefix)):
                yield FileMetadata(remote(m.path), m.size_in_bytes, m.last_updated_in_seconds)

        def create(self, path, *args, **kwargs):
            return super().create(local(path), *args, **kwargs)

        def open(self, path, *args, **kwargs):
            return super().open(local(path), *args, **kwargs)

        def copy(self, sources, destinations):
            return super().copy([local(p) for p in sources], [local(p) for p in destinations])

        def rename(self, sources, destinations):
            return super().rename([local(p) for p in sources], [local(p) for p in destinations])

        def exists(self, path):
            return super().exists(local(path))

        def size(self, path):
            return super().size(local(path))

        def last_updated(self, path):
            return super().last_updated(local(path))

        def checksum(self, path):
            return super().checksum(local(path))

        def metadata(self, path):
            m = super().metadata(local(path))
            return FileMetadata(path, m.size_in_bytes, m.last_updated_in_seconds)

        def delete(self, paths):
            return super().delete([local(p) for p in paths])

    return Remote


@pytest.mark.slow
def test_beam_reads_and_writes_through_beam_filesystems(ml1m, tmp_path):
    """--data-dir and --out with a scheme (as gs:// or s3://): read, written and
    published through Beam's filesystems, the same contents as in memory."""
    _beam()
    from bst.data import beam

    bucket = tmp_path / "bucket"
    (bucket / "raw").mkdir(parents=True)
    for name in ("ratings.dat", "users.dat", "movies.dat"):
        (bucket / "raw" / name).write_bytes((ml1m / name).read_bytes())
    remote_fs = _remote_filesystem(bucket)
    try:
        with pytest.raises(UsageError, match="needs --format"):
            beam.prepare("bsttest://raw", "bsttest://prepared")
        beam.prepare("bsttest://raw", "bsttest://prepared", fmt="ml1m", num_shards=2)
        beam.prepare("bsttest://raw", "bsttest://prepared", fmt="ml1m", num_shards=2)  # again
    finally:
        remote_fs.scheme = classmethod(lambda cls: "bsttest-retired")  # unregister it
    prepare(ml1m, tmp_path / "memory", num_shards=2)
    _same_contents(tmp_path / "memory", bucket / "prepared")
    assert not list(bucket.glob("prepared.tmp-*"))  # the staging folder is gone
