"""Fine-tuning settings: the `finetune`/`evaluate` and `predict` configs, their per-task defaults (`resolve`), and
the task kinds, names and output types the other fine-tuning modules share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch

from ..config import CLASSIFIER_HEADS, ConvBertConfig
from ..errors import InputError
from ..settings import (
    Device,
    Fraction,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Precision,
    Range,
    validate,
)
from .conll import IGNORE_INDEX
from .glue import GLUE

SEQUENCE, TOKEN, QA = "sequence", "token", "qa"
TASKS = (*GLUE, "custom", "ner", "squad", "squad_v2")
Task = Literal[TASKS]
ClassifierHead = Literal[CLASSIFIER_HEADS]
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
GLUE_MAIN = {"cola": "matthews_correlation", "stsb": "combined", "mrpc": "combined", "qqp": "combined"}  # else accuracy
TOKEN_FILL = {"tags": IGNORE_INDEX, "start_logits": -1e4, "end_logits": -1e4}  # per-token outputs: pad value

Outputs = dict[str, np.ndarray]  # per row: logits (N, C) | tags (N, T) | start_logits, end_logits (N, T)
Runner = Callable[[dict[str, torch.Tensor]], Outputs]


def task_kind(task: str) -> str:
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return QA if task.startswith("squad") else TOKEN if task == "ner" else SEQUENCE


@dataclass
class InferenceConfig:
    """What running a fine-tuned model needs: shared by `finetune`, `evaluate` and `predict`."""

    model: str  # model dir (ours or transformers'); a bare encoder or pretraining dir gets a fresh head
    tokenizer: str | None = None  # default: the model dir
    text_column: str | None = None  # custom/predict: text field (default text; QA: question)
    text_pair_column: str | None = None  # second text field (predict: text_pair when the input has it; QA: context)
    batch_size: PositiveInt = 32  # global training batch; evaluation batch per process
    max_length: PositiveInt | None = None  # tokens per input (default 128; SQuAD 384, the paper 512)
    doc_stride: PositiveInt = 128  # SQuAD: tokens shared by consecutive windows
    max_query_length: PositiveInt = 64  # SQuAD: question tokens kept
    null_threshold: float = 0.0  # SQuAD v2: answer "" when null score - best span score > this
    precision: Precision = "fp32"  # bf16/fp16: autocast
    device: Device | None = None  # default: cuda when available


@dataclass(kw_only=True)
class TaskConfig(InferenceConfig):
    """A model and a task's labelled data (`evaluate`)."""

    task: Task  # a GLUE task, custom, ner, squad or squad_v2
    data: str | None = None  # GLUE dir (root or task dir); NER: dir with train.txt, dev.txt[, test.txt]
    train: str | None = None  # custom: .tsv/.csv/.jsonl; ner: CoNLL; squad: SQuAD JSON
    dev: str | None = None  # the split scored after every epoch (same formats)
    test: str | None = None  # custom/NER: labelled, scored with the best weights and predicted
    label_column: str = "label"  # custom: label field
    regression: bool = False  # custom: a numeric label (MSE; Pearson/Spearman)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(kw_only=True)
class EvaluateConfig(TaskConfig):
    output: str | None = None  # also write the metrics JSON to this file


@dataclass(kw_only=True)
class FinetuneConfig(TaskConfig):
    out: str  # run directory (written at the end)
    lr: PositiveFloat | None = None  # peak learning rate (default 3e-4, 1e-4 when hidden_size >= 768)
    layer_decay: Annotated[float, Range(0, 1, lo_open=True)] = 0.8  # layer-wise LR decay; 1.0 disables it
    warmup_frac: Fraction = 0.1  # linear warmup, then linear decay to 0
    weight_decay: NonNegativeFloat = 0.01  # AdamW, not on biases and LayerNorm
    epochs: PositiveInt | None = None  # default per task (3; RTE/STS-B 10; SQuAD 2), more when that is < min_steps
    min_steps: PositiveInt = 600  # optimizer steps a run takes at least, unless --epochs is given (ELECTRA's
    # epochs per task give 700+ on the GLUE sets; a 1,000-example set would otherwise get 94)
    classifier_head: ClassifierHead = "linear"  # a fresh sequence head: linear (the official code's) or dense
    # (transformers')
    max_grad_norm: PositiveFloat = 1.0  # gradient clipping
    seed: int = 0  # first seed
    seeds: PositiveInt = 1  # runs with seeds seed .. seed + seeds - 1, and their mean/std/median
    max_steps: PositiveInt | None = None  # cap on optimizer steps (smoke runs)
    eval_every_epoch: bool = True  # evaluate after every epoch, or only at the end
    double_unordered: bool = True  # MRPC/STS-B: also train on (sentence2, sentence1)
    predict_test: bool = False  # GLUE: write the test submission files
    overwrite: bool = False  # replace an existing OUT


def default_epochs(task: str) -> int:
    """ELECTRA's epochs per task: 3; RTE and STS-B 10; SQuAD 2."""
    return GLUE[task].epochs if task in GLUE else 2 if task_kind(task) == QA else 3


def resolve(cfg: TaskConfig, model_config: ConvBertConfig) -> TaskConfig:
    """Fill in the per-task and per-size defaults and check them against the model."""
    c = dataclasses.replace(cfg, max_length=cfg.max_length or (384 if task_kind(cfg.task) == QA else 128))
    if isinstance(c, FinetuneConfig):
        c = dataclasses.replace(c, lr=c.lr or (1e-4 if model_config.hidden_size >= 768 else 3e-4))
    if c.max_length > model_config.max_position_embeddings:
        raise InputError(
            f"--max-length {c.max_length} exceeds the model's max_position_embeddings "
            f"{model_config.max_position_embeddings}"
        )
    return c


@dataclass(kw_only=True)
class PredictConfig(InferenceConfig):
    input: str  # .jsonl with text[/text_pair] (QA: question, context), or .tsv/.csv with a header
    output: str  # .jsonl, one record per input line
    task: Task | None = None  # default: what the model's head does; squad_v2 allows "no answer"
    backend: Literal["torch", "onnx"] = "torch"  # run the weights, or an exported ONNX file
    onnx: str | None = None  # the ONNX file (--backend onnx)

    def __post_init__(self) -> None:
        validate(self)
