"""The demo's report: statistics over seeds, the results table, and its two figures."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .tools.plots import pyplot, read_log


def interval(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% t-interval (0 for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def _fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    m, h = interval([v * scale for v in values])
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def held_out(row: dict) -> list[dict[str, float]]:
    """The final held-out evaluation of each pretraining run of a row."""
    return [{k: v[-1] for k, v in read_log(run, "eval.csv").items()} for run in row["runs"]]


def judged_loss(history: list[dict]) -> float:
    """The training loss a run is judged by: at its first evaluation that closes an epoch (else its last), over
    the stretch since the evaluation before it in the same epoch, else over that epoch so far."""
    k = next((i for i, h in enumerate(history) if h.get("epoch_end")), len(history) - 1)
    last, prev = history[k], history[k - 1] if k else None
    if prev is None or prev["epoch"] != last["epoch"] or "train_batches" not in last:
        return last["train_loss"]
    n = last["train_batches"] - prev["train_batches"]
    return (last["train_loss"] * last["train_batches"] - prev["train_loss"] * prev["train_batches"]) / n


def at_chance(metrics: dict) -> bool:
    """A binary run that never left chance: its judged training loss within 0.01 of ln 2."""
    return bool(metrics["history"]) and abs(judged_loss(metrics["history"]) - math.log(2)) < 0.01


def single_class(metrics: dict) -> bool:
    """A run whose test predictions are all one class."""
    path = Path(metrics["config"]["out"]) / "test_predictions.jsonl"
    return len({json.loads(line)["label"] for line in path.read_text().splitlines() if line}) == 1


def summarize_runs(rows: list[dict], results: dict, label_budgets: Sequence[int | None]) -> dict[str, Any]:
    out = []
    for row in rows:
        entry = {k: row[k] for k in ("model", "params", "flops", "steps", "wall_s")}
        if row["runs"]:
            entry["held_out"] = held_out(row)
        for labels in label_budgets:
            runs = results.get((row["model"], labels), [])
            entry[f"labels={labels or 'all'}"] = {
                "test_accuracy": [r["test"]["test"]["accuracy"] for r in runs],
                "test_macro_f1": [r["test"]["test"]["macro_f1"] for r in runs],
                "dev_accuracy": [r["best"]["metrics"]["dev"]["accuracy"] for r in runs],
                "at_chance": sum(map(at_chance, runs)),
                "single_class": sum(map(single_class, runs)),
                "seeds": [r["seed"] for r in runs],
            }
        out.append(entry)
    return {"date": date.today().isoformat(), "torch": torch.__version__, "rows": out}


def results_table(
    rows: list[dict],
    summary: dict[str, Any],
    title: list[str],
    label_budgets: Sequence[int | None],
    finetune_seeds: int,
) -> str:
    """The markdown results table under `title` (its first lines), from `summarize_runs`' summary of the rows."""
    head = [
        "model",
        "parameters",
        "pretraining FLOPs",
        "steps",
        "wall time (min)",
        "held-out RTD ROC-AUC",
        "held-out RTD loss / constant",
    ] + [f"test acc., {b or 'all'} labels" for b in label_budgets]
    lines = [
        *title,
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    stuck = one_class = total = 0
    for row, entry in zip(rows, summary["rows"], strict=True):
        ev = entry.get("held_out", [])
        auc = _fmt([e["disc_auc"] for e in ev], 1.0, 3) if ev else "-"
        loss = " / ".join(f"{np.mean([e[k] for e in ev]):.3f}" for k in ("disc_loss", "constant_loss")) if ev else "-"
        wall = float(np.mean(row["wall_s"])) / 60
        seeds = row.get("seeds", finetune_seeds)
        notes = [f"{seeds} seeds"] if seeds != finetune_seeds else []
        notes += [f"{k} {v:g}" for k, v in row.get("finetune", {}).items()]
        name = f"{row['model']} ({', '.join(notes)})" if notes else row["model"]
        cells = [
            name,
            f"{row['params'] / 1e6:.2f}M",
            "-" if math.isnan(row["flops"]) else f"{row['flops']:.2e}",
            "-" if math.isnan(row["steps"]) else str(row["steps"]),
            "-" if math.isnan(wall) else f"{wall:.1f}",
            auc,
            loss,
        ]
        for labels in label_budgets:
            runs = entry[f"labels={labels or 'all'}"]
            cells.append(_fmt(runs["test_accuracy"]) if runs["test_accuracy"] else "-")
            stuck, one_class = stuck + runs["at_chance"], one_class + runs["single_class"]
            total += len(runs["test_accuracy"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Of {total} fine-tuning runs, {stuck} stayed at chance (training loss within 0.01 of ln 2 over their "
        f"first epoch, or over their last stretch when they end inside it) and {one_class} predict a single class "
        "on the test set.",
    ]
    return "\n".join(lines) + "\n"


def plot_pretraining(rows: list[dict], path: Path) -> None:
    """Held-out RTD ROC-AUC and loss (minus the constant guess's) against pretraining FLOPs, each seed a line."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, row in enumerate(r for r in rows if r["runs"]):
        color = f"C{k}"
        for s, run in enumerate(row["runs"]):
            ev = read_log(run, "eval.csv")
            label = row["model"] if s == 0 else None
            axes[0].plot(ev["train_flops"], ev["disc_auc"], marker=".", color=color, label=label)
            axes[1].plot(
                ev["train_flops"],
                np.subtract(ev["disc_loss"], ev["constant_loss"]),
                marker=".",
                color=color,
                label=label,
            )
    axes[0].axhline(0.5, ls=":", color="gray", label="chance")
    axes[0].set_ylabel("held-out replaced-token ROC-AUC")
    axes[1].axhline(0.0, ls=":", color="gray", label="constant guess of the replaced fraction")
    axes[1].set_ylabel("held-out RTD loss minus the constant guess's")
    for ax in axes:
        ax.set_xlabel("pretraining FLOPs (ELECTRA's counting)")
        ax.legend(fontsize=8)
    fig.suptitle("Pretraining at equal FLOPs (one line per pretraining seed)")
    fig.tight_layout()
    _save(fig, plt, path)


def plot_learning_curve(
    rows: list[dict], results: dict, label_budgets: Sequence[int | None], train: Path, path: Path
) -> None:
    """Test accuracy against labelled examples, one line per model with 95% intervals."""
    plt = pyplot()
    n_all = sum(1 for _ in train.open(encoding="utf-8"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        pts = [(labels or n_all, results.get((row["model"], labels), [])) for labels in label_budgets]
        pts = [(x, interval([r["test"]["test"]["accuracy"] * 100 for r in runs])) for x, runs in pts if runs]
        if pts:
            xs, stats = zip(*pts)
            ax.errorbar(
                xs, [m for m, _ in stats], yerr=[h for _, h in stats], marker="o", capsize=3, label=row["model"]
            )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training sentences")
    ax.set_ylabel("sentiment test accuracy (%), 95% interval")
    ax.axhline(50, ls=":", color="gray")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, plt, path)


def _save(fig, plt, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
