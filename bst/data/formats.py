"""The one table of input formats and downloadable datasets, and how a folder is resolved.

A :class:`Format` knows the files that mark it and how to read them (each reader
returns the same validated tables, :class:`bst.data.movielens.MovieLens`); a
:class:`Dataset` is a GroupLens release: its zip, its md5 and the folder it unpacks
to. :func:`resolve` turns ``--data-dir``/``--format``/``--dataset`` into one format and
one folder, downloading only into a folder that holds no other data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bst.data import interactions, ml100k, mlcsv, sasrec
from bst.data import movielens as ml
from bst.data.tabular import TABLE_SUFFIXES
from bst.errors import DataError, UsageError

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class Options:
    """What a reader may need beyond its folder."""

    side_data_dir: str = ""
    columns: interactions.Columns = field(default_factory=interactions.Columns)


@dataclass(frozen=True)
class Format:
    """An input format: the files that mark it (all required) and its reader.

    ``marker``: the one file whose presence says "this format" (the others are then
    required, and their absence is an error naming them); ``load(folder, options)``
    returns the tables and the input files read (for the manifest's checksums).
    """

    name: str
    files: tuple[str, ...]
    describe: str
    load: Callable[[Path, Options], tuple[ml.MovieLens, dict[str, Path]]]
    marker: str = ""
    excludes: tuple[str, ...] = ()  # files whose presence means another format

    def matches(self, folder: Path) -> bool:
        """Whether ``folder`` holds this format's marker (and none of its exclusions)."""
        if self.name == "interactions":
            return any((folder / f"interactions{s}").is_file() for s in TABLE_SUFFIXES)
        marked = (folder / (self.marker or self.files[0])).is_file()
        return marked and not any((folder / n).is_file() for n in self.excludes)

    def complete(self, folder: Path) -> bool:
        return self.matches(folder) and all((folder / n).is_file() for n in self.files)

    def check_complete(self, folder: Path) -> None:
        missing = [n for n in self.files if not (folder / n).is_file()]
        if missing:
            present = [n for n in self.files if (folder / n).is_file()]
            raise DataError(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing in "
                f"{folder} (found {', '.join(present)}); format {self.name} needs "
                f"{', '.join(self.files)}",
            )


def _files(folder: Path, names) -> dict[str, Path]:
    return {n: folder / n for n in names if (folder / n).is_file()}


def _load_ml1m(folder: Path, _: Options):
    return ml.load_movielens(folder), _files(folder, ml.ML1M_FILES)


def _load_ml10m(folder: Path, _: Options):
    return ml.load_ml10m(folder), _files(folder, ml.ML10M_FILES)


def _load_ml100k(folder: Path, _: Options):
    return ml100k.load_ml100k(folder), _files(folder, (*ml100k.FILES, ml100k.GENRE_FILE))


def _load_mlcsv(folder: Path, _: Options):
    return mlcsv.load_mlcsv(folder), _files(folder, mlcsv.FILES)


def _load_sasrec(folder: Path, options: Options):
    inputs = _files(folder, (sasrec.SASREC_FILE, sasrec.ITEM_MAP, sasrec.USER_MAP))
    side = options.side_data_dir
    if side:
        inputs.update({n: Path(side) / n for n in ("users.dat", "movies.dat")})
    return sasrec.load_sasrec(folder, side or None), inputs


def _load_interactions(folder: Path, options: Options):
    tables = interactions.files(folder)
    return interactions.load_interactions(folder, options.columns), {
        p.name: p for p in tables.values()
    }


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ml1m", ml.ML1M_FILES, "MovieLens 1M: ratings.dat, users.dat, movies.dat",
               _load_ml1m, marker="users.dat"),
        Format("ml-10m", ml.ML10M_FILES, "MovieLens 10M: ratings.dat, movies.dat, tags.dat "
               "(no users.dat)", _load_ml10m, marker="tags.dat", excludes=("users.dat",)),
        Format("ml-100k", ml100k.FILES, "MovieLens 100K: u.data, u.item, u.user", _load_ml100k),
        Format("ml-csv", mlcsv.FILES, "MovieLens 20M/25M/32M/latest(-small): ratings.csv, "
               "movies.csv", _load_mlcsv),
        Format("sasrec", (sasrec.SASREC_FILE,), "the SASRec benchmark file: ml-1m.txt",
               _load_sasrec),
        Format("interactions", (), "a generic table: interactions.csv, .tsv or .parquet "
               "(+ optional items.*, users.*)", _load_interactions),
    )
}  # fmt: skip
# Other spellings of a format: the release names read by the same reader.
ALIASES = {
    "ml-1m": "ml1m",
    **{n: "ml-csv" for n in ("ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small")},
}
FORMAT_CHOICES = (AUTO, *FORMATS, *ALIASES)


