"""`convbert bench --pretrain`: the whole ELECTRA pretraining step (masking, generator, sampling, corruption,
discriminator, losses, clipping, AdamW) against the loop a transformers user would write.

The reference (`benchmarks/electra_reference.py`, written from the ELECTRA paper on transformers'
`ElectraForMaskedLM` + `ElectraForPreTraining`, tied embeddings, the same sizes, batch and AdamW settings) runs
in the same process as ours; steps are timed interleaved, a time is the median over repeats and a ratio the
median of the per-repeat paired ratios (`convbert bench`'s protocol). Roles: "ours" (ConvBERT, sdconv, eager),
"ours-compiled" (the same under torch.compile, with --compile), "ours-noconv" (our code with every head
self-attention: the reference's architecture) and "reference".
Utilisation: the step's matmul FLOPs (ELECTRA's work: generator head on the masked slots only, training = 3 x
forward), the same count for every role, over time x the highest GEMM rate probed in the run.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConvBertConfig
from ..errors import InputError
from ..fileio import atomic_write_json, atomic_write_text
from ..flops import forward_flops_per_token
from ..pretraining.config import RECIPE
from ..pretraining.objective import ElectraPretrainer, example_keys, generator_config, max_predictions
from ..pretraining.recipe import apply_gradients
from ..train_utils import autocast, grad_scaler, make_optimizer
from .timing import gemm_gflops, paired_ratio, rescale_utilisation, run_meta, time_interleaved

log = logging.getLogger(__name__)

DEFAULT_PRESETS = ("mini", "small", "base")
VOCAB = {"mini": 8000, "tiny": 1000}  # the demo's vocabulary (mini); the others use BERT's
SPECIAL_IDS, MASK_ID = [0, 1, 2, 3, 4], 4  # [PAD], [UNK], [CLS], [SEP], [MASK]
ROLES = ("ours", "ours-compiled", "ours-noconv", "reference")
REFERENCE = Path(__file__).resolve().parents[3] / "benchmarks" / "electra_reference.py"


@dataclass(frozen=True)
class PretrainCase:
    preset: str
    dtype: str  # fp32 | bf16 (autocast)
    seq_len: int
    batch: int

    @property
    def vocab_size(self) -> int:
        return VOCAB.get(self.preset, 30522)


def configs(case: PretrainCase, noconv: bool = False) -> tuple[ConvBertConfig, ConvBertConfig]:
    """Discriminator and generator (the preset's fraction of the width, as `convbert pretrain` builds them)."""
    disc = ConvBertConfig.preset(case.preset, vocab_size=case.vocab_size)
    if noconv:
        disc = disc.replace(conv_type="noconv", head_ratio=1)
    return disc, generator_config(disc, RECIPE[case.preset][1])


def step_flops(case: PretrainCase) -> float:
    """Matmul FLOPs of one training step (3 x forward): discriminator with its head on every token, generator
    with its MLM head on the max_predictions slots."""
    disc, gen = configs(case)
    slots = max_predictions(case.seq_len, 0.15) / case.seq_len
    per_token = (
        forward_flops_per_token(disc, case.seq_len, head="discriminator", matmul_only=True)["total"]
        + forward_flops_per_token(gen, case.seq_len, head="mlm", matmul_only=True, mlm_fraction=slots)["total"]
    )
    return 3 * per_token * case.batch * case.seq_len


def load_reference(path: Path = REFERENCE):
    """The reference loop's module, from a source checkout (it is not part of the installed package)."""
    if not path.is_file():
        raise InputError(
            f"{path}: the reference loop is not here; run from a source checkout of convbert or pass --reference PATH"
        )
    spec = importlib.util.spec_from_file_location("electra_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_batches(case: PretrainCase, device: str, n: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """`n` full-length [CLS] A [SEP] B [SEP] batches of random ordinary tokens (no padding)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(len(SPECIAL_IDS), case.vocab_size, (case.batch, case.seq_len), generator=g)
        half = case.seq_len // 2
        ids[:, 0], ids[:, half], ids[:, -1] = 2, 3, 3
        types = torch.zeros_like(ids)
        types[:, half + 1 :] = 1
        out.append((ids.to(device), torch.ones_like(ids).to(device), types.to(device)))
    return out


def build_step(
    role: str, case: PretrainCase, device: str, reference, seed: int = 0
) -> tuple[str, int, Callable[[], None]]:
    """(model name, parameters, one optimizer step on the next batch) for a role, initialised from `seed`."""
    batches = make_batches(case, device)
    counter = itertools.count()
    torch.manual_seed(seed)
    if role == "reference":
        disc, gen = configs(case, noconv=True)
        kw = lambda c: dict(
            hidden=c.hidden_size,
            embedding=c.embedding_size,
            layers=c.num_hidden_layers,
            heads=c.num_attention_heads,
            ffn=c.intermediate_size,
            vocab=c.vocab_size,
        )
        model = reference.ReferenceElectra(
            reference.electra_config(**kw(disc)),
            reference.electra_config(**kw(gen)),
            SPECIAL_IDS,
            MASK_ID,
            lr=RECIPE[case.preset][0],
        ).to(device)

        def step() -> None:
            with autocast(case.dtype, torch.device(device)):
                model.step(*batches[next(counter) % len(batches)])

        family = "BERT" if disc.embedding_size == disc.hidden_size else "ELECTRA"
        return f"transformers {family} loop", _n_params(model), step

    disc, gen = configs(case, noconv=role == "ours-noconv")
    model = ElectraPretrainer(disc, gen, SPECIAL_IDS, MASK_ID).to(device)
    optimizer = make_optimizer(model, RECIPE[case.preset][0])
    scaler = grad_scaler(case.dtype, torch.device(device))
    params = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model, fullgraph=True, dynamic=False) if role == "ours-compiled" else model
    no_skip = torch.zeros((), dtype=torch.bool, device=device)

    def step() -> None:
        i = next(counter)
        ids, mask, types = batches[i % len(batches)]
        keys = torch.from_numpy(example_keys(seed, i, np.arange(case.batch))).to(device)
        with autocast(case.dtype, torch.device(device)):
            out = forward(ids, mask, types, keys)
        scaler.scale(out.loss).backward()
        apply_gradients(params, optimizer, scaler, 1.0, no_skip)

    names = {
        "ours": "convbert (ours)",
        "ours-compiled": "convbert (ours, compiled)",
        "ours-noconv": "convbert noconv (ours)",
    }
    return names[role], _n_params(model), step


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def time_case(
    case: PretrainCase, roles: list[str], repeats: int, warmup: int, device: str, reference
) -> dict[str, dict[str, Any]]:
    """Each role's name, parameters, seconds per repeat and page faults per call (`time_interleaved`)."""
    built = {role: build_step(role, case, device, reference) for role in roles}
    times, faults = time_interleaved({role: step for role, (_, _, step) in built.items()}, repeats, warmup, device)
    return {
        role: {"model": name, "params": params, "seconds": times[role], "minor_faults_per_call": faults[role]}
        for role, (name, params, _) in built.items()
    }


def case_rows(case: PretrainCase, timing: dict[str, dict[str, Any]], gemm: float) -> list[dict[str, Any]]:
    flops = step_flops(case)
    ref = timing["reference"]["seconds"]
    rows = []
    for role, t in timing.items():
        med = statistics.median(t["seconds"])
        ratio = paired_ratio(t["seconds"], ref)
        rows.append(
            {
                **asdict(case),
                "vocab_size": case.vocab_size,
                "role": role,
                "model": t["model"],
                "params": t["params"],
                "ms_median": med * 1e3,
                "ms_repeats": [x * 1e3 for x in t["seconds"]],
                "tokens_per_s": case.batch * case.seq_len / med,
                "ratio_vs_reference": ratio,
                "speedup_vs_reference": 1 / ratio,
                "model_gflop": flops / 1e9,
                "gemm_gflops": gemm,
                "utilisation": flops / (med * gemm * 1e9),
                "minor_faults_per_call": t["minor_faults_per_call"],
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per configuration: tokens/s of each role and its speed-up over the reference loop."""
    by_case: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault((r["preset"], r["dtype"], r["seq_len"], r["batch"], r["vocab_size"]), {})[r["role"]] = r
    roles = [role for role in ROLES if any(role in c for c in by_case.values())]
    compiled = "ours-compiled" in roles
    head = (
        ["preset", "dtype", "seq", "batch", "vocab"]
        + [f"{role} tok/s" for role in roles]
        + [f"{role} speed-up" for role in roles if role != "reference"]
        + (["compiled / eager"] if compiled else [])
        + ["util " + " / ".join(roles)]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, c in by_case.items():
        cells = [*map(str, key)] + [f"{c[role]['tokens_per_s']:.0f}" if role in c else "" for role in roles]
        cells += [
            f"{c[role]['speedup_vs_reference']:.2f}x" if role in c else "" for role in roles if role != "reference"
        ]
        if compiled:  # the median of the paired ratios eager time / compiled time
            cells.append(
                f"{paired_ratio(c['ours']['ms_repeats'], c['ours-compiled']['ms_repeats']):.2f}x"
                if "ours-compiled" in c
                else ""
            )
        cells.append(" / ".join(f"{c[role]['utilisation']:.0%}" if role in c else "-" for role in roles))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_pretrain_benchmark(
    presets: list[str],
    seq_lens: list[int],
    batch_sizes: list[int],
    dtypes: list[str],
    repeats: int,
    warmup: int,
    device: str,
    threads: int | None,
    compile: bool,
    out_dir: Path,
    reference_path: Path = REFERENCE,
) -> dict[str, Any]:
    """Time every (preset, dtype, seq_len, batch); write pretrain-<device>-<date>.json and .md; return the result."""
    reference = load_reference(reference_path)
    roles = [r for r in ROLES if compile or r != "ours-compiled"]
    meta = run_meta(device, threads, dtypes, repeats=repeats, warmup=warmup, compile=compile)
    threads, stamp = meta["threads"], datetime.fromisoformat(meta["date"])
    result: dict[str, Any] = {"meta": meta, "rows": [], "complete": False}
    stem = f"pretrain-{device}-{stamp:%Y%m%d-%H%M%S}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    for preset, dtype, seq_len, batch in itertools.product(presets, dtypes, seq_lens, batch_sizes):
        case = PretrainCase(preset, dtype, seq_len, batch)
        if device == "cuda":
            torch.cuda.empty_cache()
        timing = time_case(case, roles, repeats, warmup, device, reference)
        gemm = gemm_gflops(device, dtype, repeats=10)["median"]
        rows = case_rows(case, timing, gemm)
        log.info("%s: %s", case, {r["role"]: round(r["ms_median"]) for r in rows})
        result["rows"] += rows
        rescale_utilisation(result)
        atomic_write_json(json_path, result)
    meta["loadavg_end"] = os.getloadavg()
    result["complete"] = True
    rescale_utilisation(result)
    atomic_write_json(json_path, result)
    header = (
        f"# `convbert bench --pretrain`: {meta['device_name']}, {threads} threads, torch {meta['torch']}, "
        f"transformers {meta['transformers']}, {stamp:%Y-%m-%d}\n\n`{' '.join(sys.argv)}`; {repeats} "
        f"interleaved repeats, medians; speed-up = median of paired time ratios reference / role; GEMM peak "
        f"{', '.join(f'{k} {v:.0f}' for k, v in meta['gemm_peak_gflops'].items())} GFLOP/s.\n\n"
    )
    atomic_write_text(md_path, header + markdown_table(result["rows"]) + "\n")
    result["files"] = [str(json_path), str(md_path)]
    return result
