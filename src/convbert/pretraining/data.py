"""Pretraining data: text or JSONL files -> ELECTRA-style token-id shards, and a reader for the trainer.

Examples are built the way ELECTRA's `build_pretraining_dataset.py` (`ExampleBuilder`) builds them:
the tokenised sentences of a document accumulate until they reach the target length (max_seq_length,
or with probability 0.05 a random length in [5, max_seq_length] for the next example), then become
`[CLS] A [SEP] B [SEP]`, where A takes sentences while it stays under (target - 3) // 2 tokens, and half
of the time the sentence that crosses that length (10% of the time A takes everything: `[CLS] A [SEP]`);
A is cut to L - 2 tokens and B to L - len(A) - 3.
The end of a document flushes what has accumulated.

Input: plain text (a sentence or paragraph per line, blank lines between documents) or JSONL
(`.jsonl`/`.json`: one object per line, its text field is a document, its lines are its sentences).

The input is cut into chunks of about `shard_size` bytes at document boundaries (a document longer
than 4 * shard_size bytes is cut at a line boundary). Each chunk is processed by a worker process with
its own RNG, seeded from (seed, chunk index), and written to its own shard, so the output is the same
whatever the number of workers.

On-disk format (`out_dir/`), written atomically (the directory appears only when complete):
  manifest.json            format version, counts, settings, tokenizer vocab size/hash, shard list
  shard-NNNNN.bin          raw C-order array (rows, max_seq_length) of token ids (`dtype`: uint16 when
                           the vocab has <= 65535 tokens, else int32), padded with [PAD]
  shard-NNNNN.rows.npy     int16 (int32 when max_seq_length > 32767) array (rows, 2):
                           [number of non-pad tokens, position of the first [SEP]]
token_type_ids are 1 after the first [SEP] up to and including the second one, 0 elsewhere.
"""

from __future__ import annotations

import argparse
import array
import collections
import hashlib
import json
import mmap
import multiprocessing as mp
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from ..errors import InputError
from ..fileio import atomic_dir, atomic_write_json

FORMAT = "convbert-pretrain-shards"
FORMAT_VERSION = 1
SINGLE_SEGMENT_PROB = 0.1  # ELECTRA: the first segment takes the whole example
SHORT_TARGET_PROB = 0.05  # ELECTRA: the next example gets a random target length in [5, L]
MIN_TARGET_LENGTH = 5
DEFAULT_SHARD_SIZE = 1 << 20  # bytes of input text per chunk/shard: small enough to balance the workers
ENCODE_BATCH = 1000  # sentences per encode_batch call
JSONL_SUFFIXES = (".jsonl", ".json")
COUNT_KEYS = (
    "documents",
    "sentences",
    "examples",
    "tokens",  # tokens stored in the examples ([CLS]/[SEP]/[PAD] excluded)
    "input_tokens",  # tokens of the input sentences, before truncation
    "truncated_tokens",
    "single_segment_examples",
    "short_target_examples",  # examples built with a random target length (< L)
    "replaced_chars",
)
_CACHE_SHARDS = 256  # open memmaps kept by PretrainShards


class _Segment(NamedTuple):
    """A byte range [start, end) of one input file that starts at line `line` (1-based)."""

    path: str
    jsonl: bool
    start: int
    end: int
    line: int


class _Job(NamedTuple):
    index: int
    segments: list[_Segment]
    out_dir: str
    seed: int
    max_len: int
    dtype: str
    errors: str
    text_field: str
    tokenizer_json: str
    special_ids: dict[str, int]


def _tokenizer_json(tokenizer: str | Path) -> Path:
    """`tokenizer.json` inside a tokenizer directory (or the file itself)."""
    path = Path(tokenizer)
    return path / "tokenizer.json" if path.is_dir() else path


def vocab_hash(source: str | Path | Sequence[str]) -> str:
    """sha256 of the vocabulary in id order, one token per line, from a tokenizer.json/dir or a token list."""
    if isinstance(source, (str, Path)):
        path = _tokenizer_json(source)
        vocab = _load_tokenizer(path).get_vocab(with_added_tokens=True)
        source = sorted(vocab, key=vocab.__getitem__)
    return hashlib.sha256("\n".join(source).encode("utf-8")).hexdigest()


