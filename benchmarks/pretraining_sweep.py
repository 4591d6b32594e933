"""What pretraining buys a mini ConvBERT on this machine: held-out pretraining metrics at equal FLOPs and the
sentiment accuracy they lead to at 250 and 1,000 labels and with every label, against random initialisation.

Data: the demo's split of the VADER movie-review sentences (train/dev/test; dev and test never pretrained on)
and its pretraining text (every other VADER sentence) plus the registry corpora of `convbert.tools.corpora`
(`--corpora`, default all six: State of the Union, Brown, Austen, Moby-Dick, fine-food reviews, WordNet).
A recipe (`RECIPES`) is a `convbert pretrain` configuration of the mini; each runs for the same pretraining FLOPs
(`--flops`), checkpointed at `--points` equal fractions of them, and each checkpoint is fine-tuned with
`convbert finetune`'s defaults at every label budget (`--seeds` seeds; the subset of a budget is drawn per seed,
the same for every model). Random init is fine-tuned the same way. Runs go two at a time, one thread each.

    .venv/bin/python benchmarks/pretraining_sweep.py --recipes base nodrop --flops 5e13 --points 4
    .venv/bin/python benchmarks/pretraining_sweep.py --report    # the tables of what has run

`--demo-finetune` fine-tunes with the demo's short recipe instead, so that a long run lines up with the demo's
table; `--no-pretrain` fine-tunes the checkpoints a run still under way has saved so far (in another process).

Writes OUT/results.jsonl (a line per fine-tuning run and per held-out evaluation) and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from convbert.checkpoints import find_checkpoints
from convbert.config import ConvBertConfig
from convbert.demo import BUDGETS, FINETUNE, finetune_or_reuse, label_subset, pretrain_or_reuse, run_jobs, write_data
from convbert.demo_report import at_chance, interval, single_class
from convbert.fileio import atomic_write_text
from convbert.finetuning.config import FinetuneConfig
from convbert.flops import pretraining_flops
from convbert.model import ConvBertModel
from convbert.pretraining.config import PretrainConfig
from convbert.pretraining.data import prepare
from convbert.pretraining.objective import generator_config
from convbert.pretraining.recipe import build_configs
from convbert.tokenizer import ConvBertTokenizer
from convbert.tools import corpora, fetch
from convbert.tools.plots import read_log

VOCAB = 8000
# name -> (PretrainConfig fields, mini ConvBertConfig overrides); "seq_len" picks the shards
RECIPES: dict[str, tuple[dict, dict]] = {
    "base": ({"seq_len": 128, "batch_size": 32, "lr": 1e-3}, {}),
    "seq64": ({"seq_len": 64, "batch_size": 64, "lr": 1e-3}, {}),
    "nodrop": (
        {"seq_len": 128, "batch_size": 32, "lr": 1e-3},
        {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    ),
    "lr2e-3": ({"seq_len": 128, "batch_size": 32, "lr": 2e-3}, {}),
    "lr5e-4": ({"seq_len": 128, "batch_size": 32, "lr": 5e-4}, {}),
    "batch128": ({"seq_len": 128, "batch_size": 128, "lr": 2e-3}, {}),
    "batch16": ({"seq_len": 128, "batch_size": 16, "lr": 1e-3}, {}),
    "mask25": ({"seq_len": 128, "batch_size": 32, "lr": 1e-3, "mask_prob": 0.25}, {}),
    "gen1/2": ({"seq_len": 128, "batch_size": 32, "lr": 1e-3, "generator_fraction": 1 / 2}, {}),
    "disc20": ({"seq_len": 128, "batch_size": 32, "lr": 1e-3, "disc_weight": 20.0}, {}),
    "mlm": ({"seq_len": 128, "batch_size": 32, "lr": 1e-3, "objective": "mlm"}, {}),
    "electra": ({"seq_len": 128, "batch_size": 32, "lr": 1e-3}, {"conv_type": "noconv", "head_ratio": 1}),
    "electra-mask25": (
        {"seq_len": 128, "batch_size": 32, "lr": 1e-3, "mask_prob": 0.25},
        {"conv_type": "noconv", "head_ratio": 1},
    ),
    "deep6": ({"seq_len": 128, "batch_size": 32, "lr": 1e-3}, {"num_hidden_layers": 6}),
    "wide192": (
        {"seq_len": 128, "batch_size": 32, "lr": 1e-3},
        {"hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 6},
    ),
}

LABELS = {
    "base": "ConvBERT mini (sdconv)",
    "electra": "ELECTRA mini (noconv, head_ratio 1)",
    "mask25": "ConvBERT mini (sdconv), 25% masking",
    "electra-mask25": "ELECTRA mini (noconv, head_ratio 1), 25% masking",
}


def build_data(out: Path, names: list[str], seq_lens: set[int]) -> tuple[dict[str, Path], Path, dict[int, Path]]:
    """Sentiment splits, the tokenizer (trained on all pretraining text) and shards per sequence length."""
    splits, vader_text = write_data(fetch.vader_dir(), out / "data")
    texts = [vader_text, *corpora.corpus_files(names)]
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        ConvBertTokenizer.train(texts, vocab_size=VOCAB).save_pretrained(tok_dir)
    shards = {}
    for L in sorted(seq_lens):
        shards[L] = out / f"shards-{L}"
        if not (shards[L] / "manifest.json").exists():
            prepare(texts, tok_dir, shards[L], max_seq_length=L, num_workers=2)
    return splits, tok_dir, shards


def pretrain_jobs(
    recipes: list[str], flops: float, points: int, shards: dict[int, Path], tok: ConvBertTokenizer, out: Path, seed: int
) -> list[tuple[str, PretrainConfig, list[int]]]:
    jobs = []
    for name in recipes:
        settings, overrides = RECIPES[name]
        settings = dict(settings)
        L = settings.pop("seq_len")
        disc = ConvBertConfig.preset("mini", vocab_size=tok.vocab_size, **overrides)
        objective = settings.get("objective", "electra")
        gen = generator_config(disc, settings.get("generator_fraction", 1 / 4)) if objective == "electra" else None
        steps = max(1, round(flops / pretraining_flops(disc, gen, settings["batch_size"], L, 1)))
        every = -(-steps // points)
        marks = [min(steps, every * (k + 1)) for k in range(points)]  # the checkpoints' steps
        cfg = PretrainConfig(
            data=str(shards[L]),
            out=str(out / "pretrain" / f"{name}-s{seed}"),
            preset="mini",
            model=overrides,
            max_steps=steps,
            save_every=every,
            keep_checkpoints=points,
            log_every=max(1, steps // 50),
            eval_every=max(1, steps // 20),
            seed=seed,
            **{"generator_fraction": 1 / 4, **settings},
        )
        jobs.append((name, cfg, marks))
    return jobs


def checkpoint_model(run: Path, step: int, tok: ConvBertTokenizer) -> Path:
    """The discriminator's encoder (the generator's, for the MLM objective) at a checkpoint, as a model dir; the
    run may still be under way."""
    dest = run / f"model-{step:08d}"
    if (dest / "config.json").exists():
        return dest
    cfg = PretrainConfig(**json.loads((run / "run_config.json").read_text()))
    role = "discriminator" if cfg.objective == "electra" else "generator"  # full size in MLM mode
    config, _ = build_configs(cfg, tok.vocab_size, seq_len=0)  # the shards were checked when the run began
    weights = load_file(str(run / f"step-{step:08d}" / "model.safetensors"))
    prefix = f"{role}.convbert."
    # fine-tuned with the usual dropout, pretrained with or without
    model = ConvBertModel(config.replace(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    model.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    model.save_pretrained(dest, tokenizer=tok)
    return dest


def finetune_jobs(
    model_dir: Path, tag: dict, splits: dict[str, Path], budgets: list[int | None], seeds: int, out: Path, **recipe
) -> list[tuple[dict, FinetuneConfig]]:
    jobs = []
    for budget in budgets:
        for seed in range(seeds):
            run = out / "finetune" / tag["recipe_ft"] / f"{tag['model']}-{budget or 'all'}-seed{seed}"
            jobs.append(
                (
                    {**tag, "labels": budget or "all", "seed": seed, "dir": str(run)},
                    FinetuneConfig(
                        model=str(model_dir),
                        task="custom",
                        train=str(label_subset(splits["train"], budget, seed)),
                        dev=str(splits["dev"]),
                        test=str(splits["test"]),
                        out=str(run),
                        seed=seed,
                        max_length=64,
                        overwrite=True,
                        **recipe,
                    ),
                )
            )
    return jobs


def record(out: Path, rows: list[dict]) -> None:
    with (out / "results.jsonl").open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def result_row(tag: dict, metrics: dict) -> dict:
    hist = metrics["history"]
    first_epoch_loss = hist[0]["train_loss"] if hist else math.nan
    test = metrics["test"]["test"]
    return {
        **tag,
        "kind": "finetune",
        "dev_accuracy": metrics["best"]["metrics"]["dev"]["accuracy"],
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test.get("macro_f1", test.get("f1", math.nan)),
        "first_eval_train_loss": first_epoch_loss,
        "at_chance": at_chance(metrics),
        "single_class": single_class(metrics),
        "steps": metrics["steps"],
        "epochs": metrics["epochs"],
    }


def read_results(out: Path) -> list[dict]:
    """The rows of results.jsonl, each evaluation and fine-tuning run once (a rerun records them again)."""
    rows: dict[tuple, dict] = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[(r["kind"], r["recipe"], r["step"]) if r["kind"] == "eval" else (r["kind"], r["dir"])] = r
    return list(rows.values())


def report(out: Path) -> str:
    rows = read_results(out)
    evals = [r for r in rows if r["kind"] == "eval"]
    fts = [r for r in rows if r["kind"] == "finetune"]
    lines = [
        "# Pretraining sweep (mini, this machine)",
        "",
        "## Held-out pretraining metrics",
        "",
        "| recipe | step | FLOPs | RTD loss | constant guess | RTD ROC-AUC | MLM loss | gen acc | token cosine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in evals:
        lines.append(
            f"| {r['recipe']} | {r['step']} | {r['train_flops']:.2e} | {r.get('disc_loss', math.nan):.4f} | "
            f"{r.get('constant_loss', math.nan):.4f} | {r.get('disc_auc', math.nan):.3f} | "
            f"{r['mlm_loss']:.3f} | {r['gen_acc']:.3f} | {r.get('token_cosine', math.nan):.3f} |"
        )
    lines += [
        "",
        "## Fine-tuned test accuracy (mean ± std over seeds; min / max)",
        "",
        "| model | FLOPs | labels | runs | test accuracy | test macro-F1 | at chance | one class |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in fts:
        groups.setdefault((r.get("recipe_ft", "defaults"), r["model"], r["flops"], str(r["labels"])), []).append(r)
    for (recipe_ft, model, flops, labels), rs in sorted(groups.items()):
        model = f"{model} (fine-tuning: {recipe_ft})"
        acc = np.array([r["test_accuracy"] for r in rs]) * 100
        f1 = np.array([r["test_macro_f1"] for r in rs]) * 100
        # rows recorded before the demo's judgement (demo_report.at_chance) have the first evaluation's loss only
        stuck = sum(r.get("at_chance", abs(r["first_eval_train_loss"] - math.log(2)) < 0.01) for r in rs)
        one_class = sum(r.get("single_class", False) for r in rs)
        std = acc.std(ddof=1) if len(acc) > 1 else 0.0
        lines.append(
            f"| {model} | {flops:.2e} | {labels} | {len(rs)} | {acc.mean():.1f} ± {std:.1f} "
            f"({acc.min():.1f} / {acc.max():.1f}) | {f1.mean():.1f} | {stuck} | {one_class} |"
        )
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", text)
    return text


def plot_crossover(out: Path, recipes: list[str], budgets: list[str], recipe_ft: str) -> Path:
    """Test accuracy against pretraining FLOPs per recipe and label budget (fine-tuned with `recipe_ft`), random
    init as a band."""
    from convbert.tools.plots import pyplot

    rows = read_results(out)
    fts = [r for r in rows if r["kind"] == "finetune" and r.get("recipe_ft", "defaults") == recipe_ft]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4.5), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        rand = [r["test_accuracy"] * 100 for r in fts if r["recipe"] == "random" and str(r["labels"]) == budget]
        if rand:
            m, h = interval(rand)
            ax.axhspan(m - h, m + h, color="gray", alpha=0.25, label=f"random init ({m:.1f} ± {h:.1f})")
            ax.axhline(m, color="gray", lw=1)
        for recipe in recipes:
            pts: dict[float, list[float]] = {}
            for r in fts:
                if r["recipe"] == recipe and str(r["labels"]) == budget:
                    pts.setdefault(r["flops"], []).append(r["test_accuracy"] * 100)
            if pts:
                xs = sorted(pts)
                ms, hs = zip(*(interval(pts[x]) for x in xs))
                ax.errorbar(xs, ms, yerr=hs, marker="o", capsize=3, label=LABELS.get(recipe, f"ConvBERT, {recipe}"))
        ax.set_xscale("log")
        ax.set_xlabel("pretraining FLOPs (ELECTRA's counting)")
        ax.set_ylabel("sentiment test accuracy (%), 95% interval")
        ax.set_title(f"{budget} labels (fine-tuning: {recipe_ft})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"crossover-{recipe_ft}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--recipes", nargs="*", default=["base"], choices=list(RECIPES))
    p.add_argument("--corpora", nargs="*", default=list(corpora.SOURCES))
    p.add_argument("--flops", type=float, default=5e13, help="pretraining FLOPs per recipe (ELECTRA's counting)")
    p.add_argument("--points", type=int, default=4, help="checkpoints fine-tuned along the way")
    p.add_argument("--budgets", nargs="*", default=["250", "1000", "all"])
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds")
    p.add_argument("--pretrain-seed", type=int, default=0)
    p.add_argument("--random-init", action="store_true", help="also fine-tune a randomly initialised mini")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (1: in this process)")
    p.add_argument("--threads", type=int, help="torch threads of an in-process run (--jobs 1)")
    p.add_argument("--finetune-lr", type=float, help="default: convbert finetune's")
    p.add_argument("--layer-decay", type=float, help="default: convbert finetune's")
    p.add_argument(
        "--demo-finetune",
        action="store_true",
        help="fine-tune with the demo's short recipe (demo.FINETUNE, its default budget's 100-250 steps) instead",
    )
    p.add_argument("--steps", type=int, nargs="*", help="fine-tune only these checkpoint steps")
    p.add_argument(
        "--no-pretrain",
        action="store_true",
        help="fine-tune the checkpoints saved so far without training further (a long run still under way)",
    )
    p.add_argument("--report", action="store_true", help="only print the tables of what has run (and plot)")
    args = p.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = {k: v for k, v in (("lr", args.finetune_lr), ("layer_decay", args.layer_decay)) if v is not None}
    recipe_ft = "-".join(f"{k}{v:g}" for k, v in recipe.items()) or "defaults"
    if args.demo_finetune:
        if recipe:
            p.error("--demo-finetune sets the learning rate and layer decay itself")
        short = BUDGETS["default"]
        recipe = {**FINETUNE, "min_steps": short.finetune_min_steps, "max_steps": short.finetune_max_steps}
        recipe_ft = "demo"
    if args.report:
        print(report(out))
        print(plot_crossover(out, args.recipes, args.budgets, recipe_ft))
        return 0
    budgets = [None if b == "all" else int(b) for b in args.budgets]
    seq_lens = {RECIPES[r][0]["seq_len"] for r in args.recipes} or {128}
    splits, tok_dir, shards = build_data(out, args.corpora, seq_lens)
    tok = ConvBertTokenizer.from_pretrained(tok_dir)
    jobs = pretrain_jobs(args.recipes, args.flops, args.points, shards, tok, out, args.pretrain_seed)
    if args.no_pretrain:
        missing = [cfg.out for _, cfg, _ in jobs if not find_checkpoints(Path(cfg.out))]
        if missing:
            p.error(f"--no-pretrain: no checkpoint in {', '.join(missing)}")
    else:
        run_jobs(pretrain_or_reuse, [cfg for _, cfg, _ in jobs], args.jobs)
    ft: list[tuple[dict, FinetuneConfig]] = []
    for name, cfg, _ in jobs:
        run = Path(cfg.out)
        evals = read_log(run, "eval.csv")
        record(
            out,
            [
                {"kind": "eval", "recipe": name, **{k: v[i] for k, v in evals.items()}}
                for i in range(len(evals["step"]))
            ],
        )
        log = read_log(run)
        step_flops = log["train_flops"][-1] / log["step"][-1]
        saved = sorted(int(p.name.split("-")[1]) for p in find_checkpoints(run))
        marks = [m for k, m in enumerate(saved) if k + 1 == len(saved) or saved[k + 1] - m > 0.01 * cfg.max_steps]
        for step in marks:
            if args.steps and step not in args.steps:
                continue
            model_dir = checkpoint_model(run, step, tok)
            ft += finetune_jobs(
                model_dir,
                {
                    "model": f"{name}-s{cfg.seed}@{step}",
                    "recipe": name,
                    "flops": step * step_flops,
                    "recipe_ft": recipe_ft,
                },
                splits,
                budgets,
                args.seeds,
                out,
                **recipe,
            )
    if args.random_init:
        rand = out / "random-init"
        if not (rand / "config.json").exists():
            torch.manual_seed(0)
            ConvBertModel(ConvBertConfig.preset("mini", vocab_size=tok.vocab_size)).save_pretrained(rand, tok)
        ft += finetune_jobs(
            rand,
            {"model": "random-init", "recipe": "random", "flops": 0.0, "recipe_ft": recipe_ft},
            splits,
            budgets,
            args.seeds,
            out,
            **recipe,
        )
    results = run_jobs(finetune_or_reuse, [c for _, c in ft], args.jobs)
    record(out, [result_row(tag, m) for (tag, _), (m, _) in zip(ft, results)])
    print(report(out))
    if budgets:
        print(plot_crossover(out, args.recipes, args.budgets, recipe_ft))
    return 0


if __name__ == "__main__":
    sys.exit(main())
