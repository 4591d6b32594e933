"""`convbert bench`: our ConvBertModel against transformers' ConvBERT and a same-size ELECTRA/BERT.

Protocol (docs/performance.md): all models live in one process and are timed interleaved (A, B, C, A, B, C, ...),
so that the noise of a shared machine hits them alike; a model's time is the median over repeats and a ratio is
the median of the per-repeat paired ratios. Activation memory is measured in a fresh subprocess per model.
Roles: "ours", "ours-compiled" (with --compile), "hf-convbert" (transformers' ConvBertModel, loaded with our
weights) and "reference" (ElectraModel when embedding_size != hidden_size, else BertModel without the pooler; it
has no grouped FFN, so a grouped preset's reference is bigger and marked *).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import logging
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn

from ..config import ConvBertConfig
from ..errors import InputError
from ..flops import model_flops
from ..model import ConvBertModel
from ..settings import Device, NonNegativeInt, PositiveInt, Range, add_command, validate
from .bench_results import continue_result, markdown_table, save
from .timing import gemm_gflops, paired_ratio, require_transformers, run_meta, timed

log = logging.getLogger(__name__)

DEFAULT_PRESETS = ("small", "medium-small", "base")
SEQ_LENS = (128, 512)
BATCH_SIZES = (8, 32)
MODES = ("fwd", "train")
MIN_REPEATS = 5
ROLES = ("ours", "ours-compiled", "hf-convbert", "reference")


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
    keys = (
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
    return {k: getattr(config, k) for k in keys}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_contender(role: str, preset: str, seed: int) -> Contender:
    """One model, initialised from `seed` (so ours and ours-compiled start equal; `check_parity` copies our
    weights into hf-convbert)."""
    config = ConvBertConfig.preset(preset)
    torch.manual_seed(seed)
    if role in ("ours", "ours-compiled"):
        model = ConvBertModel(config)
        name = "convbert (ours)"
        if role == "ours-compiled":
            compiled = torch.compile(model, dynamic=False)
            return Contender(role, "convbert (ours, compiled)", model, compiled, config, _n_params(model))
        return Contender(role, name, model, model, config, _n_params(model))
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


# ---------------------------------------------------------------- timing
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


def time_case(
    case: Case, contenders: list[Contender], repeats: int, warmup: int, device: str, seed: int
) -> dict[str, list[float]]:
    """Seconds per repeat for each role, timed interleaved: every repeat runs each model once, back to back."""
    inputs = make_inputs(contenders[0].model.config, case.batch, case.seq_len, device, seed)
    steps = {c.role: make_step(c, case, inputs, device) for c in contenders}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {role: [] for role in steps}
    for _ in range(repeats):
        for role, step in steps.items():
            times[role].append(timed(step, device))
    return times


def row_case(row: dict[str, Any]) -> Case:
    return Case(**{f.name: row[f.name] for f in fields(Case)})


# ---------------------------------------------------------------- memory
def _proc_status_bytes(key: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def memory_probe(role: str, case: Case, device: str, threads: int, seed: int) -> float:
    """MB of peak memory of two steps above what the model, optimizer and inputs hold (run in a fresh process).

    CPU: peak RSS minus the RSS after building. The peak is the process's own high-water mark (VmHWM, what
    getrusage's ru_maxrss reports), reset after building through /proc/self/clear_refs: ru_maxrss itself would
    also carry import transients and, after subprocess's vfork + exec, the parent's peak.
    CUDA: max_memory_allocated minus allocated before.
    """
    torch.set_num_threads(threads)
    c = build_contender(role, case.preset, seed)
    c.model.to(device)
    step = make_step(c, case, make_inputs(c.model.config, case.batch, case.seq_len, device, seed), device)
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _proc_status_bytes("VmRSS")
    for _ in range(2):  # the second training step also holds AdamW's state
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_bytes("VmHWM")
    return max(0, peak - before) / 2**20


def measure_memory(role: str, case: Case, device: str, threads: int, seed: int) -> float | None:
    """`memory_probe` in a fresh `python -m convbert.tools.bench --_memory-probe` subprocess; None if it failed."""
    spec = json.dumps({"role": role, "case": asdict(case), "device": device, "threads": threads, "seed": seed})
    proc = subprocess.run(
        [sys.executable, "-m", "convbert.tools.bench", "--_memory-probe", spec], capture_output=True, text=True
    )
    if proc.returncode != 0:
        log.warning("memory probe %s %s failed (exit %d): %s", role, case, proc.returncode, proc.stderr[-2000:])
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["mem_mb"])


def _probe_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m convbert.tools.bench")
    parser.add_argument("--_memory-probe", dest="spec", required=True, help=argparse.SUPPRESS)
    spec = json.loads(parser.parse_args(argv).spec)
    mem = memory_probe(spec["role"], Case(**spec["case"]), spec["device"], spec["threads"], spec["seed"])
    print(json.dumps({"mem_mb": mem}))
    return 0


def add_memory(rows: list[dict[str, Any]], case: Case, device: str, threads: int, seed: int) -> None:
    """Fill mem_mb (each model but the compiled one, in its own subprocess) and the ratio to transformers'."""
    for r in rows:
        if r["role"] != "ours-compiled":
            r["mem_mb"] = measure_memory(r["role"], case, device, threads, seed)
    hf = next(r["mem_mb"] for r in rows if r["role"] == "hf-convbert")
    for r in rows:
        if r["mem_mb"] is not None and hf:
            r["mem_ratio_vs_hf_convbert"] = r["mem_mb"] / hf
    log.info("memory MB %s: %s", case, {r["role"]: r["mem_mb"] for r in rows})


def available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def memory_shortfall(case: Case, rows: list[dict[str, Any]], device: str) -> str | None:
    """Why `case` would not fit: a peak measured at a smaller batch of the same configuration, scaled linearly
    (an overestimate: weights' gradients and AdamW state do not grow), above the memory available now.
    None when it fits or when no smaller batch was measured."""
    known = [
        (r["batch"], r["mem_mb"])
        for r in rows
        if r["mem_mb"] and r["batch"] < case.batch and row_case(r) == replace(case, batch=r["batch"])
    ]
    if not known:
        return None
    need = max(mem * 2**20 * case.batch / b for b, mem in known)
    free = available_bytes(device)
    if need <= free:
        return None
    return f"needs about {need / 2**30:.1f} GiB (scaled from a smaller batch), {free / 2**30:.1f} GiB available"


# ---------------------------------------------------------------- result rows
def case_rows(
    case: Case, contenders: list[Contender], times: dict[str, list[float]], gemm: float
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
            times = time_case(case, contenders, repeats, warmup, device, seed)
            gemm = gemm_gflops(device, case.dtype, repeats=10)["median"]  # the machine's rate now, beside the case
            rows = case_rows(case, contenders, times, gemm)
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
        aliases={"max_lengths": ["--seq-lens"], "precision": ["--dtype"], "out": ["--output_dir"]},
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


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
