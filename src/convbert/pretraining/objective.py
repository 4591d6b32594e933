"""ELECTRA's replaced-token detection (and plain MLM) for ConvBERT: masking, sampling, labels, losses.

Static shapes, as in the official code: every sequence has `max_predictions` prediction slots (positions
plus a validity weight), so the generator head, sampling and corruption are fixed-size gathers and scatters,
the step has no host syncs and compiles as one graph.

Randomness is a counter-based hash computed on the device: each example has a 63-bit key, a function of the
run seed, the step and the example's global index (`example_keys`, on the host), and every random number is
`hash(key, stream, position)` (`uniform`). A batch therefore gets the same masks and samples whether it runs in
one process or is split across torchrun ranks, and a resumed run repeats the same draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConvBertConfig
from ..counter_rng import uniform
from ..model import ConvBertForMaskedLM, ConvBertForPreTraining

STATS = ("masked", "gen_correct", "tokens", "disc_correct", "replaced", "predicted", "true_positive")
_MASK_STREAM, _KEEP_STREAM, _SAMPLE_STREAM = 1, 2, 3  # independent random streams per example


def generator_config(disc: ConvBertConfig, fraction: float) -> ConvBertConfig:
    """ELECTRA's generator: the discriminator with hidden size x fraction, heads max(1, H x fraction), FFN 4 d."""
    hidden = int(round(disc.hidden_size * fraction))
    return disc.replace(
        hidden_size=hidden,
        num_attention_heads=max(1, int(disc.num_attention_heads * fraction)),
        intermediate_size=4 * hidden,
        architectures=None,
    )


def max_predictions(seq_len: int, mask_prob: float) -> int:
    """ELECTRA: int((mask_prob + 0.005) * max_seq_length), 19 for 15% of 128."""
    return max(1, int((mask_prob + 0.005) * seq_len))


