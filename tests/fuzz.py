"""Seeded fuzzing of every input kind: generators of malformed inputs, and the harness that runs and classifies them.

`KINDS[name](rng, workdir)` is a generator of `Case`s: it builds a small valid input of its kind once (cached under
`workdir`), then for each case mutates a copy of it (byte flips, truncation, invalid UTF-8, empty or missing files,
deleted/added columns or keys, wrong JSON types, huge/negative/NaN numbers, very long lines, duplicated keys, junk),
drawing every choice from `rng`. The harness gives each case its own `random.Random(case_id)`, the id being
`KIND:SEED:INDEX`, and takes one case from a fresh generator, so a case is rebuilt from its id alone.

`run_case` classifies what the target did with the input:
  accepted             it returned (and what it returned passed the kind's checks)
  input_error_named    convbert.errors.InputError (ConfigError included) whose message names the place: the file
                       (or setting), and the line/row or field where the kind has them
  input_error_unnamed  an InputError whose message does not
  accepted_invalid     it returned, but the input was certainly invalid (an empty file, a flipped byte in a
                       sha256-checked file, a setting out of its range), or what it returned is unusable
  other_exception      any other exception (a traceback a user would see)
  partial_output       it failed and left its output (or a `.NAME.tmp-*` temporary) behind, or changed what it
                       promised to leave untouched
The last four are failures.

Run again from the command line (`-v` prints every case):
    .venv/bin/python tests/fuzz.py glue:0:17                 one case: its mutation, outcome, message, traceback
    .venv/bin/python tests/fuzz.py glue --cases 2000 --seed 3    a kind's counts and failure signatures
    .venv/bin/python tests/fuzz.py all --scale 0.1             every kind, a tenth of the CI counts
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import io
import json
import math
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # glue_fixture, when run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from glue_fixture import PAIRS, make_tiny_glue, tiny_tokenizer  # noqa: E402

from convbert.errors import InputError  # noqa: E402

# ------------------------------------------------------------------------------------------------ outcomes
ACCEPTED = "accepted"
NAMED = "input_error_named"
UNNAMED = "input_error_unnamed"
ACCEPTED_INVALID = "accepted_invalid"
OTHER = "other_exception"
PARTIAL = "partial_output"
OUTCOMES = (ACCEPTED, NAMED, UNNAMED, ACCEPTED_INVALID, OTHER, PARTIAL)
FAILURES = (UNNAMED, ACCEPTED_INVALID, OTHER, PARTIAL)
CASE_TIMEOUT_S = 30.0


class WronglyAccepted(Exception):
    """Raised by a target's own checks: it accepted the input, but what it returned is unusable."""


class CaseTimeout(BaseException):
    """A case ran past CASE_TIMEOUT_S (a BaseException, so that no `except Exception` in the library swallows it)."""


class HarnessError(Exception):
    """A bug of the fuzzer itself (a case's setup failed)."""


@dataclass
class Expect:
    """What a case's outcome must satisfy."""

    names: tuple[str, ...]  # an InputError's message must hold one of these (a file or dir name; a setting)
    line: int | None = None  # ... and name this 1-based line (":N" or "line N")
    locate: bool = False  # ... and a line/row/position, one of `fields`, or a whole-file phrase (`whole`)
    fields: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()  # regexes of messages about the whole file, which have no line or field to name
    must_fail: bool = False  # the input is certainly invalid: accepting it is a failure
    outputs: tuple[Path, ...] = ()  # what the target writes: absent after a failure; no `.NAME.tmp-*` ever
    untouched: tuple[Path, ...] = ()  # what the target must never create (e.g. --print-config's output)
    state: Callable[[], Any] | None = None  # a snapshot of in-memory state a failure must leave unchanged


@dataclass
class Case:
    """One fuzz case: `setup(case_dir)` writes its files and returns (target, expectations)."""

    mutation: str
    setup: Callable[[Path], tuple[Callable[[], Any], Expect]]


@dataclass
class Result:
    case_id: str
    mutation: str
    outcome: str
    error: str = ""  # exception type and message
    trace: str = ""  # the traceback (other_exception, partial_output)
    note: str = ""

    def signature(self) -> str:
        """What identifies the bug, not the case: the outcome, the exception type and the message with the paths,
        numbers and quoted values taken out, and for a traceback its innermost convbert frame."""
        msg = re.sub(r"(/[^\s:'\"]+)+/", "", self.error)  # paths -> their last component
        msg = re.sub(r"'[^']{0,80}'|\"[^\"]{0,80}\"", "'…'", msg)
        msg = re.sub(r"\b0x[0-9a-f]+\b|\\x[0-9a-f]{2}", "0x…", msg)
        msg = re.sub(r"\d+", "N", msg)[:150]
        frame = ""
        for m in re.finditer(r'File "[^"]*/(convbert/[^"]+)", line \d+, in (\S+)', self.trace):
            frame = f" @ {m.group(1)}:{m.group(2)}"
        return f"{self.outcome}: {msg}{frame}"

    def report(self, trace: bool = True) -> str:
        lines = [f"[{self.outcome}] {self.case_id}  ({self.mutation[:300]})", f"    {self.error[:600]}"]
        if self.note:
            lines.append(f"    note: {self.note[:400]}")
        if trace and self.trace:
            lines += ["    " + t[:300] for t in self.trace.rstrip().splitlines()[-14:]]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ harness
_PLACE = re.compile(
    r":\d+\b|\b(?:line|lines|row|position|offset|column|char|byte|byte offset) \d+|\[\d+\]|\bat \d+\b", re.I
)


# a message that says the file it names is missing needs no line or field
MISSING_FILE = (r"\bno such\b", r"\bnot found\b", r"does not exist", r"\bexists\b", r"\bmissing\b", r"is a directory")


def is_named(message: str, e: Expect) -> bool:
    """Whether an InputError's message names the place `e` asks for."""
    if e.names and not any(n in message for n in e.names):
        return False
    if e.line is not None:  # the line, unless the error is about the whole file (e.g. a special token gone)
        return re.search(rf":{e.line}\b|\bline {e.line}\b", message) is not None or any(
            re.search(w, message, re.I) for w in (*e.whole, *MISSING_FILE)
        )
    if e.locate:
        return (
            _PLACE.search(message) is not None
            or any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", message) for f in e.fields if f)
            or any(re.search(w, message, re.I) for w in (*e.whole, *MISSING_FILE))
        )
    return True


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    if seconds <= 0 or not hasattr(signal, "setitimer") or not _main_thread():
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"the case ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _quiet() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """stdout, stderr, warnings and logging below ERROR swallowed."""
    import logging

    out, err = io.StringIO(), io.StringIO()
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield out, err
    finally:
        logging.disable(level)


def _leftovers(e: Expect, failed: bool) -> list[str]:
    found = []
    for p in e.untouched:
        if p.exists() or p.is_symlink():
            found.append(f"{p} exists")
    for p in e.outputs + e.untouched:
        if failed and p not in e.untouched and (p.exists() or p.is_symlink()):
            found.append(f"{p} exists after the failure")
        if p.parent.is_dir():
            found += [
                f"{q} left behind"
                for q in p.parent.iterdir()
                if q.name.startswith((f".{p.name}.tmp", f".{p.name}.old-", f"{p.name}.partial-tmp"))
            ]
    return found


def _seed_globals() -> None:
    """Every case starts from the same global RNG states (a case may load a mutated one)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def run_case(case_id: str, case: Case, case_dir: Path, timeout: float = CASE_TIMEOUT_S) -> Result:
    """Set up `case` in `case_dir` (created), run its target and classify the outcome."""
    case_dir.mkdir(parents=True, exist_ok=True)
    _seed_globals()
    try:
        with _quiet():
            target, expect = case.setup(case_dir)
    except Exception as e:
        raise HarnessError(f"{case_id} ({case.mutation}): setup failed: {type(e).__name__}: {e}") from e
    before = expect.state() if expect.state is not None else None
    result = Result(case_id, case.mutation, ACCEPTED)
    failed = True
    try:
        with _quiet(), _deadline(timeout):
            target()
        failed = False
        if expect.must_fail:
            result.outcome, result.error = ACCEPTED_INVALID, "accepted an input that is certainly invalid"
    except InputError as e:
        result.error = f"{type(e).__name__}: {e}"
        result.outcome = NAMED if is_named(str(e), expect) else UNNAMED
        if result.outcome == UNNAMED:
            result.note = _expectation(expect)
    except WronglyAccepted as e:
        result.outcome, result.error = ACCEPTED_INVALID, f"accepted, but: {e}"
        result.trace = traceback.format_exc()
    except (Exception, CaseTimeout, SystemExit) as e:  # KeyboardInterrupt still stops the run
        result.outcome, result.error = OTHER, f"{type(e).__name__}: {e}"
        result.trace = traceback.format_exc()
    leftovers = _leftovers(expect, failed)
    if failed and expect.state is not None and result.outcome != OTHER:
        after = expect.state()
        if not _same(before, after):
            leftovers.append("the failed call changed the state it promises to leave untouched")
    if leftovers:
        result.note = "; ".join(leftovers) + (f"; {result.note}" if result.note else "")
        if result.outcome != OTHER:
            result.outcome = PARTIAL
    return result


def _expectation(e: Expect) -> str:
    want = [f"one of {list(e.names)}"]
    if e.line is not None:
        want.append(f"line {e.line}")
    elif e.locate:
        want.append("a line/row/position" + (f" or one of {list(e.fields)[:6]}" if e.fields else ""))
    return "expected the message to name " + " and ".join(want)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def make_case(case_id: str, workdir: Path) -> Case:
    """The case with id `KIND:SEED:INDEX`, from a fresh generator with its own `random.Random(case_id)`."""
    kind = case_id.split(":", 1)[0]
    if kind not in KINDS:
        raise KeyError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return next(KINDS[kind](random.Random(case_id), workdir / "base"))


@dataclass
class KindReport:
    kind: str
    counts: Counter = field(default_factory=Counter)
    failures: list[Result] = field(default_factory=list)  # every failing case
    seconds: float = 0.0

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        counts = ", ".join(f"{o} {self.counts[o]}" for o in OUTCOMES if self.counts[o])
        return f"fuzz {self.kind}: {self.cases} cases in {self.seconds:.1f} s: {counts}"

    def signatures(self) -> dict[str, list[Result]]:
        groups: dict[str, list[Result]] = {}
        for r in self.failures:
            groups.setdefault(r.signature(), []).append(r)
        return groups

    def brief(self) -> str:
        """The summary, and a line per failure signature: how many, the first case id and its mutation."""
        out = [self.summary()]
        for sig, results in sorted(self.signatures().items(), key=lambda kv: -len(kv[1])):
            r = results[0]
            out.append(f"  {len(results):4d} x {sig}\n         e.g. {r.case_id} ({r.mutation[:150]}): {r.error[:240]}")
        return "\n".join(out)

    def details(self, examples: int = 3, max_signatures: int = 40) -> str:
        out = [self.summary()]
        for n, (sig, results) in enumerate(sorted(self.signatures().items(), key=lambda kv: -len(kv[1]))):
            if n == max_signatures:
                out.append(f"... and {len(self.signatures()) - n} more signatures")
                break
            out.append(f"\n== {len(results)} x {sig}")
            out += [r.report(trace=i == 0) for i, r in enumerate(results[:examples])]
        return "\n".join(out)


def run_kind(
    kind: str, cases: int, seed: int, workdir: Path, progress: Callable[[Result], None] | None = None
) -> KindReport:
    """Run cases `KIND:SEED:0` .. `KIND:SEED:cases-1` in `workdir` (each case's files removed after it)."""
    report = KindReport(kind)
    t0 = time.perf_counter()
    for i in range(cases):
        case_id = f"{kind}:{seed}:{i}"
        case_dir = workdir / "cases" / str(i)
        result = run_case(case_id, make_case(case_id, workdir), case_dir)
        shutil.rmtree(case_dir, ignore_errors=True)
        report.counts[result.outcome] += 1
        if result.outcome in FAILURES:
            report.failures.append(result)
        if progress is not None:
            progress(result)
    report.seconds = time.perf_counter() - t0
    return report


