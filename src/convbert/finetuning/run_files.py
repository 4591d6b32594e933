"""What a fine-tuning run keeps on disk: OUT.partial/ while it runs (a checkpoint at every evaluation and each
finished seed, so that a killed run resumes exactly), then OUT (per seed: best/ with a model card, metrics.json,
log.csv, TensorBoard events when installed, prediction files; over seeds: aggregate.json/.md and best/)."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..checkpoints import find_checkpoints, load_checkpoint, save_checkpoint
from ..errors import InputError
from ..fileio import atomic_dir, atomic_write_json, atomic_write_text
from ..model import PreTrained
from ..settings import RUN_CONFIG, read_config_file, to_dict, write_run_config
from ..tokenizer import ConvBertTokenizer
from ..train_utils import Dist, barrier, rng_state
from .config import FinetuneConfig, Outputs
from .seeds import aggregate, summary_table
from .task_data import Task, write_split

log = logging.getLogger(__name__)

NOT_COMPARED = {"resume", "overwrite", "device"}  # settings a resumed run may change
STATE_FIELDS = ("split", "metric", "step", "epoch", "batch", "loss_sum", "loss_count", "history", "best", "stale",
                "stopped_early")  # fmt: skip


@dataclass
class RunState:
    """Where a seed's run is: what a checkpoint holds besides the model, optimizer, schedule and RNG."""

    split: str  # the split and metric that pick the best evaluation
    metric: str
    step: int = 0  # optimizer steps done
    epoch: int = 1  # the epoch in progress
    batch: int = 0  # its batches done
    loss_sum: float = 0.0  # this rank's training loss over the epoch so far
    loss_count: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation
    best: dict[str, Any] | None = None
    stale: int = 0  # evaluations since the best
    stopped_early: bool = False
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # the best evaluation's weights (CPU)
    best_outputs: dict[str, Outputs] = field(default_factory=dict)  # and its outputs on splits that write files


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def open_partial(out: Path, cfg: FinetuneConfig, d: Dist) -> Path:
    """OUT.partial/: kept when it holds a run with these settings and --resume auto, else started afresh."""
    partial = partial_dir(out)
    if d.is_main:
        saved = partial / RUN_CONFIG
        if saved.exists() and cfg.resume == "auto":
            old, new = read_config_file(saved), to_dict(cfg)
            diff = [k for k in new if k not in NOT_COMPARED and old.get(k) != new[k]]
            if diff:
                raise InputError(
                    f"{partial} holds an unfinished run with other settings ({', '.join(diff)}): remove it or pass "
                    "--resume none"
                )
        else:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            write_run_config(partial, cfg)
    barrier(d)
    return partial


def finished(seed_dir: Path) -> dict[str, Any] | None:
    """The metrics.json of a seed that finished before the run was stopped."""
    done = seed_dir / "result" / "metrics.json"
    return json.loads(done.read_text(encoding="utf-8")) if done.exists() else None


def checkpoint(seed_dir: Path, trainer, run: RunState, d: Dist) -> None:
    """seed_dir/step-XXXXXXXX: the trainer (model, optimizer, schedule, scaler, every rank's RNG) and `run`."""
    states = [rng_state(d)]
    if d.world_size > 1:
        states = [None] * d.world_size
        torch.distributed.all_gather_object(states, rng_state(d))
    if d.is_main:
        outputs = {f"{s}/{k}": torch.from_numpy(np.ascontiguousarray(v)) for s, o in run.best_outputs.items()
                   for k, v in o.items()}  # fmt: skip
        state = {"run": {k: getattr(run, k) for k in STATE_FIELDS}}
        save_checkpoint(seed_dir, trainer.step, trainer.model, trainer.optimizer, trainer.scheduler, trainer.scaler,
                        d, state, keep=2, rng_per_rank=states,
                        files={"best.safetensors": run.best_state, "best_outputs.safetensors": outputs})  # fmt: skip
    barrier(d)


