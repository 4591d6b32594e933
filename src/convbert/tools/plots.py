"""`convbert plot --run DIR`: PNG of a pretraining run's curves (needs matplotlib: `pip install convbert[plot]`)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..fileio import read_csv_lines
from ..settings import add_command, validate


def read_log(run_dir: Path, name: str = "log.csv") -> dict[str, list[float]]:
    """A run's training log (log.csv) or held-out evaluations (eval.csv), column by column."""
    path = run_dir / name
    try:
        rows = read_csv_lines(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read the run log: {e}") from None
    if not rows:
        raise InputError(f"{path}: no logged steps yet")
    columns: dict[str, list[float]] = {k: [] for k in rows[0][1]}
    for lineno, row in rows:
        for k, values in columns.items():
            values.append(_number(row[k], f"{path}:{lineno}", k))
    return columns


def _number(cell: str, where: str, column: str) -> float:
    """A log cell as a float ("" is NaN: not logged at that step)."""
    if cell == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise InputError(f"{where}: column {column!r}: {cell!r} is not a number") from None


TRAIN_COLUMNS = ("step", "disc_loss", "mlm_loss", "disc_acc", "replaced_frac", "gen_acc", "disc_precision",
                 "disc_recall", "lr")  # fmt: skip
EVAL_COLUMNS = ("step", "disc_loss", "constant_loss", "disc_auc", "gen_acc", "mlm_loss", "token_cosine")


def _require(path: Path, log: dict[str, list[float]], columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in log]
    if missing:
        raise InputError(f"{path}: line 1: no column {', '.join(map(repr, missing))} (not a pretraining log?)")


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("plots need matplotlib: pip install 'convbert[plot]'") from None
    return plt


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Losses, discriminator accuracy (with the all-"original" baseline), generator accuracy and LR by step."""
    run_dir = Path(run_dir)
    log = read_log(run_dir)
    held_out = read_log(run_dir, "eval.csv") if (run_dir / "eval.csv").exists() else None
    _require(run_dir / "log.csv", log, TRAIN_COLUMNS)
    if held_out is not None:
        _require(run_dir / "eval.csv", held_out, EVAL_COLUMNS)
    plt = pyplot()
    fig, axes = plt.subplots(2, 3 if held_out else 2, figsize=(16 if held_out else 11, 7))
    step = log["step"]
    ax = axes[0, 0]
    ax.plot(step, log["disc_loss"], label="discriminator BCE")
    ax.set_ylabel("discriminator loss")
    ax2 = ax.twinx()
    ax2.plot(step, log["mlm_loss"], color="tab:orange", label="generator MLM")
    ax2.set_ylabel("MLM loss")
    ax.legend(loc="upper right")
    ax2.legend(loc="center right")
    ax = axes[0, 1]
    ax.plot(step, log["disc_acc"], label="discriminator accuracy")
    ax.plot(step, [1 - r for r in log["replaced_frac"]], "--", color="gray", label='all-"original" baseline')
    ax.set_ylabel("accuracy")
    ax.legend()
    ax = axes[1, 0]
    ax.plot(step, log["gen_acc"], label="generator accuracy (masked)")
    ax.plot(step, log["disc_precision"], label="RTD precision")
    ax.plot(step, log["disc_recall"], label="RTD recall")
    ax.legend()
    ax = axes[1, 1]
    ax.plot(step, log["lr"])
    ax.set_ylabel("learning rate")
    if held_out and "disc_auc" in held_out:
        ax = axes[0, 2]
        ax.plot(held_out["step"], held_out["disc_loss"], marker=".", label="held-out discriminator BCE")
        ax.plot(held_out["step"], held_out["constant_loss"], ":", color="gray", label="constant guess")
        ax.legend()
        ax = axes[1, 2]
        ax.plot(held_out["step"], held_out["disc_auc"], marker=".", label="held-out RTD ROC-AUC")
        ax.plot(held_out["step"], held_out["gen_acc"], marker=".", label="held-out generator accuracy")
        ax.axhline(0.5, ls=":", color="gray")
    elif held_out:
        axes[0, 2].plot(held_out["step"], held_out["mlm_loss"], marker=".", label="held-out MLM loss")
        axes[1, 2].plot(held_out["step"], held_out["gen_acc"], marker=".", label="held-out MLM accuracy")
        axes[0, 2].legend()
    if held_out and "token_cosine" in held_out:  # older runs lack it
        axes[1, 2].plot(held_out["step"], held_out["token_cosine"], marker=".", label="held-out token cosine")
    if held_out:
        axes[1, 2].legend()
    for a in axes[1]:
        a.set_xlabel("step")
    fig.suptitle(f"pretraining: {run_dir}")
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


@dataclass
class PlotConfig:
    run: str  # a pretraining run directory (its log.csv and eval.csv)
    output: str | None = None  # the PNG to write (default: RUN/curves.png)

    def __post_init__(self) -> None:
        validate(self)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "plot",
        PlotConfig,
        lambda cfg: print(plot_run(cfg.run, cfg.output)),
        help="PNG of a pretraining run's curves",
        metavars={"run": "DIR", "output": "FILE"},
    )
