"""Activation memory for `convbert bench`: each model's peak in a fresh subprocess
(`python -m convbert.tools.bench_memory --_memory-probe SPEC`), and whether a larger batch would fit."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from .bench_models import Case, build_contender, make_inputs, make_step, row_case

log = logging.getLogger(__name__)


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
    """`memory_probe` in a fresh `python -m convbert.tools.bench_memory --_memory-probe` subprocess; None if it
    failed."""
    spec = json.dumps({"role": role, "case": asdict(case), "device": device, "threads": threads, "seed": seed})
    proc = subprocess.run(
        [sys.executable, "-m", "convbert.tools.bench_memory", "--_memory-probe", spec], capture_output=True, text=True
    )
    if proc.returncode != 0:
        log.warning("memory probe %s %s failed (exit %d): %s", role, case, proc.returncode, proc.stderr[-2000:])
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["mem_mb"])


def _probe_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m convbert.tools.bench_memory")
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


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