@dataclass(frozen=True)
class Dataset:
    """A GroupLens release: ``<url>`` unpacks to ``<folder>/``; ``md5`` is the published
    checksum of the zip (empty: read the ``.md5`` file GroupLens publishes beside it,
    for the releases it updates)."""

    name: str
    format: str
    folder: str
    md5: str = ""
    max_unpacked_bytes: int = 2 << 30

    @property
    def url(self) -> str:
        return f"https://files.grouplens.org/datasets/movielens/{self.name}.zip"


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("ml-100k", "ml-100k", "ml-100k", "0e33842e24a9c977be4e0107933c0723"),
        Dataset("ml-1m", "ml1m", "ml-1m", "c4d9eecfca2ab87c1945afe126590906"),
        Dataset("ml-10m", "ml-10m", "ml-10M100K", "ce571fd55effeba0271552578f2648bd"),
        Dataset("ml-20m", "ml-csv", "ml-20m", "cd245b17a1ae2cc31bb14903e1204af3", 4 << 30),
        Dataset("ml-25m", "ml-csv", "ml-25m", "6b51fb2759a8657d3bfcbfc42b592ada", 4 << 30),
        Dataset("ml-32m", "ml-csv", "ml-32m", "", 4 << 30),
        Dataset("ml-latest", "ml-csv", "ml-latest", "", 8 << 30),
        Dataset("ml-latest-small", "ml-csv", "ml-latest-small", ""),
    )
}
DEFAULT_DATASET = "ml-1m"


def canonical(fmt: str) -> str:
    """A format name or alias → the format's name (``auto`` stays ``auto``)."""
    name = ALIASES.get(fmt, fmt)
    if name != AUTO and name not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMAT_CHOICES)}")
    return name


def detect(folder: Path) -> list[Format]:
    """The formats whose marker files are in ``folder`` itself."""
    if not folder.is_dir():
        return []
    found = [f for f in FORMATS.values() if f.matches(folder)]
    if not found and (folder / "ratings.dat").is_file():
        found = [FORMATS["ml1m"]]  # ratings.dat alone: ML-1M with files missing (said below)
    return found


def _contents(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    return shown or "nothing"


def _known() -> str:
    return "; ".join(f.describe for f in FORMATS.values())


def _holds_data(folder: Path) -> bool:
    """Whether ``folder`` holds files a download could be mistaken for or mixed with
    (anything but downloaded zips, their checksums and bst's own temporary folders)."""
    if not folder.is_dir():
        return False
    for p in folder.iterdir():
        if p.name.startswith(".") or p.name.endswith((".zip", ".zip.md5", ".part")):
            continue
        if p.is_dir() and p.name in {d.folder for d in DATASETS.values()}:
            continue
        return True
    return False


def resolve(data_dir: str | Path, fmt: str = AUTO, dataset: str = "") -> tuple[Format, Path]:
    """The format and folder to read for ``--data-dir``, ``--format`` and ``--dataset``.

    * ``dataset`` given: its files in ``data_dir`` or ``data_dir/<its folder>``; else
      its zip is downloaded into ``data_dir`` (never when ``data_dir`` holds other data).
    * otherwise the format is detected from the files in ``data_dir`` (or in the one
      release folder inside it); ``fmt`` names it explicitly. A folder with nothing
      (or only downloaded zips) gets ML-1M, as before; a folder whose files match no
      format is refused with what was found.
    """
    folder = Path(data_dir).expanduser()
    fmt = canonical(fmt)
    if dataset:
        if dataset not in DATASETS:
            raise UsageError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
        ds = DATASETS[dataset]
        if fmt not in (AUTO, ds.format):
            raise UsageError(f"--dataset {dataset} is in format {ds.format}, not --format {fmt}")
        return FORMATS[ds.format], _ensure(folder, ds)
    subfolders = [folder] + [folder / d.folder for d in DATASETS.values()]
    if fmt != AUTO:  # named: the first folder with any of its files
        named = FORMATS[fmt]
        for path in subfolders:
            if named.matches(path) or any((path / n).is_file() for n in named.files):
                named.check_complete(path)
                return named, path
        others = [(f, p) for p in subfolders for f in detect(p)]
        if others:
            raise DataError(
                f"{others[0][1]} holds {others[0][0].describe}, not format {fmt}: "
                f"drop --format (it is detected) or point --data-dir at {fmt} files",
            )
    candidates = [(f, folder) for f in detect(folder)]
    if not candidates:
        candidates = [(f, p) for p in subfolders[1:] for f in detect(p)]
    if len(candidates) > 1:
        where = ", ".join(f"{f.name} in {p}" for f, p in candidates)
        raise DataError(
            f"several datasets found ({where}): name one with --format or --dataset, or point "
            "--data-dir at its folder",
        )
    if candidates:
        found, path = candidates[0]
        found.check_complete(path)
        log.info("%s: format %s", path, found.name)
        return found, path
    if fmt not in (AUTO, "ml1m"):
        raise DataError(
            f"no {FORMATS[fmt].describe} in {folder} "
            f"(found {_contents(folder) if folder.is_dir() else 'no such folder'})",
        )
    if _holds_data(folder):
        raise DataError(
            f"no dataset bst reads in {folder} (found {_contents(folder)}); bst reads {_known()}. "
            "Name the format with --format, or use --dataset NAME with an empty folder "
            "to download a MovieLens release",
        )
    return FORMATS["ml1m"], _ensure(folder, DATASETS[DEFAULT_DATASET])


def _ensure(folder: Path, ds: Dataset) -> Path:
    from bst.data.download import ensure_dataset

    fmt = FORMATS[ds.format]
    if fmt.complete(folder):
        return folder
    if fmt.matches(folder):
        fmt.check_complete(folder)
    if fmt.matches(folder / ds.folder):
        fmt.check_complete(folder / ds.folder)
        return folder / ds.folder
    others = detect(folder)
    if others:
        raise DataError(
            f"{folder} holds {others[0].describe}: not downloading {ds.name} into it; "
            "use another --data-dir",
        )
    return ensure_dataset(folder, ds, fmt.complete)
