"""Analytic parameter and FLOP counts for ConvBERT (and BERT/ELECTRA as conv_type "noconv").

Counting (ELECTRA's `flops_computation.py` convention, which the ConvBERT paper's Table 3 follows):
- a multiply-add is 2 FLOPs, so a [m, n] x [n, p] matmul is 2mnp; per element: LayerNorm 5, GELU 8, softmax 5,
  dropout 4, bias / residual / scale 1;
- per token and layer: q/k/v (d -> A each), span-aware key (depthwise K taps on d channels, pointwise d -> A,
  bias), kernel generation (q * key, A -> Hn K, softmax over K), conv value projection (d -> A), lightweight
  conv (K taps on A channels), attention (q k^T and P v over the T positions: 4 A T, plus scale, softmax and
  dropout on Hn T scores), output dense d -> d, FFN (2 d F / G each way, GELU), two LayerNorms, two dropouts
  and residual adds; the embeddings' sum, LayerNorm and dropout, and the projection E -> d;
- `pretraining_flops` adds what ELECTRA adds: dense (one-hot matmul) embedding lookups 2 E (V + T + 2) per
  token, counted again for the generator although its embeddings are tied; the generator's MLM head (dense
  d -> E, GELU, LN, decoder E -> V, softmax, loss) on 15.625 % of the tokens; the discriminator head (dense
  d -> d, GELU, d -> 1) on every token; training = 2 x forward (ELECTRA assumes backward = forward);
  x batch x seq_len x steps. BERT-base is counted at seq_len 512 for all 1M steps, as ELECTRA did.

This reproduces Table 3 within 5 % except ELECTRA-small: its 1.4e18 (from the ELECTRA paper) is 8 % above
what ELECTRA's own script computes for it (1.29e18 with the 64-wide generator; the same as ours). 1.4e18
equals ELECTRA's BERT-Small budget (1.42e18) and would need a 128-wide generator (1.42e18 here).

`model_flops` (for utilisation numbers) counts only matmuls and convolutions, with training = 3 x forward
(the backward pass of a matmul is two matmuls).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from .config import ConvBertConfig
from .errors import InputError
from .hub import CONFIG_FILES, resolve_dir
from .settings import PositiveInt, add_command, validate

LAYER_NORM, GELU, SOFTMAX, DROPOUT = 5, 8, 5, 4  # FLOPs per element (ELECTRA's constants)
MLM_FRACTION = 0.15625  # ELECTRA: share of the tokens that go through the generator's output softmax

# The paper's Table 3 rows: (discriminator, generator or None for plain MLM, batch, seq_len, steps, FLOPs).
_ELECTRA_SMALL = ConvBertConfig(
    hidden_size=256,
    embedding_size=128,
    num_hidden_layers=12,
    num_attention_heads=4,
    intermediate_size=1024,
    conv_type="noconv",
    head_ratio=1,
)
PAPER_TABLE3: dict[str, tuple[ConvBertConfig, ConvBertConfig | None, int, int, int, float]] = {
    "ConvBERT-small": (
        ConvBertConfig.preset("small"),
        ConvBertConfig.preset("small-generator"),
        128,
        128,
        1_000_000,
        1.3e18,
    ),
    "ConvBERT-medium-small": (
        ConvBertConfig.preset("medium-small"),
        ConvBertConfig.preset("medium-small-generator"),
        128,
        128,
        1_000_000,
        1.5e18,
    ),
    "ConvBERT-base": (
        ConvBertConfig.preset("base"),
        ConvBertConfig.preset("base-generator"),
        256,
        128,
        1_000_000,
        1.9e19,
    ),
    "ELECTRA-small": (
        _ELECTRA_SMALL,
        _ELECTRA_SMALL.replace(hidden_size=64, num_attention_heads=1, intermediate_size=256),
        128,
        128,
        1_000_000,
        1.4e18,
    ),
    # ELECTRA counted BERT-base at sequence length 512 for all 1M steps (BERT itself used 128 for 90 % of them).
    "BERT-base": (ConvBertConfig(conv_type="noconv", head_ratio=1), None, 256, 512, 1_000_000, 6.4e19),
}


def param_count(config: ConvBertConfig, include_embeddings: bool = True) -> int:
    """Number of parameters of the bare encoder (transformers' `ConvBertModel`, or `ElectraModel` for
    noconv with head_ratio 1). include_embeddings=False leaves out the word/position/type tables only."""
    d, e, f, g = config.hidden_size, config.embedding_size, config.intermediate_size, config.num_groups
    a, hn, k = config.all_head_size, config.attention_heads, config.conv_kernel_size
    tables = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * e
    embeddings = 2 * e + (e * d + d if e != d else 0)  # LayerNorm, projection
    concat = a if config.conv_type == "noconv" else 2 * a  # = d unless attention_head_size is set
    layer = 3 * (d * a + a) + (concat * d + d) + 2 * d * f // g + f + d + 4 * d  # q/k/v, out dense, FFN, 2 LNs
    if config.conv_type != "noconv":
        layer += d * a + a  # conv value projection
    if config.conv_type == "sdconv":
        layer += d * k + d * a + a  # span-aware key: depthwise, pointwise, bias
    if config.conv_type in ("sdconv", "dconv"):
        layer += a * hn * k + hn * k  # kernel generator
    if config.conv_type == "lconv":
        layer += hn * k  # one static kernel per layer
    return (tables if include_embeddings else 0) + embeddings + config.num_hidden_layers * layer


def forward_flops_per_token(
    config: ConvBertConfig,
    seq_len: int,
    *,
    head: str | None = None,
    matmul_only: bool = False,
    dense_lookup: bool = False,
    mlm_fraction: float = 1.0,
) -> dict[str, float]:
    """Forward FLOPs per token by component (summed over layers), plus "total".

    head: None, "mlm" (generator head: dense d->E, GELU, LN, tied decoder E->V, softmax, loss) applied to
    `mlm_fraction` of the tokens, or "discriminator" (dense d->d, GELU, dense d->1).
    matmul_only: count only matmuls and convolutions (what `torch.utils.flop_counter` counts).
    dense_lookup: count the embedding lookups as one-hot matmuls (ELECTRA's convention).
    lconv's per-layer kernel softmax is independent of the tokens and is not counted.
    """
    d, e, f, g = config.hidden_size, config.embedding_size, config.intermediate_size, config.num_groups
    a, hn, k = config.all_head_size, config.attention_heads, config.conv_kernel_size
    v, t = config.vocab_size, seq_len
    other = 0 if matmul_only else 1
    conv = config.conv_type
    layer = {
        "qkv": 3 * (2 * d * a + other * a),
        "key_sepconv": 2 * k * d + 2 * d * a + other * a if conv == "sdconv" else 0,
        # sdconv: q * key, A -> Hn K dense, softmax over K; dconv: the dense on q alone
        "conv_kernel": 2 * a * hn * k + other * ((a if conv == "sdconv" else 0) + hn * k + SOFTMAX * hn * k)
        if conv in ("sdconv", "dconv")
        else 0,
        "conv_value": 2 * d * a + other * a if conv != "noconv" else 0,
        "lightweight_conv": 2 * k * a if conv != "noconv" else 0,
        # q k^T, P v; scale, softmax and dropout on the Hn x T scores
        "attention": 4 * a * t + other * (1 + SOFTMAX + DROPOUT) * hn * t,
        "attention_output": 2 * (a if conv == "noconv" else 2 * a) * d + other * d,
        "ffn": 4 * d * f // g + other * (f + GELU * f + d),
        "layernorm": other * 2 * LAYER_NORM * d,
        "dropout_residual": other * 2 * (DROPOUT + 1) * d,
    }
    flops = {
        "embeddings": (2 * e * (v + t + 2) if dense_lookup else 0)  # word, position, type
        + other * (2 + LAYER_NORM + DROPOUT) * e,  # sum of the three, LN, dropout
        "embedding_projection": 2 * e * d + other * d if e != d else 0,
    }
    flops.update({name: config.num_hidden_layers * x for name, x in layer.items()})
    if head == "mlm":
        flops["mlm_head"] = mlm_fraction * (
            2 * d * e + 2 * e * v + other * (e + (GELU + LAYER_NORM) * e + v + SOFTMAX * v + 2 * v)
        )
    elif head == "discriminator":
        flops["discriminator_head"] = 2 * d * d + 2 * d + other * (d + GELU * d + 1)
    elif head is not None:
        raise ValueError(f"head must be None, 'mlm' or 'discriminator', not {head!r}")
    flops = {name: float(x) for name, x in flops.items() if x}
    flops["total"] = sum(flops.values())
    return flops


def model_flops(config: ConvBertConfig, batch: int, seq_len: int, training: bool) -> float:
    """Matmul FLOPs of one encoder forward (or forward + backward = 3 x forward) over batch x seq_len tokens."""
    forward = batch * seq_len * forward_flops_per_token(config, seq_len, matmul_only=True)["total"]
    return 3 * forward if training else forward


def pretraining_flops(
    disc_config: ConvBertConfig, gen_config: ConvBertConfig | None, batch: int, seq_len: int, steps: int
) -> float:
    """Pretraining FLOPs by ELECTRA's convention (see the module docstring): 2 x (discriminator forward with
    its head + generator forward with its MLM head) x batch x seq_len x steps. gen_config None: plain MLM
    (BERT), the MLM head sits on `disc_config`."""

    def per_token(config: ConvBertConfig, head: str) -> float:
        return forward_flops_per_token(config, seq_len, head=head, dense_lookup=True, mlm_fraction=MLM_FRACTION)[
            "total"
        ]

    if gen_config is None:
        forward = per_token(disc_config, "mlm")
    else:
        forward = per_token(disc_config, "discriminator") + per_token(gen_config, "mlm")
    return 2 * forward * batch * seq_len * steps


def paper_comparison() -> list[tuple[str, float, float]]:
    """(model, our pretraining FLOPs, the paper's Table 3 FLOPs) for each Table 3 row."""
    return [
        (name, pretraining_flops(disc, gen, batch, seq, steps), paper)
        for name, (disc, gen, batch, seq, steps, paper) in PAPER_TABLE3.items()
    ]


# ---------------------------------------------------------------- CLI
@dataclass
class FlopsConfig:
    preset: str | None = None  # model size: small, medium-small, base, mini or tiny
    model: str | None = None  # a model dir, its config.json or a hub id (org/name[@revision]), instead of --preset
    paper: bool = False  # compare with the paper's Table 3 training FLOPs
    generator: str | None = None  # generator preset for the pretraining cost (default: none, plain MLM)
    conv_type: Literal["sdconv", "dconv", "lconv", "noconv"] | None = None  # override conv_type
    max_length: PositiveInt = 128  # tokens per sequence
    batch_size: PositiveInt = 128  # sequences per step
    steps: PositiveInt = 1_000_000  # pretraining steps

    def __post_init__(self) -> None:
        validate(self)
        if self.paper + (self.preset is not None) + (self.model is not None) != 1:
            raise InputError("give exactly one of --preset, --model and --paper")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `flops` subcommand."""
    add_command(
        subparsers,
        "flops",
        FlopsConfig,
        run,
        help="parameter and FLOP counts of a model size",
        description="Analytic parameter and FLOP counts (ELECTRA's counting convention).",
        aliases={"max_length": ["--max_seq_length"]},
        metavars={"model": "DIR|ID"},
    )


def run(cfg: FlopsConfig) -> int:
    if cfg.paper:
        print(f"{'model':<24}{'ours':>10}{'paper':>10}{'diff':>8}")
        for name, ours, paper in paper_comparison():
            print(f"{name:<24}{ours:>10.2e}{paper:>10.1e}{ours / paper - 1:>+8.1%}")
        print("ELECTRA-small: ELECTRA's own script also gives 1.29e18; its paper's 1.4e18 is not reproducible.")
        return 0
    if cfg.preset:
        config = ConvBertConfig.preset(cfg.preset)
    else:
        path = resolve_dir(cfg.model, CONFIG_FILES)
        config = ConvBertConfig.from_json_file(path / "config.json" if path.is_dir() else path)
    if cfg.conv_type:
        config = config.replace(conv_type=cfg.conv_type)
    gen = ConvBertConfig.preset(cfg.generator) if cfg.generator else None
    if gen is not None and cfg.conv_type:
        gen = gen.replace(conv_type=cfg.conv_type)
    s, b = cfg.max_length, cfg.batch_size

    print(f"parameters          {param_count(config):>14,}")
    print(f"  non-embedding     {param_count(config, include_embeddings=False):>14,}")
    print(f"forward FLOPs per token (seq_len {s}, encoder only)")
    breakdown = forward_flops_per_token(config, s)
    for name, x in breakdown.items():
        print(f"  {name:<22}{x:>12.4g}  {x / breakdown['total']:>6.1%}")
    print(f"matmul FLOPs per training step (batch {b}, 3 x forward)  {model_flops(config, b, s, True):.3e}")
    total = pretraining_flops(config, gen, b, s, cfg.steps)
    per_step = total / cfg.steps
    objective = f"ELECTRA with generator {cfg.generator}" if gen else "MLM"
    print(
        f"pretraining FLOPs ({objective}, ELECTRA's convention) per step {per_step:.3e}, "
        f"for {cfg.steps:,} steps {total:.3e}"
    )
    return 0
