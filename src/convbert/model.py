"""ConvBERT (Jiang et al., 2020): embeddings, mixed attention, grouped FFN, encoder and task heads.

The math is transformers' `modeling_convbert.py` (= the official TF code for head_ratio 2), computed
without its `unfold` buffer and transposes; parameter names match transformers' state-dict keys.
Shapes: B batch, T length, d hidden, E embedding, Hn attention heads (= conv heads), hs head size,
A = Hn * hs (the bottleneck width, d / 2), K kernel size, V vocabulary, L layers.
Every model returns a dataclass of named outputs (transformers' field names): the encoder `EncoderOutput`,
the heads `HeadOutput` / `QuestionAnsweringOutput`, with the encoder's `hidden_states` / `attentions` when asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from . import hub
from .config import ConvBertConfig
from .errors import InputError

ACT = {
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass
class ModelOutput:
    """Named outputs, as transformers' ModelOutput: `out.logits`, `out["logits"]`, and `out[i]` / `to_tuple()`
    over the fields that are not None, in field order."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v for v in (getattr(self, f.name) for f in fields(self)) if v is not None)

    def __getitem__(self, key: int | slice | str) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


@dataclass
class EncoderOutput(ModelOutput):
    last_hidden_state: Tensor | None = None  # (B, T, d)
    hidden_states: tuple[Tensor, ...] | None = None  # L + 1 of (B, T, d): the (projected) embeddings, each layer
    attentions: tuple[Tensor, ...] | None = None  # L of (B, Hn, T, T): the self-attention heads' probabilities


@dataclass
class HeadOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None  # the encoder's, with output_hidden_states
    attentions: tuple[Tensor, ...] | None = None  # the encoder's, with output_attentions


@dataclass
class QuestionAnsweringOutput(ModelOutput):
    loss: Tensor | None = None
    start_logits: Tensor | None = None  # (B, T)
    end_logits: Tensor | None = None  # (B, T)
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    logits: Tensor | None = None  # (B, T, 2): start and end logits (last: not in transformers' tuple)


# ------------------------------------------------------------------------------------------ blocks
def _compiling_on_cpu(x: Tensor) -> bool:
    """Inside torch.compile, for CPU code: where inductor's own random numbers and convolutions are slow."""
    return x.device.type == "cpu" and torch.compiler.is_compiling()