# ------------------------------------------------------------------------------------------------ bases
_BASES: dict[tuple[str, str], Any] = {}


def _base(workdir: Path, name: str, build: Callable[[Path], Any]) -> Any:
    """`build(workdir/name)`, once per workdir and name."""
    key = (str(workdir), name)
    if key not in _BASES:
        path = workdir / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        with _quiet():
            _seed_globals()
            _BASES[key] = build(path)
    return _BASES[key]


def _tokenizer_dir(workdir: Path) -> Path:
    """The tiny WordPiece tokenizer's files (tokenizer.json, vocab.txt, tokenizer_config.json, ...)."""

    def build(path: Path) -> Path:
        tiny_tokenizer(path / "vocab").save_pretrained(path / "tok")
        return path / "tok"

    return _base(workdir, "tokenizer", build)


def _tokenizer(workdir: Path):
    from convbert.tokenizer import ConvBertTokenizer

    return _base(workdir, "tokenizer-object", lambda _: ConvBertTokenizer.from_pretrained(_tokenizer_dir(workdir)))


def _tiny_config(vocab_size: int, **overrides: Any):
    from convbert.config import ConvBertConfig

    return ConvBertConfig.preset(
        "tiny",
        vocab_size=vocab_size,
        hidden_size=16,
        embedding_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        **overrides,
    )


def _model_dir(workdir: Path) -> Path:
    """A tiny ConvBertModel saved with the tokenizer: config.json, model.safetensors, tokenizer files."""

    def build(path: Path) -> Path:
        from convbert.model import ConvBertModel

        tok = _tokenizer(workdir)
        ConvBertModel(_tiny_config(tok.vocab_size)).save_pretrained(path / "model", tok)
        return path / "model"

    return _base(workdir, "model", build)


def _copy_files(src: Path, dst: Path, skip: Sequence[str] = ()) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.name not in skip:
            shutil.copyfile(p, dst / p.name)


# ------------------------------------------------------------------------------------------------ mutations
BAD_UTF8 = (
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xbf",
    b"\xc3",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xe6\x97",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
)
CELLS = (
    "",
    " ",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e309",
    "-1",
    "0",
    "1",
    "2",
    "-0",
    "99999999999999999999",
    "1.5",
    "abc",
    "☃ ünïcödé 日本",
    "\x00",
    '"',
    '""',
    "'",
    "\\",
    "None",
    "null",
    "true",
    "[]",
    "{}",
    "[1, 2]",
    "\u2028",
    "\r",
    "\x0b",
    "\x1c",
    "\ufeff",
    "a,b",
    ",",
    " , ",
    "-DOCSTART-",
    "#",
    "x" * 5000,
    "1" * 5000,
)
HUGE = (2**31, 2**63, 2**64 + 1, 10**30, -(10**30))
NUMBERS = (-1, 0, 1, 2, 3, 7, -0.0, 0.5, 1.5, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), *HUGE)
JSON_POOL: tuple[Any, ...] = (
    None,
    True,
    False,
    "",
    "x",
    "0",
    "1",
    "nan",
    "☃",
    [],
    [1],
    [[]],
    [None],
    ["a", "b"],
    {},
    {"x": 1},
    {"": None},
    *NUMBERS,
)


@dataclass
class Mut:
    """A mutated file: its bytes (None: deleted), and what that tells about the expected error."""

    desc: str
    data: bytes | None
    line: int | None = None  # the line an error must name (the only line made invalid)
    must_fail: bool = False
    fields: tuple[str, ...] = ()  # the keys on the path of a JSON mutation


def _boundary(rng: random.Random, data: bytes) -> int:
    """A random offset in data that is not inside a UTF-8 sequence."""
    for _ in range(20):
        off = rng.randrange(len(data) + 1)
        if off == len(data) or not 0x80 <= data[off] <= 0xBF:
            return off
    return 0


def _line_at(data: bytes, off: int) -> int:
    return data.count(b"\n", 0, off) + 1


def _long(rng: random.Random) -> int:
    return rng.choice((3000, 20_000, 150_000))


