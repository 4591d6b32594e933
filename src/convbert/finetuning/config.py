"""Fine-tuning settings: the `finetune`/`evaluate` and `predict` configs, their per-task defaults (`resolve`), and
the task kinds, names and output types the other fine-tuning modules share."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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

MULTI_LABEL = "multi_label_classification"  # a sequence head's config.problem_type for multi-label tasks
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
    text_column: str | None = None  # custom/predict: text field or column (default text; QA: question)
    text_pair_column: str | None = None  # second text field or column (predict: text_pair when the input has it; QA:
    # context)
    batch_size: PositiveInt = 32  # global training batch; evaluation batch per process
    max_length: PositiveInt | None = None  # tokens per input (default 128; SQuAD 384, the paper 512)
    doc_stride: PositiveInt = 128  # SQuAD: tokens shared by consecutive windows
    max_query_length: PositiveInt = 64  # SQuAD: question tokens kept
    null_threshold: float = 0.0  # SQuAD v2: answer "" when null score - best span score > this
    precision: Precision = "fp32"  # bf16/fp16: autocast
    device: Device | None = None  # default: cuda when available

    def check_max_length(self, kind: str, pair: bool) -> None:
        """InputError naming --max-length when it cannot hold [CLS] text [SEP] (a pair: [CLS] a [SEP] b [SEP], a
        token of each) or, for SQuAD, the question (--max-query-length), the special tokens and a context window
        longer than --doc-stride."""
        if kind == QA:
            max_length = self.max_length or 384
            if max_length - self.max_query_length - 3 <= self.doc_stride:
                raise InputError(
                    f"--max-length {max_length} must exceed --max-query-length {self.max_query_length} + 3 "
                    f"special tokens + --doc-stride {self.doc_stride} (= {self.max_query_length + 3 + self.doc_stride})"
                )
            return
        least = 5 if pair else 3
        if self.max_length is not None and self.max_length < least:
            what = "[CLS] a [SEP] b [SEP] for a pair of texts" if pair else "[CLS] text [SEP]"
            raise InputError(f"--max-length {self.max_length} is too short: it must be at least {least} ({what})")


@dataclass(kw_only=True)
class TaskConfig(InferenceConfig):
    """A model and a task's labelled data (`evaluate`)."""

    task: Task  # a GLUE task, custom, ner, squad or squad_v2
    data: str | None = None  # GLUE dir (root or task dir), or GLUE as datasets has it: hub:NAME[:CONFIG], a
    # save_to_disk dir, a copy of the hub repo's parquet files; NER: dir with train.txt, dev.txt[, test.txt]
    train: str | None = None  # custom: .tsv, .csv, .jsonl, .json, .parquet, .arrow, a datasets save_to_disk dir[#SPLIT]
    # or hub:NAME[:CONFIG][#SPLIT] (the datasets cache); ner: CoNLL; squad: SQuAD JSON
    dev: str | None = None  # the split scored after every epoch (same formats)
    test: str | None = None  # custom/NER: labelled, scored with the best weights and predicted
    label_column: str = "label"  # custom: label field or column (a datasets ClassLabel: its class names)
    regression: bool = False  # custom: a numeric label (MSE; Pearson/Spearman)
    multi_label: bool = False  # custom: each row holds any number of labels (a list in JSON/table rows, or text
    # split at label_separator; an empty one: no class); sigmoid per label, BCE loss, micro-F1
    label_separator: str = ","  # multi_label: what separates the labels of a text cell (TSV/CSV, a JSON string)
    dataset: str | None = None  # GLUE/custom: a datasets dataset, a hub name (loaded through the datasets cache) or a
    # save_to_disk dir; custom: the train, dev and test settings then name its splits (default train, validation)
    dataset_config: str | None = None  # the dataset's config name (GLUE: by default the task, as the hub's GLUE has it)

    def __post_init__(self) -> None:
        validate(self)
        if self.multi_label:
            if self.task != "custom":
                raise InputError(f"--multi-label works with --task custom, not --task {self.task}")
            if self.regression:
                raise InputError("--multi-label and --regression: a label column is one or the other")
        if not self.label_separator:
            raise InputError("--label-separator must not be empty")
        if self.dataset is not None:
            _dataset_splits(self)
        kind = task_kind(self.task)
        if self.task in GLUE:
            pair = GLUE[self.task].layouts["train"].text_b is not None
        else:
            pair = self.text_pair_column is not None
        self.check_max_length(kind, pair)


