"""The contenders of `convbert bench`: the benchmark case, our ConvBertModel, transformers' ConvBERT and the
same-size ELECTRA/BERT reference, their inputs, the parity check and the timed step of each mode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from ..config import BERT_CONFIG_KEYS, ConvBertConfig
from ..model import ConvBertModel
from ..train_utils import compile_for_inference
from .timing import require_transformers


@dataclass(frozen=True)
class Case:
    preset: str
    mode: str  # fwd | train
    dtype: str  # fp32 | bf16 (autocast)
    seq_len: int
    batch: int


@dataclass
class Contender:
    role: str
    name: str
    model: nn.Module
    call: Callable[[Tensor, Tensor, Tensor], Tensor]  # (input_ids, attention_mask, token_type_ids) -> (B, T, d)
    flops_config: ConvBertConfig  # what `model_flops` counts for it
    params: int


# ---------------------------------------------------------------- models
def reference_config(config: ConvBertConfig) -> ConvBertConfig:
    """The same-size ELECTRA/BERT: every head self-attention, no grouped FFN."""
    return config.replace(conv_type="noconv", head_ratio=1, num_groups=1)


def reference_name(preset: str, config: ConvBertConfig) -> str:
    family = "BERT" if config.embedding_size == config.hidden_size else "ELECTRA"
    star = "*" if config.num_groups > 1 else ""  # no grouped FFN: more parameters than the ConvBERT
    return f"{family}-{'ms' if preset == 'medium-small' else preset}{star}"


def _hf_kwargs(config: ConvBertConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in BERT_CONFIG_KEYS}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_contender(role: str, preset: str, seed: int) -> Contender:
    """One model, initialised from `seed` (so ours and ours-compiled start equal; `check_parity` copies our
    weights into hf-convbert)."""
    config = ConvBertConfig.preset(preset)
    torch.manual_seed(seed)
    if role in ("ours", "ours-compiled"):
        model = ConvBertModel(config)
        forward = compile_for_inference(model) if role == "ours-compiled" else model
        name = "convbert (ours, compiled)" if role == "ours-compiled" else "convbert (ours)"

        def ours(ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:
            return forward(ids, mask, types).last_hidden_state

        return Contender(role, name, model, ours, config, _n_params(model))
    tf = require_transformers()
    if role == "hf-convbert":
        model = tf.ConvBertModel(
            tf.ConvBertConfig(
                **_hf_kwargs(config),
                embedding_size=config.embedding_size,
                head_ratio=config.head_ratio,
                num_groups=config.num_groups,
                conv_kernel_size=config.conv_kernel_size,
            )
        )
        name, flops_config = "transformers ConvBERT", config
    elif role == "reference":
        ref = reference_config(config)
        if ref.embedding_size == ref.hidden_size:
            model = tf.BertModel(tf.BertConfig(**_hf_kwargs(ref)), add_pooling_layer=False)
        else:
            model = tf.ElectraModel(tf.ElectraConfig(**_hf_kwargs(ref), embedding_size=ref.embedding_size))
        name, flops_config = reference_name(preset, config), ref
    else:
        raise ValueError(f"unknown role {role!r}")

    def call(ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    return Contender(role, name, model, call, flops_config, _n_params(model))


def make_inputs(
    config: ConvBertConfig, batch: int, seq_len: int, device: str, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Random token ids (no padding: an all-ones attention mask) and zero token types."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, seq_len), generator=g)
    return ids.to(device), torch.ones_like(ids, device=device), torch.zeros_like(ids, device=device)


def check_parity(ours: Contender, hf: Contender, seed: int) -> float:
    """Copy our weights into transformers' ConvBERT (key for key) and return the eval forward max|diff|."""
    missing, unexpected = hf.model.load_state_dict(ours.model.state_dict(), strict=False)
    stray = [k for k in missing if "position_ids" not in k and "token_type_ids" not in k] + unexpected
    if stray:
        raise RuntimeError(f"our and transformers' ConvBERT state dicts differ: {stray[:5]}")
    inputs = make_inputs(ours.model.config, 2, 16, "cpu", seed)
    device = next(ours.model.parameters()).device
    inputs = tuple(t.to(device) for t in inputs)
    ours.model.eval()
    hf.model.eval()
    with torch.inference_mode():
        return (ours.call(*inputs) - hf.call(*inputs)).abs().max().item()


# ---------------------------------------------------------------- steps
def make_step(c: Contender, case: Case, inputs: tuple[Tensor, Tensor, Tensor], device: str) -> Callable[[], None]:
    """fwd: eval + inference_mode forward. train: dropout on, forward, backward of mean(h^2), AdamW step."""

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device, dtype=torch.bfloat16, enabled=case.dtype == "bf16")

    if case.mode == "fwd":
        c.model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast():
                c.call(*inputs)

        return step
    c.model.train()
    opt = torch.optim.AdamW(c.model.parameters(), lr=1e-4, weight_decay=0.01)

    def step() -> None:
        with autocast():
            out = c.call(*inputs)
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def row_case(row: dict[str, Any]) -> Case:
    return Case(**{f.name: row[f.name] for f in fields(Case)})
