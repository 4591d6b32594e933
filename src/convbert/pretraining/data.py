"""Pretraining data: text or JSONL files -> ELECTRA-style token-id shards (read by `shards.PretrainShards`).

Examples are built the way ELECTRA's `build_pretraining_dataset.py` (`ExampleBuilder`) builds them:
the tokenised sentences of a document accumulate until they reach the target length (max_seq_length,
or with probability 0.05 a random length in [5, max_seq_length] for the next example), then become
`[CLS] A [SEP] B [SEP]`, where A takes sentences while it stays under (target - 3) // 2 tokens, and half
of the time the sentence that crosses that length (10% of the time A takes everything: `[CLS] A [SEP]`);
A is cut to L - 2 tokens and B to L - len(A) - 3.
The end of a document flushes what has accumulated.

The inputs (plain text or JSONL, see `convbert.pretraining.inputs`) are cut into chunks of about
`shard_size` bytes at document boundaries. Each chunk is processed by a worker process with its own
RNG, seeded from (seed, chunk index), and written to its own shard, so the output is the same whatever
the number of workers.

The output format, and its reader `PretrainShards`, are in `convbert.pretraining.shards`.
"""

from __future__ import annotations

import argparse
import array
import collections
import hashlib
import multiprocessing as mp
import os
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from ..errors import InputError
from ..fileio import atomic_dir, atomic_write_json
from ..settings import PositiveInt, add_command, validate, write_run_config
from .inputs import Segment, iter_sentences, plan_chunks
from .shards import FORMAT, FORMAT_VERSION, load_tokenizer_json, tokenizer_json, vocab_hash

SINGLE_SEGMENT_PROB = 0.1  # ELECTRA: the first segment takes the whole example
SHORT_TARGET_PROB = 0.05  # ELECTRA: the next example gets a random target length in [5, L]
MIN_TARGET_LENGTH = 5
DEFAULT_SHARD_SIZE = 1 << 20  # bytes of input text per chunk/shard: small enough to balance the workers
ENCODE_BATCH = 1000  # sentences per encode_batch call
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


class _Job(NamedTuple):
    index: int
    segments: list[Segment]
    out_dir: str
    seed: int
    max_len: int
    dtype: str
    errors: str
    text_field: str
    tokenizer_json: str
    special_ids: dict[str, int]


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
            for item in iter_sentences(seg, job.errors, job.text_field, counts):
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
    _check_arguments(paths, out_dir, max_seq_length, errors, num_workers, shard_size, overwrite)

    tok_path, special_ids, vocab_size = _load_worker_tokenizer(tokenizer_dir)
    dtype = "uint16" if vocab_size <= 65535 else "int32"

    input_entries: list[dict[str, Any]] = []
    with atomic_dir(out_dir) as tmp, _progress_bar(paths, progress) as bar:
        jobs = (
            _Job(i, segments, str(tmp), seed, max_seq_length, dtype, errors, text_field, str(tok_path), special_ids)
            for i, segments in enumerate(plan_chunks(paths, shard_size, input_entries))
        )
        shards, counts = _build_shards(jobs, num_workers, bar)
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


def _check_arguments(
    paths: list[Path],
    out_dir: Path,
    max_seq_length: int,
    errors: str,
    num_workers: int,
    shard_size: int,
    overwrite: bool,
) -> None:
    """InputError for the first bad argument of `prepare`."""
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


def _load_worker_tokenizer(tokenizer_dir: str | Path) -> tuple[Path, dict[str, int], int]:
    """(tokenizer.json path, special token ids, vocabulary size); the tokenizer stays loaded for forked workers."""
    tok_path = tokenizer_json(tokenizer_dir)
    tokenizer = load_tokenizer_json(tok_path)
    _TOKENIZERS[str(tok_path)] = tokenizer  # forked workers inherit it loaded
    return tok_path, _special_ids(tokenizer, tok_path), tokenizer.get_vocab_size(with_added_tokens=True)


def _progress_bar(paths: list[Path], progress: bool) -> tqdm:
    """A bar over the input bytes; off unless `progress` (and, by tqdm's default, off without a terminal)."""
    return tqdm(
        total=sum(p.stat().st_size for p in paths),
        unit="B",
        unit_scale=True,
        desc="prepare",
        disable=None if progress else True,
    )


def _build_shards(jobs: Iterable[_Job], num_workers: int, bar: tqdm) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Run the jobs; return the manifest entries of their (non-empty) shards in job order and their summed counts."""
    shards: list[dict[str, Any]] = []
    counts = dict.fromkeys(COUNT_KEYS, 0)

    def collect(result: dict[str, Any]) -> None:
        if result["shard"] is not None:
            shards.append(result["shard"])
        for key, value in result["counts"].items():
            counts[key] += value
        bar.update(result["bytes"])

    _run_jobs(jobs, num_workers, collect)
    return shards, counts


# ---------------------------------------------------------------------------------------------------
# CLI


@dataclass
class PrepareConfig:
    input: list[str]  # text files (a sentence per line, blank line between documents), JSONL (.jsonl/.json), or
    # tables (a document per row): .parquet, .arrow, a datasets save_to_disk dir[#SPLIT], hub:NAME[:CONFIG][#SPLIT]
    tokenizer: str  # directory with tokenizer.json
    out: str  # output directory (appears when complete)
    max_length: PositiveInt = 128  # tokens per example
    seed: int = 0  # sentence-pair sampling seed
    workers: PositiveInt | None = None  # worker processes (default min(8, CPUs)); the output does not depend on it
    errors: Literal["strict", "replace"] = "strict"  # undecodable UTF-8: fail, or substitute U+FFFD and count
    text_field: str = "text"  # JSONL field (table column) with the document text
    shard_size: PositiveInt = DEFAULT_SHARD_SIZE  # input bytes per shard; the output depends on it
    overwrite: bool = False  # replace an existing output directory

    def __post_init__(self) -> None:
        validate(self)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data prepare` to the `convbert` command line."""
    data = subparsers.add_parser("data", help="pretraining data tools")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    add_command(
        commands,
        "prepare",
        PrepareConfig,
        _run_prepare,
        help="tokenise text/JSONL into ELECTRA-style pretraining shards",
        description="Tokenise text files (a sentence per line, blank line between documents) or JSONL "
        "files (.jsonl/.json, a document per line) into [CLS] A [SEP] B [SEP] examples, "
        "written as uint16 memmap shards plus manifest.json.",
        aliases={"max_length": ["--max_seq_length"], "out": ["--output_dir"]},
        metavars={"input": "FILE", "tokenizer": "DIR", "out": "DIR"},
    )


def _run_prepare(cfg: PrepareConfig) -> int:
    from .inputs import resolve_inputs  # datasets sources (save_to_disk dirs, hub:NAME) -> their Arrow files

    manifest = prepare(
        resolve_inputs(cfg.input, cfg.text_field),
        cfg.tokenizer,
        cfg.out,
        max_seq_length=cfg.max_length,
        seed=cfg.seed,
        num_workers=cfg.workers,
        errors=cfg.errors,
        text_field=cfg.text_field,
        shard_size=cfg.shard_size,
        overwrite=cfg.overwrite,
    )
    write_run_config(cfg.out, cfg)
    c = manifest["counts"]
    print(
        f"{cfg.out}: {c['examples']} examples of {manifest['max_seq_length']} tokens in "
        f"{len(manifest['shards'])} shards ({c['documents']} documents, {c['sentences']} sentences, "
        f"{c['tokens']} tokens, {c['truncated_tokens']} truncated, {c['replaced_chars']} replaced chars)"
    )
    return 0