def resume(seed_dir: Path, trainer, d: Dist) -> RunState | None:
    """Load the newest checkpoint of a seed that passes its checks into `trainer` (each one that fails is reported
    with why and skipped, the trainer untouched by it); its RunState, or None when there is none. InputError when
    there are checkpoints and none passes, rather than starting the seed over beside them."""
    kinds = {"split": "a string", "metric": "a string", "step": "an integer", "epoch": "an integer",
             "batch": "an integer", "loss_sum": "a number", "loss_count": "a number", "history": "a list",
             "best": "an object or null", "stale": "an integer", "stopped_early": "a boolean"}  # fmt: skip
    is_kind = {
        "a string": lambda v: isinstance(v, str),
        "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "a list": lambda v: isinstance(v, list),
        "an object or null": lambda v: v is None or isinstance(v, dict),
        "a boolean": lambda v: isinstance(v, bool),
    }

    def read_run(path: Path, info: dict[str, Any]) -> RunState:
        """The RunState of checkpoint `path` (trainer_state.json `info`), checked, with its best weights and outputs."""
        where, saved = path / "trainer_state.json", info.get("run")
        if not isinstance(saved, dict) or set(saved) != set(STATE_FIELDS):
            raise InputError(f"{where}: run must be an object with exactly {', '.join(STATE_FIELDS)}")
        for k, kind in kinds.items():
            if not is_kind[kind](saved[k]):
                raise InputError(f"{where}: run.{k} must be {kind}, not {saved[k]!r}")
        if saved["step"] != info["step"] or min(saved["step"], saved["batch"], saved["stale"], saved["epoch"] - 1) < 0:
            raise InputError(f"{where}: run.step/batch/stale/epoch out of range (step {info['step']})")
        files = {}
        for name in ("best.safetensors", "best_outputs.safetensors"):
            try:
                files[name] = load_file(str(path / name))
            except Exception as e:  # safetensors raises its own error types
                raise InputError(f"{path}: {name}: cannot read its tensors: {e}") from None
        best, model = files["best.safetensors"], trainer.model.state_dict()
        if best and (set(best) != set(model) or any(best[k].shape != v.shape or best[k].dtype != v.dtype
                                                     for k, v in model.items())):  # fmt: skip
            raise InputError(f"{path}: best.safetensors does not match the model (names, shapes or dtypes)")
        run = RunState(**saved, best_state=best)
        for key, v in files["best_outputs.safetensors"].items():
            split, _, name = key.partition("/")
            run.best_outputs.setdefault(split, {})[name] = v.numpy()
        return run

    candidates = find_checkpoints(seed_dir)  # also removes what killed saves left
    for n, path in enumerate(candidates):
        found: list[RunState] = []
        try:  # the run state is checked with the rest, before anything is loaded into the trainer
            load_checkpoint(path, trainer.model, trainer.optimizer, trainer.scheduler, trainer.scaler, d,
                            check=lambda info, path=path, found=found: found.append(read_run(path, info)))  # fmt: skip
        except InputError as e:
            log.warning("skipping checkpoint %s", e if str(path) in str(e) else f"{path}: {e}")
            continue
        (log.warning if n else log.info)("resumed from %s (step %d)", path, found[0].step)
        return found[0]
    if candidates:
        raise InputError(
            f"{seed_dir}: none of its {len(candidates)} checkpoints passes its checks (the warnings above say why): "
            "remove them, or pass --resume none to start over"
        )
    return None


def result_record(cfg: FinetuneConfig, task: Task, seed: int, d: Dist, epochs: int, run: RunState,
                  test_metrics: dict, elapsed: float) -> dict[str, Any]:  # fmt: skip
    """A seed's metrics.json."""
    return {
        "task": task.name,
        "model": str(cfg.model),
        "seed": seed,
        "world_size": d.world_size,
        "config": to_dict(cfg),
        "examples": task.counts,
        "truncated": task.truncated,
        "epochs": epochs,
        "steps": run.step,
        "stopped_early": run.stopped_early,
        "elapsed_s": elapsed,
        "history": run.history,
        "best": run.best,
        "test": test_metrics,
    }


