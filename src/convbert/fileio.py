"""Atomic writes: a reader never sees a half-written file or directory."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path`, on error it is removed.

    keep_existing: start from a copy of the files already in `path` (new files overwrite them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        if keep_existing and path.is_dir():
            shutil.copytree(path, tmp, dirs_exist_ok=True)
        yield tmp
        _honour_umask(tmp)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _honour_umask(root: Path) -> None:
    """Modes as open()/mkdir() would give them: mkdtemp makes 0700 and some writers (safetensors) 0600."""
    umask = current_umask()
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            full = 0o777 if p.is_dir() or os.stat(p).st_mode & 0o111 else 0o666
            os.chmod(p, full & ~umask)


def current_umask() -> int:
    """The process umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.chmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600 whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def parse_json(text: str, **kw: Any) -> Any:
    """json.loads for untrusted files, with the limits of Python's parser turned into JSONDecodeErrors at the
    place: a number of 4,000 digits or more, nesting too deep for the parser."""
    try:
        return json.loads(text, parse_int=json_int, **kw)
    except _TooLong:
        found = re.search(r"\d{4000,}", text)
        raise json.JSONDecodeError("a number of 4,000 digits or more", text, found.start() if found else 0) from None
    except RecursionError:
        raise json.JSONDecodeError("nested too deep", text, _too_deep_at(text)) from None


class _TooLong(ValueError):
    pass


def _too_deep_at(text: str, limit: int = 500) -> int:
    """The offset of the first bracket nested `limit` deep (outside strings)."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), escaped or ch != '"'
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth >= limit:
                return i
        elif ch in "]}":
            depth -= 1
    return 0


def json_int(digits: str) -> int:
    """An integer literal (int() refuses 4,300 digits and more)."""
    if len(digits) >= 4000:
        raise _TooLong(digits[:20])
    return int(digits)


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from a file; InputError naming the file (and `what` it should hold) otherwise."""
    path = Path(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read {what}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    return data


def read_csv_lines(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(1-based line, row) of the complete rows of a UTF-8 CSV log: a last line cut short by a kill (no line end)
    and rows with fields missing or too many are dropped, with a warning; InputError naming the file and line
    for text that is not UTF-8 or not CSV."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise utf8_error(path, e) from None
    if text and not text.endswith("\n"):
        cut = text[text.rfind("\n") + 1 :]
        log.warning("%s: dropping its last line %r, cut short (the run was stopped while writing it)", path, cut[:60])
        text = text[: len(text) - len(cut)]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        for r in reader:
            if None in r or None in r.values():
                log.warning("%s:%d: dropping a row with %s fields", path, reader.line_num,
                            "too many" if None in r else "too few")  # fmt: skip
            else:
                rows.append((reader.line_num, r))
    except csv.Error as e:
        raise InputError(f"{path}:{reader.line_num}: not a valid CSV row: {e}") from None
    return rows


def utf8_error_line(path: str | Path) -> tuple[int, str] | None:
    """(1-based line, reason) of the first bytes of a file that are not valid UTF-8; None if all of it is.

    Lines end at "\\n". For the error path of text-mode readers, whose decoding runs ahead of the lines they have
    handed out (by a buffer of up to thousands of lines)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return lineno, e.reason
    return None


def utf8_error(path: str | Path, error: UnicodeDecodeError) -> InputError:
    """The InputError for a text-mode reader's UnicodeDecodeError: `FILE:LINE: not valid UTF-8: REASON`, LINE the
    line holding the bad byte."""
    try:
        found = utf8_error_line(path)
    except OSError:
        found = None
    if found is None:
        return InputError(f"{path}: not valid UTF-8: {error.reason}")
    return InputError(f"{path}:{found[0]}: not valid UTF-8: {found[1]}")
