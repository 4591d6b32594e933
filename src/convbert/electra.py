"""ELECTRA's replaced-token detection (and plain MLM) for ConvBERT: masking, sampling, labels, losses.

Randomness is drawn per example from `example_seeds` (one seed per sequence, a function of the run seed,
the step and the example's global index), so a batch gives the same masks and samples whether it runs in
one process or is split across torchrun ranks, and a resumed run repeats the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConvBertConfig
from .model import ConvBertForMaskedLM, ConvBertForPreTraining


def generator_config(disc: ConvBertConfig, fraction: float) -> ConvBertConfig:
    """ELECTRA's generator: the discriminator with hidden size x fraction, heads max(1, H x fraction), FFN 4 d."""
    hidden = int(round(disc.hidden_size * fraction))
    return disc.replace(hidden_size=hidden, num_attention_heads=max(1, int(disc.num_attention_heads * fraction)),
                        intermediate_size=4 * hidden, architectures=None)


def max_predictions(seq_len: int, mask_prob: float) -> int:
    """ELECTRA: int((mask_prob + 0.005) * max_seq_length), 19 for 15% of 128."""
    return int((mask_prob + 0.005) * seq_len)


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def example_seeds(seed: int, step: int, indices) -> list[int]:
    """One 63-bit seed per example from (run seed, step, global example index)."""
    return [_mix(_mix(_mix(seed) ^ step) ^ int(i)) >> 1 for i in indices]


def mask_tokens(input_ids: Tensor, special: Tensor, mask_id: int, seeds: list[int], mask_prob: float = 0.15,
                max_pred: int | None = None, mask_fraction: float = 0.85) -> tuple[Tensor, Tensor]:
    """ELECTRA's dynamic masking.

    Per sequence, n = clamp(round(mask_prob x candidates), 1, max_pred) positions are drawn uniformly
    without replacement among the non-special tokens; each becomes [MASK] with probability
    `mask_fraction` and otherwise keeps its token (never a random token).
    special: (V,) bool, True for [CLS]/[SEP]/[PAD]/[MASK]/... ids. Returns (masked_ids, selected (B, T) bool).
    """
    B, T = input_ids.shape
    max_pred = max_predictions(T, mask_prob) if max_pred is None else max_pred
    candidates = ~special[input_ids]  # (B, T)
    scores, keep_token = torch.empty(B, T), torch.empty(B, T)
    for b, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        scores[b] = torch.rand(T, generator=g)
        keep_token[b] = torch.rand(T, generator=g)
    scores, keep_token = scores.to(input_ids.device), keep_token.to(input_ids.device)
    n_cand = candidates.sum(1)
    n_mask = torch.clamp(torch.round(n_cand * mask_prob), 1, max_pred).minimum(n_cand)  # (B,)
    order = scores.masked_fill(~candidates, 2.0).argsort(1)  # candidates first, in random order
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(T, device=input_ids.device).expand(B, T))
    selected = (rank < n_mask[:, None]) & candidates
    to_mask = selected & (keep_token < mask_fraction)
    return input_ids.masked_fill(to_mask, mask_id), selected


def gumbel_sample(logits: Tensor, seeds: list[int], rows: Tensor) -> Tensor:
    """argmax(logits + Gumbel noise) in fp32; row i's noise comes from seeds[rows[i]]. No gradient."""
    with torch.no_grad():
        logits = logits.float()
        u = torch.empty_like(logits, device="cpu")
        for b, s in enumerate(seeds):
            idx = (rows == b).nonzero().squeeze(1).cpu()
            if len(idx):
                g = torch.Generator().manual_seed(s ^ 0x5DEECE66D)
                u[idx] = torch.rand(len(idx), logits.shape[1], generator=g)
        u = u.to(logits.device).clamp_(1e-9, 1.0 - 1e-7)
        return (logits - torch.log(-torch.log(u))).argmax(-1)


@dataclass
class PretrainOutput:
    loss: Tensor
    mlm_loss: Tensor
    disc_loss: Tensor
    stats: dict[str, Tensor]  # counts to sum over micro-batches and ranks before dividing


class ElectraPretrainer(nn.Module):
    """Generator (MLM) + discriminator (RTD) with shared embeddings; `objective="mlm"` trains the generator only.

    In "mlm" mode the `generator` is full size (the discriminator config) and there is no discriminator.
    """

    def __init__(self, disc_config: ConvBertConfig, gen_config: ConvBertConfig, objective: str = "electra",
                 disc_weight: float = 50.0, mask_prob: float = 0.15):
        super().__init__()
        if objective not in ("electra", "mlm"):
            raise ValueError(f"objective must be electra or mlm, not {objective!r}")
        self.objective, self.disc_weight, self.mask_prob = objective, disc_weight, mask_prob
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

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor, special: Tensor,
                mask_id: int, seeds: list[int]) -> PretrainOutput:
        masked, selected = mask_tokens(input_ids, special, mask_id, seeds, self.mask_prob)
        rows = selected.nonzero()[:, 0]
        gen = self.generator
        h = gen.convbert(masked, attention_mask, token_type_ids)[selected]  # (M, d_gen): masked positions only
        p = gen.generator_predictions
        logits = gen.generator_lm_head(p["LayerNorm"](F.gelu(p["dense"](h)))).float()  # (M, V)
        targets = input_ids[selected]
        mlm_loss = F.cross_entropy(logits, targets) if len(targets) else logits.sum() * 0.0
        stats = {"masked": selected.sum(), "gen_correct": (logits.argmax(-1) == targets).sum()}
        if self.objective == "mlm":
            return PretrainOutput(mlm_loss, mlm_loss, torch.zeros_like(mlm_loss), stats)

        sampled = gumbel_sample(logits, seeds, rows)  # (M,), no gradient
        corrupted = input_ids.clone()
        corrupted[selected] = sampled
        replaced = corrupted != input_ids  # a sample equal to the original counts as "original"
        disc_logits = self.discriminator(corrupted, attention_mask, token_type_ids).logits.float()  # (B, T)
        real = attention_mask.bool()
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[real], replaced[real].float())
        pred = disc_logits > 0
        stats.update(tokens=real.sum(), disc_correct=((pred == replaced) & real).sum(),
                     replaced=(replaced & real).sum(), predicted=(pred & real).sum(),
                     true_positive=(pred & replaced & real).sum())
        return PretrainOutput(mlm_loss + self.disc_weight * disc_loss, mlm_loss, disc_loss, stats)


def summarize(stats: dict[str, float]) -> dict[str, float]:
    """Accuracies, precision and recall from summed counts."""
    div = lambda a, b: stats.get(a, 0.0) / stats[b] if stats.get(b) else float("nan")
    out = {"gen_acc": div("gen_correct", "masked")}
    if "tokens" in stats:
        out.update(disc_acc=div("disc_correct", "tokens"), disc_precision=div("true_positive", "predicted"),
                   disc_recall=div("true_positive", "replaced"), replaced_frac=div("replaced", "tokens"))
    return out
