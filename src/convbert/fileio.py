"""Atomic writes: a reader never sees a half-written file or directory."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError


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


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from a file; InputError naming the file (and `what` it should hold) otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read {what}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    return data


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a CSV log (a row cut short by a kill is dropped)."""
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values() and None not in r]
