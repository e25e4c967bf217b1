"""The project's own error types: what a command line reports in one line with exit code 2.

* :class:`DataError`: bad input data (a file, a line, a value);
* :class:`UsageError`: a bad flag, config value or argument.

Each CLI catches these two (and only these) and prints ``error: <message>``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: says which file, which line (when there is one) and what was expected.

    ``str(err)`` is a single line such as
    ``ratings.dat line 1042: expected 4 fields separated by '::', got 3``.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else Path(path)
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path.name if line is None else f"{self.path.name} line {line}"
            where += ": "
        super().__init__(f"{where}{message}")


class UsageError(ValueError):
    """A user mistake on the command line or in a config: one line on stderr, exit code 2."""


def decode_text(raw: bytes, path: str | Path, encoding: str, expected: str) -> str:
    """``raw`` decoded as ``encoding``, or a :class:`DataError` naming the line of the first
    bad byte: ``users.dat line 2: byte 0xff is not valid ascii; expected <expected>``."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"byte 0x{raw[err.start]:02x} is not valid {encoding}; expected {expected}",
            path,
            line,
        ) from None


def writable_dir(path: str | Path, what: str) -> Path:
    """``path`` as a folder this process can write into (created if missing), or a
    :class:`UsageError` saying why not: it is a file, a parent is a file, or no permission.

    Nothing is written besides the (empty) folder and a probe file that is removed again.
    """
    import os
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        parent = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise UsageError(f"cannot create {what} {path}: {parent} is a file") from None
    except OSError as err:
        raise UsageError(f"cannot create {what} {path}: {err.strerror or err}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(f"cannot write into {what} {path}: {err.strerror or err}") from None
    return path


INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class cli_errors:  # noqa: N801 - used as ``with cli_errors(...):``
    """The one way a command line ends on a user's mistake or Ctrl-C.

    ``DataError``/``UsageError`` (and any extra types given) → ``error: <message>`` on
    stderr, exit 2. ``KeyboardInterrupt`` → ``interrupted[; <hint>]``, exit 130, no
    traceback. Anything else is a bug and keeps its traceback.
    """

    def __init__(self, *extra: type[BaseException], interrupted: str = ""):
        self.types = (DataError, UsageError, *extra)
        self.hint = interrupted

    def __enter__(self) -> cli_errors:
        return self

    def __exit__(self, kind, err, tb) -> bool:
        import sys

        if kind is None:
            return False
        if issubclass(kind, KeyboardInterrupt):
            print(f"\ninterrupted{'; ' + self.hint if self.hint else ''}", file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None
        if issubclass(kind, self.types):
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        return False
