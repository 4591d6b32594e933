"""`convbert demo`: the paper's claim in miniature, end to end on real text, on a CPU.

1. fetch the VADER ground-truth sentences from PyPI (sha256-verified, cached);
2. split the movie-review sentences once into train/dev/test (seed 0; label = sign of the human rating,
   |rating| < 0.5 dropped) and pretrain only on text outside dev and test;
3. train a WordPiece vocab, prepare shards, pretrain a mini ConvBERT (sdconv) and, at the same training
   FLOPs, a mini ELECTRA (every head self-attention, head_ratio 1, same width and depth);
4. fine-tune each, and a randomly initialised ConvBERT, on binary sentiment with 3 seeds;
5. print and write results.md, pretraining curves (discriminator loss against FLOPs) and an accuracy chart.
A second run reuses the data cache, and finished pretraining runs (their final checkpoints) too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import fetch
from .config import ConvBertConfig
from .electra import generator_config
from .fileio import atomic_write_json, atomic_write_text
from .finetune import FinetuneConfig, aggregate, finetune
from .flops import param_count, pretraining_flops
from .model import ConvBertModel
from .plots import pyplot, read_log
from .pretrain import PretrainConfig, pretrain
from .pretrain_data import prepare
from .tokenizer import ConvBertTokenizer
from .train_utils import available_cores


@dataclass(frozen=True)
class Budget:
    vocab_size: int
    seq_len: int
    batch_size: int
    steps: int  # ConvBERT pretraining steps; ELECTRA gets as many as the same FLOPs buy
    finetune_epochs: int
    finetune_max_steps: int | None
    finetune_batch: int = 32


BUDGETS = {
    "tiny": Budget(vocab_size=1000, seq_len=32, batch_size=8, steps=6, finetune_epochs=1, finetune_max_steps=4),
    "default": Budget(vocab_size=8000, seq_len=64, batch_size=32, steps=800, finetune_epochs=2,
                      finetune_max_steps=None),
    "long": Budget(vocab_size=8000, seq_len=64, batch_size=32, steps=3000, finetune_epochs=2, finetune_max_steps=None),
}
MODELS = {  # name -> ConvBertConfig overrides of the mini preset
    "ConvBERT (sdconv)": {"conv_type": "sdconv"},
    "ELECTRA (noconv, head_ratio 1)": {"conv_type": "noconv", "head_ratio": 1},
}
ABLATION = {"ConvBERT (dconv)": {"conv_type": "dconv"}, "ConvBERT (lconv)": {"conv_type": "lconv"}}
RANDOM = "ConvBERT, random init"
# The same fine-tuning for every model: the recipe's lr 3e-4 without its layer-wise decay (0.8), which holds the
# lower layers of minis pretrained for minutes (and of the random baseline) nearly still. At 1e-3 post-LN minis
# collapsed to the majority class in 5 of 9 runs.
FINETUNE_LR = 3e-4


def split_sentiment(rows: list[tuple[str, float, str]], seed: int = 0) -> dict[str, list[dict]]:
    """80/10/10 train/dev/test of (text, pos|neg) after a seeded shuffle; |rating| < 0.5 dropped."""
    items = [{"id": i, "text": t, "label": "pos" if s > 0 else "neg"} for i, s, t in rows if abs(s) >= 0.5]
    order = np.random.default_rng(seed).permutation(len(items))
    a, b = int(0.8 * len(items)), int(0.9 * len(items))
    return {name: [items[k] for k in order[lo:hi]] for name, lo, hi in
            (("train", 0, a), ("dev", a, b), ("test", b, len(items)))}


def write_data(vader: Path, data: Path) -> tuple[dict[str, Path], Path]:
    """Sentiment splits as JSONL and the pretraining text: everything but the dev/test sentences."""
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
        docs += ["\n".join(keep[k:k + 20]) for k in range(0, len(keep), 20)]  # 20 sentences a document
    corpus = data / "pretrain.txt"
    atomic_write_text(corpus, "\n\n".join(docs) + "\n")
    return paths, corpus


def run_demo(out: Path, budget_name: str = "default", data_dir: Path | None = None, ablation: bool = False,
             seeds: int = 3, jobs: int | None = None) -> str:
    t_start = time.perf_counter()
    budget = BUDGETS[budget_name]
    jobs = jobs or min(2, available_cores())
    out = out / budget_name
    vader = fetch.vader_dir(data_dir)
    splits, corpus = write_data(vader, out / "data")
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        ConvBertTokenizer.train([corpus], vocab_size=budget.vocab_size).save_pretrained(tok_dir)
    tok = ConvBertTokenizer.from_pretrained(tok_dir)
    shards = out / "shards"
    if not (shards / "manifest.json").exists():
        prepare([corpus], tok_dir, shards, max_seq_length=budget.seq_len, num_workers=1)

    models = {**MODELS, **(ABLATION if ablation else {})}
    base = ConvBertConfig.preset("mini", vocab_size=tok.vocab_size)
    reference_flops = None
    rows, pretrain_jobs = [], []
    for name, overrides in models.items():
        disc = base.replace(**overrides)
        step_flops = pretraining_flops(disc, generator_config(disc, 1 / 4), budget.batch_size, budget.seq_len, 1)
        reference_flops = reference_flops or step_flops * budget.steps
        steps = max(1, round(reference_flops / step_flops))
        run = out / "pretrain" / slug(name)
        pretrain_jobs.append(PretrainConfig(
            data=str(shards), out=str(run), preset="mini", model=overrides, batch_size=budget.batch_size,
            max_steps=steps, save_every=steps, log_every=max(1, steps // 40), seed=0, generator_fraction=1 / 4))
        rows.append({"model": name, "dir": run / "discriminator", "params": param_count(disc),
                     "flops": step_flops * steps, "steps": steps})
    for row, (_, wall) in zip(rows, run_jobs(pretrain, pretrain_jobs, jobs), strict=True):
        row["wall_s"] = _wall(row["dir"].parent, wall)
    random_dir = out / "random-init"
    torch.manual_seed(0)
    ConvBertModel(base).save_pretrained(random_dir, tokenizer=tok)
    rows.append({"model": RANDOM, "dir": random_dir, "params": param_count(base), "flops": 0.0, "steps": 0,
                 "wall_s": 0.0})

    finetune_jobs = [FinetuneConfig(
        model=str(row["dir"]), task="custom", train=str(splits["train"]), dev=str(splits["dev"]),
        test=str(splits["test"]), out=str(out / "finetune" / slug(row["model"]) / f"seed-{seed}"), seed=seed,
        epochs=budget.finetune_epochs, max_steps=budget.finetune_max_steps, batch_size=budget.finetune_batch,
        max_length=budget.seq_len, lr=FINETUNE_LR, layer_decay=1.0, overwrite=True)
        for row in rows for seed in range(seeds)]
    results = [metrics for metrics, _ in run_jobs(finetune, finetune_jobs, jobs)]
    for k, row in enumerate(rows):
        runs = results[k * seeds:(k + 1) * seeds]
        summary = aggregate(runs)
        atomic_write_json(out / "finetune" / slug(row["model"]) / "aggregate.json", summary)
        row["dev"] = summary["summary"]["dev/accuracy"]["values"]
        row["test"] = summary["summary"]["test/accuracy"]["values"]
    table = results_table(rows, budget_name, budget, seeds, jobs, time.perf_counter() - t_start)
    atomic_write_text(out / "results.md", table)
    plot_curves([r for r in rows if r["steps"]], out / "pretraining_curves.png")
    plot_accuracy(rows, out / "accuracy.png")
    return table


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
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(slots,)) as pool:
        return list(pool.map(_timed, [fn] * len(configs), configs))


def _init_worker(slots: Any) -> None:
    os.environ["TQDM_POSITION"] = str(slots.get())  # tqdm reads its defaults from TQDM_* variables
    torch.set_num_threads(1)


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


def results_table(rows: list[dict], budget_name: str, budget: Budget, seeds: int, jobs: int, wall_s: float) -> str:
    def acc(values: list[float]) -> str:
        v = np.array(values) * 100
        return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"

    threads = "in process" if jobs == 1 else f"{jobs} jobs at a time, one thread each"
    lr = f"{FINETUNE_LR:.0e}".replace("e-0", "e-")
    lines = [f"# convbert demo ({budget_name} budget, {date.today().isoformat()}, torch {torch.__version__}, "
             f"{available_cores()} cores, {threads}; whole run {wall_s / 60:.1f} min)", "",
             f"Pretraining: VADER sentences outside the sentiment dev/test splits, WordPiece vocab "
             f"{budget.vocab_size}, sequences of {budget.seq_len}, batch {budget.batch_size}; fine-tuning: binary "
             f"sentiment on the movie-review sentences, lr {lr}, {budget.finetune_epochs} epochs, batch "
             f"{budget.finetune_batch}, {seeds} seeds (mean ± std).", "",
             "| model | parameters | pretraining FLOPs | pretraining steps | pretraining wall time | dev accuracy "
             "| test accuracy |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['flops']:.2e} | {r['steps']} | "
                     f"{r['wall_s'] / 60:.1f} min | {acc(r['dev'])} | {acc(r['test'])} |")
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, r in enumerate(rows):
        log = read_log(r["dir"].parent)
        line, = ax.plot(log["train_flops"], log["disc_loss"], label=r["model"])
        p = np.clip(np.asarray(log["replaced_frac"], dtype=float), 1e-6, 1 - 1e-6)
        ax.plot(log["train_flops"], -(p * np.log(p) + (1 - p) * np.log(1 - p)), ls=":", color=line.get_color(),
                label="constant guess of the replaced fraction (no detection)" if k == 0 else None)
    ax.set_xlabel("pretraining FLOPs (ELECTRA's counting)")
    ax.set_ylabel("discriminator loss (replaced-token detection)")
    ax.legend()
    ax.set_title("Pretraining at equal FLOPs")
    fig.tight_layout()
    _save(fig, plt, path)


def plot_accuracy(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(rows))
    for k, split in enumerate(("dev", "test")):
        means = [np.mean(r[split]) * 100 for r in rows]
        stds = [np.std(r[split], ddof=1) * 100 if len(r[split]) > 1 else 0 for r in rows]
        ax.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, label=split)
    ax.set_xticks(x, [r["model"].replace(" (", "\n(") for r in rows], fontsize=8)
    ax.set_ylabel("sentiment accuracy (%)")
    lo = min(min(r["dev"] + r["test"]) for r in rows) * 100
    ax.set_ylim(max(0, lo - 10), 100)
    ax.legend()
    fig.tight_layout()
    _save(fig, plt, path)


def _save(fig, plt, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="pretrain + fine-tune ConvBERT vs ELECTRA on real data (the main job)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--data-dir", type=Path, help=f"data cache (default ~/.cache/convbert or ${fetch.CACHE_ENV})")
    p.add_argument("--budget", choices=list(BUDGETS), default="default",
                   help="tiny: a smoke run (< 2 min); default: about 15 min on 2 CPU cores; long: about 30 min")
    p.add_argument("--ablation", action="store_true", help="also dconv and lconv minis (paper Table 2)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, help="runs at a time, one thread each (default: 2, or 1 on one core); "
                   "1 runs everything in this process")
    p.set_defaults(func=lambda a: print(run_demo(a.out, a.budget, a.data_dir, a.ablation, a.seeds, a.jobs)) or 0)

