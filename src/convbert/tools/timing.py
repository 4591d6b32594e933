"""Measuring for `convbert bench` and `convbert bench --pretrain`: the time of one call, paired ratios over
interleaved repeats, the machine's GEMM rate, utilisation against the run's peak rate, and a run's metadata."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import platform
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
    """A run's machine, versions, settings and GEMM rates; sets torch's thread count (default: all cores)."""
    tf = require_transformers()
    threads = threads or available_cores()
    torch.set_num_threads(threads)
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
        "loadavg_start": os.getloadavg(),
        "model_py_sha256": hashlib.sha256(Path(inspect.getfile(ConvBertModel)).read_bytes()).hexdigest()[:16],
        "gemm_gflops": {dt: gemm_gflops(device, dt) for dt in dtypes},
    }
