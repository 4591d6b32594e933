"""The fine-tuning recipe: one training run per seed (each rank a shard of every batch, evaluated after epochs and
every `eval_steps`, the best evaluation kept, early stopping), checkpointed at every evaluation so that a killed
run resumes exactly; OUT written atomically by rank 0 at the end."""

from __future__ import annotations

import contextlib
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
from ..hub import resolve_dir
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
from . import run_files
from .config import FinetuneConfig, default_epochs, resolve
from .inference import evaluate_splits, length_grouped, load_head, make_batch, shard_indices
from .run_files import RunState, metric_rank
from .task_data import Task, load_task

log = logging.getLogger(__name__)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune (once per seed), keep the best evaluation, write OUT atomically; returns metrics.json (or the
    aggregate over seeds)."""
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise InputError(f"{out} exists and is not empty; pass --overwrite to replace it")
    model_config = ConvBertConfig.from_json_file(resolve_dir(cfg.model) / "config.json")
    cfg = resolve(cfg, model_config)
    d = setup_distributed(cfg.device)
    if cfg.batch_size % (d.world_size * cfg.grad_accum):
        raise InputError(
            f"--batch-size {cfg.batch_size} is not divisible by {d.world_size} process(es) x --grad-accum "
            f"{cfg.grad_accum}"
        )
    tok = ConvBertTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    tok.check_vocab(model_config.vocab_size)  # before any work: larger ids would index past the embedding
    task = load_task(cfg, tok)
    partial = run_files.open_partial(out, cfg, d)
    results = []
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        seed_dir = partial / f"seed-{seed}"
        result = run_files.finished(seed_dir)
        if result is None:
            result = train_run(cfg, task, tok, seed, d, seed_dir)
        results.append(result)
    summary = run_files.summarize(results)
    if d.is_main:
        run_files.finish(out, partial, cfg, results, summary)
    barrier(d)
    return summary


def train_run(cfg: FinetuneConfig, task: Task, tok: ConvBertTokenizer, seed: int, d: Dist, seed_dir: Path) -> dict:
    """Fine-tune once with `seed` (from its last checkpoint in `seed_dir` when there is one); rank 0 writes the
    run's files into `seed_dir`/result. Returns the run's metrics.json."""
    t0 = time.perf_counter()
    seed_everything(seed)  # the same fresh head on every rank
    model = load_head(
        cfg.model, task.kind, task.labels, classifier_head=cfg.classifier_head, multi_label=task.multi_label
    ).to(d.device)
    torch.manual_seed(seed + 1 + d.rank)  # dropout streams differ per rank
    n, per_rank = len(task.train["input_ids"]), cfg.batch_size // d.world_size
    epochs, total = _schedule(cfg, n, per_rank, d)
    trainer = _Trainer(model, cfg, d, total)
    run = run_files.resume(seed_dir, trainer, d) if cfg.resume == "auto" else None
    run = run or RunState(*_selection(cfg, task))
    trainer.step = run.step
    bar = tqdm(total=total, initial=run.step, disable=not d.is_main, desc=f"{task.name} seed {seed}", unit="step")
    lengths = task.train["attention_mask"].sum(1).numpy() if cfg.group_by_length else None
    eval_interval = -(-epochs // 10)  # short epochs: at most 10 evaluations a run (and the last epoch)
    for epoch in range(run.epoch, epochs + 1):
        rows = shard_indices(n, d.rank, d.world_size, seed, epoch)
        if cfg.group_by_length:
            rows = length_grouped(rows, lengths, per_rank, seed, epoch)
        starts = range(0, len(rows), per_rank)
        if run.epoch != epoch or run.batch == 0:  # a new epoch (not one resumed inside)
            run.epoch, run.batch, run.loss_sum, run.loss_count = epoch, 0, 0.0, 0.0
        for i in range(run.batch, len(starts)):
            loss = trainer.train_step(task.train, rows[starts[i] : starts[i] + per_rank])
            run.step, run.batch, run.loss_sum, run.loss_count = (
                trainer.step,
                i + 1,
                run.loss_sum + loss,
                run.loss_count + 1,
            )
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
            epoch_end = i == len(starts) - 1
            by_epoch = epoch_end and (cfg.eval_every_epoch and epoch % eval_interval == 0 or epoch == epochs)
            if by_epoch or trainer.done or (cfg.eval_steps and trainer.step % cfg.eval_steps == 0):
                _evaluate(cfg, task, trainer, run, d, epoch_end)
                run_files.checkpoint(seed_dir, trainer, run, d)
            if trainer.done or run.stopped_early:
                break
        if trainer.done or run.stopped_early:
            break
    bar.close()
    model.load_state_dict(run.best_state)
    test_metrics, test_outputs = evaluate_splits(model, task.kind, task.tests, d, cfg)
    result = run_files.result_record(cfg, task, seed, d, epochs, run, test_metrics, time.perf_counter() - t0)
    if d.is_main:
        run_files.write_result(seed_dir / "result", cfg, model, tok, task, result, run.best_outputs, test_outputs)
    barrier(d)
    return result


def _selection(cfg: FinetuneConfig, task: Task) -> tuple[str, str]:
    """(split, metric) that picks the best evaluation: --metric-for-best, else the task's main metric."""
    split, _, metric = (cfg.metric_for_best or task.main).rpartition("/")
    return split or task.evals[0].name, metric


