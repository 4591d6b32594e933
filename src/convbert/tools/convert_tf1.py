"""Official TF1 ConvBERT checkpoints to our model dirs (`convert_tf1`).

The official pretraining checkpoint holds the discriminator under `electra/`, its replaced-token head under
`discriminator_predictions/`, the generator under `generator/` (sharing `electra/embeddings`) and its MLM head
under `generator_predictions/`; Adam slots and other variables are ignored. Sizes are read from the variable
shapes; a preset or config supplies what shapes cannot (head_ratio, activation, ...) and, when given, must
agree with them.

The small generator (hidden 64, one head) is built differently by TF and by transformers: with fewer heads H
than head_ratio both use one attention head (and one conv head), but TF keeps the head size d/H = 64, so q/k/v
and the conv branch are A = 64 wide and the concat (2A = 128) is projected back to 64 by the attention output
dense, while transformers' rule (d/heads)/2 gives 32. No other setting of our config is exactly equivalent
(hidden 128 would need the embeddings_project that E = 128 = hidden omits), so such encoders are converted
with `ConvBertConfig.attention_head_size` = TF's head size (64), which our model reads for the q/k/v width
and the attention output dense's input (2A); transformers cannot load that dir. Every other official model
follows the common rule and gets a plain, transformers-compatible config.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import PRESETS, ConvBertConfig
from ..errors import InputError
from ..fileio import atomic_dir
from ..model import ConvBertForMaskedLM, ConvBertForPreTraining, ConvBertModel, PreTrained
from ..tokenizer import ConvBertTokenizer

CLASSES = {"discriminator": ConvBertForPreTraining, "generator": ConvBertForMaskedLM, None: ConvBertModel}

# TF layout -> ours: dense kernels are (in, out); separable-conv kernels (K, d, 1) and (1, d, A); the conv bias (A,)
TRANSFORMS = {
    "kernel": lambda t: t.t(),
    "depthwise": lambda t: t.permute(1, 2, 0),  # (K, d, 1) -> (d, 1, K)
    "pointwise": lambda t: t.permute(2, 1, 0),  # (1, d, A) -> (A, d, 1)
    "column": lambda t: t.unsqueeze(-1),  # (A,) -> (A, 1)
    None: lambda t: t,
}


def _tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter; we only read files
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError:
        raise InputError("reading TF1 checkpoints needs TensorFlow: pip install convbert[tf]") from None
    return tf


class _Checkpoint:
    """Variable shapes and values of a TF checkpoint, with errors that name the checkpoint and variable."""

    def __init__(self, prefix: str | Path):
        tf = _tensorflow()
        self.prefix = str(prefix)
        try:
            self.reader = tf.train.load_checkpoint(self.prefix)
        except Exception as e:  # TF raises ValueError, NotFoundError, DataLossError, ... for unreadable paths
            raise InputError(f"{prefix}: not a readable TF checkpoint: {e}") from None
        self.shapes = {k: tuple(v) for k, v in self.reader.get_variable_to_shape_map().items()}

    def shape(self, name: str, rank: int | None = None) -> tuple[int, ...]:
        if name not in self.shapes:
            raise InputError(f"{self.prefix}: missing variable {name}")
        if rank is not None and len(self.shapes[name]) != rank:
            raise InputError(f"{self.prefix}: variable {name} has shape {self.shapes[name]}, expected rank {rank}")
        return self.shapes[name]

    def tensor(self, name: str) -> Tensor:
        try:
            value = self.reader.get_tensor(name)
        except Exception as e:  # a truncated or missing .data file
            raise InputError(f"{self.prefix}: cannot read variable {name}: {e}") from None
        return torch.from_numpy(np.asarray(value, dtype=np.float32))


def _sizes(ckpt: _Checkpoint, scope: str, emb: str) -> dict[str, int]:
    """An encoder's sizes as the TF code built it (A = q/k/v width, Hn = attention heads = conv heads)."""
    found = [int(m.group(1)) for name in ckpt.shapes if (m := re.match(rf"{scope}/encoder/layer_(\d+)/", name))]
    l0 = f"{scope}/encoder/layer_0/"
    V, E = ckpt.shape(f"{emb}/word_embeddings", 2)
    K = ckpt.shape(l0 + "attention/self/conv_attn_key/depthwise_kernel", 3)[0]
    s = dict(
        vocab=V,
        embedding=E,
        positions=ckpt.shape(f"{emb}/position_embeddings", 2)[0],
        types=ckpt.shape(f"{emb}/token_type_embeddings", 2)[0],
        layers=max(found, default=-1) + 1,
        hidden=ckpt.shape(l0 + "attention/output/dense/kernel", 2)[1],
        width=ckpt.shape(l0 + "attention/self/query/kernel", 2)[1],
        kernel=K,
        heads=max(1, ckpt.shape(l0 + "attention/self/conv_attn_kernel/kernel", 2)[1] // K),
    )
    if l0 + "intermediate/g_dense/kernel" in ckpt.shapes:
        G, _, f = ckpt.shape(l0 + "intermediate/g_dense/kernel", 3)
        s.update(groups=G, ffn=G * f)
    else:
        s.update(groups=1, ffn=ckpt.shape(l0 + "intermediate/dense/kernel", 2)[1])
    return s


def _sources(scope: str, emb: str, groups: int) -> dict[str, str]:
    """The variable each size is read from (named in errors)."""
    layer = f"{scope}/encoder/layer_0/"
    return {
        "hidden_size": layer + "attention/output/dense/kernel",
        "embedding_size": f"{emb}/word_embeddings",
        "intermediate_size": layer + ("intermediate/dense" if groups == 1 else "intermediate/g_dense") + "/kernel",
        "conv_kernel_size": layer + "attention/self/conv_attn_key/depthwise_kernel",
        "heads": layer + "attention/self/conv_attn_kernel/kernel",
        "width": layer + "attention/self/query/kernel",
    }


def _check_against(ckpt: _Checkpoint, s: dict[str, int], src: dict[str, str], base: ConvBertConfig, label: str) -> None:
    """The sizes a preset/config states must match the checkpoint (heads with TF's head-size rule)."""
    hs = base.hidden_size // base.num_attention_heads  # TF: head size d / H, heads max(1, H // ratio)
    heads = max(1, base.num_attention_heads // base.head_ratio)
    expected = {
        "hidden_size": (s["hidden"], base.hidden_size, src["hidden_size"]),
        "embedding_size": (s["embedding"], base.embedding_size, src["embedding_size"]),
        "intermediate_size": (s["ffn"], base.intermediate_size, src["intermediate_size"]),
        "num_groups": (s["groups"], base.num_groups, src["intermediate_size"]),
        "conv_kernel_size": (s["kernel"], base.conv_kernel_size, src["conv_kernel_size"]),
        "attention heads": (s["heads"], heads, src["heads"]),
        "attention width (heads x hidden_size / num_attention_heads)": (s["width"], heads * hs, src["width"]),
    }
    for what, (found, stated, name) in expected.items():
        if found != stated:
            raise InputError(
                f"{ckpt.prefix}: variable {name} {ckpt.shape(name)} gives {what} {found}, but {label} has {stated}"
            )


def _our_config(ckpt: _Checkpoint, s: dict[str, int], src: dict[str, str], base: ConvBertConfig) -> ConvBertConfig:
    """Our config for TF sizes; heads H = d / head size, as TF's config states them."""
    d, heads = s["hidden"], s["heads"]
    hs, rest = divmod(s["width"], heads)
    if rest or d % hs or max(1, d // hs // base.head_ratio) != heads:
        raise InputError(
            f"{ckpt.prefix}: {src['width']} {ckpt.shape(src['width'])} and {src['heads']} "
            f"{ckpt.shape(src['heads'])} give {heads} head(s) of width {s['width'] / heads:g}: no "
            f"ConvBERT with hidden size {d} and head_ratio {base.head_ratio} has that"
        )
    sizes = dict(
        vocab_size=s["vocab"],
        embedding_size=s["embedding"],
        hidden_size=d,
        num_hidden_layers=s["layers"],
        num_attention_heads=d // hs,
        intermediate_size=s["ffn"],
        num_groups=s["groups"],
        conv_kernel_size=s["kernel"],
        max_position_embeddings=s["positions"],
        type_vocab_size=s["types"],
        conv_type="sdconv",
        mask_conv_padding=False,
        architectures=None,
    )
    if hs != d // heads // 2:  # TF's head size is not transformers' (one head with H < head_ratio)
        if "attention_head_size" not in {f.name for f in dataclasses.fields(ConvBertConfig)}:
            raise InputError(
                f"{ckpt.prefix}: {src['width']} {ckpt.shape(src['width'])}: {heads} head(s) of size "
                f"{hs} need ConvBertConfig.attention_head_size, which this version lacks"
            )
        sizes["attention_head_size"] = hs
    return base.replace(**sizes)


def _variables(s: dict[str, int], scope: str, emb: str, head: str | None) -> dict[str, tuple[str, tuple, Any]]:
    """TF variable name -> (our state-dict key, TF shape, transform) for one encoder and its head (None: the
    bare encoder, whose keys have no `convbert.` prefix)."""
    p = "" if head is None else "convbert."
    d, A, E, F, G, K, V = s["hidden"], s["width"], s["embedding"], s["ffn"], s["groups"], s["kernel"], s["vocab"]
    table: dict[str, tuple[str, tuple, Any]] = {}

    def dense(tf: str, ours: str, n_in: int, n_out: int) -> None:
        table[f"{tf}/kernel"] = (f"{ours}.weight", (n_in, n_out), "kernel")
        table[f"{tf}/bias"] = (f"{ours}.bias", (n_out,), None)

    def layer_norm(tf: str, ours: str, n: int) -> None:
        table[f"{tf}/gamma"] = (f"{ours}.weight", (n,), None)
        table[f"{tf}/beta"] = (f"{ours}.bias", (n,), None)

    for name, rows in (("word", V), ("position", s["positions"]), ("token_type", s["types"])):
        table[f"{emb}/{name}_embeddings"] = (f"{p}embeddings.{name}_embeddings.weight", (rows, E), None)
    layer_norm(f"{emb}/LayerNorm", f"{p}embeddings.LayerNorm", E)
    if E != d:
        dense(f"{scope}/embeddings_project", f"{p}embeddings_project", E, d)
    for j in range(s["layers"]):
        tf, ours = f"{scope}/encoder/layer_{j}/", f"{p}encoder.layer.{j}."
        for name in ("query", "key", "value"):
            dense(f"{tf}attention/self/{name}", f"{ours}attention.self.{name}", d, A)
        conv, sep = f"{tf}attention/self/conv_attn_key/", f"{ours}attention.self.key_conv_attn_layer."
        table[conv + "depthwise_kernel"] = (sep + "depthwise.weight", (K, d, 1), "depthwise")
        table[conv + "pointwise_kernel"] = (sep + "pointwise.weight", (1, d, A), "pointwise")
        table[conv + "bias"] = (sep + "bias", (A,), "column")
        dense(f"{tf}attention/self/conv_attn_kernel", f"{ours}attention.self.conv_kernel_layer", A, s["heads"] * K)
        dense(f"{tf}attention/self/conv_attn_point", f"{ours}attention.self.conv_out_layer", d, A)
        dense(f"{tf}attention/output/dense", f"{ours}attention.output.dense", 2 * A, d)
        layer_norm(f"{tf}attention/output/LayerNorm", f"{ours}attention.output.LayerNorm", d)
        for part, n_in, n_out in (("intermediate", d, F), ("output", F, d)):
            if G == 1:
                dense(f"{tf}{part}/dense", f"{ours}{part}.dense", n_in, n_out)
            else:  # grouped linear: kernel (G, in/G, out/G), stored as is
                table[f"{tf}{part}/g_dense/kernel"] = (f"{ours}{part}.dense.weight", (G, n_in // G, n_out // G), None)
                table[f"{tf}{part}/g_dense/bias"] = (f"{ours}{part}.dense.bias", (n_out,), None)
        layer_norm(f"{tf}output/LayerNorm", f"{ours}output.LayerNorm", d)
    if head == "discriminator":
        dense("discriminator_predictions/dense", "discriminator_predictions.dense", d, d)
        dense("discriminator_predictions/dense_1", "discriminator_predictions.dense_prediction", d, 1)
    elif head == "generator":
        dense("generator_predictions/dense", "generator_predictions.dense", d, E)
        layer_norm("generator_predictions/LayerNorm", "generator_predictions.LayerNorm", E)
        table["generator_predictions/output_bias"] = ("generator_lm_head.bias", (V,), None)
    return table


def _convert_encoder(
    ckpt: _Checkpoint, scope: str, emb: str, head: str | None, base: ConvBertConfig, label: str | None
) -> tuple[PreTrained, set[str]]:
    """One encoder (+ head) as our model, and the TF variables it used."""
    s = _sizes(ckpt, scope, emb)
    src = _sources(scope, emb, s["groups"])
    table = _variables(s, scope, emb, head)
    for name, (_, shape, _) in table.items():
        if ckpt.shape(name) != shape:
            raise InputError(
                f"{ckpt.prefix}: variable {name} has shape {ckpt.shape(name)}, expected {shape} "
                f"for {scope} with hidden {s['hidden']}, embedding {s['embedding']}, FFN {s['ffn']} "
                f"in {s['groups']} group(s), attention width {s['width']} in {s['heads']} head(s), "
                f"kernel {s['kernel']}, vocabulary {s['vocab']}"
            )
    if label is not None:
        _check_against(ckpt, s, src, base, label)
    config = _our_config(ckpt, s, src, base)
    model = CLASSES[head](config)
    state = {ours: TRANSFORMS[how](ckpt.tensor(name)) for name, (ours, _, how) in table.items()}
    for tied, source in getattr(model, "tied", {}).items():
        state[tied] = state[source]
    model.load_state_dict(state)
    model.tie_weights()
    return model.eval(), set(table)


def _bases(config: ConvBertConfig | str | Path | None) -> tuple[tuple[ConvBertConfig, str | None], ...]:
    """(config, label) for the discriminator and the generator; label None: sizes are not checked."""
    if config is None:
        return (ConvBertConfig(), None), (ConvBertConfig(), None)
    if isinstance(config, ConvBertConfig):
        return (config, "the given config"), (config, None)
    if isinstance(config, str) and config in PRESETS:
        gen = f"{config}-generator"
        return (
            (ConvBertConfig.preset(config), f"preset {config!r}"),
            (ConvBertConfig.preset(gen), f"preset {gen!r}")
            if gen in PRESETS
            else (ConvBertConfig.preset(config), None),
        )
    path = Path(config)
    if not path.exists():
        raise InputError(f"{config}: neither a preset ({', '.join(PRESETS)}) nor a config file")
    loaded = ConvBertConfig.from_json_file(path / "config.json" if path.is_dir() else path)
    return (loaded, str(path)), (loaded, None)


def convert_tf1(
    ckpt_prefix: str | Path,
    out_dir: str | Path,
    config: ConvBertConfig | str | Path | None = None,
    vocab: str | Path | None = None,
) -> dict[str, Any]:
    """Convert an official TF1 ConvBERT checkpoint into out_dir/discriminator (ConvBertForPreTraining, or
    ConvBertModel without `discriminator_predictions`) and out_dir/generator (ConvBertForMaskedLM, when the
    checkpoint has `generator/`). config: a preset name, a config.json path or a ConvBertConfig giving what
    shapes cannot (head_ratio, activation, ...). vocab: a vocab.txt / tokenizer.json to save with both."""
    ckpt = _Checkpoint(ckpt_prefix)
    (disc_base, disc_label), (gen_base, gen_label) = _bases(config)
    tokenizer = ConvBertTokenizer.from_pretrained(vocab) if vocab is not None else None
    head = "discriminator" if "discriminator_predictions/dense/kernel" in ckpt.shapes else None
    models, used = {}, set()
    models["discriminator"], names = _convert_encoder(
        ckpt, "electra", "electra/embeddings", head, disc_base, disc_label
    )
    used |= names
    if any(name.startswith("generator/") for name in ckpt.shapes):
        emb = "generator/embeddings" if "generator/embeddings/word_embeddings" in ckpt.shapes else "electra/embeddings"
        models["generator"], names = _convert_encoder(ckpt, "generator", emb, "generator", gen_base, gen_label)
        used |= names
    if tokenizer is not None:
        tokenizer.check_vocab(min(m.config.vocab_size for m in models.values()))
    report: dict[str, Any] = {
        "checkpoint": ckpt.prefix,
        "out_dir": str(out_dir),
        "ignored_variables": len(ckpt.shapes) - len(used),
    }
    with atomic_dir(out_dir) as tmp:
        for role, model in models.items():
            model.save_pretrained(tmp / role, tokenizer=tokenizer)
            c = model.config
            report[role] = {
                "path": str(Path(out_dir) / role),
                "class": type(model).__name__,
                "hidden_size": c.hidden_size,
                "num_attention_heads": c.num_attention_heads,
                "layers": c.num_hidden_layers,
                "embedding_size": c.embedding_size,
                "intermediate_size": c.intermediate_size,
                "num_groups": c.num_groups,
                "vocab_size": c.vocab_size,
                "parameters": model.num_parameters,
            }
    return report
