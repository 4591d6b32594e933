"""`convbert bench`: our ConvBertModel against transformers' ConvBERT and a same-size ELECTRA/BERT.

Protocol (README, "Speed"): all models live in one process and are timed interleaved (A, B, C, A, B, C, ...),
so that the noise of a shared machine hits them alike; a model's time is the median over repeats and a ratio is
the median of the per-repeat paired ratios. Activation memory is measured in a fresh subprocess per model.
Roles: "ours", "ours-compiled" (with --compile), "hf-convbert" (transformers' ConvBertModel, loaded with our
weights) and "reference" (ElectraModel when embedding_size != hidden_size, else BertModel without the pooler; it
has no grouped FFN, so a grouped preset's reference is bigger and marked *).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

from ..config import ConvBertConfig
from ..errors import InputError
from ..flops import model_flops
from ..settings import Device, NonNegativeInt, PositiveInt, Range, add_command, validate
from .bench_memory import add_memory, memory_shortfall
from .bench_models import Case, Contender, build_contender, check_parity, make_inputs, make_step, row_case
from .bench_results import continue_result, markdown_table, save
from .timing import gemm_gflops, paired_ratio, run_meta, time_interleaved

log = logging.getLogger(__name__)

DEFAULT_PRESETS = ("small", "medium-small", "base")
SEQ_LENS = (128, 512)
BATCH_SIZES = (8, 32)
MODES = ("fwd", "train")
MIN_REPEATS = 5
ROLES = ("ours", "ours-compiled", "hf-convbert", "reference")


# ---------------------------------------------------------------- timing
def time_case(
    case: Case, contenders: list[Contender], repeats: int, warmup: int, device: str, seed: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per repeat and page faults per call of each role (`time_interleaved`)."""
    inputs = make_inputs(contenders[0].model.config, case.batch, case.seq_len, device, seed)
    steps = {c.role: make_step(c, case, inputs, device) for c in contenders}
    return time_interleaved(steps, repeats, warmup, device)


# ---------------------------------------------------------------- result rows
def case_rows(
    case: Case, contenders: list[Contender], times: dict[str, list[float]], faults: dict[str, float], gemm: float
) -> list[dict[str, Any]]:
    """One row per model; ratios are medians of paired per-repeat ratios, utilisation = model FLOPs / (t x GEMM)
    with the GEMM rate probed right after the configuration (`save` rescales it to the run's peak)."""
    rows = []
    for c in contenders:
        t = times[c.role]
        med = statistics.median(t)
        flops = model_flops(c.flops_config, case.batch, case.seq_len, case.mode == "train")
        rows.append(
            {
                **asdict(case),
                "role": c.role,
                "model": c.name,
                "params": c.params,
                "ms_median": med * 1e3,
                "ms_min": min(t) * 1e3,
                "ms_max": max(t) * 1e3,
                "ms_repeats": [x * 1e3 for x in t],
                "tokens_per_s": case.batch * case.seq_len / med,
                "ratio_vs_hf_convbert": paired_ratio(t, times["hf-convbert"]),
                "ratio_vs_reference": paired_ratio(t, times["reference"]),
                "model_gflop": flops / 1e9,
                "gemm_gflops": gemm,
                "utilisation": flops / (med * gemm * 1e9),
                "minor_faults_per_call": faults[c.role],
                "mem_mb": None,
                "mem_ratio_vs_hf_convbert": None,
            }
        )
    return rows