def _load_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 (tokenizers raises a plain Exception on a bad file)
        raise InputError(f"{path}: cannot load tokenizer: {e}") from None


def _special_ids(tokenizer: Tokenizer, path: Path) -> dict[str, int]:
    ids = {name: tokenizer.token_to_id(f"[{name.upper()}]") for name in ("pad", "unk", "cls", "sep", "mask")}
    missing = [f"[{name.upper()}]" for name in ("pad", "cls", "sep") if ids[name] is None]
    if missing:
        raise InputError(f"{path}: tokenizer has no {', '.join(missing)} token")
    return {name: i for name, i in ids.items() if i is not None}


# ---------------------------------------------------------------------------------------------------
# Example building (one chunk, in a worker process)


class ExampleBuilder:
    """ELECTRA's ExampleBuilder: packs the sentences of a document into [CLS] A [SEP] B [SEP] examples.

    `emit(first, second)` receives each example's segments (token ids, truncated; `second` may be empty).
    """

    def __init__(self, max_len: int, rng: random.Random, emit: Callable[[list[int], list[int]], None]):
        self.max_len = max_len
        self.rng = rng
        self.emit = emit
        self.counts = dict.fromkeys(COUNT_KEYS, 0)  # the chunk's counts; the worker fills in the input ones
        self._sentences: list[list[int]] = []
        self._length = 0
        self._target = max_len

    def add_sentence(self, ids: list[int]) -> None:
        if not ids:
            return
        self._sentences.append(ids)
        self._length += len(ids)
        if self._length >= self._target:
            self._create_example()

    def end_document(self) -> None:
        if self._length:
            self._create_example()

    def _create_example(self) -> None:
        rng = self.rng
        single = rng.random() < SINGLE_SEGMENT_PROB
        first_target = float("inf") if single else (self._target - 3) // 2
        first: list[int] = []
        second: list[int] = []
        for sentence in self._sentences:
            # A takes the sentence if A is empty, if A stays under its target, or half of the time
            # when it would go over (as long as B is still empty and A is under its target).
            if (
                not first
                or len(first) + len(sentence) < first_target
                or (not second and len(first) < first_target and rng.random() < 0.5)
            ):
                first += sentence
            else:
                second += sentence
        first = first[: self.max_len - 2]
        second = second[: max(0, self.max_len - len(first) - 3)]

        c = self.counts
        c["examples"] += 1
        c["input_tokens"] += self._length
        c["tokens"] += len(first) + len(second)
        c["truncated_tokens"] += self._length - len(first) - len(second)
        c["single_segment_examples"] += not second
        c["short_target_examples"] += self._target != self.max_len
        self.emit(first, second)

        self._sentences = []
        self._length = 0
        if rng.random() < SHORT_TARGET_PROB:
            self._target = rng.randint(MIN_TARGET_LENGTH, self.max_len)
        else:
            self._target = self.max_len


class _ShardWriter:
    """Appends padded rows to `shard-NNNNN.bin` (hashing as it goes); `close` writes their [length, sep]."""

    BUFFER_ROWS = 1024

    def __init__(self, path: Path, max_len: int, dtype: str, special_ids: dict[str, int]):
        self.path = path
        self.cls, self.sep, self.pad = special_ids["cls"], special_ids["sep"], special_ids["pad"]
        self.buf = np.full((self.BUFFER_ROWS, max_len), self.pad, dtype=dtype)
        self.n = 0
        self.rows = array.array("i")  # [length, first [SEP] position] per row
        self.sha = hashlib.sha256()
        self.file = open(path, "wb")  # noqa: SIM115 (closed in close())

    def add(self, first: list[int], second: list[int]) -> None:
        ids = [self.cls, *first, self.sep]
        if second:
            ids += second
            ids.append(self.sep)
        self.buf[self.n, : len(ids)] = ids
        self.rows.extend((len(ids), len(first) + 1))
        self.n += 1
        if self.n == self.BUFFER_ROWS:
            self._flush()

    def _flush(self) -> None:
        data = self.buf[: self.n].tobytes()
        self.file.write(data)
        self.sha.update(data)
        self.buf.fill(self.pad)
        self.n = 0

    def close(self) -> dict[str, Any] | None:
        """Finish the shard; return its manifest entry, or None (and no files) when it has no rows."""
        self._flush()
        self.file.close()
        if not self.rows:
            self.path.unlink()
            return None
        row_dtype = np.int16 if self.buf.shape[1] <= np.iinfo(np.int16).max else np.int32
        rows_path = self.path.with_suffix(".rows.npy")
        np.save(rows_path, np.frombuffer(self.rows, dtype=np.int32).reshape(-1, 2).astype(row_dtype))
        return {
            "file": self.path.name,
            "rows_file": rows_path.name,
            "rows": len(self.rows) // 2,
            "sha256": self.sha.hexdigest(),
            "rows_sha256": hashlib.sha256(rows_path.read_bytes()).hexdigest(),
        }


