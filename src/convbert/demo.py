"""`convbert demo`: what pretraining buys, end to end on real text, on a CPU.

1. fetch the VADER ground-truth sentences from PyPI and, for pretraining, six registry corpora
   (`convbert.tools.corpora`: State of the Union, Brown, Austen, Moby-Dick, fine-food reviews, WordNet; ~33 MB),
   all verified and cached;
2. split the movie-review sentences once into train/dev/test (seed 0; label = sign of the human rating,
   |rating| < 0.5 dropped); dev and test are never pretrained on;
3. train a WordPiece vocab on the pretraining text, prepare shards, pretrain a mini ConvBERT (sdconv) and, at the
   same training FLOPs, a mini ELECTRA (every head self-attention, head_ratio 1), each with 2 pretraining seeds and
   25% masking (`RECIPE`), evaluating replaced-token detection on held-out shards as they go;
4. fine-tune each, and randomly initialised minis, with one short recipe (`FINETUNE`: `convbert finetune`'s,
   but lr 1e-3 without layer decay, 100-250 steps to fit the budget (all labels: one epoch; 150 steps left 2
   of 5 ELECTRA runs on one class), evaluated every 50 steps, batches grouped by length) at 250 and 1,000
   labelled sentences and with all of them, 5 fine-tuning seeds per
   model and budget (spread over the pretraining seeds; a budget's subset is drawn per seed, the same for every
   model);
5. print and write results.md (means with 95% t-intervals), pretraining_curves.png (held-out ROC-AUC and loss
   against FLOPs) and learning_curve.png (test accuracy against labelled examples).
`--minilm` adds a real pretrained BERT (MiniLM-L6-H384, `convert from-bert`) fine-tuned the same way.
A second run reuses the data cache, finished pretraining runs and finished fine-tuning runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .config import ConvBertConfig
from .demo_report import plot_learning_curve, plot_pretraining, results_table, summarize_runs
from .errors import InputError
from .fileio import atomic_write_json, atomic_write_text
from .finetuning.config import FinetuneConfig
from .finetuning.recipe import finetune
from .flops import param_count, pretraining_flops
from .model import ConvBertModel
from .pretraining.config import PretrainConfig
from .pretraining.data import prepare
from .pretraining.objective import generator_config
from .pretraining.recipe import pretrain
from .settings import RUN_CONFIG, Device, PositiveInt, add_command, validate, write_run_config
from .tokenizer import ConvBertTokenizer
from .tools import corpora, fetch
from .tools.convert import convert_bert
from .tools.plots import read_log
from .train_utils import available_cores


@dataclass(frozen=True)
class Budget:
    corpora: tuple[str, ...]  # registry corpora pretrained on beside VADER's sentences
    vocab_size: int
    seq_len: int
    batch_size: int
    steps: int  # ConvBERT's pretraining steps; ELECTRA gets as many as the same FLOPs buy
    pretrain_seeds: int
    finetune_seeds: int  # per model and label budget, spread over the pretraining seeds
    label_budgets: tuple[int | None, ...]  # None: every training sentence
    finetune_min_steps: int  # optimizer steps of a fine-tuning run at least (small label budgets: more epochs)
    finetune_max_steps: int  # and at most (all labels: one epoch at the default budget)


BUDGETS = {
    "tiny": Budget(
        corpora=(),
        vocab_size=1000,
        seq_len=32,
        batch_size=8,
        steps=6,
        pretrain_seeds=1,
        finetune_seeds=2,
        label_budgets=(40, None),
        finetune_min_steps=4,
        finetune_max_steps=4,
    ),
    "default": Budget(
        corpora=tuple(corpora.SOURCES),
        vocab_size=8000,
        seq_len=128,
        batch_size=32,
        steps=360,
        pretrain_seeds=2,
        finetune_seeds=5,
        label_budgets=(250, 1000, None),
        finetune_min_steps=100,
        finetune_max_steps=250,
    ),
    "long": Budget(
        corpora=tuple(corpora.SOURCES),
        vocab_size=8000,
        seq_len=128,
        batch_size=32,
        steps=3822,
        pretrain_seeds=2,
        finetune_seeds=5,
        label_budgets=(250, 1000, None),
        finetune_min_steps=600,
        finetune_max_steps=750,
    ),
}
BudgetName = Literal[tuple(BUDGETS)]  # the keys of BUDGETS, for the CLI
# the mini's fine-tuning settings. lr 1e-3 without layer decay: 2e-3 measured best at 1,000 labels over 600 steps
# (benchmarks/pretraining_sweep.py), but in the demo's 100-250 steps it left 4 of 45 runs at chance (all of them
# with all labels, on pretrained and random-init minis alike), and 1e-3 took each of those off it. Evaluated every
# 50 steps and at the end, the best kept; batches grouped by length (1.4x faster here: the sentences average 31
# tokens, a random batch's longest 58).
FINETUNE = {"lr": 1e-3, "layer_decay": 1.0, "eval_steps": 50, "eval_every_epoch": False, "group_by_length": True}
# a pretrained BERT at the mini's lr 2e-3 ends at chance (5 of 6 runs on the majority class): finetune's defaults
MINILM_FINETUNE = {"lr": 3e-4, "layer_decay": 0.8}
# the mini's pretraining settings: at the default budget, masking 25% instead of 15% is what lifts the held-out
# RTD ROC-AUC off chance (0.67 vs 0.54; benchmarks/results/sweep-demo-budget/)
RECIPE = {"lr": 1e-3, "generator_fraction": 1 / 4, "mask_prob": 0.25}
MODELS = {  # name -> ConvBertConfig overrides of the mini preset
    "ConvBERT (sdconv)": {"conv_type": "sdconv"},
    "ELECTRA (noconv, head_ratio 1)": {"conv_type": "noconv", "head_ratio": 1},
}
ABLATION = {"ConvBERT (dconv)": {"conv_type": "dconv"}, "ConvBERT (lconv)": {"conv_type": "lconv"}}
RANDOM, MINILM = "ConvBERT, random init", "MiniLM-L6-H384 (pretrained BERT)"
FINETUNE_MAX_LENGTH = 64  # the movie-review sentences: 99.9% are shorter


def split_sentiment(rows: list[tuple[str, float, str]], seed: int = 0) -> dict[str, list[dict]]:
    """80/10/10 train/dev/test of (text, pos|neg) after a seeded shuffle; |rating| < 0.5 dropped."""
    items = [{"id": i, "text": t, "label": "pos" if s > 0 else "neg"} for i, s, t in rows if abs(s) >= 0.5]
    order = np.random.default_rng(seed).permutation(len(items))
    a, b = int(0.8 * len(items)), int(0.9 * len(items))
    return {
        name: [items[k] for k in order[lo:hi]]
        for name, lo, hi in (("train", 0, a), ("dev", a, b), ("test", b, len(items)))
    }


def write_data(vader: Path, data: Path) -> tuple[dict[str, Path], Path]:
    """Sentiment splits as JSONL and VADER's pretraining text: everything but the dev/test sentences."""
    data.mkdir(parents=True, exist_ok=True)
    splits = split_sentiment(fetch.read_vader(vader / "movieReviewSnippets_GroundTruth.txt"))
    paths = {}
    for name, items in splits.items():
        paths[name] = data / f"sentiment-{name}.jsonl"
        atomic_write_text(paths[name], "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in items))
    held_out = {e["id"] for name in ("dev", "test") for e in splits[name]}
    docs = []
    for fname in fetch.VADER_FILES:
        rows = fetch.read_vader(vader / fname)
        keep = [t for i, _, t in rows if not (fname.startswith("movie") and i in held_out)]
        docs += ["\n".join(keep[k : k + 20]) for k in range(0, len(keep), 20)]  # 20 sentences a document
    corpus = data / "pretrain-vader.txt"
    atomic_write_text(corpus, "\n\n".join(docs) + "\n")
    return paths, corpus


def label_subset(train: Path, budget: int | None, seed: int) -> Path:
    """The training file of a label budget: `budget` sentences drawn with `seed` (None: all of them)."""
    if budget is None:
        return train
    path = train.with_name(f"{train.stem}-{budget}-seed{seed}.jsonl")
    if not path.exists():
        lines = train.read_text(encoding="utf-8").splitlines()
        keep = np.random.default_rng([seed, budget]).permutation(len(lines))[:budget]
        atomic_write_text(path, "".join(lines[k] + "\n" for k in sorted(keep)))
    return path


# ------------------------------------------------------------------------------------------ the run
def run_demo(cfg: DemoConfig) -> str:
    """The whole pipeline; returns the results table (also written, with the figures, to OUT/BUDGET/)."""
    t_start = time.perf_counter()
    budget = BUDGETS[cfg.budget]
    jobs = 1 if cfg.device == "cuda" else cfg.jobs or min(2, available_cores())
    out = Path(cfg.out) / cfg.budget
    data_dir = Path(cfg.data_dir) if cfg.data_dir else None
    splits, tok_dir, shards = prepare_data(out, budget, data_dir, jobs)
    tok = ConvBertTokenizer.from_pretrained(tok_dir)
    base = ConvBertConfig.preset("mini", vocab_size=tok.vocab_size)
    models = {**MODELS, **(ABLATION if cfg.ablation else {})}
    rows = pretrained_rows(out, budget, base, models, shards, cfg.device, jobs)
    rows.append(random_init_row(out, budget, base, tok))
    if cfg.minilm:
        rows.append(minilm_row(out, data_dir, cfg.minilm_seeds or budget.finetune_seeds))
    results = finetune_rows(out, budget, rows, splits, cfg.device, jobs)
    summary = summarize_runs(rows, results, budget.label_budgets)
    atomic_write_json(out / "results.json", summary)
    title = results_title(cfg.budget, budget, jobs, time.perf_counter() - t_start)
    table = results_table(rows, summary, title, budget.label_budgets, budget.finetune_seeds)
    atomic_write_text(out / "results.md", table)
    plot_pretraining(rows, out / "pretraining_curves.png")
    plot_learning_curve(rows, results, budget.label_budgets, splits["train"], out / "learning_curve.png")
    write_run_config(out, cfg)
    return table


def prepare_data(out: Path, budget: Budget, data_dir: Path | None, jobs: int) -> tuple[dict[str, Path], Path, Path]:
    """The sentiment splits, a WordPiece vocab and pretraining shards (each reused when present)."""
    splits, vader_text = write_data(fetch.vader_dir(data_dir), out / "data")
    texts = [vader_text, *corpora.corpus_files(budget.corpora, data_dir)]
    tok_dir, shards = out / "tokenizer", out / "shards"
    if not (tok_dir / "tokenizer.json").exists():
        ConvBertTokenizer.train(texts, vocab_size=budget.vocab_size).save_pretrained(tok_dir)
    if not (shards / "manifest.json").exists():
        prepare(texts, tok_dir, shards, max_seq_length=budget.seq_len, num_workers=jobs)
    return splits, tok_dir, shards


def pretrained_rows(
    out: Path,
    budget: Budget,
    base: ConvBertConfig,
    models: dict[str, dict],
    shards: Path,
    device: str | None,
    jobs: int,
) -> list[dict]:
    """Pretrain every model at the first one's FLOPs, `budget.pretrain_seeds` seeds each; a row per model."""
    reference_flops = None
    rows, pretrain_jobs = [], []
    for name, overrides in models.items():
        disc = base.replace(**overrides)
        step_flops = pretraining_flops(
            disc, generator_config(disc, RECIPE["generator_fraction"]), budget.batch_size, budget.seq_len, 1
        )
        reference_flops = reference_flops or step_flops * budget.steps
        steps = max(1, round(reference_flops / step_flops))
        row = {"model": name, "params": param_count(disc), "flops": step_flops * steps, "steps": steps, "runs": []}
        for seed in range(budget.pretrain_seeds):
            run = out / "pretrain" / f"{slug(name)}-seed{seed}"
            pretrain_jobs.append(
                PretrainConfig(
                    data=str(shards),
                    out=str(run),
                    preset="mini",
                    model=overrides,
                    batch_size=budget.batch_size,
                    max_steps=steps,
                    save_every=steps,
                    log_every=max(1, steps // 40),
                    eval_every=max(1, steps // 10),
                    seed=seed,
                    device=device,
                    **RECIPE,
                )
            )
            row["runs"].append(run)
        rows.append(row)
    walls = iter(run_jobs(pretrain_or_reuse, pretrain_jobs, jobs))
    for row in rows:
        row["wall_s"] = [_wall(run, next(walls)[1]) for run in row["runs"]]
        row["dirs"] = [run / "discriminator" for run in row["runs"]]
    return rows


def random_init_row(out: Path, budget: Budget, base: ConvBertConfig, tok: ConvBertTokenizer) -> dict:
    """Randomly initialised minis, one per pretraining seed."""
    dirs = []
    for seed in range(budget.pretrain_seeds):
        dirs.append(out / "random-init" / f"seed{seed}")
        if not (dirs[-1] / "config.json").exists():
            torch.manual_seed(seed)
            ConvBertModel(base).save_pretrained(dirs[-1], tokenizer=tok)
    return {
        "model": RANDOM,
        "params": param_count(base),
        "flops": 0.0,
        "steps": 0,
        "wall_s": [0.0],
        "dirs": dirs,
        "runs": [],
    }


def minilm_row(out: Path, data_dir: Path | None, seeds: int) -> dict:
    """MiniLM-L6-H384 from its wheel, converted with `convert from-bert`, fine-tuned with MINILM_FINETUNE."""
    minilm_dir = out / "minilm"
    if not (minilm_dir / "config.json").exists():
        convert_bert(fetch.minilm_dir(data_dir), minilm_dir)
    config = ConvBertConfig.from_json_file(minilm_dir / "config.json")
    return {
        "model": MINILM,
        "params": param_count(config),
        "flops": math.nan,
        "steps": math.nan,
        "wall_s": [math.nan],
        "dirs": [minilm_dir],
        "runs": [],
        "seeds": seeds,
        "finetune": MINILM_FINETUNE,
    }


def finetune_rows(
    out: Path, budget: Budget, rows: list[dict], splits: dict[str, Path], device: str | None, jobs: int
) -> dict[tuple[str, int | None], list[dict]]:
    """Fine-tune every row at every label budget and seed: (model, labels) -> the runs' metrics."""
    ft_jobs, ft_tags = [], []
    for row in rows:
        for seed in range(row.get("seeds", budget.finetune_seeds)):
            model_dir = row["dirs"][seed % len(row["dirs"])]  # fine-tuning seeds spread over pretraining seeds
            for labels in budget.label_budgets:
                run = out / "finetune" / slug(row["model"]) / f"{labels or 'all'}-seed{seed}"
                ft_tags.append((row["model"], labels))
                ft_jobs.append(
                    FinetuneConfig(
                        model=str(model_dir),
                        task="custom",
                        train=str(label_subset(splits["train"], labels, seed)),
                        dev=str(splits["dev"]),
                        test=str(splits["test"]),
                        out=str(run),
                        seed=seed,
                        max_length=FINETUNE_MAX_LENGTH,
                        min_steps=budget.finetune_min_steps,
                        max_steps=budget.finetune_max_steps,
                        device=device,
                        overwrite=True,
                        **{**FINETUNE, **row.get("finetune", {})},
                    )
                )
    results: dict[tuple[str, int | None], list[dict]] = {}
    for tag, (metrics, _) in zip(ft_tags, run_jobs(finetune_or_reuse, ft_jobs, jobs), strict=True):
        results.setdefault(tag, []).append(metrics)
    return results


def results_title(budget_name: str, budget: Budget, jobs: int, wall_s: float) -> list[str]:
    threads = "in process" if jobs == 1 else f"{jobs} jobs at a time, one thread each"
    sources = ", ".join(("VADER",) + budget.corpora)
    return [
        f"# convbert demo ({budget_name} budget, {date.today().isoformat()}, torch {torch.__version__}, "
        f"{available_cores()} cores, {threads}; whole run {wall_s / 60:.1f} min)",
        "",
        f"Pretraining: {sources}; WordPiece vocab {budget.vocab_size}, sequences of {budget.seq_len}, batch "
        f"{budget.batch_size}, {budget.pretrain_seeds} pretraining seeds per model (AUC: mean ± 95% interval; "
        f"each seed in results.json). Fine-tuning: binary sentiment on the movie-review sentences with "
        f"`convbert finetune` at lr {FINETUNE['lr']:g}, layer decay {FINETUNE['layer_decay']:g}, "
        f"{budget.finetune_min_steps}-{budget.finetune_max_steps} steps (evaluated every {FINETUNE['eval_steps']} "
        f"and the best kept), {budget.finetune_seeds} seeds per "
        "model and label budget; test accuracy (%) as mean ± 95% interval.",
    ]


def pretrain_or_reuse(cfg: PretrainConfig) -> Path:
    """A finished run (its final checkpoint and exports exist) with the same settings is reused."""
    run = Path(cfg.out)
    if (run / RUN_CONFIG).exists():
        require_same_settings(run / RUN_CONFIG, dataclasses.asdict(cfg), cfg.out)
    if (run / "discriminator" / "model.safetensors").exists() and (run / f"step-{cfg.max_steps:08d}").exists():
        return run
    return pretrain(cfg)


def finetune_or_reuse(cfg: FinetuneConfig) -> dict[str, Any]:
    """A finished run (its metrics.json) with the same settings is reused."""
    done = Path(cfg.out) / "metrics.json"
    if not done.exists():
        return finetune(cfg)
    metrics = json.loads(done.read_text())
    require_same_settings(
        done, {**dataclasses.asdict(cfg), "overwrite": metrics["config"].get("overwrite")}, cfg.out, metrics["config"]
    )
    return metrics


def require_same_settings(path: Path, wanted: dict[str, Any], out: str, saved: dict[str, Any] | None = None) -> None:
    """A run directory left by an earlier demo must hold the run asked for, or the demo would report it."""
    saved = json.loads(path.read_text()) if saved is None else saved
    ignore = {"resume", "device", "compile", "world_size"}
    diff = [
        f"{k} {saved[k]!r} != {v!r}"
        for k, v in wanted.items()
        if k in saved and k not in ignore and v is not None and saved[k] != v
    ]
    if diff:
        raise InputError(f"{out} holds a run with other settings ({'; '.join(diff)}): remove it or pass another --out")


def run_jobs(fn: Callable[[Any], Any], configs: list[Any], jobs: int) -> list[tuple[Any, float]]:
    """(fn(config), wall seconds) for each config, in order. jobs > 1: that many spawned worker processes, one
    torch thread each (small models use two cores better as two jobs than as two threads), each worker's
    progress bar on its own line."""
    if jobs == 1:
        return [_timed(fn, c) for c in configs]
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Queue()
    for k in range(jobs):
        slots.put(k)
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(slots, os.getpid())) as pool:
        return list(pool.map(_timed, [fn] * len(configs), configs))


def _init_worker(slots: Any, parent: int) -> None:
    os.environ["TQDM_POSITION"] = str(slots.get())  # tqdm reads its defaults from TQDM_* variables
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End the worker once the demo is gone (killed, SIGTERM): it would otherwise finish its run and write it.
    It leaves what any killed run leaves: checkpoints to resume from, nothing half-written."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _timed(fn: Callable[[Any], Any], config: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(config), time.perf_counter() - t0


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def _wall(run: Path, measured: float) -> float:
    """Pretraining wall time from the run log (so a reused run reports its original time)."""
    try:
        return read_log(run)["elapsed_s"][-1]
    except Exception:  # no log (e.g. a reused run without one): what we measured
        return measured


@dataclass
class DemoConfig:
    out: str = "runs/demo"  # results go to OUT/BUDGET/
    data_dir: str | None = None  # data cache (default ~/.cache/convbert or $CONVBERT_CACHE)
    budget: BudgetName = "default"  # tiny: a smoke run (about a minute); default: about 18 min on 2 CPU cores; long:
    # 10x the pretraining (2e14 FLOPs a run) and 600-750 fine-tuning steps (about 3 h)
    ablation: bool = False  # also dconv and lconv minis (paper Table 2)
    minilm: bool = False  # also fine-tune a real pretrained BERT (MiniLM-L6-H384; 90 MB download, ~14x a mini's
    # cost)
    minilm_seeds: PositiveInt | None = None  # fine-tuning seeds of the MiniLM row (default: the budget's)
    jobs: PositiveInt | None = None  # runs at a time, one thread each (default: 2, or 1 on one core or on CUDA); 1
    # runs everything in this process
    device: Device | None = None  # default: cpu

    def __post_init__(self) -> None:
        validate(self)


def _run(cfg: DemoConfig) -> int:
    print(run_demo(cfg))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "demo",
        DemoConfig,
        _run,
        description=__doc__,
        help="pretrain + fine-tune ConvBERT vs ELECTRA on real data (the main job)",
        aliases={"out": ["--output_dir"]},
        metavars={"out": "DIR", "data_dir": "DIR"},
    )
