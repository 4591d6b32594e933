"""The records of a pretraining run: log.csv (training) and eval.csv (held-out), TensorBoard if installed, and
the `Window` of per-step results that a log row sums."""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..fileio import read_csv_lines
from ..train_utils import all_reduce_sum
from .objective import STATS

log = logging.getLogger(__name__)

LOG_FIELDS = (
    "step",
    "lr",
    "loss",
    "mlm_loss",
    "disc_loss",
    "gen_acc",
    "disc_acc",
    "disc_precision",
    "disc_recall",
    "replaced_frac",
    "tokens_per_s",
    "train_flops",
    "elapsed_s",
    "skipped",
)
EVAL_FIELDS = (
    "step",
    "train_flops",
    "elapsed_s",
    "disc_loss",
    "constant_loss",
    "disc_auc",
    "disc_acc",
    "replaced_frac",
    "mlm_loss",
    "gen_acc",
    "token_cosine",
    "tokens",
)


class Window:
    """What the steps since the last log row leave on the device (summed stats, skip flags), read at log
    and save steps only; the host keeps the run of consecutive skipped steps."""

    def __init__(self, d, max_bad_steps: int, out: Path):
        self.d, self.max_bad, self.out = d, max_bad_steps, out
        self.streak, self.last_losses = 0, None
        self.restart()

    def restart(self) -> None:
        self.stats = torch.zeros(len(STATS), device=self.d.device)
        self.tokens, self.flags, self.skipped, self.t0 = 0, [], 0, time.perf_counter()

    def end_step(self, step: int, bad: torch.Tensor, losses: torch.Tensor) -> None:
        self.flags.append((step, bad))
        self.last_losses = losses

    def check(self) -> None:
        """Read the pending skip flags (one host sync); raise after max_bad_steps skipped in a row."""
        if not self.flags:
            return
        values = torch.stack([bad for _, bad in self.flags]).tolist()
        for (step, _), bad in zip(self.flags, values):
            if not bad:
                self.streak = 0
                continue
            self.streak += 1
            self.skipped += 1
            log.warning("step %d: non-finite loss or gradients, step skipped (%d in a row)", step, self.streak)
            if self.streak >= self.max_bad:
                raise RuntimeError(
                    f"{self.streak} non-finite losses in a row at step {step}; stopping. The last "
                    f"good checkpoint in {self.out} is intact: lower the learning rate or use "
                    "bf16/fp32."
                )
        self.flags = []

    def flush(self) -> tuple[dict[str, float], list[float], int]:
        """Summed counts over steps and ranks, the last step's losses, and the steps skipped since the last row."""
        self.check()
        values = torch.cat([self.stats, self.last_losses]).tolist()
        agg = all_reduce_sum({**dict(zip(STATS, values)), "tokens_seen": self.tokens}, self.d)
        return agg, values[len(STATS) :], self.skipped


class RunLog:
    """log.csv (training) and eval.csv (held-out), appended across resumes with the rows after the resume point
    dropped; TensorBoard if installed."""

    def __init__(self, out: Path, active: bool, start: int):
        self.active, self.elapsed = active, 0.0
        self.files = {"train": (out / "log.csv", LOG_FIELDS), "eval": (out / "eval.csv", EVAL_FIELDS)}
        self.tb = None
        if not active:
            return
        for kind, (path, fields) in self.files.items():
            if path.exists():  # keep the rows up to the checkpoint we resumed from
                rows = [
                    r
                    for r in (r for _, r in read_csv_lines(path))
                    if r.get("step", "").isdigit() and int(r["step"]) <= start
                ]
                if kind == "train" and rows:
                    try:
                        self.elapsed = float(rows[-1]["elapsed_s"])
                    except (KeyError, ValueError):
                        raise InputError(
                            f"{path}: elapsed_s of the row of step {rows[-1]['step']} is "
                            f"{rows[-1].get('elapsed_s')!r}, not a number"
                        ) from None
                self._rewrite(path, fields, rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    @staticmethod
    def _rewrite(path: Path, fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any], kind: str = "train") -> None:
        if not self.active:
            return
        path, fields = self.files[kind]
        if not path.exists():
            self._rewrite(path, fields, [])
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k if kind == "train" else f"eval/{k}", v, row["step"])
