"""Model directories in the Hugging Face layout: config.json + model.safetensors (+ tokenizer files).

`resolve_dir` turns a hub id (`org/name`, `name`, either with `@revision`) into its directory in the Hugging Face
cache (`pip install convbert[hub]`), so every `from_pretrained`, `--model` and `--tokenizer` also takes one.

Weights keep transformers' key names, so `transformers.ConvBertModel.from_pretrained(our_dir)` and
our `from_pretrained(their_dir)` both work. Loading never unpickles: safetensors, or a
`pytorch_model.bin` read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ConvBertConfig
from .errors import InputError
from .fileio import atomic_dir, parse_json

log = logging.getLogger(__name__)

PREFIX = "convbert."
HEAD_PREFIXES = (
    "generator_predictions.",
    "generator_lm_head.",
    "discriminator_predictions.",
    "classifier.",
    "qa_outputs.",
    "sequence_summary.",
)
IGNORED_SUFFIXES = ("position_ids", "embeddings.token_type_ids")  # non-persistent buffers in old checkpoints

# what resolve_dir fetches of a hub repo (snapshot_download allow_patterns)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
CONFIG_FILES = ("config.json",)
MODEL_FILES = (*CONFIG_FILES, "*.safetensors", "pytorch_model.bin", *TOKENIZER_FILES)
# `name` or `org/name` as the hub spells them (letters, digits, `_.-`, no `--` or `..`), then optional `@revision`
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"(?P<repo>(?:{_NAME}/)?{_NAME})(?:@(?P<revision>[^\s@]+))?")
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")  # an access token, should a hub error message ever quote one


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) if `text` looks like a hub id, else None."""
    m = HUB_ID.fullmatch(text)
    if m is None or "--" in m["repo"] or ".." in m["repo"] or len(m["repo"]) > 96:
        return None
    return m["repo"], m["revision"]


def resolve_dir(name_or_path: str | Path, files: tuple[str, ...] = MODEL_FILES) -> Path:
    """A local directory for a model/tokenizer path or hub id.

    An existing local path always wins, and a string that is no hub id is returned as a Path (the caller reports
    it missing). A hub id is fetched with `huggingface_hub.snapshot_download` (only `files`), which also handles
    the cache (HF_HOME, HF_HUB_CACHE), offline mode (HF_HUB_OFFLINE) and the token (HF_TOKEN, `hf auth login`).
    """
    text = str(name_or_path)
    if Path(text).exists() or (parsed := parse_hub_id(text)) is None:
        return Path(text)
    repo, revision = parsed
    try:
        import huggingface_hub
        from huggingface_hub import constants, utils
    except ImportError:
        raise InputError(
            f"{text}: no such local path; to load it as a Hugging Face hub id, pip install convbert[hub]"
        ) from None
    try:
        return Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=list(files)))
    except utils.LocalEntryNotFoundError as e:
        why = "offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else f"the hub cannot be reached ({e})"
        download = f"download {repo}" + (f" --revision {revision}" if revision else "")
        message = (
            f"{text}: no such local path, and hub id {text} is not in the Hugging Face cache at "
            f"{constants.HF_HUB_CACHE} and {why}: run once with network access, or `hf {download}` "
            f"(`huggingface-cli {download}` with huggingface_hub < 1.0), or pass a local directory"
        )
    except utils.RevisionNotFoundError:
        message = f"{text}: hub id {repo} has no revision {revision!r}"
    except utils.RepositoryNotFoundError:  # GatedRepoError included
        message = (
            f"{text}: no such local path, and hub id {repo} is not on the hub or not accessible "
            "(a private or gated repo needs a token: HF_TOKEN or `hf auth login`)"
        )
    except Exception as e:  # any other hub, network or validation error: name the id, never a traceback
        message = f"{text}: cannot fetch hub id {repo}: {type(e).__name__}: {e}"
    raise InputError(_TOKEN.sub("hf_***", message))


