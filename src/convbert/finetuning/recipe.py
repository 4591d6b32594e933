"""The fine-tuning recipe: one training run per seed (each rank a shard of every batch, evaluated after epochs, the
best epoch kept), OUT written atomically by rank 0."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import ConvBertConfig
from ..errors import InputError
from ..fileio import atomic_dir, atomic_write_json, atomic_write_text
from ..model import PreTrained
from ..tokenizer import ConvBertTokenizer
from ..train_utils import (
    Dist,
    all_reduce_sum,
    autocast,
    barrier,
    grad_scaler,
    linear_schedule,
    make_optimizer,
    seed_everything,
    setup_distributed,
)
from .config import FinetuneConfig, Outputs, default_epochs, resolve
from .inference import evaluate_splits, load_head, make_batch, shard_indices
from .seeds import aggregate, summary_table
from .task_data import Task, load_task, write_split

log = logging.getLogger(__name__)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune (once per seed), keep the best epoch, write OUT atomically; returns metrics.json (or the
    aggregate over seeds)."""
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise InputError(f"{out} exists and is not empty; pass --overwrite to replace it")
    model_config = ConvBertConfig.from_json_file(Path(cfg.model) / "config.json")
    cfg = resolve(cfg, model_config)
    d = setup_distributed(cfg.device)
    if cfg.batch_size % d.world_size:
        raise InputError(f"--batch-size {cfg.batch_size} is not divisible by the {d.world_size} processes")
    tok = ConvBertTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    task = load_task(cfg, tok)
    results = []
    with atomic_dir(out) if d.is_main else contextlib.nullcontext() as tmp:
        for seed in range(cfg.seed, cfg.seed + cfg.seeds):
            dest = None if tmp is None else tmp if cfg.seeds == 1 else tmp / f"seed-{seed}"
            results.append(train_run(cfg, task, tok, seed, d, dest))
        summary = results[0] if cfg.seeds == 1 else aggregate(results)
        if tmp is not None and cfg.seeds > 1:
            atomic_write_json(tmp / "aggregate.json", summary)
            atomic_write_text(tmp / "aggregate.md", summary_table(summary["summary"]))
    barrier(d)
    return summary


