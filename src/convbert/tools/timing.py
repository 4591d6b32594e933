"""Measuring for `convbert bench` and `convbert bench --pretrain`: the time of one call, paired ratios over
interleaved repeats, the machine's GEMM rate, utilisation against the run's peak rate, and a run's metadata."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import inspect
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..model import ConvBertModel
from ..train_utils import available_cores


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise InputError(
            "`convbert bench` compares against transformers, which is not installed: pip install convbert[hf]"
        ) from None
    return transformers


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], None], device: str) -> float:
    """Seconds of one call."""
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t0


def minor_faults() -> int:
    """Minor page faults of this process so far (memory the kernel had to map in)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def keep_freed_memory() -> str:
    """Keep freed memory mapped, as jemalloc and tcmalloc do, and say what was set.

    glibc's malloc returns freed heap to the system and serves large blocks by fresh mmaps, so a model's
    activations page-fault anew on every call by an amount that depends on what ran before it: measured here from
    0 to 40,000 faults per forward (10-40% of its time, more for the model that allocates more). With a 1 GiB trim
    threshold and a 64 MiB mmap threshold the roles are usually timed fault-free; in some processes this kernel
    still faults whole runs of reused pages (cause not found), so the count is in each row."""
    if platform.system() != "Linux":
        return "default"
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return "default"
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    if mallopt(m_trim_threshold, 1 << 30) == 1 and mallopt(m_mmap_threshold, 1 << 26) == 1:
        return "glibc mallopt: trim threshold 1 GiB, mmap threshold 64 MiB"
    return "default"


def time_interleaved(
    steps: dict[str, Callable[[], None]], repeats: int, warmup: int, device: str
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per repeat of each step, timed interleaved (every repeat runs each step once, back to back, so that
    the noise of a shared machine hits them alike), and each step's minor page faults per call."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {role: [] for role in steps}
    faults = dict.fromkeys(steps, 0)
    for _ in range(repeats):
        for role, step in steps.items():
            before = minor_faults()
            times[role].append(timed(step, device))
            faults[role] += minor_faults() - before
    return times, {role: n / repeats for role, n in faults.items()}


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over repeats of a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def gemm_gflops(device: str, dtype: str, repeats: int = 20) -> dict[str, float]:
    """Achieved GEMM GFLOP/s: a square torch.mm and a (tokens x 768) @ (768 x 3072) linear; "median" pools both."""
    n, m = (1024, 1024) if device == "cpu" else (4096, 16384)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dt) for _ in range(2))
    x, w = torch.randn(m, 768, generator=g).to(device, dt), torch.randn(3072, 768, generator=g).to(device, dt)
    shapes = {
        f"mm {n}x{n}x{n}": (lambda: torch.mm(a, b), 2 * n**3),
        f"linear {m}x768x3072": (lambda: F.linear(x, w), 2 * m * 768 * 3072),
    }
    result, pooled = {}, []
    for label, (fn, flops) in shapes.items():
        for _ in range(3):
            fn()
        rates = [flops / timed(fn, device) / 1e9 for _ in range(repeats)]
        result[label] = statistics.median(rates)
        pooled += rates
    result["median"] = statistics.median(pooled)
    return result


def rescale_utilisation(result: dict[str, Any]) -> None:
    """Utilisation against the machine's peak: the highest GEMM rate probed in the run (at the start and beside
    every configuration, per dtype). A probe taken while the shared machine was busy would overstate it."""
    peak = {dt: g["median"] for dt, g in result["meta"]["gemm_gflops"].items()}
    for r in result["rows"]:
        peak[r["dtype"]] = max(peak.get(r["dtype"], 0.0), r.get("gemm_gflops") or 0.0)
    for r in result["rows"]:
        r["utilisation"] = r["model_gflop"] / (r["ms_median"] / 1e3 * peak[r["dtype"]])
    result["meta"]["gemm_peak_gflops"] = peak


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_meta(device: str, threads: int | None, dtypes: list[str], **settings: Any) -> dict[str, Any]:
    """A run's machine, versions, settings and GEMM rates; sets torch's thread count (default: all cores) and, on a
    CPU, keeps freed memory mapped (`keep_freed_memory`)."""
    tf = require_transformers()
    threads = threads or available_cores()
    torch.set_num_threads(threads)
    allocator = keep_freed_memory() if device == "cpu" else "default"
    return {
        "device": device,
        "device_name": device_name(device),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": tf.__version__,
        "python": platform.python_version(),
        "date": datetime.now().astimezone().isoformat(),
        "argv": sys.argv,
        **settings,
        "allocator": allocator,
        "loadavg_start": os.getloadavg(),
        "model_py_sha256": hashlib.sha256(Path(inspect.getfile(ConvBertModel)).read_bytes()).hexdigest()[:16],
        "gemm_gflops": {dt: gemm_gflops(device, dt) for dt in dtypes},
    }
