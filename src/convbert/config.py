"""`ConvBertConfig`: the one description of a model, interchangeable with transformers' `config.json`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .fileio import read_json_object
from .settings import Range

CONV_TYPES = ("sdconv", "dconv", "lconv", "noconv")
ACTIVATIONS = ("gelu", "relu", "gelu_new", "silu", "tanh")
CLASSIFIER_HEADS = ("dense", "linear")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# Upper bounds on the sizes: far above any real encoder (the largest vocabularies are ~256k, the widest models
# 12,288 wide with 96 layers), low enough that a typo fails here instead of allocating hundreds of GB.
MAX_VOCAB = 1_000_000  # vocab_size (and pad_token_id below it)
MAX_WIDTH = 16_384  # hidden_size, embedding_size, attention_head_size
MAX_FFN = 65_536  # intermediate_size (4 x MAX_WIDTH)
MAX_LAYERS = 256  # num_hidden_layers
MAX_HEADS = 1_024  # num_attention_heads, head_ratio, num_groups
MAX_POSITIONS = 65_536  # max_position_embeddings
MAX_TYPE_VOCAB = 1_024  # type_vocab_size (BERT: 2)
MAX_KERNEL = 1_023  # conv_kernel_size (odd)
MAX_LABELS = 100_000  # num_labels, id2label entries
# the ConvBertConfig fields a BERT / ELECTRA config.json has too (same names and meaning)
BERT_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


class ConfigError(InputError):
    """An invalid model configuration; the message names the offending field.

    A field error also carries `field`, `expected` (text) and `value` (what was given), which `from_dict`
    words as `FILE: FIELD: expected ..., got FIELD=VALUE`."""

    def __init__(self, message: str, field: str | None = None, expected: str | None = None, value: Any = None):
        super().__init__(message)
        self.field, self.expected, self.value = field, expected, value


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_error(field: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"ConvBertConfig.{field}={_shown(value)}: expected {expected}", field, expected, value)


@dataclass(frozen=True)
class FieldRule:
    """What one ConvBertConfig field holds: its type (int: not bool, integral floats become ints; float: finite,
    ints become floats), an allowed Range, the allowed strings, and whether null (None) is allowed."""

    kind: type  # int | float | bool | str | dict | list
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False

    @property
    def expected(self) -> str:
        if self.choices is not None:
            text = f"one of {', '.join(self.choices)}"
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is dict:
            text = "a mapping of label ids 0..N-1 to label names"
        elif self.kind is list:
            text = "a list of strings"
        else:
            text = "an integer" if self.kind is int else "a finite number"
            r = self.range
            if r is not None and r.lo is not None and r.hi is not None:
                text += f" from {r.lo:,} to {r.hi:,}"
            elif r is not None and r.lo is not None:
                text += f" {'>' if r.lo_open else '>='} {r.lo:g}"
        return text + (" or null" if self.optional else "")

    def check(self, field: str, value: Any) -> Any:
        """`value`, normalised (2.0 -> 2 for an int, 1 -> 1.0 for a float), or a ConfigError."""
        if value is None and self.optional:
            return None
        given, ok = value, False
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        elif self.kind is str:
            ok = isinstance(value, str)
        elif self.kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif self.kind is dict:
            ok = isinstance(value, Mapping)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.range is not None:
            ok = value in self.range
        if not ok:
            raise _field_error(field, self.expected, given)
        return value


_PROBABILITY = FieldRule(float, Range(0, 1))
_POSITIVE = FieldRule(float, Range(0, lo_open=True))

# every ConvBertConfig field, checked in this order by `ConvBertConfig.validate`
FIELD_RULES: dict[str, FieldRule] = {
    "vocab_size": FieldRule(int, Range(1, MAX_VOCAB)),
    "hidden_size": FieldRule(int, Range(1, MAX_WIDTH)),
    "embedding_size": FieldRule(int, Range(1, MAX_WIDTH)),
    "num_hidden_layers": FieldRule(int, Range(1, MAX_LAYERS)),
    "num_attention_heads": FieldRule(int, Range(1, MAX_HEADS)),
    "intermediate_size": FieldRule(int, Range(1, MAX_FFN)),
    "hidden_act": FieldRule(str, choices=ACTIVATIONS),
    "hidden_dropout_prob": _PROBABILITY,
    "attention_probs_dropout_prob": _PROBABILITY,
    "max_position_embeddings": FieldRule(int, Range(1, MAX_POSITIONS)),
    "type_vocab_size": FieldRule(int, Range(1, MAX_TYPE_VOCAB)),
    "initializer_range": _POSITIVE,
    "layer_norm_eps": _POSITIVE,
    "pad_token_id": FieldRule(int, Range(0, MAX_VOCAB - 1)),  # and below vocab_size
    "head_ratio": FieldRule(int, Range(1, MAX_HEADS)),
    "conv_kernel_size": FieldRule(int, Range(1, MAX_KERNEL)),  # and odd
    "attention_head_size": FieldRule(int, Range(1, MAX_WIDTH), optional=True),
    "num_groups": FieldRule(int, Range(1, MAX_HEADS)),  # and dividing hidden_size and intermediate_size
    "classifier_dropout": FieldRule(float, Range(0, 1), optional=True),
    "classifier_head": FieldRule(str, choices=CLASSIFIER_HEADS),
    "conv_type": FieldRule(str, choices=CONV_TYPES),
    "mask_conv_padding": FieldRule(bool),
    "num_labels": FieldRule(int, Range(1, MAX_LABELS)),  # == len(id2label)
    "id2label": FieldRule(dict, optional=True),  # keys 0..num_labels-1 (int or decimal text), str values
    "problem_type": FieldRule(str, choices=PROBLEM_TYPES, optional=True),
    "architectures": FieldRule(list, optional=True),
}


def _label_ids(field: str, mapping: Any, what: str) -> dict[int, Any]:
    """{id: item} of a mapping whose keys (id2label) or values (label2id) are label ids: ints or decimal text,
    exactly 0..N-1 (N = the entries)."""
    if not isinstance(mapping, Mapping) or not mapping:
        shape = "label ids 0..N-1 to label names" if field == "id2label" else "label names to label ids 0..N-1"
        raise _field_error(field, f"a non-empty mapping of {shape}", mapping)
    pairs = mapping.items() if field == "id2label" else ((v, k) for k, v in mapping.items())
    out: dict[int, Any] = {}
    for raw, item in pairs:
        if isinstance(raw, str) and raw.isascii() and raw.isdigit():
            i = int(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            i = raw
        else:
            raise _field_error(field, f"{what} that are label ids 0, 1, 2, ... (found {raw!r})", mapping)
        if not isinstance(item, str):
            side = "values" if field == "id2label" else "keys"
            raise _field_error(field, f"label names (strings) as {side} (found {item!r})", mapping)
        if i in out and field == "id2label":
            raise _field_error(field, f"each label id once (found {raw!r} twice)", mapping)
        out[i] = item
    n = len(mapping) if field == "id2label" else len(out)
    if sorted(out) != list(range(n)):
        found = ", ".join(map(str, sorted(out)[:8])) + (", ..." if len(out) > 8 else "")
        raise _field_error(field, f"{what} 0..{n - 1} without gaps (found {found})", mapping)
    if n > MAX_LABELS:
        raise _field_error(field, f"at most {MAX_LABELS:,} labels", mapping)
    return dict(sorted(out.items()))


@dataclass
class ConvBertConfig:
    vocab_size: int = 30522  # WordPiece vocabulary size
    hidden_size: int = 768  # d: width of the encoder
    embedding_size: int = 768  # E: width of the embeddings; projected to d when E != d
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # H (config value); H // head_ratio attention heads + as many conv heads
    intermediate_size: int = 3072  # FFN width
    hidden_act: str = "gelu"  # exact (erf) GELU, as in the official code
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02  # std of the normal init
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0  # [PAD] in the BERT vocab
    head_ratio: int = 2  # gamma: self-attention heads are H // gamma, the rest are convolution heads
    conv_kernel_size: int = 9  # K, odd
    attention_head_size: int | None = None  # head size override (TF's d/H, e.g. 64 for the small generator)
    num_groups: int = 1  # G: grouped linear FFN (medium-small uses 2)
    classifier_dropout: float | None = None  # None: hidden_dropout_prob
    # sequence classification head on [CLS]: "dense" (transformers': dense d -> d, activation, out_proj) or
    # "linear" (the official ELECTRA/ConvBERT code's: one linear layer, glorot init; transformers cannot load it)
    classifier_head: str = "dense"
    conv_type: str = "sdconv"  # sdconv | dconv | lconv | noconv (paper Table 2)
    mask_conv_padding: bool = False  # zero pad positions before both convolutions (True breaks HF parity)
    num_labels: int = 2  # classification heads; 1 = regression
    id2label: dict[int, str] | None = None  # label names; default LABEL_i
    problem_type: str | None = None  # regression | single_label_classification | multi_label_classification
    architectures: list[str] | None = None  # head class names, written to config.json

    def __post_init__(self) -> None:
        if self.id2label is not None:
            self.id2label = _label_ids("id2label", self.id2label, "keys")
            self.num_labels = len(self.id2label)
        self.validate()

    # ---------------------------------------------------------------- derived sizes
    @property
    def attention_heads(self) -> int:
        """Self-attention heads per layer (transformers' fallback: 1 when H < head_ratio)."""
        return max(1, self.num_attention_heads // self.head_ratio)

    @property
    def head_size(self) -> int:
        """Width of one head. noconv: d / heads; otherwise (d / heads) / 2 so that attention + conv = d."""
        if self.attention_head_size is not None:
            return self.attention_head_size
        if self.conv_type == "noconv":
            return self.hidden_size // self.attention_heads
        return self.hidden_size // self.attention_heads // 2

    @property
    def all_head_size(self) -> int:
        """Width A of q, k, v (the bottleneck): d / 2, or d for noconv."""
        return self.attention_heads * self.head_size

    def validate(self) -> None:
        """Every field by its FIELD_RULES entry (type, range, choices), then the rules between fields."""
        for name, rule in FIELD_RULES.items():
            setattr(self, name, rule.check(name, getattr(self, name)))
        if self.id2label is not None:
            self.id2label = _label_ids("id2label", self.id2label, "keys")
            if len(self.id2label) != self.num_labels:
                raise _field_error("num_labels", f"{len(self.id2label)} (the id2label entries)", self.num_labels)

        def bad(name: str, expected: str) -> None:
            raise _field_error(name, expected, getattr(self, name))

        if self.conv_kernel_size % 2 == 0:
            bad("conv_kernel_size", "an odd number (the window is centred on the token)")
        heads = self.attention_heads
        if self.attention_head_size is None:
            step = heads if self.conv_type == "noconv" else 2 * heads
            if self.hidden_size % step:
                why = f"the {heads} attention heads" if step == heads else f"2 x {heads} heads: attention + convolution"
                bad("hidden_size", f"a multiple of {step} ({why})")
        if self.hidden_size % self.num_groups or self.intermediate_size % self.num_groups:
            bad(
                "num_groups",
                f"a divisor of hidden_size {self.hidden_size} and intermediate_size {self.intermediate_size}",
            )
        if self.pad_token_id >= self.vocab_size:
            bad("pad_token_id", f"a token id below vocab_size {self.vocab_size}")

    # ---------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ConvBertConfig:
        """A named size: small, medium-small, base, their generators (e.g. "small-generator") or tiny."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> ConvBertConfig:
        if "num_labels" in changes and "id2label" not in changes:
            changes["id2label"] = None  # new label count: the old names no longer apply
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- config.json
    def to_dict(self) -> dict[str, Any]:
        """transformers' field names; conv_type / mask_conv_padding are extra keys transformers ignores."""
        d = dataclasses.asdict(self)
        id2label = d.pop("id2label") or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        d.pop("num_labels")
        d["id2label"] = {str(i): label for i, label in id2label.items()}
        d["label2id"] = {label: i for i, label in id2label.items()}
        for key, default in (("architectures", None), ("attention_head_size", None), ("classifier_head", "dense")):
            if d[key] == default:  # ours, only when set
                d.pop(key)
        return {"model_type": "convbert", **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> ConvBertConfig:
        """Read a config.json dict (ours or transformers'); unknown keys (transformers_version, torch_dtype, ...)
        are ignored. Every field is checked (`FIELD_RULES`), and label2id / num_labels against id2label;
        errors read `SOURCE: FIELD: expected ..., got FIELD=VALUE`."""
        if d.get("model_type", "convbert") not in ("convbert", "conv_bert"):
            raise ConfigError(f"{source}: model_type {d.get('model_type')!r} is not convbert")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if kwargs.get("pad_token_id") is None:
            kwargs.pop("pad_token_id", None)
        if kwargs.get("id2label") is None and "num_labels" in d:
            kwargs["num_labels"] = d["num_labels"]
        try:
            config = cls(**kwargs)
            if kwargs.get("id2label") is not None and "num_labels" in d:
                if FIELD_RULES["num_labels"].check("num_labels", d["num_labels"]) != config.num_labels:
                    raise _field_error("num_labels", f"{config.num_labels} (the id2label entries)", d["num_labels"])
            if d.get("label2id") is not None:
                label_ids = _label_ids("label2id", d["label2id"], "values")
                if len(label_ids) != config.num_labels:
                    n = config.num_labels
                    raise _field_error("label2id", f"{n} names with ids 0..{n - 1}, one per label", d["label2id"])
        except ConfigError as e:
            if e.field is None:
                raise ConfigError(f"{source}: {e}") from None
            raise ConfigError(
                f"{source}: {e.field}: expected {e.expected}, got {e.field}={_shown(e.value)}",
                e.field,
                e.expected,
                e.value,
            ) from None
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None
        return config

    @classmethod
    def from_json_file(cls, path: str | Path) -> ConvBertConfig:
        return cls.from_dict(read_json_object(path, "config"), source=str(path))

    def labels(self) -> list[str]:
        id2label = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        return [id2label[i] for i in range(self.num_labels)]


def _generator(base: dict[str, Any], hidden: int, heads: int, ffn: int) -> dict[str, Any]:
    return {**base, "hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": ffn}


_SMALL = dict(
    hidden_size=256,
    embedding_size=128,
    num_hidden_layers=12,
    num_attention_heads=4,
    intermediate_size=1024,
    num_groups=1,
)
_MEDIUM_SMALL = dict(
    hidden_size=384,
    embedding_size=128,
    num_hidden_layers=12,
    num_attention_heads=8,
    intermediate_size=1536,
    num_groups=2,
)
_BASE = dict(
    hidden_size=768,
    embedding_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    num_groups=1,
)

PRESETS: dict[str, dict[str, Any]] = {
    "small": _SMALL,
    "medium-small": _MEDIUM_SMALL,
    "base": _BASE,
    # generators: 1/4 (small, medium-small) or 1/3 (base) of the discriminator width, same depth, FFN = 4 d
    "small-generator": _generator(_SMALL, 64, 1, 256),
    "medium-small-generator": _generator(_MEDIUM_SMALL, 96, 2, 384),
    "base-generator": _generator(_BASE, 256, 4, 1024),
    # mini: the demo's size, pretrainable on a laptop CPU in minutes
    "mini": dict(
        hidden_size=128,
        embedding_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        num_groups=1,
    ),
    "tiny": dict(
        hidden_size=64,
        embedding_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_groups=1,
    ),
    "tiny-generator": dict(
        hidden_size=32,
        embedding_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_groups=1,
    ),
}
