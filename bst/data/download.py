"""Get a MovieLens release onto disk: a local folder, a local zip, or a checked download.

:func:`ensure_dataset` does it for any release of :data:`bst.data.formats.DATASETS`
(the zip's published md5, pinned in that table or, for the releases GroupLens
updates, read from the ``.md5`` file published beside the zip). Resolution order for
:func:`ensure_movielens` (ML-1M) with ``folder``:

1. ``folder`` (or ``folder/ml-1m``) already holds ``ratings.dat``, ``users.dat``
   and ``movies.dat`` → use them as they are.
2. ``folder/ml-1m.zip`` exists → verify its md5, extract it safely, use it.
3. otherwise download ``ml-1m.zip`` from GroupLens into ``folder`` with a progress
   bar, verify the md5, extract. Offline, this fails with one message saying
   where to put the files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

from tqdm.auto import tqdm

from bst.data.movielens import find_movielens_files, movielens_files_present
from bst.errors import DataError
from bst.tempdirs import clean_stale, make_temp_dir, remove_temp_dir

log = logging.getLogger(__name__)

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"
ML1M_ZIP = "ml-1m.zip"
REQUIRED = ("ratings.dat", "users.dat", "movies.dat")


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: str | Path, expected: str) -> None:
    """Raise DataError when the file's md5 is not ``expected``."""
    actual = md5sum(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch: md5 is {actual}, expected {expected}. The file is corrupt "
            "or not the GroupLens release: delete it and download it again",
            path,
        )


# The real ml-1m.zip unpacks to 24 MiB; anything past this is not a MovieLens release
# (or is a zip bomb). Python's zipfile stops each member at its declared size.
MAX_UNPACKED_BYTES = 2 << 30


def size_text(size: int) -> str:
    """``size`` bytes for a person: bytes, KiB, MiB or GiB, never rounded to 0 (a
    non-zero size shows at least one significant digit)."""
    if size < 1024:
        return f"{size:,} bytes"
    for unit, scale in (("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30)):
        if size < 1024 * scale or unit == "GiB":
            value = size / scale
            return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")


def safe_extract(
    archive: str | Path, target: str | Path, max_bytes: int = MAX_UNPACKED_BYTES
) -> list[Path]:
    """Extract ``archive`` into ``target``, refusing members that would land outside it
    and archives that unpack to more than ``max_bytes`` (2 GiB by default).

    Checks every member before writing anything, so a hostile archive leaves no files.
    """
    archive, target = Path(archive), Path(target)
    root = target.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError("not a valid zip file", archive) from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            dest = (root / name).resolve()
            if os.path.isabs(name) or (dest != root and root not in dest.parents):
                raise DataError(
                    f"unsafe member {name!r} would be written outside {target}", archive
                )
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(f"unsafe member {name!r} is a symbolic link", archive)
        total = sum(info.file_size for info in zf.infolist())
        if total > max_bytes:
            biggest = max(zf.infolist(), key=lambda info: info.file_size)
            raise DataError(
                f"refusing to extract: it unpacks to {size_text(total)} (largest member "
                f"{biggest.filename!r}, {size_text(biggest.file_size)}), "
                f"{size_text(total - max_bytes)} over the {size_text(max_bytes)} limit "
                "(ml-1m.zip unpacks to 24 MiB)",
                archive,
            )
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for info in zf.infolist():
            zf.extract(info, root)
            written.append(root / info.filename)
    return written


def download(url: str, dest: str | Path, expected_md5: str | None = None, what: str = "") -> Path:
    """Download ``url`` to ``dest`` (atomically, with a progress bar), verifying the md5."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name, suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=30)
            except (urllib.error.URLError, OSError) as err:
                what = what or "ml-1m.zip, or its extracted ratings.dat, users.dat and movies.dat,"
                raise DataError(
                    f"cannot download {url} ({getattr(err, 'reason', err)}). If this machine is "
                    f"offline, put {what} in {dest.parent} (or point --data-dir / BST_DATA_DIR "
                    "at them)",
                    dest.parent,
                ) from None
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                    while block := response.read(1 << 16):
                        out.write(block)
                        bar.update(len(block))
        if expected_md5:
            verify_md5(tmp, expected_md5)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def ensure_movielens(folder: str | Path, url: str = ML1M_URL, md5: str = ML1M_MD5) -> Path:
    """A folder holding the three ML-1M ``.dat`` files, downloading them if needed
    (:func:`ensure_dataset` with ML-1M's zip, ``url`` and ``md5``)."""
    folder = Path(folder).expanduser()
    if movielens_files_present(folder):  # the user's own files: never download over them
        return find_movielens_files(folder)  # or the error naming the missing ones
    ml1m = SimpleNamespace(
        name="ml-1m", folder="ml-1m", md5=md5, url=url, max_unpacked_bytes=MAX_UNPACKED_BYTES
    )
    ensure_dataset(
        folder,
        ml1m,
        lambda path: all((path / name).is_file() for name in REQUIRED),
        what=f"{ML1M_ZIP}, or its extracted {', '.join(REQUIRED[:2])} and {REQUIRED[2]},",
    )
    return find_movielens_files(folder / "ml-1m")


_MD5_RE = __import__("re").compile(r"\b([0-9a-f]{32})\b")


def published_md5(archive: Path, url: str) -> str:
    """The md5 GroupLens publishes beside a zip (``<zip>.md5``, ``MD5 (x.zip) = <hex>``):
    read from ``<archive>.md5`` when it is there, else downloaded next to the archive."""
    sidecar = archive.with_name(archive.name + ".md5")
    if not sidecar.is_file():
        download(url + ".md5", sidecar, what=f"{archive.name} and {sidecar.name}")
    match = _MD5_RE.search(sidecar.read_text(encoding="ascii", errors="replace").lower())
    if match is None:
        raise DataError("expected a line like 'MD5 (file.zip) = <32 hex digits>'", sidecar)
    return match.group(1)


def ensure_dataset(folder: str | Path, dataset, present, what: str = "") -> Path:
    """The folder holding ``dataset``'s files (``folder/<dataset.folder>``), downloading
    and extracting its zip into ``folder`` if needed.

    ``dataset``: a :class:`bst.data.formats.Dataset`; ``present(path)``: whether ``path``
    holds its files. The zip is checked against its md5 before anything is extracted,
    and only the release's own folder is replaced. ``what``: how the offline error
    names the files to put in ``folder`` (default: the zip or its extracted folder).
    """
    folder = Path(folder).expanduser()
    target = folder / dataset.folder
    if present(target):
        return target
    archive = folder / f"{dataset.name}.zip"
    what = what or f"{archive.name} (or its extracted folder {dataset.folder}/)"
    if not archive.is_file():
        md5 = dataset.md5 or published_md5(archive, dataset.url)
        log.info("downloading %s into %s", dataset.url, folder)
        download(dataset.url, archive, md5, what=what)
    else:
        log.info("verifying %s", archive)
        verify_md5(archive, dataset.md5 or published_md5(archive, dataset.url))
    clean_stale(folder, ".extract-")
    tmp = make_temp_dir(folder, ".extract-")
    try:
        safe_extract(archive, tmp, max_bytes=dataset.max_unpacked_bytes)
        extracted = tmp / dataset.folder
        if not present(extracted):
            raise DataError(
                f"the zip holds no {dataset.folder}/ folder with the release's files", archive
            )
        target.mkdir(parents=True, exist_ok=True)
        for item in extracted.iterdir():  # only the release's own files are replaced
            item.replace(target / item.name)
    finally:
        remove_temp_dir(tmp)
    log.info("extracted %s into %s", archive.name, target)
    return target