def _decode(raw: bytes, seg: _Segment, line: int, offset: int, errors: str, counts: dict[str, int]) -> str:
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


def _json_text(text: str, seg: _Segment, line: int, offset: int, text_field: str) -> str:
    try:
        obj = json.loads(text)
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


def _iter_items(seg: _Segment, errors: str, text_field: str, counts: dict[str, int]) -> Iterator[str | None]:
    """Yield the sentences of a file segment, and None at the end of each document."""
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
            _decode(data[line_start:len(data) if line_end < 0 else line_end], seg,
                    seg.line + data.count(b"\n", 0, e.start), seg.start + line_start, errors, counts)
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


def _jsonl_items(data: bytes, seg: _Segment, errors: str, text_field: str, counts: dict[str, int]
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


_TOKENIZERS: dict[str, Tokenizer] = {}  # per worker process, by tokenizer.json path


def _worker_tokenizer(path: str) -> Tokenizer:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker process
    if path not in _TOKENIZERS:  # a spawned worker; forked ones inherit the main process's
        _TOKENIZERS[path] = Tokenizer.from_file(path)
    return _TOKENIZERS[path]


def _build_shard(job: _Job) -> dict[str, Any]:
    """Tokenise one chunk, build its examples and write its shard; return the shard entry and counts."""
    tokenizer = _worker_tokenizer(job.tokenizer_json)
    # encode_batch_fast (tokenizers >= 0.21) skips the offsets: about 20% faster
    encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    path = Path(job.out_dir) / f"shard-{job.index:05d}.bin"
    writer = _ShardWriter(path, job.max_len, job.dtype, job.special_ids)
    builder = ExampleBuilder(job.max_len, random.Random(f"{job.seed}:{job.index}"), writer.add)
    counts = builder.counts

    def feed(items: list[str | None]) -> None:
        encodings = iter(encode_batch([s for s in items if s is not None], add_special_tokens=False))
        for item in items:
            if item is None:
                counts["documents"] += 1
                builder.end_document()
            else:
                counts["sentences"] += 1
                builder.add_sentence(next(encodings).ids)

    try:
        batch: list[str | None] = []
        n_sentences = 0
        for seg in job.segments:
            for item in _iter_items(seg, job.errors, job.text_field, counts):
                batch.append(item)
                n_sentences += item is not None
                if n_sentences == ENCODE_BATCH:
                    feed(batch)
                    batch, n_sentences = [], 0
        feed(batch)
        shard = writer.close()
    except BaseException:
        writer.file.close()
        raise
    return {"shard": shard, "counts": counts, "bytes": sum(s.end - s.start for s in job.segments)}


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
        if not mm[(start if prev < 0 else prev + 1):end].strip():
            return end
        pos = end
    return None


def _plan_chunks(paths: list[Path], shard_size: int, inputs: list[dict[str, Any]]) -> Iterator[list[_Segment]]:
    """Cut the inputs into chunks (lists of segments) of about `shard_size` bytes at document boundaries: the
    first blank line once a chunk has `shard_size` bytes (any line for JSONL, where a line is a document; any
    line too once it has 4 x `shard_size`). Reads each file once, in C (mmap, find, count).

    Appends one manifest entry per input to `inputs`; files with no text are skipped with a warning.
    """
    segments: list[_Segment] = []
    size = 0  # bytes in `segments`, which may span files
    for path in paths:
        jsonl = path.suffix.lower() in JSONL_SUFFIXES
        n = path.stat().st_size
        has_text = False
        if n:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                start, line = 0, 1
                while (end := _next_cut(mm, start, shard_size - size, 4 * shard_size - size, jsonl)) is not None:
                    piece = mm[start:end]
                    has_text = has_text or bool(piece.strip())
                    segments.append(_Segment(str(path), jsonl, start, end, line))
                    yield segments
                    segments, size = [], 0
                    start, line = end, line + piece.count(b"\n")
                rest = bool(mm[start:n].strip()) if start < n else False
                has_text = has_text or rest
                if rest:
                    segments.append(_Segment(str(path), jsonl, start, n, line))
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


def _mp_context() -> mp.context.BaseContext:
    """fork where available: no re-import of the caller's __main__ (no `if __name__ == "__main__"` needed),
    fast start; the workers only use a tokenizer they load themselves, single-threaded."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _run_jobs(jobs: Iterable[_Job], num_workers: int, collect: Callable[[dict[str, Any]], None]) -> None:
    """Run `_build_shard` on `jobs` in worker processes and pass the results to `collect` in job order.

    At most 2 * num_workers jobs are in flight. On an error the queued jobs are cancelled and the running
    ones are waited for, so that no worker is still writing when the output directory is removed.
    """
    with ProcessPoolExecutor(num_workers, mp_context=_mp_context()) as pool:
        pending: collections.deque[Future[dict[str, Any]]] = collections.deque()
        try:
            for job in jobs:
                pending.append(pool.submit(_build_shard, job))
                if len(pending) >= 2 * num_workers:
                    collect(pending.popleft().result())
            while pending:
                collect(pending.popleft().result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def prepare(
    inputs: Sequence[str | Path],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    max_seq_length: int = 128,
    seed: int = 0,
    num_workers: int | None = None,
    errors: str = "strict",
    text_field: str = "text",
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build ELECTRA-style pretraining shards from text/JSONL files into `out_dir`; return the manifest.

    num_workers: worker processes (default: min(8, CPU count)); the output does not depend on it.
    errors: "strict" (undecodable UTF-8 is an InputError) or "replace" (U+FFFD, counted).
    shard_size: bytes of input per chunk/shard; the output depends on it (chunk RNG streams and cuts).
    Raises InputError for bad input; nothing is left in `out_dir` then.
    """
    paths = [Path(p) for p in inputs]
    out_dir = Path(out_dir)
    num_workers = num_workers or min(8, os.cpu_count() or 1)
    if not paths:
        raise InputError("no input files given")
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: input file not found")
    if max_seq_length < MIN_TARGET_LENGTH:
        raise InputError(f"max_seq_length must be at least {MIN_TARGET_LENGTH}, got {max_seq_length}")
    if errors not in ("strict", "replace"):
        raise InputError(f"errors must be 'strict' or 'replace', got {errors!r}")
    if num_workers < 1 or shard_size < 1:
        raise InputError(f"num_workers and shard_size must be positive, got {num_workers}, {shard_size}")
    if out_dir.exists() and not overwrite:
        raise InputError(f"{out_dir}: output directory already exists (use overwrite / --overwrite)")

    tok_path = _tokenizer_json(tokenizer_dir)
    tokenizer = _load_tokenizer(tok_path)
    _TOKENIZERS[str(tok_path)] = tokenizer  # forked workers inherit it loaded
    special_ids = _special_ids(tokenizer, tok_path)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = "uint16" if vocab_size <= 65535 else "int32"

    input_entries: list[dict[str, Any]] = []
    counts = dict.fromkeys(COUNT_KEYS, 0)
    shards: list[dict[str, Any]] = []
    with (
        atomic_dir(out_dir) as tmp,
        tqdm(
            total=sum(p.stat().st_size for p in paths),
            unit="B",
            unit_scale=True,
            desc="prepare",
            disable=None if progress else True,
        ) as bar,
    ):

        def collect(result: dict[str, Any]) -> None:
            if result["shard"] is not None:
                shards.append(result["shard"])
            for key, value in result["counts"].items():
                counts[key] += value
            bar.update(result["bytes"])

        jobs = (
            _Job(i, segments, str(tmp), seed, max_seq_length, dtype, errors, text_field, str(tok_path), special_ids)
            for i, segments in enumerate(_plan_chunks(paths, shard_size, input_entries))
        )
        _run_jobs(jobs, num_workers, collect)
        if all(entry["skipped"] for entry in input_entries):
            raise InputError(f"all input files are empty: {', '.join(map(str, paths))}")
        if not counts["examples"]:
            raise InputError(f"no text found in the input files: {', '.join(map(str, paths))}")

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "max_seq_length": max_seq_length,
            "dtype": dtype,
            "seed": seed,
            "counts": counts,
            "tokenizer": {
                "path": str(Path(tokenizer_dir).resolve()),  # as given: a directory or tokenizer.json
                "vocab_size": vocab_size,
                "vocab_hash": vocab_hash(tok_path),
                "special_ids": special_ids,
            },
            "settings": {"errors": errors, "text_field": text_field, "shard_size": shard_size},
            "inputs": input_entries,
            "shards": shards,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


# ---------------------------------------------------------------------------------------------------
# Reader


class PretrainShards:
    """Random access to prepared shards: `shards[i]` or `shards[index_array]` -> dict of int64 arrays
    (input_ids, attention_mask, token_type_ids), read through np.memmap.

    Opening checks that every shard file exists and has the size the manifest says.
    """

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.manifest_path = self.dir / "manifest.json"
        try:
            self.manifest: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{self.manifest_path}: not found (run `convbert data prepare`)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{self.manifest_path}: not a valid manifest: {e}") from None
        found = (
            (self.manifest.get("format"), self.manifest.get("format_version"))
            if isinstance(self.manifest, dict)
            else None
        )
        if found != (FORMAT, FORMAT_VERSION):
            raise InputError(
                f"{self.manifest_path}: unsupported format/version {found} (expected {FORMAT!r} {FORMAT_VERSION})"
            )
        self.max_seq_length: int = self.manifest["max_seq_length"]
        self.dtype = np.dtype(self.manifest["dtype"])
        self.shards: list[dict[str, Any]] = self.manifest["shards"]
        for shard in self.shards:
            self._check_shard(shard)
        self._starts = np.cumsum([0] + [s["rows"] for s in self.shards])
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()

    def _check_shard(self, shard: dict[str, Any]) -> None:
        path = self.dir / shard["file"]
        expected = shard["rows"] * self.max_seq_length * self.dtype.itemsize
        if not path.is_file():
            raise InputError(f"{path}: shard file missing (listed in {self.manifest_path})")
        if path.stat().st_size != expected:
            raise InputError(
                f"{path}: shard is {path.stat().st_size} bytes, the manifest says {expected} "
                f"({shard['rows']} rows x {self.max_seq_length}); the file is truncated or corrupt"
            )
        rows_path = self.dir / shard["rows_file"]
        try:
            rows = np.load(rows_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise InputError(f"{rows_path}: cannot read shard row index: {e}") from None
        if rows.shape != (shard["rows"], 2):
            raise InputError(f"{rows_path}: shape {rows.shape}, the manifest says ({shard['rows']}, 2)")

    def verify(self) -> None:
        """Check every shard file against the sha256 in the manifest (reads all the data)."""
        for shard in self.shards:
            for name, key in ((shard["file"], "sha256"), (shard["rows_file"], "rows_sha256")):
                sha = hashlib.sha256()
                with open(self.dir / name, "rb") as f:
                    while block := f.read(1 << 20):
                        sha.update(block)
                if sha.hexdigest() != shard[key]:
                    raise InputError(f"{self.dir / name}: sha256 does not match {self.manifest_path}")

    def check_tokenizer(self, vocab_size: int, vocab_hash: str) -> None:
        """Raise InputError when the shards were built with another vocabulary."""
        tok = self.manifest["tokenizer"]
        if tok["vocab_size"] != vocab_size or tok["vocab_hash"] != vocab_hash:
            raise InputError(
                f"{self.manifest_path}: the shards were built with a different vocabulary "
                f"(shards: size {tok['vocab_size']}, hash {tok['vocab_hash']}; "
                f"tokenizer: size {vocab_size}, hash {vocab_hash}); re-run `convbert data prepare`"
            )

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": collections.OrderedDict()}  # memmaps are reopened lazily

    def _open(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if s not in self._cache:
            shard = self.shards[s]
            ids = np.memmap(
                self.dir / shard["file"],
                dtype=self.dtype,
                mode="r",
                shape=(shard["rows"], self.max_seq_length),
            )
            self._cache[s] = (ids, np.load(self.dir / shard["rows_file"], mmap_mode="r"))
            if len(self._cache) > _CACHE_SHARDS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(s)
        return self._cache[s]

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"row index must be an int, a slice or an integer array, got {rows.dtype}")
        flat = rows.reshape(-1).astype(np.int64)
        n = len(self)
        if flat.size and (flat.min() < -n or flat.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        flat = np.where(flat < 0, flat + n, flat)
        shard_of = np.searchsorted(self._starts, flat, side="right") - 1
        ids = np.empty((flat.size, self.max_seq_length), dtype=np.int64)
        meta = np.empty((flat.size, 2), dtype=np.int64)
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = flat[sel] - self._starts[s]
            shard_ids, shard_meta = self._open(int(s))
            ids[sel] = shard_ids[local]
            meta[sel] = shard_meta[local]
        positions = np.arange(self.max_seq_length)
        length, sep = meta[:, :1], meta[:, 1:]
        out = {
            "input_ids": ids,
            "attention_mask": (positions < length).astype(np.int64),
            "token_type_ids": ((positions > sep) & (positions < length)).astype(np.int64),
        }
        return {k: v.reshape(*rows.shape, self.max_seq_length) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------
# CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data prepare` to the `convbert` command line."""
    data = subparsers.add_parser("data", help="pretraining data tools")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "prepare",
        help="tokenise text/JSONL into ELECTRA-style pretraining shards",
        description="Tokenise text files (a sentence per line, blank line between documents) or JSONL "
        "files (.jsonl/.json, a document per line) into [CLS] A [SEP] B [SEP] examples, "
        "written as uint16 memmap shards plus manifest.json.",
    )
    p.add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=True,
        metavar="FILE",
        type=Path,
        help="text files, or JSONL files (.jsonl/.json)",
    )
    p.add_argument("--tokenizer", required=True, metavar="DIR", type=Path, help="directory with tokenizer.json")
    p.add_argument("--out", required=True, metavar="DIR", type=Path, help="output directory (appears when complete)")
    p.add_argument("--max-seq-length", type=int, default=128, metavar="L", help="tokens per example (default 128)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="RNG seed (default 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default min(8, CPUs)); the output does not depend on it",
    )
    p.add_argument(
        "--errors",
        choices=("strict", "replace"),
        default="strict",
        help="undecodable UTF-8: fail (strict, default) or substitute U+FFFD and count (replace)",
    )
    p.add_argument("--text-field", default="text", metavar="NAME", help="JSONL field with the document text")
    p.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        metavar="BYTES",
        help=f"input bytes per shard (default {DEFAULT_SHARD_SIZE}); the output depends on it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    manifest = prepare(
        args.input,
        args.tokenizer,
        args.out,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        num_workers=args.workers,
        errors=args.errors,
        text_field=args.text_field,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
    )
    c = manifest["counts"]
    print(
        f"{args.out}: {c['examples']} examples of {manifest['max_seq_length']} tokens in "
        f"{len(manifest['shards'])} shards ({c['documents']} documents, {c['sentences']} sentences, "
        f"{c['tokens']} tokens, {c['truncated_tokens']} truncated, {c['replaced_chars']} replaced chars)"
    )
    return 0
