"""The files a tokenizer comes from: vocab.txt, tokenizer_config.json, tokenizer.json, and training text files;
every problem an InputError naming the file (and line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from .errors import InputError
from .fileio import read_json_object, utf8_error


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt: one token per line, the line number (from 0) is the id."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise utf8_error(path, e) from None
    except OSError as e:
        raise InputError(f"{path}: cannot read vocab file: {e}") from e
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        token = line.rstrip("\n")
        if not token:
            raise InputError(f"{path}:{i + 1}: empty token")
        if token in vocab:
            raise InputError(f"{path}:{i + 1}: duplicate token {token!r} (first on line {vocab[token] + 1})")
        vocab[token] = i
    if not vocab:
        raise InputError(f"{path}: empty vocab file")
    return vocab


MAX_MODEL_LENGTH = 1_000_000  # a model_max_length above this means "no limit"


def read_config(path: Path) -> dict[str, Any]:
    """The tokenizer_config.json fields this class honours (missing file: none)."""
    if not path.is_file():
        return {}
    config = read_json_object(path, "tokenizer config")
    out: dict[str, Any] = {}
    for key, types in (("do_lower_case", bool), ("strip_accents", (bool, type(None))), ("model_max_length", int)):
        if key in config:
            value = config[key]
            if not isinstance(value, types) or (key == "model_max_length" and (isinstance(value, bool) or value < 3)):
                raise InputError(f"{path}: field {key!r} has invalid value {str(value)[:80]!r}")
            # transformers writes int(1e30) for "no limit"
            out[key] = min(value, MAX_MODEL_LENGTH) if key == "model_max_length" else value
    return out


def from_tokenizer_json(cls: Any, path: Path, config: dict[str, Any]) -> Any:
    """A `cls` (ConvBertTokenizer) from tokenizer.json; the normalizer's flags apply unless `config` overrides them."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise utf8_error(path, e) from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        backend = Tokenizer.from_str(text)
        spec = json.loads(backend.to_str())
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise InputError(f"{path}: not a valid tokenizer.json: {e}") from e
    ids = sorted(backend.get_vocab(with_added_tokens=True).values())
    if ids != list(range(len(ids))):
        gap = next(i for i, v in enumerate(ids) if v != i)
        raise InputError(f"{path}: model.vocab ids must be 0..{len(ids) - 1} without gaps; id {gap} is missing")
    model = spec.get("model") or {}
    model_type = model.get("type")
    unk = model.get("unk_token")
    if model_type == "WordPiece" and unk not in (model.get("vocab") or {}):
        raise InputError(f"{path}: model.unk_token {str(unk)[:40]!r} is not in model.vocab")
    normalizer = spec.get("normalizer") or {}
    if model_type != "WordPiece" or normalizer.get("type") != "BertNormalizer":
        raise InputError(
            f"{path}: expected a WordPiece model with a BertNormalizer, got model {model_type!r} "
            f"and normalizer {normalizer.get('type')!r}"
        )
    kwargs = {"do_lower_case": normalizer.get("lowercase", True), "strip_accents": normalizer.get("strip_accents")}
    return cls(backend, source=str(path), **{**kwargs, **config})


def check_text_file(path: Path) -> None:
    """InputError unless `path` is a readable file with some non-whitespace content."""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                if chunk.strip():
                    return
    except OSError as e:
        raise InputError(f"{path}: cannot read training file: {e.strerror or e}") from e
    raise InputError(f"{path}: training file is empty")
