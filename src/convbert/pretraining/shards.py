"""Prepared pretraining shards (written by `convbert.pretraining.data.prepare`): the manifest, integrity checks
and random access for the trainer, and the vocabulary hash that ties shards to a tokenizer.

On-disk format (`out_dir/`), written atomically (the directory appears only when complete):
  manifest.json            format version, counts, settings, tokenizer vocab size/hash, shard list
  shard-NNNNN.bin          raw C-order array (rows, max_seq_length) of token ids (`dtype`: uint16 when
                           the vocab has <= 65535 tokens, else int32), padded with [PAD]
  shard-NNNNN.rows.npy     int16 (int32 when max_seq_length > 32767) array (rows, 2):
                           [number of non-pad tokens, position of the first [SEP]]
token_type_ids are 1 after the first [SEP] up to and including the second one, 0 elsewhere.
"""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..errors import InputError
from ..hub import TOKENIZER_FILES, resolve_dir

FORMAT = "convbert-pretrain-shards"
FORMAT_VERSION = 1
_CACHE_SHARDS = 256  # open memmaps kept by PretrainShards


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