def save_pretrained(model, out_dir: str | Path, tokenizer=None) -> None:
    """Write config.json and model.safetensors (and the tokenizer files) atomically into out_dir."""
    config = model.config.replace(architectures=[type(model).__name__])
    tied = set(getattr(model, "tied", {}))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in tied}
    with atomic_dir(out_dir, keep_existing=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict stored in a model dir (safetensors preferred, else pytorch_model.bin)."""
    st, pt = model_dir / "model.safetensors", model_dir / "pytorch_model.bin"
    if st.exists():
        try:
            return load_file(str(st))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{st}: cannot read safetensors file (truncated or corrupt?): {e}") from None
    if pt.exists():
        try:
            state = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for bad pickles; all mean "unreadable"
            raise InputError(f"{pt}: cannot read weights safely (weights_only=True): {e}") from None
        if not isinstance(state, dict):
            raise InputError(f"{pt}: expected a state dict, found {type(state).__name__}")
        bad = next(((k, v) for k, v in state.items() if not (isinstance(k, str) and torch.is_tensor(v))), None)
        if bad is not None:
            raise InputError(f"{pt}: entry {str(bad[0])[:80]!r} is a {type(bad[1]).__name__}, not a named tensor")
        return state
    raise InputError(f"{model_dir}: no model.safetensors or pytorch_model.bin")


def tokenizer_vocab_size(model_dir: Path) -> int | None:
    """The vocabulary size of the tokenizer files in a model dir, if any."""
    tok, vocab = model_dir / "tokenizer.json", model_dir / "vocab.txt"
    try:
        if tok.exists():
            data = parse_json(tok.read_text(encoding="utf-8"))
            ids = list(data["model"]["vocab"].values()) + [t["id"] for t in data.get("added_tokens", [])]
            return max(ids) + 1
        if vocab.exists():
            return sum(1 for _ in vocab.open(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{tok if tok.exists() else vocab}: unreadable tokenizer file: {e}") from None
    return None


def match_keys(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map checkpoint keys onto the model's, adding or stripping the `convbert.` prefix as needed."""
    mapped, unexpected = {}, []
    for key, value in found.items():
        if key in expected:
            mapped[key] = value
        elif PREFIX + key in expected:
            mapped[PREFIX + key] = value
        elif key.startswith(PREFIX) and key[len(PREFIX) :] in expected:
            mapped[key[len(PREFIX) :]] = value
        elif not key.endswith(IGNORED_SUFFIXES):
            unexpected.append(key)
    return mapped, unexpected


def is_head_key(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def from_pretrained(cls, model_dir: str | Path, output_loading_info: bool = False, **config_overrides: Any):
    """Build `cls` from a model dir written by us or by transformers' `save_pretrained`.

    A bare encoder loads into a head class (the head is freshly initialised, as in transformers) and a
    head checkpoint loads into the bare encoder (its head is left out). Missing encoder weights, weights
    of the wrong shape, unknown keys and a tokenizer larger than the embedding table are errors that name
    the keys; nothing is returned half-loaded.
    """
    model_dir = resolve_dir(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: not a model directory")
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise InputError(f"{config_path}: missing config.json")
    config = ConvBertConfig.from_json_file(config_path)
    if config_overrides:
        config = config.replace(**config_overrides)
    vocab = tokenizer_vocab_size(model_dir)
    if vocab is not None and vocab > config.vocab_size:
        raise InputError(
            f"{model_dir}: the tokenizer has {vocab} tokens but config.json vocab_size is {config.vocab_size}"
        )
    found = read_weights(model_dir)
    model = cls(config)
    tied = set(getattr(model, "tied", {}))
    expected = {k: v for k, v in model.state_dict().items() if k not in tied}
    mapped, unexpected = match_keys(expected, found)

    foreign_heads = [k for k in unexpected if is_head_key(k) or k in tied]
    unknown = [k for k in unexpected if k not in foreign_heads]
    missing = [k for k in expected if k not in mapped]
    missing_body = [k for k in missing if not is_head_key(k)]
    bad_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if v.shape != expected[k].shape
    ]
    problems = []
    if missing_body:
        problems.append(f"missing weights: {', '.join(missing_body)}")
    if bad_shape:
        problems.append(f"weights of the wrong shape: {'; '.join(bad_shape)}")
    if unknown:
        problems.append(f"unexpected weights: {', '.join(unknown)}")
    if problems:
        raise InputError(f"{model_dir}: cannot load into {cls.__name__} ({config.conv_type}): " + " | ".join(problems))

    dtype = next(iter(expected.values())).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in mapped.items()}, strict=False)
    model.tie_weights()
    if missing:
        log.warning("%s: newly initialised head weights (train before use): %s", model_dir, ", ".join(missing))
    model.eval()
    if output_loading_info:
        return model, {"missing_keys": missing, "unexpected_keys": foreign_heads}
    return model
