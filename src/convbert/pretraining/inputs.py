"""The input files of `convbert data prepare`: reading them into sentences and documents, and cutting them
into chunks at document boundaries.

Input: plain text (a sentence or paragraph per line, blank lines between documents), JSONL
(`.jsonl`/`.json`: one object per line, its text field is a document, its lines are its sentences), or a table
(`.parquet`/`.arrow`: each row's text column is a document, its lines are its sentences). `resolve_inputs` turns
`datasets` sources (a save_to_disk dir[#SPLIT], hub:NAME[:CONFIG][#SPLIT]; see `convbert.tabular`) into their
Arrow files.

The input is cut into chunks of about `shard_size` bytes at document boundaries (a document longer
than 4 * shard_size bytes is cut at a line boundary); a chunk is a list of `Segment`s (byte ranges of files;
row ranges of tables, which stand for their share of the file's bytes).
"""

from __future__ import annotations

import json
import mmap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InputError
from ..fileio import parse_json
from ..tabular import TABLE_SUFFIXES, check_text_column, file_rows, is_table, read_column, table_files

JSONL_SUFFIXES = (".jsonl", ".json")


class Segment(NamedTuple):
    """A byte range [start, end) of one input file that starts at line `line` (1-based); for a table, its rows
    `rows` = [first, stop) (`line` is the first, from 0) and the bytes they stand for (file size * rows / all rows)."""

    path: str
    jsonl: bool
    start: int
    end: int
    line: int
    rows: tuple[int, int] | None = None


def resolve_inputs(inputs: list[str], text_field: str) -> list[str]:
    """The input files of `inputs`: text/JSONL files as they are, `datasets` sources as their Parquet/Arrow files
    (for a hub dataset: its files in the datasets cache); every table must have a text column `text_field`."""
    files: list[str] = []
    for source in inputs:
        if not is_table(source):
            files.append(source)
            continue
        for path in table_files(source):
            check_text_column(path, text_field)
            files.append(str(path))
    return files


def _table_items(seg: Segment, text_field: str) -> Iterator[str | None]:
    """A table segment: each row's text is a document, its lines are the sentences."""
    first, stop = seg.rows
    for row, value in enumerate(read_column(Path(seg.path), text_field, first, stop), first):
        if not isinstance(value, str):
            kind = "null" if value is None else f"{type(value).__name__}, not a string"
            raise InputError(f"{seg.path}: row {row}: column {text_field!r} is {kind}")
        in_doc = False
        for sentence in value.split("\n"):
            if sentence := sentence.strip():
                in_doc = True
                yield sentence
        if in_doc:
            yield None


