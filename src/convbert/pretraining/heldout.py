"""Held-out evaluation of a pretraining run: a fixed slice of the shards never trained on, fixed corruptions,
eval mode; replaced-token detection against the constant guess, the generator's MLM, and a collapse metric."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import roc_auc
from ..train_utils import autocast
from .objective import STATS, ElectraPretrainer, example_keys, summarize
from .shards import PretrainShards


def held_out_split(n: int, eval_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of n shard rows: min(eval_examples, n // 10) rows drawn with a fixed seed,
    so that every run on the same shards is evaluated on the same examples."""
    k = min(eval_examples, n // 10)
    perm = np.random.default_rng(0).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on the device: through pinned memory and without blocking on CUDA."""
    t = torch.from_numpy(a)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


EVAL_SEED = 0x5EED  # the held-out corruptions: the same in every run on the same shards
COSINE_EXAMPLES = 64  # held-out sequences whose token vectors `token_cosine` compares


def evaluate(
    model: ElectraPretrainer, shards: PretrainShards, rows: np.ndarray, micro: int, precision: str, device: torch.device
) -> dict[str, float]:
    """Held-out metrics in eval mode (no dropout), with fixed masks (keys from EVAL_SEED and the row):
    the discriminator's BCE against the constant guess of the replaced fraction, its ROC-AUC and accuracy,
    the generator's MLM loss and accuracy on the masked slots. These move while threshold-0.5 recall is 0.
    `token_cosine` watches for collapse: the mean cosine between the top-layer vectors of two tokens of a
    sequence (of the encoder that is fine-tuned) on the uncorrupted text, ~0.2-0.4 at random init and ~1 once
    every token maps to the same vector, as in a discriminator stuck in the trivial phase of replaced-token
    detection, which fine-tuning cannot move."""
    was_training = model.training
    model.eval()
    logits, labels, stats, mlm, cos = [], [], torch.zeros(len(STATS)), 0.0, []
    encoder = (model.discriminator if model.objective == "electra" else model.generator).convbert
    with torch.no_grad(), autocast(precision, device):
        for i in range(0, len(rows), micro):
            part = rows[i : i + micro]
            arrays = shards[part]
            ids, mask, types, keys = (
                to_device(a, device)
                for a in (
                    arrays["input_ids"],
                    arrays["attention_mask"],
                    arrays["token_type_ids"],
                    example_keys(EVAL_SEED, 0, part),
                )
            )
            out = model(ids, mask, types, keys)
            stats += out.stats.float().cpu()
            mlm += float(out.mlm_loss) * float(out.stats[0])  # summed over the masked slots
            if out.disc_logits is not None:
                real = mask.bool()
                logits.append(out.disc_logits[real].float().cpu())
                labels.append(out.replaced[real].cpu())
            if i < COSINE_EXAMPLES:
                cos.append(token_cosine(encoder(ids, mask, types).last_hidden_state.float(), mask).cpu())
    model.train(was_training)
    counts = dict(zip(STATS, stats.tolist()))
    rates = summarize(counts)
    result = {
        "mlm_loss": mlm / max(counts["masked"], 1.0),
        "gen_acc": rates["gen_acc"],
        "token_cosine": float(torch.cat(cos)[:COSINE_EXAMPLES].mean()),
        "tokens": counts["tokens"],
    }
    if logits:
        x, y = torch.cat(logits), torch.cat(labels)
        p = min(max(float(y.float().mean()), 1e-7), 1 - 1e-7)
        result.update(
            disc_loss=float(F.binary_cross_entropy_with_logits(x, y.float())),
            constant_loss=-(p * math.log(p) + (1 - p) * math.log(1 - p)),
            disc_auc=roc_auc(y.numpy(), x.numpy()),
            disc_acc=rates["disc_acc"],
            replaced_frac=rates["replaced_frac"],
        )
    return result


def token_cosine(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per sequence, the mean cosine between the vectors of two different attended tokens: h (B, T, d)."""
    m = mask.to(h.dtype)[..., None]  # (B, T, 1)
    u = F.normalize(h, dim=-1) * m
    n = m.sum((1, 2))  # (B,)
    total = u.sum(1).pow(2).sum(-1)  # (B,) = sum over token pairs (i, j) of cos(i, j), i == j included
    return (total - n) / (n * (n - 1)).clamp(min=1)