# ------------------------------------------------------------------------------------------ randomness
def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (numpy's array arithmetic wraps modulo 2^64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def example_keys(seed: int, step: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """One 63-bit key per example from (run seed, step, global example index), as int64."""
    s = _splitmix64(_splitmix64(np.array([seed], dtype=np.uint64)) ^ np.array([step], dtype=np.uint64))
    keys = _splitmix64(s ^ np.asarray(indices, dtype=np.uint64)) >> np.uint64(1)
    return keys.astype(np.int64)


# ------------------------------------------------------------------------------------------ objective
@dataclass
class Masking:
    masked_ids: Tensor  # (B, T) input with [MASK] at 85% of the selected positions
    positions: Tensor  # (B, P) prediction slots; slots past a sequence's count hold unselected positions
    weights: Tensor  # (B, P) bool, True for the selected (real) slots


def mask_tokens(
    input_ids: Tensor,
    special: Tensor,
    mask_id: int,
    keys: Tensor,
    mask_prob: float = 0.15,
    max_pred: int | None = None,
    mask_fraction: float = 0.85,
) -> Masking:
    """ELECTRA's dynamic masking into `max_pred` static slots per sequence.

    Per sequence, n = clamp(round(mask_prob x candidates), 1, max_pred) positions are drawn uniformly
    without replacement among the non-special tokens (the n lowest hashed scores); each becomes [MASK] with
    probability `mask_fraction` and otherwise keeps its token (never a random token).
    special: (V,) bool, True for [CLS]/[SEP]/[PAD]/[MASK]/... ids.
    """
    B, T = input_ids.shape
    P = max_predictions(T, mask_prob) if max_pred is None else max_pred
    candidates = ~special[input_ids]  # (B, T)
    scores = uniform(keys, _MASK_STREAM, torch.arange(T, device=input_ids.device))
    positions = scores.masked_fill(~candidates, 2.0).topk(P, dim=1, largest=False).indices  # (B, P) distinct
    n_cand = candidates.sum(1, keepdim=True)
    n_mask = torch.round(n_cand * mask_prob).clamp(1, P).minimum(n_cand)  # (B, 1)
    weights = torch.arange(P, device=input_ids.device) < n_mask  # (B, P)
    to_mask = weights & (uniform(keys, _KEEP_STREAM, positions) < mask_fraction)
    original = input_ids.gather(1, positions)
    masked = input_ids.scatter(1, positions, torch.where(to_mask, mask_id, original))
    return Masking(masked, positions, weights)


def mlm_scores(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """log-probabilities (B, P, V) from logits (B, P, V) fp32, the targets' (B, P) and whether each target is
    the most probable token (B, P)."""
    if torch.compiler.is_compiling():  # a fused compare-and-sum picks the target: a gather's backward would
        log_probs = logits - logits.logsumexp(-1, keepdim=True)  # zero-fill and scatter into a (B, P, V) buffer
        vocab = torch.arange(logits.shape[-1], device=logits.device)
        target = torch.where(vocab == targets.unsqueeze(-1), log_probs, 0.0).sum(-1)
        return log_probs, target, target >= log_probs.amax(-1)
    log_probs = logits.log_softmax(-1)
    return log_probs, log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), log_probs.argmax(-1) == targets


def sample_tokens(log_probs: Tensor, keys: Tensor, positions: Tensor) -> Tensor:
    """One token per slot from softmax(logits), by inverting the CDF at a hashed uniform (fp32, no gradient).

    The same distribution as ELECTRA's Gumbel-max sampling, from one random number per slot instead of V.
    log_probs (B, P, V) fp32; positions (B, P) the counters of the slots. Returns (B, P) token ids.
    """
    with torch.no_grad():
        cdf = log_probs.exp().cumsum(-1)  # (B, P, V)
        u = uniform(keys, _SAMPLE_STREAM, positions) * cdf[..., -1]  # (B, P)
        return torch.searchsorted(cdf, u.unsqueeze(-1), right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


@dataclass
class PretrainOutput:
    loss: Tensor
    mlm_loss: Tensor
    disc_loss: Tensor
    stats: Tensor  # (len(STATS),) counts to sum over micro-batches and ranks before dividing
    disc_logits: Tensor | None = None  # (B, T) replaced-token-detection logits (objective "electra")
    replaced: Tensor | None = None  # (B, T) bool, the labels


class ElectraPretrainer(nn.Module):
    """Generator (MLM) + discriminator (RTD) with shared embeddings; `objective="mlm"` trains the generator only.

    In "mlm" mode the `generator` is full size (the discriminator config) and there is no discriminator.
    """

    def __init__(
        self,
        disc_config: ConvBertConfig,
        gen_config: ConvBertConfig,
        special_ids: Sequence[int],
        mask_id: int,
        objective: str = "electra",
        disc_weight: float = 50.0,
        mask_prob: float = 0.15,
    ):
        super().__init__()
        if objective not in ("electra", "mlm"):
            raise ValueError(f"objective must be electra or mlm, not {objective!r}")
        self.objective, self.disc_weight, self.mask_prob, self.mask_id = objective, disc_weight, mask_prob, mask_id
        special = torch.zeros(disc_config.vocab_size, dtype=torch.bool)
        special[list(special_ids)] = True
        self.register_buffer("special", special, persistent=False)
        if objective == "mlm":
            self.generator = ConvBertForMaskedLM(disc_config)
            return
        if gen_config.embedding_size != disc_config.embedding_size or gen_config.vocab_size != disc_config.vocab_size:
            raise ValueError("generator and discriminator must share embedding_size and vocab_size")
        self.discriminator = ConvBertForPreTraining(disc_config)
        self.generator = ConvBertForMaskedLM(gen_config)
        self.tie_embeddings()

    def tie_embeddings(self) -> None:
        """Token, position and type embeddings and their LayerNorm are shared (the generator's projection is not)."""
        if self.objective == "electra":
            self.generator.convbert.embeddings = self.discriminator.convbert.embeddings
            self.generator.tie_weights()

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor, keys: Tensor
    ) -> PretrainOutput:
        """input_ids, attention_mask, token_type_ids (B, T); keys (B,) from `example_keys`."""
        m = mask_tokens(input_ids, self.special, self.mask_id, keys, self.mask_prob)
        gen = self.generator
        h = gen.convbert(m.masked_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, d_gen)
        h = h.gather(1, m.positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (B, P, d_gen): the slots only
        targets = input_ids.gather(1, m.positions)  # (B, P)
        log_probs, target_lp, top = mlm_scores(gen.predict(h).float(), targets)  # (B, P, V), (B, P), (B, P)
        w = m.weights.float()
        n_masked = w.sum()
        mlm_loss = -(target_lp * w).sum() / n_masked.clamp(min=1)
        gen_correct = (top & m.weights).sum()
        if self.objective == "mlm":
            zero = torch.zeros_like(n_masked)
            stats = torch.stack([n_masked, gen_correct.float(), zero, zero, zero, zero, zero])
            return PretrainOutput(mlm_loss, mlm_loss, torch.zeros_like(mlm_loss), stats)

        sampled = sample_tokens(log_probs.detach(), keys, m.positions)  # (B, P)
        corrupted = input_ids.scatter(1, m.positions, torch.where(m.weights, sampled, targets))
        replaced = corrupted != input_ids  # a sample equal to the original counts as "original"
        disc_logits = self.discriminator(corrupted, attention_mask, token_type_ids).logits.float()  # (B, T)
        real = attention_mask.bool()
        n_real = real.sum()
        bce = F.binary_cross_entropy_with_logits(disc_logits, replaced.float(), reduction="none")
        disc_loss = (bce * real).sum() / n_real.clamp(min=1)
        pred = disc_logits > 0
        stats = torch.stack(
            [
                n_masked,
                gen_correct.float(),
                n_real.float(),
                ((pred == replaced) & real).sum().float(),
                (replaced & real).sum().float(),
                (pred & real).sum().float(),
                (pred & replaced & real).sum().float(),
            ]
        )
        return PretrainOutput(
            mlm_loss + self.disc_weight * disc_loss, mlm_loss, disc_loss, stats, disc_logits, replaced
        )


def summarize(stats: dict[str, float]) -> dict[str, float]:
    """Accuracies, precision and recall from summed counts (keys of STATS)."""
    div = lambda a, b: stats.get(a, 0.0) / stats[b] if stats.get(b) else float("nan")
    out = {"gen_acc": div("gen_correct", "masked")}
    if stats.get("tokens"):
        out.update(
            disc_acc=div("disc_correct", "tokens"),
            disc_precision=div("true_positive", "predicted"),
            disc_recall=div("true_positive", "replaced"),
            replaced_frac=div("replaced", "tokens"),
        )
    return out