def _decode(raw: bytes, seg: Segment, line: int, offset: int, errors: str, counts: dict[str, int]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if errors == "strict":
            raise InputError(
                f"{seg.path}:{line}: invalid UTF-8 ({e.reason}) at byte offset {offset + e.start}; "
                "use --errors replace (errors='replace') to substitute U+FFFD"
            ) from None
    text = raw.decode("utf-8", "replace")
    counts["replaced_chars"] += text.count("\ufffd") - raw.count("\ufffd".encode())
    return text


def _json_text(text: str, seg: Segment, line: int, offset: int, text_field: str) -> str:
    try:
        obj = parse_json(text)
    except json.JSONDecodeError as e:
        at = offset + len(text[: e.pos].encode("utf-8"))
        raise InputError(f"{seg.path}:{line}: invalid JSON ({e.msg}) at byte offset {at}") from None
    if not isinstance(obj, dict) or text_field not in obj:
        raise InputError(f"{seg.path}:{line}: JSON object has no {text_field!r} field (byte offset {offset})")
    value = obj[text_field]
    if not isinstance(value, str):
        raise InputError(
            f"{seg.path}:{line}: field {text_field!r} is {type(value).__name__}, not a string (byte offset {offset})"
        )
    return value


def iter_sentences(seg: Segment, errors: str, text_field: str, counts: dict[str, int]) -> Iterator[str | None]:
    """Yield the sentences of a file segment, and None at the end of each document."""
    if seg.rows is not None:
        yield from _table_items(seg, text_field)
        return
    with open(seg.path, "rb") as f:
        f.seek(seg.start)
        data = f.read(seg.end - seg.start)
    if seg.jsonl:
        yield from _jsonl_items(data, seg, errors, text_field, counts)
        return
    try:  # one decode and split for the whole segment: no per-line Python I/O
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if errors == "strict":  # decode the offending line alone: the error names its line and byte offset
            line_start = data.rfind(b"\n", 0, e.start) + 1
            line_end = data.find(b"\n", e.start)
            _decode(
                data[line_start : len(data) if line_end < 0 else line_end],
                seg,
                seg.line + data.count(b"\n", 0, e.start),
                seg.start + line_start,
                errors,
                counts,
            )
        text = data.decode("utf-8", "replace")
        counts["replaced_chars"] += text.count("\ufffd") - data.count("\ufffd".encode())
    in_doc = False
    for line in text.split("\n"):
        if line := line.strip():
            in_doc = True
            yield line
        elif in_doc:
            in_doc = False
            yield None
    if in_doc:
        yield None


def _jsonl_items(
    data: bytes, seg: Segment, errors: str, text_field: str, counts: dict[str, int]
) -> Iterator[str | None]:
    """A JSONL segment: each object's text is a document, its lines are the sentences."""
    offset = seg.start  # of the line
    for line, raw in enumerate(data.split(b"\n"), seg.line):
        text = _decode(raw, seg, line, offset, errors, counts)
        at, offset = offset, offset + len(raw) + 1
        if not text.strip():
            continue
        in_doc = False
        for sentence in _json_text(text.rstrip("\r"), seg, line, at, text_field).split("\n"):
            if sentence := sentence.strip():
                in_doc = True
                yield sentence
        if in_doc:
            yield None


# ---------------------------------------------------------------------------------------------------
# Planning (main process): cut the input into chunks at document boundaries


def _next_cut(mm: mmap.mmap, start: int, need: int, hard: int, jsonl: bool) -> int | None:
    """Where the chunk that has `start` in it ends: after the first line ending at least `need` bytes past
    `start` that is blank (any line for JSONL), or after the first line ending `hard` bytes past it; None when
    the file ends first. Only the lines past `need` are looked at one by one."""
    n = len(mm)
    pos = start + need - 1
    while pos < n:
        nl = mm.find(b"\n", pos)
        end = n if nl < 0 else nl + 1
        if jsonl or end - start >= hard:
            return end
        prev = mm.rfind(b"\n", start, end - 1)
        if not mm[(start if prev < 0 else prev + 1) : end].strip():
            return end
        pos = end
    return None


def plan_chunks(paths: list[Path], shard_size: int, inputs: list[dict[str, Any]]) -> Iterator[list[Segment]]:
    """Cut the inputs into chunks (lists of segments) of about `shard_size` bytes at document boundaries: the
    first blank line once a chunk has `shard_size` bytes (any line for JSONL, where a line is a document; any
    line too once it has 4 x `shard_size`). Reads each file once, in C (mmap, find, count).

    Appends one manifest entry per input to `inputs`; files with no text are skipped with a warning.
    """
    segments: list[Segment] = []
    size = 0  # bytes in `segments`, which may span files
    for path in paths:
        if path.suffix.lower() in TABLE_SUFFIXES:
            for segment in _table_segments(path, shard_size - size, shard_size):
                segments.append(segment)
                size += segment.end - segment.start
                if size >= shard_size:
                    yield segments
                    segments, size = [], 0
            rows = file_rows(path)
            if not rows:
                warnings.warn(f"{path}: input table has no rows; skipped", stacklevel=2)
            entry = {"path": str(path.resolve()), "bytes": path.stat().st_size, "rows": rows}
            inputs.append({**entry, "format": path.suffix.lower()[1:], "skipped": not rows})
            continue
        jsonl = path.suffix.lower() in JSONL_SUFFIXES
        n = path.stat().st_size
        has_text = False
        if n:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                start, line = 0, 1
                while (end := _next_cut(mm, start, shard_size - size, 4 * shard_size - size, jsonl)) is not None:
                    piece = mm[start:end]
                    has_text = has_text or bool(piece.strip())
                    segments.append(Segment(str(path), jsonl, start, end, line))
                    yield segments
                    segments, size = [], 0
                    start, line = end, line + piece.count(b"\n")
                rest = bool(mm[start:n].strip()) if start < n else False
                has_text = has_text or rest
                if rest:
                    segments.append(Segment(str(path), jsonl, start, n, line))
                    size += n - start
        if not has_text:
            warnings.warn(f"{path}: input file has no text; skipped", stacklevel=2)
        inputs.append(
            {
                "path": str(path.resolve()),
                "bytes": n,
                "format": "jsonl" if jsonl else "text",
                "skipped": not has_text,
            }
        )
    if segments:
        yield segments


def _table_segments(path: Path, need: int, shard_size: int) -> Iterator[Segment]:
    """A table's rows cut into segments: the first of about `need` bytes (what the current chunk lacks), the others
    of about `shard_size` bytes, the last one what remains; a row's bytes are the file size / rows (a row is a
    document: no row is cut)."""
    rows, n = file_rows(path), path.stat().st_size
    first = 0
    while first < rows:
        start = first * n // rows
        stop = min(rows, max(first + 1, -(-(start + need) * rows // n)))
        yield Segment(str(path), False, start, stop * n // rows, first, (first, stop))
        first, need = stop, shard_size
