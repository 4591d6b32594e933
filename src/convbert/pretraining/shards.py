"""Prepared pretraining shards (written by `convbert.pretraining.data.prepare`): the manifest, integrity checks
and random access for the trainer, and the vocabulary hash that ties shards to a tokenizer.

On-disk format (`out_dir/`), written atomically (the directory appears only when complete):
  manifest.json            format version, counts, settings, tokenizer vocab size/hash, shard list
  shard-NNNNN.bin          raw C-order array (rows, max_seq_length) of token ids (`dtype`: uint16 when
                           the vocab has <= 65535 tokens, else int32), padded with [PAD]
  shard-NNNNN.rows.npy     int16 (int32 when max_seq_length > 32767) array (rows, 2):
                           [number of non-pad tokens, position of the first [SEP]]
token_type_ids are 1 after the first [SEP] up to and including the second one, 0 elsewhere.
Reading (`PretrainShards.verify`, once per run) adds `.verified.json`: the names, sizes and mtimes of the files
whose sha256s and token ids passed, and each shard's (min, max) token id, so that later runs skip the hashing.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..errors import InputError
from ..fileio import atomic_write_json, parse_json
from ..hub import TOKENIZER_FILES, resolve_dir

FORMAT = "convbert-pretrain-shards"
FORMAT_VERSION = 1
_CACHE_SHARDS = 256  # open memmaps kept by PretrainShards
_BLOCK = 1 << 20  # bytes read at a time by `verify` (a multiple of every dtype's size)
SHARD_DTYPES = ("uint16", "int32")
VERIFIED = ".verified.json"  # next to the manifest: the files that passed `verify` (names, sizes, mtimes)
log = logging.getLogger(__name__)


def _plain_name(name: str) -> bool:
    return bool(name) and Path(name).name == name and name not in (".", "..")


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def tokenizer_json(tokenizer: str | Path) -> Path:
    """`tokenizer.json` inside a tokenizer directory or a hub id's snapshot (or the file itself)."""
    path = resolve_dir(tokenizer, TOKENIZER_FILES)
    return path / "tokenizer.json" if path.is_dir() else path


def vocab_hash(source: str | Path | Sequence[str]) -> str:
    """sha256 of the vocabulary in id order, one token per line, from a tokenizer.json/dir or a token list."""
    if isinstance(source, (str, Path)):
        path = tokenizer_json(source)
        vocab = load_tokenizer_json(path).get_vocab(with_added_tokens=True)
        source = sorted(vocab, key=vocab.__getitem__)
    return hashlib.sha256("\n".join(source).encode("utf-8")).hexdigest()


def load_tokenizer_json(path: Path) -> Tokenizer:
    """The tokenizers-library tokenizer in a tokenizer.json; InputError when it is missing or unreadable."""
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 (tokenizers raises a plain Exception on a bad file)
        raise InputError(f"{path}: cannot load tokenizer: {e}") from None