@torch.library.custom_op("convbert::random_bits16", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def random_bits16(shape: list[int]) -> Tensor:
    """int16 numbers, uniform over all 2**16 values, from torch's CPU generator: 64 random bits per four (an
    opaque op under torch.compile, whose CPU random numbers are scalar Philox calls; tagged so that two calls are
    never merged)."""
    n = math.prod(shape)
    bits = torch.empty(-(-n // 4), dtype=torch.int64).random_(-(2**63), None)  # every 64-bit value
    return bits.view(torch.int16)[:n].view(shape).clone()


@random_bits16.register_fake
def _(shape: list[int]) -> Tensor:
    return torch.empty(shape, dtype=torch.int16)


def _cpu_dropout(x: Tensor, p: float) -> Tensor:
    """Dropout from 16 random bits per element: 2.3x faster than `F.dropout`, whose `bernoulli_` is most of its time
    on a CPU. The keep probability is a multiple of 2**-16 (|error| < 8e-6) and the kept values are scaled by its
    inverse, so the expectation is exact; compiled, the compare and scale fuse into the neighbouring kernel."""
    drop = round(p * 2**16)
    keep = random_bits16(list(x.shape)) >= drop - 2**15  # P(keep) = 1 - drop / 2**16
    return x * keep.to(x.dtype) * (2**16 / (2**16 - drop))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout; on a CPU (eager or compiled) the faster mask of `_cpu_dropout`."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, True)
    return _cpu_dropout(x, p)


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (the same module, so the state dict and repr stay transformers')."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


class Embeddings(nn.Module):
    def __init__(self, c: ConvBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.embedding_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.embedding_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.embedding_size)
        self.LayerNorm = nn.LayerNorm(c.embedding_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: Tensor | None, token_type_ids: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        words = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, E)
        positions = torch.arange(words.shape[1], device=words.device)
        x = words + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)  # (B, T, E)
        return self.dropout(self.LayerNorm(x))


class SeparableConv1D(nn.Module):
    """Span-aware key: depthwise conv over time (d channels, no bias), pointwise d -> A, then a bias."""

    def __init__(self, d: int, out: int, K: int):
        super().__init__()
        self.depthwise = nn.Conv1d(d, d, K, groups=d, padding=K // 2, bias=False)  # weight (d, 1, K)
        self.pointwise = nn.Conv1d(d, out, 1, bias=False)  # weight (A, d, 1)
        self.bias = nn.Parameter(torch.zeros(out, 1))  # (A, 1) as in transformers

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d) -> (B, T, A)
        w = self.depthwise.weight  # (d, 1, K)
        if _compiling_on_cpu(x):  # K shifted slices, fused into one kernel forward and backward
            T, K = x.shape[1], w.shape[-1]
            xp = F.pad(x, (0, 0, K // 2, K // 2))  # (B, T + K - 1, d)
            wt = w[:, 0].t().contiguous()  # (K, d): contiguous rows, vector loads in the fused kernel
            h = sum(xp[:, j : j + T] * wt[j] for j in range(K))
            return F.linear(h, self.pointwise.weight.squeeze(-1), self.bias.squeeze(-1))
        # As a 2-D conv over a (B, d, 1, T) view of x, oneDNN reads and writes the (B, T, d) layout in place:
        # no transposed copies, and much faster than the 1-D depthwise kernel on CPU.
        h = F.conv2d(
            x.transpose(1, 2).unsqueeze(2), w.unsqueeze(2), padding=(0, w.shape[-1] // 2), groups=w.shape[0]
        )  # (B, d, 1, T), channels-last
        return F.linear(h.squeeze(2).transpose(1, 2), self.pointwise.weight.squeeze(-1), self.bias.squeeze(-1))


def _shift_sum(v: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor]:
    T, K = v.shape[1], kernel.shape[-1]
    vp = F.pad(v, (0, 0, 0, 0, K // 2, K // 2))  # (B, T + K - 1, Hn, hs)
    out = vp[:, 0:T] * kernel[..., 0:1]
    for j in range(1, K):
        out.addcmul_(vp[:, j : j + T], kernel[..., j : j + 1])
    return out, vp


class _LightweightConv(torch.autograd.Function):
    """The shift-sum with a hand-written backward: K in-place updates instead of K slice-gradient buffers."""

    @staticmethod
    def forward(ctx, v: Tensor, kernel: Tensor) -> Tensor:
        out, vp = _shift_sum(v, kernel)
        ctx.save_for_backward(vp, kernel)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        vp, kernel = ctx.saved_tensors
        T, K = grad.shape[1], kernel.shape[-1]
        grad_vp = torch.zeros_like(vp)
        grad_kernel = torch.empty(*grad.shape[:-1], K, dtype=grad.dtype, device=grad.device)  # (B, T, Hn, K)
        for j in range(K):
            grad_vp[:, j : j + T].addcmul_(grad, kernel[..., j : j + 1])
            grad_kernel[..., j] = torch.linalg.vecdot(grad, vp[:, j : j + T])
        if kernel.dim() == 2:  # one kernel shared by all positions (lconv)
            grad_kernel = grad_kernel.sum((0, 1))
        return grad_vp[:, K // 2 : K // 2 + T], grad_kernel


def lightweight_conv(v: Tensor, kernel: Tensor) -> Tensor:
    """out[b,t,h,:] = sum_j kernel[b,t,h,j] * v[b, t + j - K//2, h, :], zero outside the sequence.

    v: (B, T, Hn, hs); kernel: (B, T, Hn, K) or (Hn, K), already normalised over K.
    A weighted sum of K shifted slices of the padded sequence: no K-times buffer, no transposes.
    """
    if torch.compiler.is_compiling():  # a plain sum of products, which inductor fuses forward and backward
        T, K = v.shape[1], kernel.shape[-1]
        vp = F.pad(v, (0, 0, 0, 0, K // 2, K // 2))
        return sum(vp[:, j : j + T] * kernel[..., j : j + 1] for j in range(K))
    if torch.is_grad_enabled() and (v.requires_grad or kernel.requires_grad):
        return _LightweightConv.apply(v, kernel)
    return _shift_sum(v, kernel)[0]  # (B, T, Hn, hs)


class MixedAttention(nn.Module):
    """Hn self-attention heads and Hn dynamic-convolution heads on a d/2 bottleneck, concatenated to d."""

    def __init__(self, c: ConvBertConfig):
        super().__init__()
        d, A, K = c.hidden_size, c.all_head_size, c.conv_kernel_size
        self.conv_type, self.heads, self.head_size, self.K = c.conv_type, c.attention_heads, c.head_size, K
        self.dropout_p = c.attention_probs_dropout_prob
        self.query, self.key, self.value = nn.Linear(d, A), nn.Linear(d, A), nn.Linear(d, A)
        if c.conv_type == "sdconv":
            self.key_conv_attn_layer = SeparableConv1D(d, A, K)
        if c.conv_type in ("sdconv", "dconv"):
            self.conv_kernel_layer = nn.Linear(A, self.heads * K)
        if c.conv_type == "lconv":
            self.conv_kernel = nn.Parameter(torch.zeros(self.heads, K))  # one kernel per head, all positions
        if c.conv_type != "noconv":
            self.conv_out_layer = nn.Linear(d, A)  # the conv branch's value projection

    def forward(
        self, x: Tensor, mask: Tensor | None, conv_mask: Tensor | None, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, d); mask (B, 1, 1, T) bool, True = attend; conv_mask (B, T, 1) zeroes pads or None.
        -> (B, T, d), and with output_attentions the attention probabilities (B, Hn, T, T) after dropout."""
        B, T, _ = x.shape
        Hn, hs = self.heads, self.head_size
        q = self.query(x)  # (B, T, A)
        k = self.key(x).view(B, T, Hn, hs).transpose(1, 2)  # (B, Hn, T, hs)
        v = self.value(x).view(B, T, Hn, hs).transpose(1, 2)
        qh = q.view(B, T, Hn, hs).transpose(1, 2)
        p = self.dropout_p if self.training else 0.0
        probs = None
        # Explicit probabilities to return them, or on a CPU with dropout: the math SDPA runs then anyway, here
        # with the faster CPU mask (fused into the softmax's kernel when compiled).
        if output_attentions or (p and x.device.type == "cpu"):
            scores = (qh @ k.transpose(-1, -2)) * hs**-0.5  # (B, Hn, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(-1)
            probs = dropout(probs, p, p > 0)
            ctx = probs @ v
        else:
            ctx = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, dropout_p=p)
        ctx = ctx.transpose(1, 2)  # (B, T, Hn, hs)
        probs = probs if output_attentions else None
        if self.conv_type == "noconv":
            return ctx.reshape(B, T, Hn * hs), probs

        xc = x if conv_mask is None else x * conv_mask
        if self.conv_type == "sdconv":
            kernel = self.conv_kernel_layer(q * self.key_conv_attn_layer(xc)).view(B, T, Hn, self.K)
        elif self.conv_type == "dconv":
            kernel = self.conv_kernel_layer(q).view(B, T, Hn, self.K)
        else:
            kernel = self.conv_kernel  # (Hn, K)
        kernel = kernel.softmax(-1)  # (B, T, Hn, K) or (Hn, K)
        vc = self.conv_out_layer(x)  # (B, T, A): computed from the unmasked input, as in transformers
        if conv_mask is not None:
            vc = vc * conv_mask
        conv = lightweight_conv(vc.view(B, T, Hn, hs), kernel)  # (B, T, Hn, hs)
        return torch.cat([ctx, conv], dim=2).view(B, T, 2 * Hn * hs), probs  # attention heads first, then conv


class GroupedLinear(nn.Module):
    """Block-diagonal linear: input split into G chunks, chunk g times weight[g], outputs concatenated."""

    def __init__(self, n_in: int, n_out: int, groups: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, n_in // groups, n_out // groups))  # (G, in/G, out/G)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        G, n_in, n_out = self.weight.shape
        chunks = x.reshape(-1, G, n_in).transpose(0, 1)  # (G, N, in/G), a strided view
        y = torch.baddbmm(self.bias.view(G, 1, n_out), chunks, self.weight)  # (G, N, out/G)
        return y.transpose(0, 1).reshape(*x.shape[:-1], G * n_out)


def linear(n_in: int, n_out: int, groups: int) -> nn.Module:
    return nn.Linear(n_in, n_out) if groups == 1 else GroupedLinear(n_in, n_out, groups)


class DenseAddNorm(nn.Module):
    """LayerNorm(residual + dropout(dense(h))): transformers' SelfOutput / Output."""

    def __init__(self, n_in: int, d: int, groups: int, c: ConvBertConfig):
        super().__init__()
        self.dense = linear(n_in, d, groups)
        self.LayerNorm = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(h)))


class Layer(nn.Module):
    def __init__(self, c: ConvBertConfig):
        super().__init__()
        d = c.hidden_size
        concat = c.all_head_size * (1 if c.conv_type == "noconv" else 2)  # d, except with attention_head_size
        self.attention = nn.ModuleDict({"self": MixedAttention(c), "output": DenseAddNorm(concat, d, 1, c)})
        self.intermediate = nn.ModuleDict({"dense": linear(d, c.intermediate_size, c.num_groups)})
        self.output = DenseAddNorm(c.intermediate_size, d, c.num_groups, c)
        self.act = ACT[c.hidden_act]

    def forward(
        self, x: Tensor, mask: Tensor | None, conv_mask: Tensor | None, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:  # (B, T, d), and the attention probabilities (B, Hn, T, T) or None
        a, probs = self.attention["self"](x, mask, conv_mask, output_attentions)
        h = self.attention["output"](a, x)
        return self.output(self.act(self.intermediate["dense"](h)), h), probs  # (B, T, d)


# ------------------------------------------------------------------------------------------ models
class PreTrained(nn.Module):
    """Shared construction, init and I/O of every class below (the logic lives in `convbert.hub`)."""

    base_model_prefix = "convbert"

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.config = config

    def init_weights(self) -> None:
        """transformers' init: normal(initializer_range) weights, zero biases, unit LayerNorm, zero pad row."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, GroupedLinear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, SeparableConv1D):
                nn.init.zeros_(m.bias)
            elif isinstance(m, MixedAttention) and m.conv_type == "lconv":
                nn.init.normal_(m.conv_kernel, std=std)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Heads that share a weight with the embeddings re-tie it here."""

    def save_pretrained(self, out_dir: str | Path, tokenizer=None) -> None:
        hub.save_pretrained(self, out_dir, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, output_loading_info: bool = False, **config_overrides):
        return hub.from_pretrained(cls, model_dir, output_loading_info=output_loading_info, **config_overrides)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """In train mode, recompute each encoder layer in the backward pass instead of keeping its activations
        (torch.utils.checkpoint, non-reentrant unless the kwargs say otherwise), as in transformers."""
        for m in self.modules():
            if isinstance(m, ConvBertModel):
                m.gradient_checkpointing = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}

    def gradient_checkpointing_disable(self) -> None:
        for m in self.modules():
            if isinstance(m, ConvBertModel):
                m.gradient_checkpointing = None

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(isinstance(m, ConvBertModel) and m.gradient_checkpointing is not None for m in self.modules())

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


class ConvBertModel(PreTrained):
    """The bare encoder: (input_ids, attention_mask, token_type_ids) -> EncoderOutput, last_hidden_state (B, T, d)."""

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing: dict[str, Any] | None = None  # checkpoint()'s kwargs while enabled
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """input_ids (B, T), or inputs_embeds (B, T, E) in place of the word-embedding lookup; attention_mask
        (B, T), 1 = real token, 0 = pad; token_type_ids (B, T), default 0."""
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("give exactly one of input_ids and inputs_embeds")
        B, T = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        if T > self.config.max_position_embeddings:
            raise InputError(
                f"sequence length {T} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}; truncate the input"
            )
        if token_type_ids is None:
            device = (input_ids if input_ids is not None else inputs_embeds).device
            token_type_ids = torch.zeros(B, T, dtype=torch.long, device=device)
        x = self.embeddings(input_ids, token_type_ids, inputs_embeds)  # (B, T, E)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)  # (B, T, d)
        mask = conv_mask = None
        if attention_mask is not None:
            keep = attention_mask.bool()
            mask = keep[:, None, None, :]  # (B, 1, 1, T)
            if self.config.mask_conv_padding:
                conv_mask = keep[..., None].to(x.dtype)  # (B, T, 1)
        hidden = [x] if output_hidden_states else None  # kept only when asked (inference holds one layer's)
        attentions = [] if output_attentions else None
        for layer in self.encoder.layer:
            if self.gradient_checkpointing is not None and self.training:
                x, probs = checkpoint(layer, x, mask, conv_mask, output_attentions, **self.gradient_checkpointing)
            else:
                x, probs = layer(x, mask, conv_mask, output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(probs)
        return EncoderOutput(
            x, None if hidden is None else tuple(hidden), None if attentions is None else tuple(attentions)
        )


class ConvBertForMaskedLM(PreTrained):
    """The generator: MLM logits over the vocabulary, output layer tied to the word embeddings."""

    tied = {"generator_lm_head.weight": "convbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.convbert = ConvBertModel(config)
        self.generator_predictions = nn.ModuleDict(
            {
                "dense": nn.Linear(config.hidden_size, config.embedding_size),
                "LayerNorm": nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps),
            }
        )
        self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)
        self.init_weights()

    def tie_weights(self) -> None:
        self.generator_lm_head.weight = self.convbert.embeddings.word_embeddings.weight

    def predict(self, h: Tensor) -> Tensor:
        """MLM logits (..., V) from hidden states (..., d): dense d -> E, GELU, LayerNorm, tied decoder."""
        p = self.generator_predictions
        return self.generator_lm_head(p["LayerNorm"](F.gelu(p["dense"](h))))

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> HeadOutput:
        enc = self.convbert(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.predict(enc.last_hidden_state)  # (B, T, V)
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        return HeadOutput(loss, logits, enc.hidden_states, enc.attentions)


class ConvBertForPreTraining(PreTrained):
    """The discriminator: a replaced-token-detection logit per token (ELECTRA's head names)."""

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.convbert = ConvBertModel(config)
        self.discriminator_predictions = nn.ModuleDict(
            {
                "dense": nn.Linear(config.hidden_size, config.hidden_size),
                "dense_prediction": nn.Linear(config.hidden_size, 1),
            }
        )
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> HeadOutput:
        enc = self.convbert(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        p = self.discriminator_predictions
        h = ACT[self.config.hidden_act](p["dense"](enc.last_hidden_state))
        logits = p["dense_prediction"](h).squeeze(-1)  # (B, T)
        loss = None
        if labels is not None:  # BCE averaged over real (non-pad) tokens
            bce = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
            loss = (
                bce.mean()
                if attention_mask is None
                else (bce * attention_mask).sum() / attention_mask.sum().clamp(min=1)
            )
        return HeadOutput(loss, logits, enc.hidden_states, enc.attentions)


def classification_loss(config: ConvBertConfig, logits: Tensor, labels: Tensor) -> Tensor:
    """MSE for num_labels 1 (regression), cross-entropy for integer labels, BCE for multi-label floats."""
    problem = config.problem_type
    if problem is None:
        problem = (
            "regression"
            if config.num_labels == 1
            else "single_label_classification"
            if not labels.is_floating_point()
            else "multi_label_classification"
        )
    logits = logits.float()
    if problem == "regression":
        return (
            F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
            if config.num_labels == 1
            else F.mse_loss(logits, labels.float())
        )
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.float())


class ConvBertForSequenceClassification(PreTrained):
    """classifier_head "dense": [CLS] -> dropout -> dense -> act -> dropout -> out_proj (transformers' ELECTRA
    head); "linear": [CLS] -> dropout -> out_proj, glorot-uniform (the official fine-tuning code's)."""

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.convbert = ConvBertModel(config)
        p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        self.classifier = nn.ModuleDict(
            {"dropout": Dropout(p), "out_proj": nn.Linear(config.hidden_size, config.num_labels)}
        )
        if config.classifier_head == "dense":
            self.classifier["dense"] = nn.Linear(config.hidden_size, config.hidden_size)
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        if self.config.classifier_head == "linear":
            nn.init.xavier_uniform_(self.classifier["out_proj"].weight)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> HeadOutput:
        enc = self.convbert(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        c = self.classifier
        x = c["dropout"](enc.last_hidden_state[:, 0])  # (B, d)
        if "dense" in c:
            x = c["dropout"](ACT[self.config.hidden_act](c["dense"](x)))
        logits = c["out_proj"](x)  # (B, num_labels)
        loss = None if labels is None else classification_loss(self.config, logits, labels)
        return HeadOutput(loss, logits, enc.hidden_states, enc.attentions)


class ConvBertForTokenClassification(PreTrained):
    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.convbert = ConvBertModel(config)
        p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> HeadOutput:
        """labels (B, T) with -100 on positions to ignore (pads, non-first subwords)."""
        enc = self.convbert(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(self.dropout(enc.last_hidden_state))  # (B, T, num_labels)
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        return HeadOutput(loss, logits, enc.hidden_states, enc.attentions)


class ConvBertForQuestionAnswering(PreTrained):
    def __init__(self, config: ConvBertConfig):
        super().__init__(config.replace(num_labels=2, id2label=None))
        self.convbert = ConvBertModel(self.config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> QuestionAnsweringOutput:
        enc = self.convbert(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.qa_outputs(enc.last_hidden_state)  # (B, T, 2)
        start, end = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            T = logits.shape[1]  # positions outside the sequence are ignored, as in transformers
            s, e = start_positions.view(-1).clamp(0, T), end_positions.view(-1).clamp(0, T)
            loss = (
                F.cross_entropy(start.float(), s, ignore_index=T) + F.cross_entropy(end.float(), e, ignore_index=T)
            ) / 2
        return QuestionAnsweringOutput(loss, start, end, enc.hidden_states, enc.attentions, logits)


class ConvBertForMultipleChoice(PreTrained):
    """Scores each of C choices from the hidden state of its *last* position, as transformers does."""

    def __init__(self, config: ConvBertConfig):
        super().__init__(config)
        self.convbert = ConvBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> HeadOutput:
        """input_ids (B, C, T) or inputs_embeds (B, C, T, E); labels (B,) the index of the right choice.
        hidden_states and attentions are the encoder's, over the B * C flattened sequences."""
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("give exactly one of input_ids and inputs_embeds")
        B, C, T = (input_ids if input_ids is not None else inputs_embeds).shape[:3]
        ids, mask, types = (
            None if t is None else t.reshape(B * C, T) for t in (input_ids, attention_mask, token_type_ids)
        )
        enc = self.convbert(
            ids,
            mask,
            types,
            inputs_embeds=None if inputs_embeds is None else inputs_embeds.flatten(0, 1),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(enc.last_hidden_state[:, -1]).view(B, C)  # from (B*C, T, d)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return HeadOutput(loss, logits, enc.hidden_states, enc.attentions)


HEADS: dict[str, type[PreTrained]] = {
    cls.__name__: cls
    for cls in (
        ConvBertModel,
        ConvBertForMaskedLM,
        ConvBertForPreTraining,
        ConvBertForSequenceClassification,
        ConvBertForTokenClassification,
        ConvBertForQuestionAnswering,
        ConvBertForMultipleChoice,
    )
}


def load_model_dir(model_dir: str | Path) -> PreTrained:
    """The head class named by config.json `architectures` (default ConvBertModel), loaded from the dir."""
    model_dir = hub.resolve_dir(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir}: not a model directory (no config.json)")
    config = ConvBertConfig.from_json_file(model_dir / "config.json")
    arch = (config.architectures or ["ConvBertModel"])[0]
    if arch not in HEADS:
        raise InputError(
            f"{model_dir / 'config.json'}: unknown architecture {arch!r}; expected one of {', '.join(HEADS)}"
        )
    return HEADS[arch].from_pretrained(model_dir)