def _evaluate(cfg: FinetuneConfig, task: Task, trainer: _Trainer, run: RunState, d: Dist, epoch_end: bool) -> None:
    """Score the dev split(s), record the evaluation, keep the weights and outputs of the best one so far. The
    entry's train_loss is the mean over the epoch's `train_batches` so far (summed over ranks); `epoch_end` says
    whether the evaluation closes the epoch."""
    sums = all_reduce_sum({"loss": run.loss_sum, "n": run.loss_count}, d)
    metrics, outputs = evaluate_splits(trainer.model, task.kind, task.evals, d, cfg)
    lr = trainer.scheduler.get_last_lr()[0]
    run.history.append(
        {
            "epoch": run.epoch,
            "step": trainer.step,
            "train_loss": sums["loss"] / max(sums["n"], 1),
            "train_batches": int(sums["n"]),
            "epoch_end": epoch_end,
            "lr": lr,
            "metrics": metrics,
        }  # fmt: skip
    )
    log.info("epoch %d step %d: %s", run.epoch, trainer.step, _brief(metrics))
    if run.metric not in metrics.get(run.split, {}):
        known = [f"{s}/{k}" for s, m in metrics.items() for k in m if k != "num_examples"]
        raise InputError(f"--metric-for-best {run.split}/{run.metric}: not a metric of this task ({', '.join(known)})")
    value = metrics[run.split][run.metric]
    if run.best is None or metric_rank(value) > metric_rank(run.best["value"]):
        run.best = {"epoch": run.epoch, "step": trainer.step, "metric": f"{run.split}/{run.metric}", "value": value,
                    "metrics": metrics}  # fmt: skip
        run.best_state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        run.best_outputs = {s.name: outputs[s.name] for s in task.evals if s.writes}
        run.stale = 0
    else:
        run.stale += 1
        run.stopped_early = cfg.early_stopping_patience is not None and run.stale >= cfg.early_stopping_patience
        if run.stopped_early:
            log.info("early stopping: %d evaluations without a better %s", run.stale, run.best["metric"])


def _schedule(cfg: FinetuneConfig, n: int, per_rank: int, d: Dist) -> tuple[int, int]:
    """Epochs and optimizer steps of a run on `n` training rows: the task's epochs, more when they take fewer than
    min_steps (unless --epochs is given); the steps capped at max_steps."""
    steps_per_epoch = -(-len(shard_indices(n, d.rank, d.world_size)) // per_rank)
    epochs = cfg.epochs or max(default_epochs(cfg.task), -(-cfg.min_steps // steps_per_epoch))
    return epochs, min(epochs * steps_per_epoch, cfg.max_steps or math.inf)


class _Trainer:
    """AdamW (layer-wise LR decay) on a linear schedule with gradient clipping, (fp16) loss scaling and gradient
    accumulation, the model wrapped in DDP under torchrun; counts the optimizer steps up to `total`."""

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

    def train_step(self, train: Mapping[str, torch.Tensor], rows: np.ndarray) -> float:
        """One optimizer step on this rank's `rows` (in `grad_accum` micro-batches); the batch's mean loss."""
        self.model.train()
        parts = [p for p in np.array_split(rows, self.cfg.grad_accum) if len(p)]
        total = 0.0
        for j, part in enumerate(parts):
            sync = j == len(parts) - 1 or not isinstance(self.net, DistributedDataParallel)
            with (
                self.net.no_sync() if not sync else contextlib.nullcontext(),
                autocast(self.cfg.precision, self.device),
            ):
                loss = self.net(**make_batch(train, part, self.device)).loss
            if len(parts) > 1:
                loss = loss * (len(part) / len(rows))
            self.scaler.scale(loss).backward()
            total += loss.item()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return total


def _brief(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{split} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
        for split, m in metrics.items()
    )