def train_run(
    cfg: FinetuneConfig, task: Task, tok: ConvBertTokenizer, seed: int, d: Dist, dest: Path | None
) -> dict[str, Any]:
    """Fine-tune once with `seed`; rank 0 writes the run's files into `dest`. Returns the run's metrics.json."""
    t0 = time.perf_counter()
    seed_everything(seed)  # the same fresh head on every rank
    model = load_head(cfg.model, task.kind, task.labels, classifier_head=cfg.classifier_head).to(d.device)
    torch.manual_seed(seed + 1 + d.rank)  # dropout streams differ per rank
    n, per_rank = len(task.train["input_ids"]), cfg.batch_size // d.world_size
    epochs, total = _schedule(cfg, n, per_rank, d)
    eval_interval = -(-epochs // 10)  # short epochs: at most 10 evaluations a run (and the last epoch)
    trainer = _Trainer(model, cfg, d, total)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_outputs: dict[str, Outputs] = {}
    main_split = task.evals[0].name
    bar = tqdm(total=total, disable=not d.is_main, desc=f"{task.name} seed {seed}", unit="step")
    for epoch in range(1, epochs + 1):
        rows = shard_indices(n, d.rank, d.world_size, seed, epoch)
        loss_sum, loss_count = trainer.train_epoch(task.train, rows, per_rank, bar, epoch)
        last = trainer.done or epoch == epochs
        if not (cfg.eval_every_epoch and epoch % eval_interval == 0 or last):
            continue
        sums = all_reduce_sum({"loss": loss_sum, "n": loss_count}, d)
        metrics, outputs = evaluate_splits(model, task.kind, task.evals, d, cfg)
        history.append(
            {"epoch": epoch, "step": trainer.step, "train_loss": sums["loss"] / max(sums["n"], 1), "metrics": metrics}
        )
        log.info("seed %d epoch %d step %d: %s", seed, epoch, trainer.step, _brief(metrics))
        value = _value(metrics[main_split][task.main])
        if best is None or value > _value(best["value"]):
            best = {
                "epoch": epoch,
                "step": trainer.step,
                "metric": f"{main_split}/{task.main}",
                "value": metrics[main_split][task.main],
                "metrics": metrics,
            }
            best_state = _state(model)
            best_outputs = {s.name: outputs[s.name] for s in task.evals if s.writes}
        if last:
            break
    bar.close()
    model.load_state_dict(best_state)
    test_metrics, test_outputs = evaluate_splits(model, task.kind, task.tests, d, cfg)
    result = {
        "task": task.name,
        "model": str(cfg.model),
        "seed": seed,
        "world_size": d.world_size,
        "config": dataclasses.asdict(cfg),
        "examples": task.counts,
        "truncated": task.truncated,
        "epochs": epochs,
        "steps": trainer.step,
        "elapsed_s": time.perf_counter() - t0,
        "history": history,
        "best": best,
        "test": test_metrics,
    }
    if dest is not None:
        _save_run(dest, model, tok, task, result, best_outputs, test_outputs)
    return result


def _schedule(cfg: FinetuneConfig, n: int, per_rank: int, d: Dist) -> tuple[int, int]:
    """Epochs and optimizer steps of a run on `n` training rows: the task's epochs, more when they take fewer than
    min_steps (unless --epochs is given); the steps capped at max_steps."""
    steps_per_epoch = -(-len(shard_indices(n, d.rank, d.world_size)) // per_rank)
    epochs = cfg.epochs or max(default_epochs(cfg.task), -(-cfg.min_steps // steps_per_epoch))
    return epochs, min(epochs * steps_per_epoch, cfg.max_steps or math.inf)


class _Trainer:
    """AdamW (layer-wise LR decay) on a linear schedule with gradient clipping and (fp16) loss scaling, the model
    wrapped in DDP under torchrun; counts the optimizer steps up to `total`."""

    def __init__(self, model: PreTrained, cfg: FinetuneConfig, d: Dist, total: int) -> None:
        self.model, self.cfg, self.device, self.total, self.step = model, cfg, d.device, total, 0
        self.net = DistributedDataParallel(model) if d.world_size > 1 else model
        self.optimizer = make_optimizer(
            model,
            cfg.lr,
            cfg.weight_decay,
            layer_decay=None if cfg.layer_decay == 1 else cfg.layer_decay,
            num_layers=model.config.num_hidden_layers,
        )
        self.scheduler = linear_schedule(self.optimizer, round(cfg.warmup_frac * total), total)
        self.scaler = grad_scaler(cfg.precision, d.device)

    @property
    def done(self) -> bool:
        return self.step >= self.total

    def train_epoch(
        self, train: Mapping[str, torch.Tensor], rows: np.ndarray, per_rank: int, bar: tqdm, epoch: int
    ) -> tuple[float, float]:
        """One step per `per_rank` of this rank's `rows` until they or the run end; the loss sum and count."""
        self.model.train()
        loss_sum = loss_count = 0.0
        for lo in range(0, len(rows), per_rank):
            with autocast(self.cfg.precision, self.device):
                loss = self.net(**make_batch(train, rows[lo : lo + per_rank], self.device)).loss
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
            if self.done:
                break
        return loss_sum, loss_count


def _save_run(
    dest: Path,
    model: PreTrained,
    tok: ConvBertTokenizer,
    task: Task,
    result: Mapping[str, Any],
    best_outputs: Mapping[str, Outputs],
    test_outputs: Mapping[str, Outputs],
) -> None:
    """best/ (model and tokenizer), the prediction files of the best epoch and the test splits, metrics.json."""
    model.save_pretrained(dest / "best", tokenizer=tok)
    for splits, outputs in ((task.evals, best_outputs), (task.tests, test_outputs)):
        for s in splits:
            if s.writes:
                write_split(s, dest, outputs[s.name])
    atomic_write_json(dest / "metrics.json", result)


def _state(model: PreTrained) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _value(x: Any) -> float:
    """A metric as a float for ranking epochs (NaN ranks lowest)."""
    v = float(x)
    return -math.inf if math.isnan(v) else v


def _brief(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{split} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
        for split, m in metrics.items()
    )