class PretrainShards:
    """Random access to prepared shards: `shards[i]` or `shards[index_array]` -> dict of int64 arrays
    (input_ids, attention_mask, token_type_ids), read through np.memmap.

    Opening checks the manifest's keys and types, that every shard file exists and has the size the manifest says,
    and the row index values; `verify` (or `ensure_verified`, cached in `.verified.json`) checks the sha256s and
    the token ids.
    """

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.manifest_path = self.dir / "manifest.json"
        self.verified_path = self.dir / VERIFIED
        try:
            self.manifest: dict[str, Any] = parse_json(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{self.manifest_path}: not found (run `convbert data prepare`)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{self.manifest_path}: not a valid manifest: {e}") from None
        except OSError as e:
            raise InputError(f"{self.manifest_path}: cannot read manifest: {e.strerror or e}") from None
        found = (
            (self.manifest.get("format"), self.manifest.get("format_version"))
            if isinstance(self.manifest, dict)
            else None
        )
        if found != (FORMAT, FORMAT_VERSION):
            raise InputError(
                f"{self.manifest_path}: unsupported format/version {found} (expected {FORMAT!r} {FORMAT_VERSION})"
            )
        self._check_manifest()
        self.max_seq_length: int = self.manifest["max_seq_length"]
        self.dtype = np.dtype(self.manifest["dtype"])
        self.shards: list[dict[str, Any]] = self.manifest["shards"]
        for shard in self.shards:
            self._check_shard(shard)
        self._starts = np.cumsum([0] + [s["rows"] for s in self.shards])
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
        self.token_ids: list[tuple[int, int]] | None = None  # (min, max) token id per shard, once verified

    def _check_manifest(self) -> None:
        """InputError naming the manifest and the key for a missing key or a value of the wrong type."""
        m = self.manifest

        def need(obj: Any, key: str, where: str, kind: type | tuple[type, ...], ok: Any = None, what: str = "") -> Any:
            name = f"{where}{key}"
            if not isinstance(obj, dict) or key not in obj:
                raise InputError(f"{self.manifest_path}: missing key {name!r} (re-run `convbert data prepare`)")
            value = obj[key]
            kinds = kind if isinstance(kind, tuple) else (kind,)
            bad_type = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
            if bad_type or (ok is not None and not ok(value)):
                expected = what or " or ".join(k.__name__ for k in kinds)
                raise InputError(f"{self.manifest_path}: {name} must be {expected}, got {value!r}")
            return value

        positive = {"ok": lambda v: v >= 1, "what": "a positive integer"}
        need(m, "max_seq_length", "", int, **positive)
        need(m, "dtype", "", str, ok=lambda v: v in SHARD_DTYPES, what=f"one of {', '.join(SHARD_DTYPES)}")
        tok = need(m, "tokenizer", "", dict, what="a JSON object")
        need(tok, "path", "tokenizer.", str)
        need(tok, "vocab_size", "tokenizer.", int, **positive)
        need(tok, "vocab_hash", "tokenizer.", str)
        shards = need(m, "shards", "", list, ok=bool, what="a non-empty list")
        for i, shard in enumerate(shards):
            where = f"shards[{i}]."
            if not isinstance(shard, dict):
                raise InputError(f"{self.manifest_path}: shards[{i}] must be a JSON object, got {shard!r}")
            for key in ("file", "rows_file"):
                need(shard, key, where, str, ok=_plain_name, what="a file name in the shards directory")
            need(shard, "rows", where, int, **positive)
            for key in ("sha256", "rows_sha256"):
                need(shard, key, where, str, ok=_is_sha256, what="a sha256 (64 hex digits)")

    def _check_shard(self, shard: dict[str, Any]) -> None:
        """The cheap checks of a shard on open: both files exist, with the sizes the manifest gives, and the row
        index holds sane values (1 <= length <= max_seq_length, the first [SEP] inside the row)."""
        path = self.dir / shard["file"]
        expected = shard["rows"] * self.max_seq_length * self.dtype.itemsize
        if not _is_file(path, self.manifest_path):
            raise InputError(f"{path}: shard file missing (listed in {self.manifest_path})")
        if path.stat().st_size != expected:
            raise InputError(
                f"{path}: shard is {path.stat().st_size} bytes, the manifest says {expected} "
                f"({shard['rows']} rows x {self.max_seq_length}); the file is truncated or corrupt"
            )
        rows_path = self.dir / shard["rows_file"]
        if not _is_file(rows_path, self.manifest_path):
            raise InputError(f"{rows_path}: shard row index missing (listed in {self.manifest_path})")
        try:
            rows = np.load(rows_path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # a corrupt .npy header fails in many ways (EOFError, tokenize errors, ...)
            raise InputError(f"{rows_path}: cannot read shard row index: {e}") from None
        if not isinstance(rows, np.ndarray) or rows.shape != (shard["rows"], 2):
            shape = getattr(rows, "shape", None)
            raise InputError(f"{rows_path}: shape {shape}, the manifest says ({shard['rows']}, 2)")
        if not np.issubdtype(rows.dtype, np.integer):
            raise InputError(f"{rows_path}: dtype {rows.dtype}, expected integers")
        length, sep = np.asarray(rows[:, 0], dtype=np.int64), np.asarray(rows[:, 1], dtype=np.int64)
        bad = np.nonzero((length < 1) | (length > self.max_seq_length) | (sep < 1) | (sep >= length))[0]
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"{rows_path}: row {r} has length {int(length[r])} and first [SEP] at {int(sep[r])} "
                f"(expected 1 <= length <= max_seq_length {self.max_seq_length}, 1 <= [SEP] < length); "
                f"{bad.size} bad row(s): the file is corrupt (re-run `convbert data prepare`)"
            )

    def _file_key(self) -> list[list[Any]]:
        """(name, size, mtime) of the manifest and every shard file: what a cached verification is valid for."""
        names = ["manifest.json", *(name for s in self.shards for name in (s["file"], s["rows_file"]))]
        key = []
        for name in names:
            st = (self.dir / name).stat()
            key.append([name, st.st_size, st.st_mtime_ns])
        return key

    def verify(self) -> list[tuple[int, int]]:
        """Check every shard file against the sha256 in the manifest and its token ids against the manifest's
        vocabulary (reads all the data); remember the result in `.verified.json` next to the manifest (see
        `ensure_verified`). Returns the (min, max) token id of every shard."""
        key = self._file_key()
        vocab_size = self.manifest["tokenizer"]["vocab_size"]
        token_ids = []
        for shard in self.shards:
            path = self.dir / shard["file"]
            sha, lo, hi = hashlib.sha256(), None, None
            with open(path, "rb") as f:
                while block := f.read(_BLOCK):
                    sha.update(block)
                    ids = np.frombuffer(block, dtype=self.dtype)
                    lo = int(ids.min()) if lo is None else min(lo, int(ids.min()))
                    hi = int(ids.max()) if hi is None else max(hi, int(ids.max()))
            if sha.hexdigest() != shard["sha256"]:
                raise InputError(f"{path}: sha256 does not match {self.manifest_path}")
            rows_path = self.dir / shard["rows_file"]
            if hashlib.sha256(rows_path.read_bytes()).hexdigest() != shard["rows_sha256"]:
                raise InputError(f"{rows_path}: sha256 does not match {self.manifest_path}")
            assert lo is not None and hi is not None  # a shard has >= 1 row (checked on open)
            if lo < 0 or hi >= vocab_size:
                raise InputError(
                    f"{path}: token ids {lo}..{hi} outside the vocabulary of {vocab_size} tokens "
                    f"({self.manifest_path} tokenizer.vocab_size); the shard is corrupt"
                )
            token_ids.append((lo, hi))
        self.token_ids = token_ids
        try:
            atomic_write_json(self.verified_path, {"files": key, "token_ids": token_ids})
        except OSError as e:  # a read-only shards directory: verify again next time
            log.debug("%s: cannot write: %s", self.verified_path, e)
        return token_ids

    def ensure_verified(self) -> list[tuple[int, int]]:
        """`verify`, unless `.verified.json` says these very files (same sizes and mtimes) passed before."""
        if self.token_ids is not None:
            return self.token_ids
        try:
            cached = json.loads(self.verified_path.read_text(encoding="utf-8"))
            if cached["files"] == self._file_key() and len(cached["token_ids"]) == len(self.shards):
                self.token_ids = [(int(lo), int(hi)) for lo, hi in cached["token_ids"]]
                return self.token_ids
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no (usable) record: verify
        return self.verify()

    def check_token_ids(self, vocab_size: int, what: str = "the model's vocab_size") -> None:
        """InputError when a (verified) shard holds a token id >= `vocab_size`."""
        for shard, (_, hi) in zip(self.shards, self.ensure_verified()):
            if hi >= vocab_size:
                raise InputError(
                    f"{self.dir / shard['file']}: token id {hi} does not fit {what} {vocab_size} "
                    f"(the shards were built with {self.manifest['tokenizer']['vocab_size']} tokens)"
                )

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


def _is_file(path: Path, manifest: Path) -> bool:
    """Whether a file the manifest names exists; a name the OS refuses (too long, ...) is an InputError."""
    try:
        return path.is_file()
    except OSError as e:
        raise InputError(f"{manifest}: cannot open {path.name[:80]}: {e.strerror or e}") from None
