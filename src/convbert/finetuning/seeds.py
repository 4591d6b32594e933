"""Seed aggregation: the mean, std and median of every metric over a task's runs with different seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            flat.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[prefix + k] = float(v)
    return flat


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample std, median and values of every metric of the runs' best epochs (and test splits), keyed
    "split/metric" (the paper reports medians over seeds)."""
    flats = [_flatten({**r["best"]["metrics"], **r["test"]}) for r in results]
    summary = {}
    for key in flats[0]:
        values = np.array([f.get(key, math.nan) for f in flats])
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "median": float(np.median(values)),
            "values": values.tolist(),
        }
    return {
        "task": results[0]["task"],
        "seeds": [r["seed"] for r in results],
        "best_epochs": [r["best"]["epoch"] for r in results],
        "summary": summary,
    }


def summary_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table of `aggregate`'s summary."""
    lines = ["| metric | mean | std | median | runs |", "|---|---|---|---|---|"]
    lines += [
        f"| {k} | {s['mean']:.4f} | {s['std']:.4f} | {s['median']:.4f} | {', '.join(f'{v:.4f}' for v in s['values'])} |"
        for k, s in summary.items()
    ]
    return "\n".join(lines) + "\n"
