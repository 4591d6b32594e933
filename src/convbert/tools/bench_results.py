"""The results of a `convbert bench` run: its JSON and CSV files, resuming an interrupted one, and the
markdown table."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fileio import atomic_write_json, atomic_write_text
from .timing import rescale_utilisation

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "preset",
    "mode",
    "dtype",
    "seq_len",
    "batch",
    "role",
    "model",
    "params",
    "ms_median",
    "ms_min",
    "ms_max",
    "ms_repeats",
    "tokens_per_s",
    "ratio_vs_hf_convbert",
    "ratio_vs_reference",
    "model_gflop",
    "gemm_gflops",
    "utilisation",
    "minor_faults_per_call",
    "mem_mb",
    "mem_ratio_vs_hf_convbert",
)


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "" if x is None else format(x, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per configuration; ratios < 1 mean ours is faster (or uses less memory)."""
    by_case: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault((r["preset"], r["mode"], r["dtype"], r["seq_len"], r["batch"]), {})[r["role"]] = r
    compiled = any("ours-compiled" in roles for roles in by_case.values())  # cells stay empty where not timed
    head = (
        ["preset", "mode", "dtype", "seq", "batch", "ours ms"]
        + (["compiled ms"] if compiled else [])
        + ["HF ConvBERT ms", "ref", "ref ms", "ours/HF", "ours/ref"]
        + (["compiled/HF"] if compiled else [])
        + ["ours tok/s", "util ours/HF/ref", "act. mem MB ours/HF (ratio)", "params ours/HF/ref"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, roles in by_case.items():
        ours, hf, ref = roles["ours"], roles["hf-convbert"], roles["reference"]
        comp = roles.get("ours-compiled")
        mem = (
            ""
            if ours["mem_mb"] is None or hf["mem_mb"] is None
            else f"{ours['mem_mb']:.0f} / {hf['mem_mb']:.0f} ({_fmt(ours['mem_ratio_vs_hf_convbert'], '.2f')}x)"
        )
        cells = (
            [*map(str, key), _fmt(ours["ms_median"])]
            + ([_fmt(comp and comp["ms_median"])] if compiled else [])
            + [
                _fmt(hf["ms_median"]),
                ref["model"],
                _fmt(ref["ms_median"]),
                f"{ours['ratio_vs_hf_convbert']:.2f}",
                f"{ours['ratio_vs_reference']:.2f}",
            ]
            + ([_fmt(comp and comp["ratio_vs_hf_convbert"], ".2f")] if compiled else [])
            + [
                _fmt(ours["tokens_per_s"]),
                " / ".join(f"{r['utilisation']:.0%}" for r in (ours, hf, ref)),
                mem,
                " / ".join(f"{r['params'] / 1e6:.2f}M" for r in (ours, hf, ref)),
            ]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "ms_repeats": ";".join(f"{x:.3f}" for x in r["ms_repeats"])})
    return buf.getvalue()


def save(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """<stem>.json, <stem>.csv and latest-<device>.json, each written atomically (utilisation rescaled first)."""
    rescale_utilisation(result)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.csv", out_dir / f"latest-{result['meta']['device']}.json"]
    atomic_write_json(paths[0], result)
    atomic_write_text(paths[1], to_csv(result["rows"]))
    atomic_write_json(paths[2], result)
    return paths


def continue_result(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """`result` (a new run's) carrying over the checks, rows and skips of the interrupted run saved at `path`.
    Its meta goes to meta["resumed_from"]: each row keeps the GEMM rate probed beside it."""
    try:
        prev = json.loads(path.read_text(encoding="utf-8"))
        prev_meta = prev["meta"]
        kept = {k: prev[k] for k in ("checks", "rows", "skipped")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"--resume {path}: not a readable bench result: {e!r}") from None
    meta = result["meta"]
    if prev_meta.get("device") != meta["device"]:
        raise InputError(f"--resume {path}: measured on {prev_meta.get('device')}, not {meta['device']}")
    if prev_meta.get("model_py_sha256") != meta["model_py_sha256"]:
        log.warning("--resume: model.py changed since %s; its rows measured the older code", prev_meta.get("date"))
    meta["resumed_from"] = [*prev_meta.pop("resumed_from", []), prev_meta]
    return {**result, **kept}