# ---------------------------------------------------------------- driver
def run_benchmark(
    presets: list[str],
    seq_lens: list[int],
    batch_sizes: list[int],
    modes: list[str],
    dtypes: list[str],
    repeats: int = MIN_REPEATS,
    warmup: int = 1,
    device: str = "cpu",
    threads: int | None = None,
    compile: bool = False,
    memory_batch_sizes: list[int] | None = None,
    out_dir: str | Path = "benchmarks/results",
    seed: int = 0,
    resume: str | Path | None = None,
) -> dict[str, Any]:
    """Time every (preset, mode, dtype, seq_len, batch) and write the results; returns {"meta", "checks", "rows",
    "skipped", "complete", "files"}. memory_batch_sizes: batches whose activation memory is probed (None or [] =
    none). resume: the JSON of an interrupted run; its configurations are kept and the file is completed."""
    roles = [r for r in ROLES if compile or r != "ours-compiled"]
    meta = run_meta(
        device, threads, dtypes, repeats=repeats, warmup=warmup, seed=seed, compile=compile, attention_mask="all ones"
    )
    threads, stamp = meta["threads"], datetime.fromisoformat(meta["date"])
    if device == "cuda":
        meta["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    log.info("GEMM GFLOP/s: %s", meta["gemm_gflops"])
    result: dict[str, Any] = {"meta": meta, "checks": {}, "rows": [], "skipped": [], "complete": False}
    out_dir, stem = Path(out_dir), f"{device}-{stamp:%Y%m%d-%H%M%S}"
    if resume:
        out_dir, stem = Path(resume).parent, Path(resume).stem
        result = continue_result(result, Path(resume))
    done = {row_case(r) for r in result["rows"] + result["skipped"]}
    for preset in presets:
        cases = [
            c
            for c in itertools.starmap(Case, itertools.product([preset], modes, dtypes, seq_lens, sorted(batch_sizes)))
            if c not in done
        ]
        if not cases:
            continue
        contenders = [build_contender(role, preset, seed) for role in roles]
        for c in contenders:
            c.model.to(device)
        by_role = {c.role: c for c in contenders}
        result["checks"][preset] = {
            "max_abs_diff_ours_vs_hf": check_parity(by_role["ours"], by_role["hf-convbert"], seed),
            "params_equal_ours_hf": by_role["ours"].params == by_role["hf-convbert"].params,
            "reference_attn_implementation": by_role["reference"].model.config._attn_implementation,
        }
        log.info("%s: %s", preset, result["checks"][preset])
        for case in cases:
            reason = memory_shortfall(case, result["rows"], device)
            if reason:
                log.warning("skipping %s: %s", case, reason)
                result["skipped"].append({**asdict(case), "reason": reason})
                continue
            gc.collect()
            if compile:
                torch._dynamo.reset()  # compile each configuration afresh, no recompile limit
            times, faults = time_case(case, contenders, repeats, warmup, device, seed)
            gemm = gemm_gflops(device, case.dtype, repeats=10)["median"]  # the machine's rate now, beside the case
            rows = case_rows(case, contenders, times, faults, gemm)
            log.info("%s: %s", case, {r["role"]: round(r["ms_median"]) for r in rows})
            if memory_batch_sizes and case.batch in memory_batch_sizes:
                add_memory(rows, case, device, threads, seed)
            result["rows"] += rows
            save(result, out_dir, stem)
        del contenders, by_role
    meta["loadavg_end"] = os.getloadavg()
    result["complete"] = True
    result["files"] = [str(p) for p in save(result, out_dir, stem)]
    return result


@dataclass
class BenchConfig:
    pretrain: bool = False  # time the whole pretraining step against a transformers ELECTRA loop instead
    presets: list[str] | None = None  # model sizes (default: small medium-small base; with --pretrain: mini small
    # base)
    max_lengths: list[PositiveInt] | None = None  # sequence lengths (default: 128 512; with --pretrain: 128)
    batch_sizes: list[PositiveInt] | None = None  # default: 8 32; with --pretrain: 32
    modes: list[Literal["fwd", "train"]] = field(default_factory=lambda: list(MODES))  # fwd: eval inference
    # forward; train: forward, backward, AdamW step
    repeats: Annotated[int, Range(MIN_REPEATS)] = MIN_REPEATS  # timed repeats (a median of paired ratios)
    warmup: NonNegativeInt = 1  # untimed rounds first (>= 1 with --compile: it compiles)
    device: Device | None = None  # default: cuda if available, else cpu
    precision: Literal["fp32", "bf16"] | None = None  # only this one (bf16 = autocast); default fp32, plus bf16
    # on a CUDA GPU that has it
    threads: PositiveInt | None = None  # torch threads (default: the machine's cores)
    compile: bool = False  # also time our model under torch.compile
    quick: bool = False  # one configuration: small, length 128, batch 8, fwd and train, the fewest repeats
    memory_batch_sizes: list[PositiveInt] = field(default_factory=lambda: [8])  # batch sizes whose activation
    # memory is measured
    memory: bool = True  # measure activation memory (in subprocesses)
    out: str = "benchmarks/results"  # directory for the JSON/CSV/markdown results
    resume: str | None = None  # complete an interrupted run: its <device>-<date>.json
    reference: str | None = None  # --pretrain: the reference loop's file (default: benchmarks/electra_reference.py
    # of this checkout)

    def __post_init__(self) -> None:
        validate(self)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand."""
    add_command(
        subparsers,
        "bench",
        BenchConfig,
        run,
        description=__doc__,
        help="speed and memory vs transformers' ConvBERT and ELECTRA/BERT",
        aliases={"out": ["--output_dir"]},
        metavars={"presets": "PRESET", "out": "DIR", "resume": "JSON", "reference": "FILE"},
    )


def run(cfg: BenchConfig) -> int:
    from . import bench_pretrain

    defaults = (
        (bench_pretrain.DEFAULT_PRESETS, (128,), (32,)) if cfg.pretrain else (DEFAULT_PRESETS, SEQ_LENS, BATCH_SIZES)
    )
    presets, lengths, batches = (
        list(given or default) for given, default in zip((cfg.presets, cfg.max_lengths, cfg.batch_sizes), defaults)
    )
    modes, repeats = cfg.modes, cfg.repeats
    if cfg.quick:
        presets, lengths, batches, modes, repeats = ["small"], [128], [8], list(MODES), MIN_REPEATS
    if cfg.warmup < (1 if cfg.compile else 0):
        raise InputError("--warmup must be >= 1 with --compile (it compiles)")
    for preset in presets:
        ConvBertConfig.preset(preset)  # an unknown name raises InputError
    if max(lengths) > 512:
        raise InputError("--max-lengths must be <= 512 (max_position_embeddings)")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    bf16_ok = device == "cpu" or torch.cuda.is_bf16_supported()
    if cfg.precision == "bf16" and not bf16_ok:
        raise InputError("--precision bf16: this GPU does not support bfloat16")
    dtypes = [cfg.precision] if cfg.precision else ["fp32"] + (["bf16"] if device == "cuda" and bf16_ok else [])
    out = Path(cfg.out)
    if cfg.pretrain:
        reference = Path(cfg.reference) if cfg.reference else bench_pretrain.REFERENCE
        result = bench_pretrain.run_pretrain_benchmark(
            presets, lengths, batches, dtypes, repeats, cfg.warmup, device, cfg.threads, cfg.compile, out, reference
        )
        meta = result["meta"]
        print(
            f"{meta['device_name']}, {meta['threads']} threads, torch {meta['torch']}, "
            f"transformers {meta['transformers']}\n"
        )
        print(bench_pretrain.markdown_table(result["rows"]))
        print("\nwrote " + ", ".join(result["files"]))
        return 0
    result = run_benchmark(
        presets,
        lengths,
        batches,
        modes,
        dtypes,
        repeats,
        cfg.warmup,
        device,
        cfg.threads,
        cfg.compile,
        cfg.memory_batch_sizes if cfg.memory else None,
        out,
        resume=Path(cfg.resume) if cfg.resume else None,
    )
    meta = result["meta"]
    gemm = ", ".join(f"{dt} {g['median']:.0f}" for dt, g in meta["gemm_gflops"].items())
    print(
        f"{meta['device_name']}, {meta['threads']} threads, torch {meta['torch']}, "
        f"transformers {meta['transformers']}; GEMM GFLOP/s {gemm}\n"
    )
    print(markdown_table(result["rows"]))
    bad = {
        p: c["max_abs_diff_ours_vs_hf"]
        for p, c in result["checks"].items()
        if not c["params_equal_ours_hf"]
        or not math.isfinite(c["max_abs_diff_ours_vs_hf"])
        or c["max_abs_diff_ours_vs_hf"] > 1e-4
    }
    if bad:
        print(f"\nWARNING: ours differs from transformers' ConvBERT (parameters or outputs): {bad}")
    for skip in result["skipped"]:
        print(f"\nskipped {row_case(skip)}: {skip['reason']}")
    print("\nwrote " + ", ".join(result["files"]))
    return 0