_SPLIT_NAME = re.compile(r"[\w.\-]+")
_FILE_SUFFIXES = (".tsv", ".csv", ".json", ".jsonl", ".parquet", ".arrow", ".txt")


def _dataset_splits(cfg: TaskConfig) -> None:
    """Turn --dataset (+ --dataset-config) into the sources the readers take: GLUE's --data, custom's --train/--dev/
    --test (bare split names, or their defaults train and validation, become DATASET#SPLIT). Idempotent."""
    hub = not is_dir(cfg.dataset)
    if not hub and cfg.dataset_config is not None:
        raise InputError(f"--dataset-config {cfg.dataset_config}: --dataset {cfg.dataset} is a directory, not hub name")
    base = f"hub:{cfg.dataset}" if hub else cfg.dataset
    if cfg.task in GLUE:
        data = base + (f":{cfg.dataset_config or cfg.task}" if hub else "")
        if cfg.data is not None and cfg.data != data:
            raise InputError(f"--data {cfg.data} and --dataset {cfg.dataset}: give one of them")
        object.__setattr__(cfg, "data", data)
        return
    if cfg.task != "custom":
        raise InputError(f"--dataset works with the GLUE tasks and custom, not --task {cfg.task}")
    base += f":{cfg.dataset_config}" if hub and cfg.dataset_config is not None else ""
    for name, default in (("train", "train"), ("dev", "validation"), ("test", None)):
        value = getattr(cfg, name) or default
        if value is not None and _is_split_name(value):
            object.__setattr__(cfg, name, f"{base}#{value}")


def _is_split_name(value: str) -> bool:
    """A bare split name (train, validation, train.clean.100), not a file (an existing one, or a data file's name)."""
    suffix = Path(value).suffix.lower()
    return bool(_SPLIT_NAME.fullmatch(value)) and suffix not in _FILE_SUFFIXES and not Path(value).exists()


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
    grad_accum: PositiveInt = 1  # micro-batches per optimizer step (batch_size stays the global batch of a step)
    group_by_length: bool = False  # batches of rows of similar length (less padding), as transformers' Trainer
    eval_every_epoch: bool = True  # evaluate after every epoch, or only at the end
    eval_steps: PositiveInt | None = None  # also evaluate every N optimizer steps
    metric_for_best: str | None = None  # SPLIT/METRIC or METRIC of the first dev split that picks the best
    # evaluation (default: the task's main metric, e.g. dev/accuracy; higher is better)
    early_stopping_patience: PositiveInt | None = None  # stop after N evaluations without a better metric_for_best
    resume: Literal["auto", "none"] = "auto"  # auto: continue a killed run from its last evaluation (OUT.partial/)
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
    input: str  # .jsonl/.json with text[/text_pair] (QA: question, context), .tsv/.csv with a header, or a table:
    # .parquet, .arrow, a datasets save_to_disk dir[#SPLIT], hub:NAME[:CONFIG][#SPLIT]
    output: str  # .jsonl, one record per input line
    task: Task | None = None  # default: what the model's head does; squad_v2 allows "no answer"
    backend: Literal["torch", "onnx"] = "torch"  # run the weights, or an exported ONNX file
    onnx: str | None = None  # the ONNX file (--backend onnx)

    def __post_init__(self) -> None:
        validate(self)
        if is_dir(self.output):
            raise InputError(f"--output {self.output}: is a directory; name the .jsonl file to write")
        if self.task is not None:  # else `predict` checks once it knows the model's head
            self.check_max_length(task_kind(self.task), self.text_pair_column is not None)
        else:
            self.check_max_length(SEQUENCE, False)


def is_dir(path: str) -> bool:
    """Path(path).is_dir(), False for a name the OS refuses (too long, ...)."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False
