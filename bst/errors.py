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
