"""Line-numbered iteration over JSONL files and over the members of a JSON array or object.

Readers need to say *where* a malformed item is. ``json.load`` loses positions, so whole-file JSON
is walked member by member with ``JSONDecoder.raw_decode`` (each member is decoded on its own and
its starting line is known). A JSON syntax error stops the file (a :class:`UserError` naming the
file and line: nothing after it can be trusted); a line of a JSONL file that is not JSON is one
:class:`BadRecord` and reading goes on. ``.gz`` files are decompressed on the fly.

JSON (not JSONL) files are read whole, so very large corpora should be JSONL.

Test: ``pytest tests/data/test_readers.py``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from distillm_edge.data.records import BadRecord
from distillm_edge.errors import UserError

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: Path) -> Iterator[tuple[int, str | BadRecord]]:
    """``(line number, text)`` for every non-blank line; a line that is not UTF-8 is a BadRecord."""
    lineno = 0
    try:
        with open_binary(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield lineno, BadRecord(f"{path}:{lineno}", f"not valid UTF-8 (byte {exc.start})")
                    continue
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}:{lineno + 1}: cannot read the file ({exc}); is it truncated or not gzip?") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRecord]]:
    """``(line number, object)`` per line of a JSONL file; bad lines come back as BadRecord."""
    for lineno, line in iter_lines(path):
        if isinstance(line, BadRecord):
            yield lineno, line
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            yield lineno, BadRecord(f"{path}:{lineno}", f"not valid JSON ({msg})")
            continue
        if not isinstance(obj, dict):
            yield lineno, BadRecord(f"{path}:{lineno}", f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


def read_text(path: Path) -> str:
    """The whole file as text (UTF-8, BOM allowed); errors name the file."""
    try:
        with open_binary(path) as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read the file ({exc}).") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8.") from None


class _Walker:
    """Position + line bookkeeping over one JSON text."""

    def __init__(self, text: str, path: Path):
        self.text, self.path = text, path
        self._pos, self._line = 0, 1
        self.descended = False

    def line(self, pos: int) -> int:
        if pos >= self._pos:
            self._line += self.text.count("\n", self._pos, pos)
        else:
            self._line = self.text.count("\n", 0, pos) + 1
        self._pos = pos
        return self._line

    def fail(self, pos: int, what: str) -> UserError:
        return UserError(f"{self.path}:{self.line(pos)}: not valid JSON ({what}); fix the file or convert it to JSONL.")

    def skip_ws(self, pos: int) -> int:
        text = self.text
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        return pos

    def expect(self, pos: int, chars: str) -> str:
        if pos >= len(self.text):
            raise self.fail(pos, "unexpected end of file")
        ch = self.text[pos]
        if ch not in chars:
            raise self.fail(pos, f"expected one of {' '.join(chars)} but found {ch!r}")
        return ch

    def decode(self, pos: int) -> tuple[Any, int]:
        try:
            return _DECODER.raw_decode(self.text, pos)
        except json.JSONDecodeError as exc:
            raise self.fail(exc.pos, exc.msg) from None
        except RecursionError:
            raise self.fail(pos, "nested too deeply") from None

    def members(self, pos: int, descend: str | None = None):
        """Yield ``(key or index, value, line)`` for each member of the container at ``pos``.

        With ``descend``, the member under that key is walked into instead (its own members are
        yielded) and ``self.descended`` is set. Returns the position after the container.
        """
        pos = self.skip_ws(pos)
        opener = self.expect(pos, "[{")
        closer = "]" if opener == "[" else "}"
        pos = self.skip_ws(pos + 1)
        if pos < len(self.text) and self.text[pos] == closer:
            return pos + 1
        index = 0
        while True:
            key: Any = index
            if opener == "{":
                self.expect(pos, '"')
                key, pos = self.decode(pos)
                pos = self.skip_ws(pos)
                self.expect(pos, ":")
                pos = self.skip_ws(pos + 1)
            if descend is not None and key == descend:
                self.descended = True
                end = yield from self.members(pos)
            else:
                line = self.line(pos)
                value, end = self.decode(pos)
                yield key, value, line
            pos = self.skip_ws(end)
            if self.expect(pos, "," + closer) == closer:
                return pos + 1
            pos = self.skip_ws(pos + 1)
            index += 1

    def top(self) -> int:
        pos = self.skip_ws(0)
        if pos >= len(self.text):
            raise UserError(f"{self.path}: the file is empty.")
        return pos


def json_members(path: Path, text: str | None = None) -> Iterator[tuple[Any, Any, int]]:
    """``(key or index, value, line)`` for each member of the file's top-level array or object."""
    walker = _Walker(read_text(path) if text is None else text, path)
    yield from walker.members(walker.top())


def json_members_under(path: Path, key: str, text: str | None = None) -> Iterator[tuple[Any, Any, int]]:
    """Members of the container stored under top-level ``key`` (e.g. SQuAD's ``data`` array)."""
    walker = _Walker(read_text(path) if text is None else text, path)
    walker.descended = False
    yield from walker.members(walker.top(), descend=key)
    if not walker.descended:
        raise UserError(f"{path}: expected a top-level '{key}' key (SQuAD layout) but found none.")


def first_member(path: Path, text: str) -> tuple[str, Any]:
    """``("[" or "{", first member value or None)`` for format detection; decodes one member only."""
    walker = _Walker(text, path)
    pos = walker.top()
    opener = walker.expect(pos, "[{")
    for key, value, _ in walker.members(pos):
        return opener, (key, value)
    return opener, None
