"""`ConvBertConfig`: the one description of a model, interchangeable with transformers' `config.json`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .fileio import read_json_object

CONV_TYPES = ("sdconv", "dconv", "lconv", "noconv")
ACTIVATIONS = ("gelu", "relu", "gelu_new", "silu", "tanh")
CLASSIFIER_HEADS = ("dense", "linear")
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
    """An invalid model configuration; the message names the offending field."""


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
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
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
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"ConvBertConfig.{name}={getattr(self, name)!r}: {why}")

        for name in (
            "vocab_size",
            "hidden_size",
            "embedding_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "head_ratio",
            "conv_kernel_size",
            "num_groups",
            "num_labels",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, "must be a positive integer")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, "must be in [0, 1)")
        if self.conv_type not in CONV_TYPES:
            bad("conv_type", f"must be one of {', '.join(CONV_TYPES)}")
        if self.classifier_head not in CLASSIFIER_HEADS:
            bad("classifier_head", f"must be one of {', '.join(CLASSIFIER_HEADS)}")
        if self.hidden_act not in ACTIVATIONS:
            bad("hidden_act", f"must be one of {', '.join(ACTIVATIONS)}")
        if self.conv_kernel_size % 2 == 0:
            bad("conv_kernel_size", "must be odd (the window is centred on the token)")
        heads = self.attention_heads
        if self.attention_head_size is not None:
            if not isinstance(self.attention_head_size, int) or self.attention_head_size < 1:
                bad("attention_head_size", "must be a positive integer or null")
        elif self.conv_type == "noconv":
            if self.hidden_size % heads:
                bad("hidden_size", f"must be divisible by the {heads} attention heads")
        elif self.hidden_size % (2 * heads):
            bad("hidden_size", f"must be divisible by 2 x {heads} heads (attention + convolution halves)")
        if self.hidden_size % self.num_groups or self.intermediate_size % self.num_groups:
            bad(
                "num_groups",
                f"must divide hidden_size {self.hidden_size} and intermediate_size {self.intermediate_size}",
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            bad("pad_token_id", f"must be a token id below vocab_size {self.vocab_size}")
        if self.problem_type not in (None, "regression", "single_label_classification", "multi_label_classification"):
            bad("problem_type", "must be regression, single_label_classification or multi_label_classification")

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
        """Read a config.json dict (ours or transformers'); unknown keys are ignored."""
        if d.get("model_type", "convbert") not in ("convbert", "conv_bert"):
            raise ConfigError(f"{source}: model_type {d.get('model_type')!r} is not convbert")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if kwargs.get("pad_token_id") is None:
            kwargs.pop("pad_token_id", None)
        if "id2label" not in kwargs and "num_labels" in d:
            kwargs["num_labels"] = d["num_labels"]
        try:
            return cls(**kwargs)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{source}: {e}") from None

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