def mutate_bytes(rng: random.Random, data: bytes, *, text: bool = True, empty_fails: bool = True) -> Mut:
    """A byte-level mutation: flips, truncation, invalid UTF-8 (`line` set), empty, junk, NULs, long lines, ..."""
    ops = ["flip", "set", "truncate", "empty", "junk", "insert_junk", "delete_range", "duplicate_range", "nul"]
    if text:
        ops += ["bad_utf8", "bad_utf8", "long_line", "crlf", "bom", "lone_cr", "append_line", "no_newline"]
    op = rng.choice(ops)
    n = len(data)
    if not n and op not in ("empty", "junk", "insert_junk", "bad_utf8", "long_line", "append_line", "bom"):
        op = "junk"
    if op == "flip":
        buf = bytearray(data)
        offs = [rng.randrange(n) for _ in range(rng.choice((1, 1, 2, 4, 16)))]
        for off in offs:
            buf[off] ^= 1 << rng.randrange(8)
        return Mut(f"flip bits at bytes {sorted(offs)[:4]}", bytes(buf))
    if op == "set":
        buf = bytearray(data)
        off = rng.randrange(n)
        value = rng.choice((0, 0xFF, 0x7F, 0x22, 0x5C, 0x0A, 0x09, 0x2C, rng.randrange(256)))
        buf[off] = value
        return Mut(f"byte {off} := {value:#x}", bytes(buf))
    if op == "truncate":
        cut = rng.randrange(n)
        return Mut(f"truncate at byte {cut} of {n}", data[:cut], must_fail=cut == 0 and empty_fails)
    if op == "empty":
        return Mut("empty file", b"", must_fail=empty_fails)
    if op == "junk":
        junk = rng.randbytes(rng.choice((1, 7, 64, 300)))
        return Mut(f"{len(junk)} random bytes", junk)
    if op == "insert_junk":
        off = rng.randrange(n + 1)
        return Mut(f"insert random bytes at {off}", data[:off] + rng.randbytes(rng.randint(1, 40)) + data[off:])
    if op == "delete_range":
        a = rng.randrange(n)
        b = min(n, a + rng.choice((1, 2, 10, 100, n)))
        return Mut(f"delete bytes {a}:{b}", data[:a] + data[b:])
    if op == "duplicate_range":
        a = rng.randrange(n)
        b = min(n, a + rng.choice((1, 10, 100, n)))
        return Mut(f"duplicate bytes {a}:{b}", data[:b] + data[a:b] + data[b:])
    if op == "nul":
        off = rng.randrange(n + 1)
        return Mut(f"NUL at {off}", data[:off] + b"\x00" + data[off:])
    if op == "bad_utf8":
        off = _boundary(rng, data)
        bad = rng.choice(BAD_UTF8)
        return Mut(
            f"invalid UTF-8 {bad!r} at byte {off} (line {_line_at(data, off)})",
            data[:off] + bad + data[off:],
            line=_line_at(data, off),
            must_fail=True,
        )
    if op == "long_line":
        starts = [0] + [i + 1 for i, c in enumerate(data) if c == 0x0A]
        off = rng.choice(starts)
        size = _long(rng)
        filler = rng.choice((b"a", b"word ", b"\t", b"x\t", b"\xc3\xa9"))
        body = (filler * (size // len(filler) + 1))[:size]
        return Mut(f"a {size}-byte line {filler!r}... at byte {off}", data[:off] + body + b"\n" + data[off:])
    if op == "crlf":
        return Mut("CRLF line ends", data.replace(b"\n", b"\r\n"))
    if op == "bom":
        return Mut("UTF-8 BOM", b"\xef\xbb\xbf" + data)
    if op == "lone_cr":
        ends = [i for i, c in enumerate(data) if c == 0x0A]
        if not ends:
            return Mut("CR appended", data + b"\r")
        i = rng.choice(ends)
        return Mut(f"line end at byte {i} := CR", data[:i] + b"\r" + data[i + 1 :])
    if op == "append_line":
        extra = rng.choice(CELLS).encode("utf-8", "surrogatepass")
        return Mut(f"append line {extra[:20]!r}", data + extra + b"\n")
    return Mut("no final newline", data.rstrip(b"\n"))


# ---------------------------------------------------------------------------------------- delimited text
def _join(lines: Sequence[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")


def enlarge(lines: list[str], header_lines: int, size: int = 12_000) -> list[str]:
    """The data lines repeated until the file is over `size` bytes (past the readers' decode buffer)."""
    body = lines[header_lines:] or [""]
    out = list(lines)
    while sum(len(x) + 1 for x in out) < size:
        out += body
    return out


def mutate_lines(
    rng: random.Random,
    lines: list[str],
    sep: str | None,
    header_lines: int = 0,
    exact: bool = True,
    cells: Sequence[str] = CELLS,
) -> Mut:
    """A line- or field-level mutation of a delimited text file (sep None: whole lines only). With `exact`, an
    error caused by a mutated data line must name that line."""
    data_rows = [i for i in range(header_lines, len(lines)) if lines[i].strip()]
    ops = ["delete_line", "duplicate_line", "swap_lines", "insert_blank", "insert_line", "replace_line"]
    if sep is not None and data_rows:
        ops += ["delete_field", "add_field", "replace_field", "replace_field", "replace_field", "empty_field"]
        ops += ["merge_fields", "long_field", "strip_line"]
    if sep is not None and header_lines:
        ops += ["header_rename", "header_drop", "header_dup", "header_extra"]
    op = rng.choice(ops)
    new = list(lines)
    if not data_rows and op not in ("insert_blank", "insert_line"):
        op = "insert_line"
    if op.startswith("header"):
        fields = new[0].split(sep)
        j = rng.randrange(len(fields))
        if op == "header_rename":
            fields[j] = rng.choice((fields[j] + "_x", fields[j].upper(), "", " " + fields[j], rng.choice(cells)))
        elif op == "header_drop":
            del fields[j]
        elif op == "header_dup":
            fields[j] = fields[rng.randrange(len(fields))]
        else:
            fields.insert(j, rng.choice(("extra", fields[j], "")))
        new[0] = sep.join(fields)
        return Mut(f"header {op[7:]} column {j}: {new[0][:80]!r}", _join(new))
    if op in ("delete_line", "duplicate_line", "swap_lines", "insert_blank", "insert_line", "replace_line"):
        i = rng.choice(data_rows) if data_rows else 0
        if op == "delete_line":
            del new[i]
        elif op == "duplicate_line":
            new.insert(i, new[i])
        elif op == "swap_lines":
            j = rng.randrange(len(new))
            new[i], new[j] = new[j], new[i]
        elif op == "insert_blank":
            new.insert(rng.randrange(len(new) + 1), rng.choice(("", " ", "\t", "\r")))
        elif op == "insert_line":
            i = rng.randrange(header_lines, len(new) + 1)
            new.insert(i, rng.choice(cells))
            return Mut(f"insert line {i + 1}: {new[i][:40]!r}", _join(new), line=i + 1 if exact else None)
        else:
            new[i] = rng.choice(cells)
            return Mut(f"line {i + 1} := {new[i][:40]!r}", _join(new), line=i + 1 if exact else None)
        return Mut(f"{op} at line {i + 1}", _join(new))
    i = rng.choice(data_rows)
    fields = new[i].split(sep)
    j = rng.randrange(len(fields))
    if op == "delete_field":
        del fields[j]
        what = f"delete field {j}"
    elif op == "add_field":
        fields.insert(j, rng.choice(cells))
        what = f"insert field {j} {fields[j][:30]!r}"
    elif op == "replace_field":
        fields[j] = rng.choice(cells)
        what = f"field {j} := {fields[j][:30]!r}"
    elif op == "empty_field":
        fields[j] = rng.choice(("", " ", "  "))
        what = f"field {j} := {fields[j]!r}"
    elif op == "merge_fields" and len(fields) > 1:
        j = min(j, len(fields) - 2)
        fields[j : j + 2] = [fields[j] + " " + fields[j + 1]]
        what = f"merge fields {j}, {j + 1}"
    elif op == "long_field":
        fields[j] = "w" * _long(rng)
        what = f"field {j} := {len(fields[j])} chars"
    else:
        fields[j] = f" {fields[j]} "
        what = f"field {j} padded with spaces"
    new[i] = sep.join(fields)
    return Mut(f"line {i + 1}: {what}", _join(new), line=i + 1 if exact else None)


def mutate_text(
    rng: random.Random,
    lines: list[str],
    sep: str | None,
    header_lines: int = 0,
    exact: bool = True,
    empty_fails: bool = True,
    missing: bool = True,
) -> Mut:
    """A mutation of a delimited text file: bytes, lines or fields; sometimes two; sometimes the file deleted."""
    r = rng.random()
    if missing and r < 0.02:
        return Mut("file deleted", None, must_fail=True)
    if r < 0.45:
        mut = mutate_bytes(rng, _join(lines), empty_fails=empty_fails)
    else:
        mut = mutate_lines(rng, lines, sep, header_lines, exact)
    if rng.random() < 0.12 and mut.data is not None:  # and a second one
        second = mutate_bytes(rng, mut.data, empty_fails=empty_fails)
        mut = Mut(f"{mut.desc}; then {second.desc}", second.data, must_fail=second.must_fail)
    return mut


# ------------------------------------------------------------------------------------------------ JSON
class Raw(str):
    """Emitted verbatim by `dump` (JSON no json.dumps writes: 5000 digits, deep nesting)."""


@dataclass
class Dup:
    """An object with repeated keys."""

    pairs: list[tuple[str, Any]]


def dump(obj: Any, indent: int | None = 1, level: int = 0) -> str:
    """JSON text of `obj` (NaN/Infinity as Python writes them), with `Raw` and `Dup`."""
    if isinstance(obj, Raw):
        return str(obj)
    if isinstance(obj, (dict, Dup)):
        items = obj.pairs if isinstance(obj, Dup) else list(obj.items())
        if not items:
            return "{}"
        pad = "\n" + " " * (indent * (level + 1)) if indent else ""
        end = "\n" + " " * (indent * level) if indent else ""
        body = ",".join(f"{pad}{json.dumps(str(k))}: {dump(v, indent, level + 1)}" for k, v in items)
        return "{" + body + end + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        pad = "\n" + " " * (indent * (level + 1)) if indent else ""
        end = "\n" + " " * (indent * level) if indent else ""
        return "[" + ",".join(pad + dump(v, indent, level + 1) for v in obj) + end + "]"
    return json.dumps(obj)


def _nodes(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, (*path, i))


def _at(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _put(obj: Any, path: tuple, value: Any) -> Any:
    """obj with the node at `path` replaced (the root when path is ())."""
    if not path:
        return value
    _at(obj, path[:-1])[path[-1]] = value
    return obj


def _path_text(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(root)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def mutate_json(
    rng: random.Random,
    obj: Any,
    pool: Sequence[Any] = JSON_POOL,
    focus: Callable[[tuple], bool] | None = None,
    raw: bool = True,
) -> tuple[str, Any, tuple[str, ...]]:
    """A structural mutation of a JSON document: (description, new document, the keys on the mutated path).

    Wrong types, deleted/added/renamed/duplicated keys, emptied containers, another root, and (raw) numbers of
    5000 digits or nesting 3000 deep, which no json.dumps writes."""
    new = copy.deepcopy(obj)
    nodes = [(p, v) for p, v in _nodes(new) if focus is None or focus(p)] or [((), new)]
    inner = [(p, v) for p, v in nodes if p] or nodes
    ops = ["type", "type", "type", "delete", "add_key", "dup_key", "rename_key", "empty", "swap", "long_string"]
    ops += ["root"] * (focus is None) + ["huge_digits", "deep"] * raw
    op = rng.choice(ops)
    path, value = rng.choice(inner)
    keys = tuple(str(p) for p in path if isinstance(p, str))
    if op == "type" or (op in ("delete", "rename_key") and not path):
        v = rng.choice(pool)
        return f"{_path_text(path)} := {_short(v)}", _put(new, path, v), keys
    if op == "delete":
        del _at(new, path[:-1])[path[-1]]
        return f"delete {_path_text(path)}", new, keys
    if op == "rename_key":
        parent = _at(new, path[:-1])
        if not isinstance(parent, dict):
            del parent[path[-1]]
            return f"delete {_path_text(path)}", new, keys
        old = path[-1]
        name = rng.choice((old + "_", old.upper(), "", " " + old, old[:-1]))
        parent[name] = parent.pop(old)
        return f"rename {_path_text(path)} -> {name!r}", new, (*keys, name, repr(name))
    if op in ("add_key", "dup_key"):
        dicts = [(p, v) for p, v in nodes if isinstance(v, dict)]
        if not dicts:
            v = rng.choice(pool)
            return f"{_path_text(path)} := {_short(v)}", _put(new, path, v), keys
        path, value = rng.choice(dicts)
        keys = tuple(str(p) for p in path if isinstance(p, str))
        v = rng.choice(pool)
        if op == "add_key" or not value:
            name = rng.choice(("fuzz_extra", *(k + "s" for k in list(value)[:3])))
            value[name] = v
            return f"add key {_path_text((*path, name))} = {_short(v)}", new, (*keys, name)
        k = rng.choice(list(value))
        pairs = list(value.items())
        pairs.insert(rng.randrange(len(pairs) + 1), (k, v))
        return f"duplicate key {_path_text((*path, k))} = {_short(v)}", _put(new, path, Dup(pairs)), (*keys, k)
    if op == "empty":
        v = {} if isinstance(value, dict) else [] if isinstance(value, list) else ""
        return f"{_path_text(path)} := {v!r}", _put(new, path, v), keys
    if op == "swap":
        if isinstance(value, dict):
            v = list(value.values())
        elif isinstance(value, list):
            v = {str(i): x for i, x in enumerate(value)}
        else:
            v = [value]
        return f"{_path_text(path)} := {_short(v)} (container swapped)", _put(new, path, v), keys
    if op == "long_string":
        v = "x" * _long(rng)
        return f"{_path_text(path)} := {len(v)}-char string", _put(new, path, v), keys
    if op == "root":
        v = rng.choice(([], [new], 0, 1.5, "x", None, True, [{}]))
        return f"root := {_short(v)}", v, ()
    if op == "huge_digits":
        v = Raw(rng.choice(("9" * 5000, "-" + "1" * 4400, "1" + "0" * 400 + ".5", "1e99999")))
        return f"{_path_text(path)} := a {len(v)}-char number", _put(new, path, v), keys
    depth = rng.choice((200, 3000))
    v = Raw("[" * depth + "]" * depth)
    return f"{_path_text(path)} := arrays nested {depth} deep", _put(new, path, v), keys


def json_fails(data: bytes) -> bool:
    """Whether Python's json rejects `data` as UTF-8 JSON (then every JSON reader must)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return False
    try:
        json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return True
    return False


def mutate_json_file(
    rng: random.Random,
    obj: Any,
    indent: int | None = 1,
    pool: Sequence[Any] = JSON_POOL,
    focus: Callable[[tuple], bool] | None = None,
    byte_share: float = 0.35,
    missing: bool = True,
) -> Mut:
    """A JSON file mutated structurally (`mutate_json`) or as bytes; must_fail when it is no longer JSON."""
    if missing and rng.random() < 0.02:
        return Mut("file deleted", None, must_fail=True)
    if rng.random() < byte_share:
        mut = mutate_bytes(rng, dump(obj, indent).encode())
        mut.line = None  # a JSON document's error may name a position
    else:
        desc, new, keys = mutate_json(rng, obj, pool, focus)
        mut = Mut(desc, dump(new, indent).encode(), fields=keys)
        if rng.random() < 0.08:
            second = mutate_bytes(rng, mut.data)
            mut = Mut(f"{desc}; then {second.desc}", second.data, fields=keys)
    mut.must_fail = mut.must_fail or json_fails(mut.data)
    return mut


def _write(path: Path, mut: Mut) -> None:
    if mut.data is None:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mut.data)


# ------------------------------------------------------------------------------------------------ safetensors
def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def mutate_safetensors_header(rng: random.Random, data: bytes) -> Mut:
    """The JSON header of a safetensors file mutated (dtypes, shapes, offsets, metadata), or its length prefix."""
    header, body = split_safetensors(data)
    if rng.random() < 0.15:
        n = len(json.dumps(header).encode())
        prefix = rng.choice((0, 1, 7, n - 1, n + 1, n + 10**6, 2**32, 2**63, 2**64 - 1))
        return Mut(f"header length prefix := {prefix}", struct.pack("<Q", prefix) + data[8:])
    names = [k for k in header if k != "__metadata__"]
    r = rng.random()
    if r < 0.5 and names:
        name = rng.choice(names)
        entry = header[name]
        key = rng.choice(("dtype", "shape", "data_offsets"))
        a, b = entry["data_offsets"]
        values = {
            "dtype": ("F64", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F8_E4M3", "X", "", 5, None),
            "shape": ([], [0], [-1], [2**40, 2**40], [10**30], ["a"], [1.5], None, [*entry["shape"], 1]),
            "data_offsets": ([b, a], [a, b + 1], [a, 10**12], [-1, b], [0, 0], [a], None, [str(a), b]),
        }[key]
        v = rng.choice(values)
        entry[key] = v
        desc, keys = f"header {name}.{key} := {_short(v)}", (name, key)
    else:
        desc, header, keys = mutate_json(rng, header, raw=False)
        desc = "header " + desc
    text = dump(header, None).encode()
    if rng.random() < 0.3:
        text += b" " * rng.randrange(8)  # safetensors pads headers with spaces
    return Mut(desc, struct.pack("<Q", len(text)) + text + body, fields=keys)


def mutate_state(rng: random.Random, state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """A state dict with a tensor dropped, renamed, added, reshaped, retyped, emptied or filled with NaN."""
    new = dict(state)
    name = rng.choice(sorted(new))
    t = new[name]
    op = rng.choice(("drop", "rename", "add", "reshape", "dtype", "dtype", "nan", "empty", "scalar", "grow"))
    if op == "drop":
        del new[name]
        return f"tensor {name} dropped", new
    if op == "rename":
        other = rng.choice((name + ".x", "bert." + name, "convbert." + name, name.replace("weight", "bias"), "x"))
        new[other] = new.pop(name)
        return f"tensor {name} renamed {other}", new
    if op == "add":
        other = rng.choice(("fuzz.extra", "classifier.weight", name + "_copy", "0.exp_avg", "cuda"))
        new[other] = torch.zeros(rng.choice(((2,), (3, 4), ())))
        return f"tensor {other} added", new
    if op == "reshape":
        v = rng.choice((t.reshape(-1), t.reshape(1, -1), t.reshape(-1)[:1].clone(), t.unsqueeze(0)))
        new[name] = v.contiguous()
        return f"tensor {name} reshaped {tuple(t.shape)} -> {tuple(v.shape)}", new
    if op == "dtype":
        dtype = rng.choice((torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.bool))
        new[name] = t.to(dtype)
        return f"tensor {name} as {dtype}", new
    if op == "nan":
        new[name] = torch.full_like(t, float("nan")) if t.is_floating_point() else t
        return f"tensor {name} all NaN", new
    if op == "empty":
        new[name] = torch.empty(0, dtype=t.dtype)
        return f"tensor {name} empty", new
    if op == "scalar":
        new[name] = torch.tensor(1, dtype=t.dtype)
        return f"tensor {name} a scalar", new
    new[name] = torch.cat([t.reshape(-1), t.reshape(-1)]).contiguous() if t.numel() else t
    return f"tensor {name} doubled in length (flattened)", new


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def mutate_safetensors_file(rng: random.Random, path: Path) -> Mut:
    """A safetensors file mutated as bytes, in its header, or at the tensor level (re-saved)."""
    data = path.read_bytes()
    r = rng.random()
    if r < 0.45:
        mut = mutate_bytes(rng, data, text=False)
        if mut.desc.startswith("truncate") or mut.desc == "empty file":
            mut.must_fail = True
        return mut
    if r < 0.75:
        return mutate_safetensors_header(rng, data)
    desc, state = mutate_state(rng, _read_safetensors(path))
    buf = Path(tempfile.mkdtemp()) / "x.safetensors"
    _save_safetensors(state, buf)
    out = buf.read_bytes()
    shutil.rmtree(buf.parent)
    return Mut(desc, out, fields=tuple(state))


# ------------------------------------------------------------------------------------------------ kinds
KINDS: dict[str, Callable[[random.Random, Path], Iterator[Case]]] = {}
LINE_WHOLE = (r"\bno examples\b", r"\bempty\b", r"\bno sentences\b", r"\bnot found\b", r"no row has a label")


def kind(name: str):
    def register(gen):
        KINDS[name] = gen
        return gen

    return register


# ----------------------------------------------------------------------------------------- GLUE TSV
@kind("glue")
def glue_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A file of the tiny GLUE download (every task and split) mutated, read with read_glue."""
    from convbert.finetuning.glue import GLUE, read_glue

    root = _base(workdir, "glue", make_tiny_glue)
    files = [(task, split) for task, spec in GLUE.items() for split in spec.splits]
    while True:
        task, split = rng.choice(files)
        spec = GLUE[task]
        lines = (root / spec.dir_name / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        header = int(spec.layouts[split].header)
        big = rng.random() < 0.25
        if big:
            lines = enlarge(lines, header)
        mut = mutate_text(rng, lines, "\t", header, exact=True)
        name = f"{split}.tsv"

        def setup(d: Path, task=task, split=split, mut=mut, name=name):
            _write(d / name, mut)
            expect = Expect((name,), line=mut.line, locate=True, whole=LINE_WHOLE, must_fail=mut.must_fail)
            return (lambda: read_glue(task, d, split)), expect

        yield Case(f"{task} {name}{' (enlarged)' if big else ''}: {mut.desc}", setup)


# ----------------------------------------------------------------------------------------- custom files
TEXTS = [a for a, _ in PAIRS] + [b for _, b in PAIRS] + ["café au lait ☕ naïve", "日本語 text , with commas"]
LABELS = ("neg", "pos", "neutral")


def _custom_records(rng: random.Random, mode: str, pair: bool, rows: int) -> list[dict[str, Any]]:
    records = []
    for i in range(rows):
        r: dict[str, Any] = {"text": TEXTS[i % len(TEXTS)]}
        if pair:
            r["text_b"] = TEXTS[(i + 3) % len(TEXTS)]
        if mode == "single":
            r["label"] = LABELS[i % 3]
        elif mode == "ids":
            r["label"] = i % 3
        elif mode == "regression":
            r["label"] = round(0.37 * i, 3)
        elif mode == "multi":
            r["label"] = [LABELS[j] for j in range(3) if (i >> j) & 1]
        records.append(r)
    return records


def _custom_text(records: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if fmt == "json":
        return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"

    def cell(v: Any) -> str:
        return ",".join(v) if isinstance(v, list) else str(v)

    columns = list(records[0])
    if fmt == "tsv":
        return "".join("\t".join(cell(r[c]) for c in columns) + "\n" for r in [dict(zip(columns, columns))] + records)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows([[cell(r[c]) for c in columns] for r in records])
    return buf.getvalue()


@kind("custom")
def custom_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A custom classification/regression file (.jsonl, .json, .tsv, .csv) mutated, read with read_custom and
    encoded with encode_examples."""
    from convbert.finetuning.tasks import encode_examples, read_custom

    tok = _tokenizer(workdir)
    while True:
        mode = rng.choice(("single", "ids", "regression", "multi", "unlabelled"))
        fmt = rng.choice(("jsonl", "json", "tsv", "csv"))
        pair = rng.random() < 0.4
        rows = rng.choice((6, 6, 400))
        records = _custom_records(rng, mode, pair, rows)
        kwargs: dict[str, Any] = {
            "text_pair_column": "text_b" if pair else None,
            "label_column": None if mode == "unlabelled" else "label",
            "regression": mode == "regression",
            "multi_label": mode == "multi",
        }
        if mode in ("single", "multi") and rng.random() < 0.5:
            kwargs["labels"] = list(LABELS)
        line, must_fail, fields = None, False, ()
        r = rng.random()
        if fmt in ("jsonl", "json") and r < 0.4:  # a field of one record
            i = rng.randrange(rows)
            key = rng.choice(list(records[i]) + ["fuzz_extra"])
            op = rng.choice(("type", "type", "delete", "long"))
            if op == "delete" and key in records[i]:
                del records[i][key]
                desc = f"record {i}: delete {key!r}"
                must_fail = key == "text" or (key == "label" and mode != "unlabelled") or key == "text_b"
            else:
                v = "w" * _long(rng) if op == "long" else rng.choice(JSON_POOL + tuple(CELLS[:20]))
                records[i][key] = v
                desc = f"record {i}: {key} := {_short(v)}"
                if key in ("text", "text_b") and key in kwargs.values() or key == "text":
                    must_fail = not (isinstance(v, str) and v.strip())
            text = _custom_text(records, fmt)
            line = i + 1 if fmt == "jsonl" else i + 2
            mut = Mut(desc, text.encode("utf-8", "surrogatepass"), line=line, must_fail=must_fail)
        elif fmt == "json" and r < 0.55:
            desc, new, fields = mutate_json(rng, records)
            mut = Mut(desc, dump(new, None).encode(), fields=fields)
            mut.must_fail = json_fails(mut.data) or not isinstance(new, list)
        else:
            lines = _custom_text(records, fmt).splitlines()
            sep = {"tsv": "\t", "csv": ","}.get(fmt)
            if sep is None:  # JSON lines: only whole lines and bytes
                mut = mutate_text(rng, lines, None, 0, exact=fmt == "jsonl")
            else:
                mut = mutate_text(rng, lines, sep, 1, exact=fmt == "tsv")
            if fmt == "json":
                mut.line = None  # an array's error names where the JSON breaks, maybe lines later
                mut.must_fail = mut.must_fail or (mut.data is not None and json_fails(mut.data))
        name = f"fuzz-data.{fmt}"

        def setup(d: Path, mut=mut, name=name, kwargs=kwargs, mode=mode, fields=fields):
            _write(d / name, mut)

            def target():
                examples, labels = read_custom(d / name, **kwargs)
                label2id = None if labels is None else {x: i for i, x in enumerate(labels)}
                if kwargs["label_column"] is not None and mode != "regression" and label2id is None:
                    raise WronglyAccepted("a labelled file read with no label list")
                encode_examples(tok, examples, label2id, 32, kwargs["regression"], kwargs["multi_label"])

            expect = Expect(
                (name,), line=mut.line, locate=True, fields=fields, whole=LINE_WHOLE, must_fail=mut.must_fail
            )
            return target, expect

        given = " (labels given)" if kwargs.get("labels") else ""
        yield Case(f"{fmt} {mode}{' pair' if pair else ''} {rows} rows{given}: {mut.desc}", setup)


# ----------------------------------------------------------------------------------------- CoNLL
CONLL_SENTENCES = (
    [("EU", "NNP", "B-NP", "B-ORG"), ("rejects", "VBZ", "B-VP", "O"), ("German", "JJ", "B-NP", "B-MISC"),
     ("call", "NN", "I-NP", "O"), (".", ".", "O", "O")],
    [("Peter", "NNP", "B-NP", "B-PER"), ("Blackburn", "NNP", "I-NP", "I-PER")],
    [("the", "DT", "B-NP", "O"), ("café", "NN", "I-NP", "O"), ("in", "IN", "B-PP", "O"),
     ("Paris", "NNP", "B-NP", "B-LOC"), ("日本", "NNP", "B-NP", "B-LOC")],
)  # fmt: skip


def _conll_lines(style: str) -> list[str]:
    lines = ["-DOCSTART- -X- -X- O", ""] if style == "conll2003" else []
    for sentence in CONLL_SENTENCES:
        for word, pos, chunk, tag in sentence:
            lines.append(f"{word} {pos} {chunk} {tag}" if style == "conll2003" else f"{word}\t{tag}")
        lines.append("")
    return lines


@kind("conll")
def conll_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A CoNLL file (word<TAB>tag, or CoNLL-2003's four space-separated columns) mutated, read with read_conll and
    encoded with token_classification_features."""
    from convbert.finetuning.conll import conll_labels, read_conll, token_classification_features

    tok = _tokenizer(workdir)
    while True:
        style = rng.choice(("tab", "conll2003"))
        lines = _conll_lines(style)
        big = rng.random() < 0.25
        if big:
            lines = enlarge(lines, 0)
        mut = mutate_text(rng, lines, "\t" if style == "tab" else " ", 0, exact=True)

        def setup(d: Path, mut=mut):
            _write(d / "fuzz-train.txt", mut)

            def target():
                sentences = read_conll(d / "fuzz-train.txt")
                labels = conll_labels(sentences)
                token_classification_features(tok, sentences, {t: i for i, t in enumerate(labels)}, 32)

            expect = Expect(("fuzz-train.txt",), line=mut.line, locate=True, whole=LINE_WHOLE, must_fail=mut.must_fail)
            return target, expect

        yield Case(f"{style}{' (enlarged)' if big else ''}: {mut.desc}", setup)


# ----------------------------------------------------------------------------------------- SQuAD
def _squad() -> dict[str, Any]:
    c1 = "The cat sat on the mat in Paris. Paris is the capital of France."
    c2 = "Naïve café owners in 日本 said hello to John, who went to the big red house."
    return {
        "version": "v2.0",
        "data": [
            {
                "title": "Cats",
                "paragraphs": [
                    {
                        "context": c1,
                        "qas": [
                            {"id": "q1", "question": "Where did the cat sit?", "is_impossible": False,
                             "answers": [{"text": "on the mat", "answer_start": c1.index("on the mat")}]},
                            {"id": "q2", "question": "What is the capital of France?",
                             "answers": [{"text": "Paris", "answer_start": c1.index("Paris")},
                                         {"text": "Paris", "answer_start": c1.rindex("Paris")}]},
                            {"id": "q3", "question": "Who owns the mat?", "is_impossible": True, "answers": []},
                        ],
                    }
                ],
            },
            {
                "title": "Cafés",
                "paragraphs": [
                    {"context": c2, "qas": [{"id": "q4", "question": "Where did John go?",
                                             "answers": [{"text": "the big red house",
                                                          "answer_start": c2.index("the big red house")}]}]}
                ],
            },
        ],
    }  # fmt: skip


def _squad_semantic(rng: random.Random, doc: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """A mutation of the meaning: answer offsets and texts, question ids, is_impossible."""
    qas = [qa for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"]]
    qa = rng.choice(qas)
    op = rng.choice(("shift", "start", "text", "dup_id", "impossible", "no_answers", "context"))
    answers = qa["answers"]
    if op in ("shift", "start", "text") and answers:
        a = rng.choice(answers)
        if op == "shift":
            a["answer_start"] += rng.choice((-1, 1, 1000))
        elif op == "start":
            a["answer_start"] = rng.choice((-1, -(10**30), 10**30, 2**63, 0))
        else:
            a["text"] = rng.choice(("", " ", a["text"] + " ", a["text"].upper(), "x" * 10_000))
        return f"{qa['id']}: answer := {_short(a)}", ("answers", "answer_start", "text")
    if op == "dup_id":
        qa["id"] = rng.choice(qas)["id"]
        return f"{qa['id']}: duplicated id", ("id",)
    if op == "impossible":
        qa["is_impossible"] = not qa.get("is_impossible", False)
        return f"{qa['id']}: is_impossible := {qa['is_impossible']}", ("is_impossible",)
    if op == "no_answers":
        qa["answers"] = []
        return f"{qa['id']}: no answers", ("answers",)
    p = rng.choice([p for a in doc["data"] for p in a["paragraphs"]])
    p["context"] = rng.choice(("", p["context"][:10], "x" * 100_000))
    return f"context := {len(p['context'])} chars", ("context",)


@kind("squad")
def squad_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A SQuAD v2 JSON file mutated (structure, meaning, bytes), read with read_squad and turned into features."""
    from convbert.finetuning.squad import prepare_features, read_squad

    tok = _tokenizer(workdir)
    while True:
        doc = _squad()
        if rng.random() < 0.3:
            desc, fields = _squad_semantic(rng, doc)
            mut = Mut(desc, dump(doc).encode(), fields=fields)
        else:
            mut = mutate_json_file(rng, doc)
        whole = (r"no questions", r"JSON object", r"\bdata\b")

        def setup(d: Path, mut=mut, whole=whole):
            _write(d / "fuzz-squad.json", mut)

            def target():
                examples = read_squad(d / "fuzz-squad.json")
                prepare_features(tok, examples, max_length=64, doc_stride=8, max_query_length=16, train=False)

            expect = Expect(("fuzz-squad.json",), locate=True, fields=mut.fields, whole=whole, must_fail=mut.must_fail)
            return target, expect

        yield Case(mut.desc, setup)


# ----------------------------------------------------------------------------------------- config.json
SIZE_FIELDS = (
    "vocab_size", "hidden_size", "embedding_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "head_ratio", "conv_kernel_size", "num_groups", "num_labels",
)  # fmt: skip
SAFE_SIZES = (-1, 0, 1, 2, 3, 5, 8, 9, 16, 33, 64, 1.0, 1.5, "8", True, None, float("nan"), float("inf"), [], {})


def _config_value(rng: random.Random, key: str, safe: bool) -> tuple[Any, bool]:
    """A value for config.json's `key` and whether it is certainly invalid."""
    if key in SIZE_FIELDS:
        v = rng.choice(SAFE_SIZES + (() if safe else HUGE + (10**6,)))
        if safe and v in (33, 64) and key in ("num_hidden_layers", "vocab_size", "num_labels"):
            v = 3
        integral = isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer()
        return v, not (integral and v >= 1)  # 2.0 may be read as 2
    if key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        v = rng.choice((0.0, 0.5, 1.0, -0.1, float("nan"), float("inf"), "0.1", None, True, 2))
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1  # 1.0: [0, 1) or [0, 1]
        return v, not ok
    if key in ("hidden_act", "conv_type", "classifier_head", "problem_type", "model_type"):
        v = rng.choice(("relu", "gelu", "GELU", "", "sdconv", "noconv", "bert", "linear", None, 1, [], "regression"))
        return v, False
    if key == "id2label":
        v = rng.choice(
            ({"0": "a"}, {"0": "a", "1": "a"}, {"0": "a", "5": "b"}, {"-1": "a"}, {"x": "a"}, {"0": None},
             {"0": ["a"]}, ["a", "b"], "a", 3, {}, {"0.5": "a"}, {" 1": "a", "0": "b"}, None)
        )  # fmt: skip
        return v, False
    if key in ("layer_norm_eps", "initializer_range"):
        return rng.choice((0.0, -1.0, 1e-12, float("nan"), float("inf"), "1e-12", None, [])), False
    if key == "pad_token_id":
        return rng.choice((-1, 0, 10**9, 1.5, None, "0", True)), False
    return rng.choice(JSON_POOL), False


@kind("config")
def config_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """config.json mutated, read with ConvBertConfig.from_json_file, or (a third of the cases) loaded with
    from_pretrained / load_model_dir from a tiny model dir and run forward."""
    from convbert.config import ConvBertConfig
    from convbert.model import ConvBertModel, load_model_dir

    model_dir = _model_dir(workdir)
    base = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    while True:
        load = rng.random() < 0.33
        doc = copy.deepcopy(base)
        if rng.random() < 0.45:  # a typed value for one field
            key = rng.choice(list(doc) + ["num_labels", "fuzz_extra"])
            v, must_fail = _config_value(rng, key, safe=load)
            doc[key] = v
            mut = Mut(f"{key} := {_short(v)}", dump(doc).encode(), must_fail=must_fail, fields=(key,))
        elif load:  # no huge sizes: from_pretrained would build the model first
            safe_pool = [v for v in JSON_POOL if not (isinstance(v, (int, float)) and abs(v) > 100)]
            mut = mutate_json_file(rng, doc, pool=safe_pool, missing=True)
        else:
            mut = mutate_json_file(rng, doc)
        how = rng.choice(("from_pretrained", "load_model_dir")) if load else "from_json_file"

        def setup(d: Path, mut=mut, how=how):
            if how == "from_json_file":
                _write(d / "config.json", mut)
                return (lambda: ConvBertConfig.from_json_file(d / "config.json")), _config_expect(d, mut)
            _copy_files(model_dir, d / "fuzz-model")
            _write(d / "fuzz-model" / "config.json", mut)

            def target():
                model = (ConvBertModel.from_pretrained if how == "from_pretrained" else load_model_dir)(
                    d / "fuzz-model"
                )
                model(torch.tensor([[2, 11, 12, 3]]))

            return target, _config_expect(d, mut, "fuzz-model")

        yield Case(f"{how}: {mut.desc}", setup)


def _config_expect(d: Path, mut: Mut, model_dir: str | None = None) -> Expect:
    names = ("config.json",) if model_dir is None else ("config.json", model_dir)
    whole = (r"JSON object", r"model_type", r"weights", r"architecture", r"not a model directory", r"missing")
    fields = mut.fields + CONFIG_FIELDS  # a field named is a place, also another than the mutated one
    return Expect(names, locate=True, fields=fields, whole=whole, must_fail=mut.must_fail)


CONFIG_FIELDS = (*SIZE_FIELDS, "label2id", "id2label", "model_type", "hidden_act", "conv_type", "classifier_head",
                 "problem_type", "architectures", "hidden_dropout_prob", "attention_probs_dropout_prob",
                 "initializer_range", "layer_norm_eps", "pad_token_id", "attention_head_size", "classifier_dropout",
                 "mask_conv_padding")  # fmt: skip


# ----------------------------------------------------------------------------------------- tokenizer files
# no ids in (2**24, 2**32): tokenizers' to_str, which from_pretrained calls, takes time and memory in proportion to
# the largest id (2**31: 20 s and 8.6 GB); 2**24 shows it at 0.1 s
TOKENIZER_POOL = tuple(v for v in JSON_POOL if not (isinstance(v, int) and 2**24 < v < 2**32))


def _vocab_focus(path: tuple) -> bool:
    return not path or path[0] in ("model", "normalizer", "added_tokens", "pre_tokenizer", "post_processor")


@kind("tokenizer")
def tokenizer_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """tokenizer.json, vocab.txt or tokenizer_config.json mutated in a tokenizer dir (or given as the file),
    loaded with ConvBertTokenizer.from_pretrained and used to encode."""
    from convbert.tokenizer import ConvBertTokenizer

    tok_dir = _tokenizer_dir(workdir)
    tok_json = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tok_config = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    vocab_lines = (tok_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    while True:
        r = rng.random()
        with_json = True
        if r < 0.35:
            file = "tokenizer.json"
            if rng.random() < 0.4:  # a vocab entry: ids out of order, negative, huge, strings
                doc = copy.deepcopy(tok_json)
                vocab = doc["model"]["vocab"]
                token = rng.choice(list(vocab))
                v = rng.choice((-1, len(vocab), len(vocab) + 1000, 2**24, 2**32, 1.5, "3", None, vocab[token] + 1))
                vocab[token] = v
                mut = Mut(f"model.vocab[{token!r}] := {_short(v)}", dump(doc).encode(), fields=("vocab", token))
            else:
                focus = _vocab_focus if rng.random() < 0.7 else None
                mut = mutate_json_file(rng, tok_json, pool=TOKENIZER_POOL, focus=focus)
        elif r < 0.55:
            file = "tokenizer_config.json"
            with_json = rng.random() < 0.5
            if rng.random() < 0.5:
                doc = copy.deepcopy(tok_config)
                key = rng.choice(("do_lower_case", "strip_accents", "model_max_length"))
                v = rng.choice((True, False, None, 0, -1, 1, 512, 10**30, 1.5, "true", "yes", [], {}, float("nan")))
                doc[key] = v
                ok = {
                    "do_lower_case": isinstance(v, bool),
                    "strip_accents": v is None or isinstance(v, bool),
                    "model_max_length": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                }[key]
                mut = Mut(f"{key} := {_short(v)}", dump(doc).encode(), fields=(key,), must_fail=not ok)
            else:
                mut = mutate_json_file(rng, tok_config)
        else:
            file, with_json = "vocab.txt", False
            mut = mutate_text(rng, vocab_lines, None, 0, exact=True)
        as_file = file != "tokenizer_config.json" and rng.random() < 0.25
        if mut.data is None:  # a missing tokenizer.json falls back to vocab.txt; tokenizer_config.json is optional
            mut.must_fail = as_file or (file == "vocab.txt" and not with_json)

        def setup(d: Path, file=file, mut=mut, with_json=with_json, as_file=as_file):
            target_dir = d / "fuzz-tok"
            _copy_files(tok_dir, target_dir, skip=() if with_json else ("tokenizer.json",))
            _write(target_dir / file, mut)
            path = target_dir / file if as_file else target_dir

            def target():
                tok = ConvBertTokenizer.from_pretrained(path)
                ids = tok("the unbelievable cat , hello !", "paris is the capital", return_tensors=None)["input_ids"]
                tok.encode("who went to the city ?", max_length=8)
                top = max(tok.backend.get_vocab(with_added_tokens=True).values())
                if top >= tok.vocab_size or max(max(row) for row in ids) >= tok.vocab_size:
                    raise WronglyAccepted(f"token ids up to {top}, but vocab_size is {tok.vocab_size}")

            whole = (r"special token", r"neither", r"WordPiece", r"JSON object", r"\bempty\b", r"not found")
            fields = mut.fields + ("do_lower_case", "strip_accents", "model_max_length", "vocab")
            names = (file,) if mut.data is not None or as_file else (file, "fuzz-tok")
            if file == "tokenizer_config.json" or mut.data is None:
                names = (file, "fuzz-tok")
            return target, Expect(names, line=mut.line, locate=True, fields=fields, whole=whole,
                                  must_fail=mut.must_fail)  # fmt: skip

        where = f"{file}{' (as the path)' if as_file else ''}{'' if with_json else ' (no tokenizer.json)'}"
        yield Case(f"{where}: {mut.desc}", setup)


# ----------------------------------------------------------------------------------------- weights
def _bin_variant(rng: random.Random, state: dict[str, torch.Tensor]) -> tuple[str, Any, bool]:
    """What a pytorch_model.bin holds instead of a state dict of tensors; whether it certainly fails."""
    op = rng.choice(("list", "tensor", "int", "none", "str", "value", "key", "nested", "global", "state"))
    if op == "list":
        return "a list of tensors", list(state.values()), True
    if op == "tensor":
        return "one tensor", next(iter(state.values())), True
    if op == "int":
        return "an int", 7, True
    if op == "none":
        return "None", None, True
    if op == "str":
        return "a string", "weights", True
    name = rng.choice(sorted(state))
    new: dict[Any, Any] = dict(state)
    if op == "value":
        new[name] = rng.choice((1, 1.5, "x", None, [1, 2], b"bytes", (1,)))
        return f"{name} := {_short(new[name])}", new, False
    if op == "key":
        key = rng.choice((0, 1.5, None, ("a",), b"k"))
        new[key] = new.pop(name)
        return f"{name} under key {key!r}", new, False
    if op == "nested":
        new[name] = {"tensor": new[name]}
        return f"{name} nested in a dict", new, False
    if op == "global":
        new[name] = Path("/tmp")  # a global weights_only refuses to unpickle
        return f"{name} := a pathlib.Path (a pickled global)", new, True
    desc, new = mutate_state(rng, state)
    return desc, new, False


@kind("weights")
def weights_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """model.safetensors or pytorch_model.bin of a tiny model dir mutated, read with read_weights, loaded with
    ConvBertModel.from_pretrained (and run forward), or converted with convert.resave (output checked)."""
    from convbert.hub import read_weights
    from convbert.model import ConvBertModel
    from convbert.tools.convert import resave

    model_dir = _model_dir(workdir)
    state = _read_safetensors(model_dir / "model.safetensors")
    bin_bytes = _base(workdir, "weights-bin", lambda p: _torch_bytes(state))
    while True:
        fmt = rng.choice(("safetensors", "safetensors", "bin"))
        if fmt == "safetensors":
            file = "model.safetensors"
            if rng.random() < 0.03:
                mut = Mut("model.safetensors deleted", None, must_fail=True)
            else:
                mut = mutate_safetensors_file(rng, model_dir / file)
        else:
            file = "pytorch_model.bin"
            r = rng.random()
            if r < 0.45:
                mut = mutate_bytes(rng, bin_bytes, text=False)
                mut.must_fail = mut.must_fail or mut.desc.startswith(("truncate", "empty", "random bytes"))
            elif r < 0.5:
                mut = Mut("pytorch_model.bin as it was saved", bin_bytes)
            else:
                desc, obj, must_fail = _bin_variant(rng, state)
                mut = Mut(desc, _torch_bytes(obj), must_fail=must_fail)
        how = rng.choice(("read_weights", "read_weights", "from_pretrained", "from_pretrained", "resave"))

        def setup(d: Path, file=file, mut=mut, how=how, fmt=fmt):
            target_dir = d / "fuzz-model"
            _copy_files(model_dir, target_dir, skip=() if fmt == "safetensors" else ("model.safetensors",))
            _write(target_dir / file, mut)
            out = d / "fuzz-out"

            def target():
                if how == "read_weights":
                    state = read_weights(target_dir)
                    odd = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
                    if odd:
                        raise WronglyAccepted(f"a state dict with non-tensor entries: {odd[:3]!r}")
                elif how == "from_pretrained":
                    ConvBertModel.from_pretrained(target_dir)(torch.tensor([[2, 11, 12, 3]]))
                else:
                    resave(target_dir, out)

            names = (file,) if how == "read_weights" and mut.data is not None else (file, "fuzz-model")
            return target, Expect(names, must_fail=mut.must_fail, outputs=(out,) if how == "resave" else ())

        yield Case(f"{how} {file}: {mut.desc}", setup)


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- checkpoints
CKPT_FILES = ("trainer_state.json", "model.safetensors", "optimizer.safetensors", "rng-0.safetensors")


def _checkpoints():
    """The module with save_checkpoint/load_checkpoint (convbert.checkpoints, or train_utils where they were)."""
    try:
        from convbert import checkpoints

        return checkpoints
    except ImportError:
        from convbert import train_utils

        return train_utils


def _trainer(vocab_size: int):
    """A tiny model, its fused AdamW, schedule and scaler (as the recipes make them)."""
    from convbert.model import ConvBertModel
    from convbert.train_utils import grad_scaler, linear_schedule, make_optimizer

    model = ConvBertModel(_tiny_config(vocab_size))
    optimizer = make_optimizer(model, 1e-3)
    return model, optimizer, linear_schedule(optimizer, 2, 10), grad_scaler("fp32", torch.device("cpu"))


def _train_step(model, optimizer, scheduler, scaler) -> None:
    ids = torch.tensor([[2, 11, 12, 13, 3, 0]])
    loss = model(ids, attention_mask=(ids != 0).long()).last_hidden_state.float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad()


def _checkpoint_dir(workdir: Path) -> Path:
    def build(path: Path) -> Path:
        from convbert.train_utils import Dist

        trainer = _trainer(_tokenizer(workdir).vocab_size)
        _train_step(*trainer)
        return _checkpoints().save_checkpoint(path / "run", 1, *trainer, Dist(), {"epoch": 0, "best_metric": 0.5})

    return _base(workdir, "checkpoint", build)


def _rehash(ckpt: Path) -> bool:
    """Rewrite the checkpoint's manifest (if this convbert writes one) to match the mutated files."""
    write = getattr(_checkpoints(), "write_manifest", None)
    if write is None or not (ckpt / "manifest.json").is_file():
        return False
    write(ckpt)
    return True


@kind("checkpoint")
def checkpoint_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A file of a tiny model + AdamW checkpoint (save_checkpoint) mutated, deleted or added, loaded with
    load_checkpoint into a fresh trainer, which then takes a training step. A failed load must leave the trainer's
    state as it was. Half of the mutated checkpoints get their manifest (sha256) rewritten, to reach the checks
    behind it; without that, any changed byte must fail."""
    from convbert.train_utils import Dist

    load_checkpoint = _checkpoints().load_checkpoint

    ckpt = _checkpoint_dir(workdir)
    files = sorted(p.name for p in ckpt.iterdir())
    original = {name: (ckpt / name).read_bytes() for name in files}
    has_manifest = "manifest.json" in files
    vocab_size = _tokenizer(workdir).vocab_size
    while True:
        r = rng.random()
        extra = None
        rehash = False
        if r < 0.06:
            file = rng.choice(files)
            mut = Mut(f"{file} deleted", None, must_fail=True)
        elif r < 0.1:
            file, extra = rng.choice((("rng-1.safetensors", "rng-0.safetensors"), ("notes.txt", None)))
            mut = Mut(f"{file} added", original.get(extra, b"notes\n"))
            rehash = has_manifest and rng.random() < 0.5
        else:
            json_files = [f for f in files if f.endswith(".json")]
            tensor_files = [f for f in files if f.endswith(".safetensors")]
            file = rng.choice(json_files) if r < 0.55 else rng.choice(tensor_files)
            if file.endswith(".json"):
                mut = mutate_json_file(rng, json.loads(original[file]), indent=1, missing=False)
            else:
                mut = mutate_safetensors_file(rng, ckpt / file)
            rehash = has_manifest and file != "manifest.json" and rng.random() < 0.5
            changed = mut.data != original[file] and file != "manifest.json"  # (its JSON may still mean the same)
            mut.must_fail = mut.must_fail or (has_manifest and changed and not rehash)

        def setup(d: Path, file=file, mut=mut, extra=extra, rehash=rehash):
            path = d / "run" / ckpt.name
            _copy_files(ckpt, path)
            _write(path / file, mut)
            if rehash:
                _rehash(path)
            trainer = _trainer(vocab_size)

            def target():
                load_checkpoint(path, *trainer, Dist())
                _train_step(*trainer)

            def snapshot():
                model, optimizer, scheduler, scaler = trainer
                return (
                    {k: v.clone() for k, v in model.state_dict().items()},
                    copy.deepcopy(optimizer.state_dict()),
                    {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
                    torch.get_rng_state(),
                )

            fields = mut.fields if file.endswith(".json") else ()
            whole = (r"manifest", r"sha256", r"missing", r"not a checkpoint", r"does not match", r"bytes")
            expect = Expect((file,), locate=bool(fields), fields=fields, whole=whole, must_fail=mut.must_fail,
                            state=snapshot)  # fmt: skip
            return target, expect

        yield Case(f"{file}: {mut.desc}{' (manifest rewritten)' if rehash else ''}", setup)


# ----------------------------------------------------------------------------------------- pretraining shards
CORPUS = (
    "the cat sat on the mat .\nthe dog sat on the mat .\n\n"
    "what is the capital of france ?\nparis is the capital of france .\nhe said hello .\n\n"
    "john went to the big red house .\nthe quick brown fox jump over the lazy dog .\n"
    "naïve café 日本 .\n\n"
) * 3


def _shards_dir(workdir: Path) -> Path:
    def build(path: Path) -> Path:
        from convbert.pretraining.data import prepare

        (path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
        prepare([path / "corpus.txt"], _tokenizer_dir(workdir), path / "shards", max_seq_length=16, seed=0,
                num_workers=1, shard_size=200, progress=False)  # fmt: skip
        return path / "shards"

    return _base(workdir, "shards", build)


@kind("shards")
def shards_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A file of prepared shards (manifest.json, shard-*.bin, shard-*.rows.npy) mutated, deleted or added, opened
    with PretrainShards, verified, checked against the tokenizer and indexed. A changed shard file must fail
    `verify` unless the manifest's sha256 was rewritten to match."""
    from convbert.pretraining.shards import PretrainShards, vocab_hash

    shards = _shards_dir(workdir)
    manifest = json.loads((shards / "manifest.json").read_text(encoding="utf-8"))
    files = sorted(p.name for p in shards.iterdir())
    tok_hash = vocab_hash(_tokenizer_dir(workdir))
    vocab_size = _tokenizer(workdir).vocab_size
    while True:
        r = rng.random()
        file = rng.choice(files)
        rehash = False
        if r < 0.06:
            mut = Mut(f"{file} deleted", None, must_fail=file != "run_config.json")
        elif r < 0.4:
            file = "manifest.json"
            focus = (lambda p: bool(p) and p[0] in ("shards", "max_seq_length", "dtype", "tokenizer", "format")) \
                if rng.random() < 0.7 else None  # fmt: skip
            mut = mutate_json_file(rng, manifest, indent=2, focus=focus, missing=False)
        else:
            file = rng.choice([f for f in files if f != "manifest.json"])
            data = (shards / file).read_bytes()
            mut = mutate_bytes(rng, data, text=False)
            if file.endswith(".rows.npy") and rng.random() < 0.3:
                rows = np.load(shards / file)
                rows[rng.randrange(len(rows)), rng.randrange(2)] = rng.choice((-1, 0, 17, 10_000, -(2**15)))
                buf = io.BytesIO()
                np.save(buf, rows)
                mut = Mut("a row's [length, sep] out of range", buf.getvalue())
            rehash = rng.random() < 0.4
            mut.must_fail = mut.data != data and not rehash

        def setup(d: Path, file=file, mut=mut, rehash=rehash):
            path = d / "fuzz-shards"
            _copy_files(shards, path)
            _write(path / file, mut)
            if rehash:
                m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
                for s in m["shards"]:
                    for name, key in ((s["file"], "sha256"), (s["rows_file"], "rows_sha256")):
                        if name == file:
                            s[key] = hashlib.sha256(mut.data).hexdigest()
                (path / "manifest.json").write_text(json.dumps(m, indent=2), encoding="utf-8")

            def target():
                s = PretrainShards(path)
                s.verify()
                s.check_tokenizer(vocab_size, tok_hash)
                n = len(s)
                if n:
                    batch = s[np.arange(n)]
                    _ = (s[0], s[n - 1], s[-1])
                    ids = batch["input_ids"]
                    if ids.min() < 0 or ids.max() >= vocab_size:
                        raise WronglyAccepted(f"token ids in [{ids.min()}, {ids.max()}], vocab_size {vocab_size}")

            fields = mut.fields
            whole = (r"manifest", r"sha256", r"missing", r"truncated", r"bytes", r"vocabulary", r"format")
            names = (file, "shard-") if file == "manifest.json" else (file, "manifest.json")  # an entry's file
            return target, Expect(names, locate=bool(fields), fields=fields, whole=whole,
                                  must_fail=mut.must_fail)  # fmt: skip

        yield Case(f"{file}: {mut.desc}{' (sha256 rewritten)' if rehash else ''}", setup)


# ----------------------------------------------------------------------------------------- pretraining corpus
CLI_PREPARE = {"max_seq_length": "--max-length", "num_workers": "--workers", "shard_size": "--shard-size",
               "errors": "--errors", "text_field": "--text-field"}  # fmt: skip


@kind("corpus")
def corpus_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A pretraining corpus (text or JSONL), prepare's arguments or its tokenizer mutated, prepared into shards
    (`prepare`, or `convbert data prepare`, which must return 2), or a tokenizer trained on it (`convbert tokenizer
    train`); a failure must leave no output directory (or temporary), a success shards that verify (a tokenizer
    that loads)."""
    from convbert.pretraining.data import prepare
    from convbert.pretraining.shards import PretrainShards
    from convbert.tokenizer import ConvBertTokenizer

    tok_dir = _tokenizer_dir(workdir)
    text_lines = CORPUS.splitlines()
    docs = [d for d in CORPUS.split("\n\n") if d.strip()]
    jsonl_lines = [json.dumps({"text": d, "id": i}, ensure_ascii=False) for i, d in enumerate(docs)]
    while True:
        how = rng.choice(("prepare", "prepare", "prepare", "cli", "train"))
        fmt = rng.choice(("txt", "jsonl"))
        lines = text_lines if fmt == "txt" else jsonl_lines
        kwargs: dict[str, Any] = {"max_seq_length": 16, "num_workers": 1, "shard_size": rng.choice((64, 1 << 20))}
        if rng.random() < 0.5 and how != "train":
            kwargs["errors"] = "replace"
        arg = None
        r = rng.random()
        if r < 0.15 and how != "train":  # an argument
            arg, v = rng.choice(
                [("max_seq_length", v) for v in (0, -1, 4, 5, 4096)]
                + [("shard_size", v) for v in (0, -5, 1)]
                + [("num_workers", v) for v in (-1, 2)]
                + [("errors", v) for v in ("bogus", "ignore", "")]
                + [("text_field", v) for v in ("missing", "", "id")]
            )
            kwargs[arg] = v
            mut = Mut(f"{arg}={v!r}", _join(lines))
            if arg in ("errors",) or (arg == "max_seq_length" and v < 5) or (arg == "shard_size" and v < 1):
                mut.must_fail = True
            if (arg == "text_field" and fmt == "jsonl") or (arg == "num_workers" and v < 1):
                mut.must_fail = True
        elif fmt == "jsonl" and r < 0.4:
            i = rng.randrange(len(docs))
            record: dict[str, Any] = {"text": docs[i], "id": i}
            desc, new, keys = mutate_json(rng, record)
            new_lines = list(lines)
            new_lines[i] = dump(new, None)
            mut = Mut(f"line {i + 1}: {desc}", _join(new_lines), line=i + 1, fields=keys)
        else:
            mut = mutate_text(rng, lines, None, 0, exact=fmt == "jsonl", empty_fails=False)
            if kwargs.get("errors") == "replace" and "invalid UTF-8" in mut.desc:  # replaced, and counted
                mut.must_fail = False
                mut.line = mut.line if fmt == "jsonl" else None
        if how == "train":  # any text trains; only missing, empty or undecodable files fail
            mut.must_fail = mut.data is None or not mut.data.strip() or "invalid UTF-8" in mut.desc
            mut.line, mut.fields = None, ()
        tokenizer_mut = None
        if arg is None and how != "train" and rng.random() < 0.06:
            tokenizer_mut = rng.choice(("missing", "junk", "vocab only"))

        def setup(d: Path, how=how, fmt=fmt, mut=mut, kwargs=kwargs, arg=arg, tokenizer_mut=tokenizer_mut):
            name = f"fuzz-corpus.{fmt}"
            _write(d / name, mut)
            tok = d / "fuzz-tok"
            _copy_files(tok_dir, tok, skip=("tokenizer.json",) if tokenizer_mut in ("missing", "vocab only") else ())
            if tokenizer_mut == "junk":
                (tok / "tokenizer.json").write_bytes(b'{"model": 3')
            out = d / "fuzz-out"

            def target():
                if how == "prepare":
                    prepare([d / name], tok, out, progress=False, **kwargs)
                elif how == "cli":
                    argv = ["data", "prepare", "--input", str(d / name), "--tokenizer", str(tok), "--out", str(out)]
                    for key, value in kwargs.items():
                        argv += [CLI_PREPARE[key], str(value)]
                    _cli_call(("data", "prepare"), argv, roundtrip=False, d=d, print_config=False)
                else:
                    argv = ["tokenizer", "train", "--input", str(d / name), "--vocab-size", "60", "--out", str(out)]
                    _cli_call(("tokenizer", "train"), [*argv, "--min-frequency", "1"], False, d, print_config=False)
                    ConvBertTokenizer.from_pretrained(out)("the cat sat")
                    return
                PretrainShards(out).verify()

            names = (name,) if arg is None else (arg, name, "errors", "text_field", CLI_PREPARE[arg][2:])
            if arg is not None and how == "cli":
                names += (CLI_PREPARE[arg][2:].replace("-", "_"),)
            if tokenizer_mut is not None:
                names = ("tokenizer.json", "fuzz-tok") + (names if mut.data is None else ())
            whole = (r"empty", r"no text", r"not found")
            line = mut.line if tokenizer_mut is None else None
            must_fail = mut.must_fail or tokenizer_mut is not None
            locate = arg is None and tokenizer_mut is None and how != "train"
            return target, Expect(names, line=line, locate=locate, fields=mut.fields, whole=whole,
                                  must_fail=must_fail, outputs=(out,))  # fmt: skip

        tok_desc = f"; tokenizer {tokenizer_mut}" if tokenizer_mut else ""
        settings = "" if how == "train" else f" {kwargs}"
        yield Case(f"{how} {fmt}{settings}: {mut.desc}{tok_desc}", setup)


# ----------------------------------------------------------------------------------------- CLI settings
def _commands() -> dict[tuple[str, ...], type]:
    """Every command of `convbert` and its settings class."""

    def build(_: Path) -> dict[tuple[str, ...], type]:
        from convbert.cli import build_parser

        found: dict[tuple[str, ...], type] = {}

        def walk(parser, prefix):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        walk(sub, (*prefix, name))
            if "settings" in parser._defaults:
                found[prefix] = parser._defaults["settings"]

        walk(build_parser(), ())
        return found

    global _COMMANDS
    if _COMMANDS is None:
        _COMMANDS = build(Path())
    return _COMMANDS


_COMMANDS: dict[tuple[str, ...], type] | None = None


OUTPUT_SETTINGS = ("out", "output")


BASE_SETTINGS = {("flops",): {"preset": "tiny"}}  # what a command needs besides its required settings


def _required_value(s, d: Path) -> Any:
    if s.name in OUTPUT_SETTINGS:
        return str(d / f"fuzz-{s.name}")
    if s.kind is int:
        return 64
    if s.kind is float:
        return 0.5
    if s.choices:
        return s.choices[0]
    return [str(d / "fuzz-input.txt")] if s.many else str(d / f"fuzz-{s.name}")


def _cli_value(rng: random.Random, s) -> tuple[str, Any, bool, bool]:
    """(command-line text, config-file value, the text certainly invalid, the value certainly invalid) for
    setting `s`."""
    lo = s.range.lo if s.range is not None else None
    hi = s.range.hi if s.range is not None else None

    def out_of_range(x: float) -> bool:
        return s.range is not None and x not in s.range

    if s.kind is dict:
        return rng.choice(
            [("a=1", {"a": 1}, False, False), ("hidden_size=abc", {"hidden_size": "abc"}, False, False),
             ("novalue", "novalue", True, True), ("=3", {"": 3}, False, False),
             ("conv_type=[1,2", {"conv_type": "[1,2"}, False, False), ("[]", [], True, True)]
        )  # fmt: skip
    if s.kind is bool:
        text, value = rng.choice(
            (("maybe", "maybe"), ("2", 2), ("", ""), ("yes", True), ("off", False), ("null", None), ("[]", []))
        )
        words = ("true", "yes", "on", "1", "false", "no", "off", "0")
        text_bad = text.lower() not in words and not (text == "null" and s.optional)
        value_bad = value not in (True, False) and not (value is None and s.optional)
        if isinstance(value, str):
            value_bad = value.lower() not in words
        return text, value, text_bad, value_bad
    if s.kind in (int, float):
        picks = [("abc", "abc", True), ("nan", float("nan"), True), ("inf", float("inf"), True),
                 ("-inf", float("-inf"), True), ("1e400", float("inf"), True), ("", "", True), ("0x10", "0x10", True),
                 ("true", True, True), ("[1]", [1], not s.many or out_of_range(1)), ("{}", {}, True)]  # fmt: skip
        for x in (-1, 0, 1, 3, 10**20, lo, hi):
            if x is not None:
                x = int(x) if s.kind is int and float(x).is_integer() else x
                picks.append((str(x), x, out_of_range(x)))
        if lo is not None:
            picks.append((repr(lo - 0.5), lo - 0.5, True if s.kind is int else out_of_range(lo - 0.5)))
        if s.kind is int:
            picks += [("1.5", 1.5, True), ("1e3", 1000.0, out_of_range(1000)),
                      ("99999999999999999999999", 10**23, out_of_range(10**23))]  # fmt: skip
        else:
            picks += [("1e-3", 0.001, out_of_range(0.001)), ("2", 2, out_of_range(2)),
                      ("1e308", 1e308, out_of_range(1e308))]  # fmt: skip
        picks.append(("null", None, not s.optional))
        text, value, bad = rng.choice(picks)
        return text, value, bad, bad
    if s.choices:
        upper = str(s.choices[0]).upper()
        picks = [(str(c), c, False) for c in s.choices]
        picks += [("bogus", "bogus", True), (upper, upper, upper not in s.choices), ("", "", "" not in s.choices),
                  ("1", 1, True), ("null", None, not s.optional)]  # fmt: skip
        text, value, bad = rng.choice(picks)
        return text, value, bad, bad
    return rng.choice(
        [("some/path", "some/path", False, False), ("", "", False, False), ("☃ x", "☃ x", False, False),
         ("null", None, False, not s.optional), ("x" * 5000, "x" * 5000, False, False), ("1", 1, False, True),
         ("[a]", ["a"], False, not s.many), ("{}", {}, False, True)]
    )  # fmt: skip


YAML_JUNK = (
    "batch_size: [1, 2",
    "a: b: c",
    "\t- x",
    "key: !!python/object/apply:os.system ['true']",
    "[1, 2, 3]",
    "just a string",
    "",
    "~",
    "lr: .nan",
    "? [a, b]\n: 1",
    "&a [*a]",
    "x: &a [*a]",
    "seed: 0x10",
    "seed: 1_000",
    "{",
    "%YAML 9.9\n---\na: 1",
    "a: 1\na: 2",
    "- a\nb: 1",
    "\xff",
)
CLI_WHOLE = (r"mapping", r"cannot read", r"not valid", r"required", r"directory", r"unknown setting")


@kind("cli")
def cli_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """`convbert COMMAND ... --print-config` for every command with a bad flag value, key=value override, unknown
    or missing setting, or --config file (JSON/YAML, mutated); it must return 0 or 2 (argparse's usage errors:
    SystemExit(2)), name the setting (and the config file), and write nothing. Some accepted cases also read the
    printed settings back with --config."""
    from convbert.settings import settings_of

    commands = _commands()
    while True:
        cmd = rng.choice(sorted(commands))
        settings = settings_of(commands[cmd])
        required = [s for s in settings if s.required]
        r = rng.random()
        if r < 0.55:
            s = rng.choice(settings)
            text, value, text_bad, value_bad = _cli_value(rng, s)
            how = rng.choice(("flag", "flag", "underscore", "override", "override", "json", "yaml"))
            if how == "underscore" and ("_" not in s.name or s.kind is bool):
                how = "flag"
            if s.kind is bool and how in ("flag", "underscore"):
                text = rng.choice(("--{}", "--no-{}", "--{}=yes", "--{} yes"))
                text_bad = text not in ("--{}", "--no-{}")
            plan = {"op": "value", "setting": s.name, "how": how, "text": text, "value": value}
            plan["must_fail"] = value_bad if how in ("json", "yaml") else text_bad
            desc = f"{s.name} via {how}: {_short(value if how in ('json', 'yaml') else text)}"
        elif r < 0.62:
            name = rng.choice(("fuzz_unknown", "bacth_size", settings[0].name + "s", "x.y", "lr_"))
            plan = {"op": "unknown", "name": name, "how": rng.choice(("flag", "override", "json"))}
            plan["must_fail"] = name not in {s.name for s in settings}
            desc = f"unknown setting {name!r} via {plan['how']}"
        elif r < 0.67:
            item = rng.choice(("=1", "lr", "=", ".x=1", "x.=1", "==", "a=b=c", "model.=3"))
            dict_fields = {st.name for st in settings if st.kind is dict}  # model.=3: an empty key, checked later
            plan = {"op": "override", "item": item, "must_fail": item.split(".")[0] not in dict_fields}
            desc = f"override {item!r}"
        elif r < 0.72 and required:
            s = rng.choice(required)
            plan = {"op": "missing", "setting": s.name, "must_fail": True}
            desc = f"required {s.flag} left out"
        else:
            how = rng.choice(("json", "json", "yaml", "yaml_junk", "missing_file", "directory"))
            plan = {"op": "config", "how": how, "must_fail": how in ("missing_file", "directory")}
            if how == "yaml_junk":
                plan["text"] = rng.choice(YAML_JUNK)
                desc = f"--config YAML {plan['text'][:40]!r}"
            else:
                plan["rng"] = rng.getrandbits(32)
                desc = f"--config {how}" + (f" (mutation seed {plan['rng']})" if how in ("json", "yaml") else "")
        plan["roundtrip"] = rng.random() < 0.15

        def setup(d: Path, cmd=cmd, plan=plan, settings=settings):
            return _cli_setup(d, cmd, plan, settings)

        yield Case(f"{' '.join(cmd)}: {desc}", setup)


def _cli_setup(d: Path, cmd: tuple[str, ...], plan: dict[str, Any], settings) -> tuple[Callable[[], Any], Expect]:
    import yaml

    by_name = {s.name: s for s in settings}
    base = {s.name: _required_value(s, d) for s in settings if s.required}
    base.update(BASE_SETTINGS.get(cmd, {}))
    for s in settings:  # the outputs it would write, given, so that a stray write shows
        if s.name in OUTPUT_SETTINGS and s.name not in base:
            base[s.name] = str(d / f"fuzz-{s.name}")
    flags = dict(base)  # given as flags, unless a config file holds them
    config_text: str | None = None
    suffix = ".json"
    extra: list[str] = []
    names: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    must_fail = plan["must_fail"]
    op = plan["op"]

    def flags_of(keys: Sequence[str]) -> tuple[str, ...]:
        return tuple(k for key in keys for k in (key, "--" + key.replace("_", "-"), "--" + key))

    if op == "value":
        s = by_name[plan["setting"]]
        how, text = plan["how"], plan["text"]
        names = flags_of([s.name])
        flags.pop(s.name, None)
        if how in ("flag", "underscore"):
            flag = s.flag if how == "flag" else "--" + s.name
            if s.kind is bool:
                extra += text.format(s.flag[2:]).split(" ")
                names += ("'yes'",)
            elif text.startswith("[") and s.many:
                extra += [flag, *text.strip("[]").split(",")]
            elif s.kind is dict:
                extra += [flag, *text.split(" ")]
            else:
                extra += [flag, text]
        elif how == "override":
            extra.append(f"{s.name}={text}")
        else:
            config = {**base, s.name: plan["value"]}
            flags, fields = {}, (s.name,)
            if how == "yaml":
                config_text, suffix = yaml.safe_dump(config), ".yaml"
            else:
                config_text = dump(config)
    elif op == "unknown":
        names = flags_of([plan["name"]])
        if plan["how"] == "flag":
            extra += ["--" + plan["name"].replace("_", "-"), "1"]
        elif plan["how"] == "override":
            extra.append(f"{plan['name']}=1")
        else:
            config_text, flags, fields = dump({**base, plan["name"]: 1}), {}, (plan["name"],)
    elif op == "override":
        extra.append(plan["item"])
        names = (repr(plan["item"]), "override", "unrecognized arguments")
    elif op == "missing":
        flags.pop(plan["setting"])
        names = flags_of([plan["setting"]])
    else:
        how = plan["how"]
        flags = flags if how == "yaml_junk" else {}  # junk next to valid flags; a mutated config holds them all
        suffix = ".yaml" if how.startswith("yaml") else ".json"
        if how == "yaml_junk":
            config_text = plan["text"]
            try:
                loaded = yaml.safe_load(config_text)
                must_fail = must_fail or not isinstance(loaded, dict)
                fields = tuple(str(k) for k in loaded) if isinstance(loaded, dict) else ()
            except yaml.YAMLError:
                must_fail = True
        elif how in ("json", "yaml"):
            rng = random.Random(plan["rng"])
            if rng.random() < 0.3:
                mut = mutate_bytes(rng, dump(base).encode())
                config_text = mut.data.decode("utf-8", "surrogateescape")
                must_fail = must_fail or (how == "json" and json_fails(mut.data))
            else:
                _, new, fields = mutate_json(rng, base, raw=how == "json")
                must_fail = must_fail or not isinstance(new, (dict, Dup))
                if how == "yaml" and not isinstance(new, Dup):
                    config_text = yaml.safe_dump(new)
                else:
                    config_text = dump(new)
    config_path = d / f"fuzz-config{suffix}"
    argv = [*cmd]
    for name, value in flags.items():
        argv += [by_name[name].flag, *value] if isinstance(value, list) else [by_name[name].flag, str(value)]
    if op == "config" and plan["how"] == "missing_file":
        argv += ["--config", str(config_path)]
    elif op == "config" and plan["how"] == "directory":
        config_path.mkdir()
        argv += ["--config", str(config_path)]
    elif config_text is not None:
        config_path.write_bytes(config_text.encode("utf-8", "surrogateescape"))
        argv += ["--config", str(config_path)]
    argv += [*extra, "--print-config"]
    if config_text is not None or op == "config":  # the file, and the setting where there is one
        names += (config_path.name, *flags_of(fields))
    outputs = tuple(Path(base[n]) for n in OUTPUT_SETTINGS if n in base)

    def target():
        _cli_call(cmd, argv, roundtrip=plan["roundtrip"], d=d)

    locate = config_text is not None
    return target, Expect(names, locate=locate, fields=flags_of(fields), whole=CLI_WHOLE, must_fail=must_fail,
                          untouched=outputs)  # fmt: skip


class CliRejected(InputError):
    """`convbert` returned 2 (or argparse exited with 2): the message is what it wrote to stderr."""


def _cli_call(cmd: tuple[str, ...], argv: list[str], roundtrip: bool, d: Path, print_config: bool = True) -> None:
    """`convbert ARGV`: returns on 0 (with --print-config: JSON printed), CliRejected on 2, else an error."""
    from convbert.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            if e.code != 2:
                raise
            raise CliRejected(f"SystemExit(2): {err.getvalue().strip()}") from None
    if code == 2:
        raise CliRejected(err.getvalue().strip() or "(nothing on stderr)")
    if code != 0:
        raise RuntimeError(f"convbert {' '.join(cmd)} returned {code}: {err.getvalue()[-500:]}")
    if not print_config:
        return
    try:
        printed = json.loads(out.getvalue())
    except ValueError as e:
        raise WronglyAccepted(f"--print-config printed no JSON ({e}): {out.getvalue()[:200]!r}") from None
    if roundtrip:  # what --print-config prints is readable with --config, and prints the same
        path = d / "fuzz-printed.json"
        path.write_text(json.dumps(printed), encoding="utf-8")
        again, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(again), contextlib.redirect_stderr(err):
            code = main([*cmd, "--config", str(path), "--print-config"])
        if code != 0 or json.loads(again.getvalue()) != printed:
            raise WronglyAccepted(
                f"--print-config's output does not read back with --config (returned {code}: {err.getvalue()[-300:]})"
            )


# ----------------------------------------------------------------------------------------- plot CSV
def _run_logs() -> dict[str, str]:
    from convbert.pretraining.runlog import EVAL_FIELDS, LOG_FIELDS

    logs = {}
    for name, fields, rows in (("log.csv", LOG_FIELDS, 6), ("eval.csv", EVAL_FIELDS, 3)):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(fields)
        for i in range(rows):
            w.writerow([str((i + 1) * 10) if f == "step" else "" if (f == "token_cosine" and i == 0)
                        else f"{0.5 + 0.01 * i:.4f}" for f in fields])  # fmt: skip
        logs[name] = buf.getvalue()
    return logs


@kind("plot")
def plot_cases(rng: random.Random, workdir: Path) -> Iterator[Case]:
    """A pretraining run's log.csv or eval.csv mutated, read with plots.read_log, or (one case in 25) plotted with
    plot_run to a PNG that must not be left behind on failure."""
    from convbert.tools.plots import plot_run, read_log

    logs = _run_logs()
    while True:
        file = rng.choice(("log.csv", "log.csv", "eval.csv"))
        mut = mutate_text(rng, logs[file].splitlines(), ",", 1, exact=False)
        plot = rng.random() < 0.04

        def setup(d: Path, file=file, mut=mut, plot=plot):
            run = d / "fuzz-run"
            run.mkdir()
            for name, text in logs.items():
                (run / name).write_text(text, encoding="utf-8")
            _write(run / file, mut)
            out = d / "fuzz-curves.png"

            def target():
                if plot:
                    plot_run(run, out)
                else:
                    read_log(run, file)

            whole = (r"no logged steps", r"\bempty\b", r"not found", r"no such file", r"column")
            columns = tuple(logs[file].split("\n")[0].split(","))
            expect = Expect((file,), locate=True, fields=columns, whole=whole, must_fail=mut.must_fail and not plot,
                            outputs=(out,) if plot else ())  # fmt: skip
            return target, expect

        yield Case(f"{'plot_run' if plot else 'read_log'} {file}: {mut.desc}", setup)


# ------------------------------------------------------------------------------------------------ CLI
def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="+", help="case ids (KIND:SEED:INDEX), kind names, or all")
    parser.add_argument("--cases", type=int, default=None, help="cases per kind (default: the CI count)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the CI counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--brief", action="store_true", help="a line per failure signature, no tracebacks")
    args = parser.parse_args(argv)
    from test_fuzz import CI_CASES

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="convbert-fuzz-"))
    status = 0
    for what in args.what:
        if what.count(":") == 2:
            case = make_case(what, workdir)
            case_dir = workdir / "cases" / what.replace(":", "-")
            shutil.rmtree(case_dir, ignore_errors=True)
            result = run_case(what, case, case_dir)
            print(result.report())
            status |= result.outcome in FAILURES
            continue
        for name in KINDS if what == "all" else [what]:
            n = args.cases if args.cases is not None else max(1, round(CI_CASES[name] * args.scale))
            report = run_kind(name, n, args.seed, workdir / name,
                              progress=(lambda r: print(f"{r.outcome:20} {r.case_id}  {r.mutation[:100]}"))
                              if args.verbose else None)  # fmt: skip
            text = report.brief() if args.brief else report.details() if report.failures else report.summary()
            print(text, flush=True)
            status |= bool(report.failures)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(_cli())
