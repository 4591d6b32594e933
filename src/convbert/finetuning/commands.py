"""`convbert finetune | evaluate | predict`: GLUE, custom classification/regression, NER and SQuAD v1.1/v2.0.

Recipe (ELECTRA/ConvBERT `configure_finetuning.py`), every value a flag: AdamW (eps 1e-6, clip 1.0), lr 3e-4
(1e-4 for base-size models, hidden >= 768), layer-wise LR decay 0.8, 10% linear warmup then linear decay to 0,
weight decay 0.01, batch 32, max length 128, 3 epochs (10 for RTE/STS-B, 2 for SQuAD) or as many as 600 optimizer
steps take on a small training set (evaluated at most 10 times, the best kept), MRPC/STS-B trained on both sentence
orders, and the official head: dropout then one linear layer on [CLS] (`--classifier-head dense` for transformers').
SQuAD defaults to max length 384 (the paper uses 512: pass --max-length 512, slow on CPU), windows overlapping by
--doc-stride 128 tokens (the Hugging Face convention; in ELECTRA's code 128 is the step between windows) and
questions cut to 64 tokens. Longer inputs are truncated (longest first; NER: the last words, which
then count as "O"); the number of truncated examples is logged and stored in metrics.json.

One process:  convbert finetune --model runs/small/discriminator --task mrpc --data glue_data --out runs/mrpc
Seed medians: convbert finetune ... --seeds 5       (OUT/seed-S/ per run, OUT/aggregate.json and .md)
One node:     torchrun --nproc_per_node 4 -m convbert finetune ...   (--batch-size is global, split over ranks)
Evaluate:     convbert evaluate --model runs/mrpc/best --task mrpc --data glue_data
Predict:      convbert predict --model runs/mrpc/best --input pairs.jsonl --output predictions.jsonl

OUT is written once the run has finished, atomically (a failed run leaves none): best/ (model dir with the
tokenizer, the epoch with the best main metric), metrics.json (resolved config, per-epoch history, best epoch,
test metrics), submission/ (GLUE test files, --predict-test), test_predictions.jsonl (custom/NER --test), and for
SQuAD the best epoch's predictions.json, nbest_predictions.json (+ null_odds.json for v2).
"""

from __future__ import annotations

import argparse
import json

import torch.distributed as dist

from ..fileio import atomic_write_text
from ..settings import add_command
from .config import EvaluateConfig, FinetuneConfig, PredictConfig
from .predict import evaluate, predict
from .recipe import finetune
from .seeds import summary_table

# transformers' TrainingArguments / run_glue.py spellings
ALIASES = {
    "lr": ["--learning_rate"],
    "epochs": ["--num_train_epochs"],
    "batch_size": ["--per_device_train_batch_size"],
    "warmup_frac": ["--warmup_ratio"],
    "grad_accum": ["--gradient_accumulation_steps"],
    "out": ["--output_dir"],
    "max_length": ["--max_seq_length"],
}
METAVARS = {
    "model": "DIR",
    "tokenizer": "DIR",
    "data": "PATH",
    "train": "FILE",
    "dev": "FILE",
    "test": "FILE",
    "out": "DIR",
    "output": "FILE",
    "input": "FILE",
    "onnx": "FILE",
}


def _finetune_command(cfg: FinetuneConfig) -> int:
    result = finetune(cfg)
    if "summary" in result:
        print(summary_table(result["summary"]), end="")
    elif result["best"] is not None:
        print(json.dumps({"best": result["best"], "test": result["test"]}, indent=2))
    return 0


def _evaluate_command(cfg: EvaluateConfig) -> int:
    result = evaluate(cfg)
    if not dist.is_initialized() or dist.get_rank() == 0:
        text = json.dumps(result, indent=2)
        if cfg.output:
            atomic_write_text(cfg.output, text + "\n")
        print(text)
    return 0


def _predict_command(cfg: PredictConfig) -> int:
    n = predict(cfg)
    print(f"wrote {n} predictions to {cfg.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `finetune`, `evaluate` and `predict` to the CLI."""
    add_command(
        subparsers,
        "finetune",
        FinetuneConfig,
        _finetune_command,
        description=__doc__,
        help="fine-tune on GLUE, a custom file, NER or SQuAD",
        aliases=ALIASES,
        metavars=METAVARS,
    )
    add_command(
        subparsers,
        "evaluate",
        EvaluateConfig,
        _evaluate_command,
        help="score a fine-tuned model on a task's dev data",
        aliases=ALIASES,
        metavars=METAVARS,
    )
    add_command(
        subparsers,
        "predict",
        PredictConfig,
        _predict_command,
        help="predict a JSONL/TSV/CSV file with a fine-tuned model",
        aliases=ALIASES,
        metavars=METAVARS,
    )