def write_result(dest: Path, cfg: FinetuneConfig, model: PreTrained, tok: ConvBertTokenizer, task: Task,
                 result: Mapping[str, Any], best_outputs: Mapping[str, Outputs],
                 test_outputs: Mapping[str, Outputs]) -> None:  # fmt: skip
    """A seed's files, atomically: best/ (model, tokenizer, model card, settings), prediction files, metrics.json,
    log.csv and TensorBoard events."""
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp / "best", tokenizer=tok)
        write_run_config(tmp / "best", cfg)
        atomic_write_text(tmp / "best" / "README.md", model_card(cfg, result))
        for splits, outputs in ((task.evals, best_outputs), (task.tests, test_outputs)):
            for s in splits:
                if s.writes:
                    write_split(s, tmp, outputs[s.name])
        rows = history_rows(result["history"])
        atomic_write_text(tmp / "log.csv", _csv(rows))
        _tensorboard(tmp / "tensorboard", rows)
        atomic_write_json(tmp / "metrics.json", result)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One seed: its metrics.json; several: the aggregate over seeds and the seed with the best metric_for_best."""
    if len(results) == 1:
        return results[0]
    summary = aggregate(results)
    summary["best_seed"] = max(results, key=lambda r: metric_rank(r["best"]["value"]))["seed"]
    return summary


def finish(out: Path, partial: Path, cfg: FinetuneConfig, results: list[dict[str, Any]], summary: dict) -> None:
    """OUT from the finished seeds (one seed: its files; several: seed-S/, aggregate.json/.md and best/, the
    model of the best seed), atomically; OUT.partial removed."""
    seeds = [r["seed"] for r in results]
    with atomic_dir(out) as tmp:
        if len(results) == 1:
            shutil.copytree(partial / f"seed-{seeds[0]}" / "result", tmp, dirs_exist_ok=True)
        else:
            for s in seeds:
                shutil.copytree(partial / f"seed-{s}" / "result", tmp / f"seed-{s}")
            shutil.copytree(tmp / f"seed-{summary['best_seed']}" / "best", tmp / "best")
            atomic_write_json(tmp / "aggregate.json", summary)
            atomic_write_text(tmp / "aggregate.md", summary_table(summary["summary"]))
        write_run_config(tmp, cfg)
    shutil.rmtree(partial, ignore_errors=True)


def metric_rank(x: Any) -> float:
    """A metric as a float for ranking evaluations (NaN ranks lowest)."""
    v = float(x)
    return -math.inf if math.isnan(v) else v


def history_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per evaluation: epoch, step, lr, train_loss and every split/metric."""
    return [{"epoch": h["epoch"], "step": h["step"], "lr": h.get("lr"), "train_loss": h["train_loss"],
             **{f"{s}/{k}": v for s, m in h["metrics"].items() for k, v in m.items() if k != "num_examples"}}
            for h in history]  # fmt: skip


def model_card(cfg: FinetuneConfig, result: Mapping[str, Any]) -> str:
    """README.md of a fine-tuned model dir: what it was trained on, how, and how well."""
    data = {k: getattr(cfg, k) for k in ("data", "train", "dev", "test") if getattr(cfg, k)}
    best = result["best"] or {}
    lines = [
        "---",
        "library_name: convbert",
        "tags: [convbert, text-classification]" if result["task"] != "ner" else "tags: [convbert, ner]",
        "---",
        "",
        f"# ConvBERT fine-tuned on {result['task']}",
        "",
        f"- base model: `{cfg.model}`",
        f"- data: {', '.join(f'{k} `{v}`' for k, v in data.items())}",
        f"- seed {result['seed']}, {result['steps']} optimizer steps, best evaluation at epoch {best.get('epoch')} "
        f"(step {best.get('step')}) by {best.get('metric')} = {best.get('value')}",
        "- settings: `run_config.json` in this directory (read it back with `convbert finetune --config`)",
        "",
        "| split | metric | value |",
        "|---|---|---|",
    ]
    for split, metrics in {**best.get("metrics", {}), **result["test"]}.items():
        lines += [f"| {split} | {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float)]
    command = shlex.join(["convbert", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("convbert", "__main__.py") else ""
    lines += ["", "Produced by:", "", f"```\n{command or 'convbert.finetuning.recipe.finetune(config)'}\n```", ""]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _tensorboard(path: Path, rows: list[dict[str, Any]]) -> None:
    """The evaluations as TensorBoard scalars, when tensorboard is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    with SummaryWriter(str(path)) as tb:
        for r in rows:
            for k, v in r.items():
                if k != "step" and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, r["step"])
