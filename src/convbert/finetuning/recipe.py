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
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import CLASSIFIER_HEADS, ConvBertConfig
from ..errors import InputError
from ..fileio import atomic_dir, atomic_write_json, atomic_write_text
from ..metrics import classification_metrics, entity_f1, glue_metrics, regression_metrics, squad_evaluate
from ..model import (
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertForTokenClassification,
    PreTrained,
)
from ..tokenizer import ConvBertTokenizer
from ..train_utils import (
    PRECISIONS,
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
from .squad import SquadExample, postprocess, prepare_features, read_squad, write_predictions
from .tasks import (
    GLUE,
    IGNORE_INDEX,
    Example,
    Features,
    Sentence,
    TokenFeatures,
    _records,
    align_predictions,
    conll_labels,
    double_unordered,
    encode_examples,
    glue_task,
    read_conll,
    read_custom,
    read_glue,
    token_classification_features,
    write_glue_submission,
)

log = logging.getLogger(__name__)

SEQUENCE, TOKEN, QA = "sequence", "token", "qa"
HEADS: dict[str, type[PreTrained]] = {SEQUENCE: ConvBertForSequenceClassification,
                                      TOKEN: ConvBertForTokenClassification, QA: ConvBertForQuestionAnswering}
TASKS = (*GLUE, "custom", "ner", "squad", "squad_v2")
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
class FinetuneConfig:
    model: str  # model dir (ours or transformers'); a bare encoder or pretraining dir gets a fresh head
    task: str  # a GLUE task, custom, ner, squad or squad_v2
    out: str | None = None  # run directory (finetune)
    data: str | None = None  # GLUE dir (root or task dir); NER: dir with train.txt, dev.txt[, test.txt]
    train: str | None = None
    dev: str | None = None
    test: str | None = None  # custom/NER: labelled, scored with the best weights and predicted
    tokenizer: str | None = None  # default: the model dir
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    regression: bool = False  # custom: a numeric label (MSE; Pearson/Spearman)
    lr: float | None = None  # default 3e-4, 1e-4 when hidden_size >= 768
    layer_decay: float = 0.8  # 1.0 disables layer-wise LR decay
    warmup_frac: float = 0.1
    weight_decay: float = 0.01
    epochs: int | None = None  # default per task (3; RTE/STS-B 10; SQuAD 2), more when that is < min_steps
    min_steps: int = 600  # optimizer steps a run takes at least, unless --epochs is given (ELECTRA's epochs
    # per task give 700+ on the GLUE sets; a 1,000-example set would otherwise get 94)
    classifier_head: str = "linear"  # a fresh sequence head: linear (the official code's) or dense (transformers')
    batch_size: int = 32  # global training batch; evaluation batch per process
    max_length: int | None = None  # default 128; SQuAD 384
    doc_stride: int = 128  # SQuAD: tokens shared by consecutive windows
    max_query_length: int = 64
    null_threshold: float = 0.0  # SQuAD v2: answer "" when null score - best span score > this
    max_grad_norm: float = 1.0
    precision: str = "fp32"
    seed: int = 0
    seeds: int = 1  # runs with seeds seed .. seed + seeds - 1
    device: str | None = None
    max_steps: int | None = None  # cap on optimizer steps (smoke runs)
    eval_every_epoch: bool = True
    double_unordered: bool = True  # MRPC/STS-B: also train on (sentence2, sentence1)
    predict_test: bool = False  # GLUE: write the test submission files
    overwrite: bool = False  # replace an existing OUT


def default_epochs(task: str) -> int:
    """ELECTRA's epochs per task: 3; RTE and STS-B 10; SQuAD 2."""
    return GLUE[task].epochs if task in GLUE else 2 if task_kind(task) == QA else 3


def resolve(cfg: FinetuneConfig, model_config: ConvBertConfig) -> FinetuneConfig:
    """Fill in the per-task and per-size defaults and check the values."""
    kind = task_kind(cfg.task)
    c = dataclasses.replace(cfg, lr=cfg.lr or (1e-4 if model_config.hidden_size >= 768 else 3e-4),
                            max_length=cfg.max_length or (384 if kind == QA else 128))
    if c.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {c.precision!r}")
    if c.classifier_head not in CLASSIFIER_HEADS:
        raise InputError(f"--classifier-head must be one of {', '.join(CLASSIFIER_HEADS)}, not {c.classifier_head!r}")
    optional = tuple(name for name in ("epochs", "max_steps") if getattr(c, name) is not None)
    for name in ("batch_size", "seeds", "max_length", "min_steps") + optional:
        if getattr(c, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
    if not 0 < c.layer_decay <= 1 or not 0 <= c.warmup_frac <= 1 or c.lr <= 0 or c.weight_decay < 0:
        raise InputError("need 0 < layer_decay <= 1, 0 <= warmup_frac <= 1, lr > 0 and weight_decay >= 0")
    if c.max_length > model_config.max_position_embeddings:
        raise InputError(f"--max-length {c.max_length} exceeds the model's max_position_embeddings "
                         f"{model_config.max_position_embeddings}")
    return c


# ------------------------------------------------------------------------------------------ task data
@dataclass
class EvalSplit:
    """Rows to run the model on and what to do with their outputs."""

    name: str
    inputs: dict[str, torch.Tensor]  # input_ids, token_type_ids, attention_mask (N, T)
    num_examples: int  # examples (SQuAD: questions; N counts their windows)
    score: Callable[[Outputs], dict[str, Any]] | None = None  # metrics of a labelled split
    write: Callable[[Path, Outputs], None] | None = None  # prediction files into a directory


@dataclass
class Task:
    name: str
    kind: str  # sequence | token | qa
    labels: list[str] | None  # class names in model id order; None for regression and QA
    train: dict[str, torch.Tensor] | None  # inputs and labels / start_positions, end_positions
    evals: list[EvalSplit]  # scored after every epoch; the first one's `main` metric picks the best epoch
    tests: list[EvalSplit]  # run once with the best weights
    main: str  # metric key in evals[0]'s metrics
    counts: dict[str, int] = field(default_factory=dict)  # examples per split
    truncated: dict[str, int] = field(default_factory=dict)  # examples cut at max_length per split


def load_task(cfg: FinetuneConfig, tok: ConvBertTokenizer, model_labels: list[str] | None = None,
              train: bool = True) -> Task:
    """Read and encode every split the run needs (all input errors surface here, before any output).

    model_labels: the label names of a trained model (evaluate); None takes them from the task / training data.
    """
    kind = task_kind(cfg.task)
    if cfg.task in GLUE:
        return _glue_task(cfg, tok, model_labels, train)
    if kind == SEQUENCE:
        return _custom_task(cfg, tok, model_labels, train)
    if kind == TOKEN:
        return _ner_task(cfg, tok, model_labels, train)
    return _squad_task(cfg, tok, train)


def _need(cfg: FinetuneConfig, train: bool, *names: str) -> None:
    wanted = [n for n in names if n != "train" or train]
    missing = [f"--{n}" for n in wanted if getattr(cfg, n) is None]
    if missing:
        raise InputError(f"--task {cfg.task} needs {' and '.join(missing)}")


def _label_map(task_labels: list[str], model_labels: list[str]) -> np.ndarray:
    """Model label id -> task label id: by name, or by position for generic LABEL_i names of the same count."""
    if sorted(model_labels) == sorted(task_labels):
        return np.array([task_labels.index(label) for label in model_labels])
    if model_labels == [f"LABEL_{i}" for i in range(len(task_labels))]:
        log.warning("the model's labels are generic (LABEL_i): taking them in the task's order %s", task_labels)
        return np.arange(len(task_labels))
    raise InputError(f"the model's labels {model_labels} do not match the task's {task_labels}")


def _sequence_split(task: Task, name: str, examples: list[Example], tok: ConvBertTokenizer, max_length: int,
                    label2id: dict[str, int] | None, remap: np.ndarray | None,
                    metric: Callable[[np.ndarray, np.ndarray], dict[str, Any]] | None,
                    write: Callable[[Path, np.ndarray, np.ndarray], None] | None = None) -> EvalSplit:
    """Encode a sequence-classification split; `metric(predictions, references)` and `write(dir, predictions,
    logits)` get class ids in task order (remapped from model ids) or regression scores."""
    feats = _encoded(task, name, encode_examples(tok, examples, label2id, max_length, regression=label2id is None))
    refs = feats["labels"].numpy() if "labels" in feats else None

    def predictions(o: Outputs) -> np.ndarray:
        return o["logits"][:, 0] if remap is None else remap[o["logits"].argmax(1)]

    return EvalSplit(
        name, {k: feats[k] for k in INPUTS}, len(examples),
        score=None if metric is None else lambda o: metric(predictions(o), refs),
        write=None if write is None else lambda path, o: write(path, predictions(o), o["logits"]))


def _encoded(task: Task, name: str, feats: Features | TokenFeatures) -> dict[str, torch.Tensor]:
    """Record a split's size and truncation count (logged); its tensors."""
    n = len(feats.tensors["input_ids"])
    task.counts[name], task.truncated[name] = n, feats.num_truncated
    if feats.num_truncated:
        log.warning("%s: %d of %d examples are longer than max_length and were truncated", name,
                    feats.num_truncated, n)
    return feats.tensors


def _glue_task(cfg: FinetuneConfig, tok: ConvBertTokenizer, model_labels: list[str] | None, train: bool) -> Task:
    _need(cfg, train, "data")
    spec = glue_task(cfg.task)
    labels = None if spec.regression else list(spec.labels)
    remap = None if labels is None else _label_map(labels, model_labels or labels)
    label2id = None if labels is None else {label: i for i, label in enumerate(labels)}
    task = Task(cfg.task, SEQUENCE, labels if model_labels is None else model_labels, None, [], [],
                GLUE_MAIN.get(cfg.task, "accuracy"))
    if train:
        examples = read_glue(cfg.task, cfg.data, "train")
        if spec.double_unordered and cfg.double_unordered:
            examples = double_unordered(examples)
        task.train = _encoded(task, "train", encode_examples(tok, examples, label2id, cfg.max_length,
                                                             regression=labels is None))
    for split in spec.eval_splits:
        task.evals.append(_sequence_split(task, split, read_glue(cfg.task, cfg.data, split), tok, cfg.max_length,
                                          label2id, remap, lambda p, r: glue_metrics(cfg.task, p, r)))
    for split in spec.submissions if cfg.predict_test else ():
        examples = read_glue(cfg.task, cfg.data, split)

        def write(path: Path, preds: np.ndarray, _: np.ndarray, split: str = split, examples=examples) -> None:
            write_glue_submission(path / "submission", cfg.task, split, examples, preds)

        task.tests.append(_sequence_split(task, split, examples, tok, cfg.max_length, label2id, remap, None, write))
    return task


def _custom_task(cfg: FinetuneConfig, tok: ConvBertTokenizer, model_labels: list[str] | None, train: bool) -> Task:
    _need(cfg, train, "train", "dev")
    read = dict(text_column=cfg.text_column, text_pair_column=cfg.text_pair_column, label_column=cfg.label_column,
                regression=cfg.regression)
    labels, train_examples = model_labels, None
    if train:
        train_examples, labels = read_custom(cfg.train, **read)
        if labels is not None and len(labels) < 2:
            raise InputError(f"{cfg.train}: only one label ({labels[0]!r}); classification needs at least two")
    task = Task("custom", SEQUENCE, labels, None, [], [], "spearman" if cfg.regression else "accuracy")
    label2id = None if labels is None else {label: i for i, label in enumerate(labels)}
    remap = None if labels is None else np.arange(len(labels))
    if train_examples is not None:
        task.train = _encoded(task, "train", encode_examples(tok, train_examples, label2id, cfg.max_length,
                                                             regression=cfg.regression))

    def metric(preds: np.ndarray, refs: np.ndarray) -> dict[str, Any]:
        return regression_metrics(preds, refs) if labels is None else classification_metrics(preds, refs, len(labels))

    dev_examples, _ = read_custom(cfg.dev, **read, labels=labels)
    task.evals.append(_sequence_split(task, "dev", dev_examples, tok, cfg.max_length, label2id, remap, metric))
    if cfg.test:
        test_examples, _ = read_custom(cfg.test, **read, labels=labels)

        def write(path: Path, _: np.ndarray, logits: np.ndarray) -> None:
            rows = sequence_records(logits, labels)
            write_jsonl(path / "test_predictions.jsonl", [{"text": e.text_a, **({"text_pair": e.text_b} if e.text_b
                                                           else {}), **r} for e, r in zip(test_examples, rows)])

        task.tests.append(_sequence_split(task, "test", test_examples, tok, cfg.max_length, label2id, remap, metric,
                                          write))
    return task


def _ner_task(cfg: FinetuneConfig, tok: ConvBertTokenizer, model_labels: list[str] | None, train: bool) -> Task:
    if cfg.data is not None:
        folder = Path(cfg.data)
        files = {split: getattr(cfg, split) or (folder / f"{split}.txt") for split in ("train", "dev", "test")}
        if cfg.test is None and not files["test"].exists():
            files["test"] = None
    else:
        _need(cfg, train, "train", "dev")
        files = {split: getattr(cfg, split) for split in ("train", "dev", "test")}
    labels = model_labels
    task = Task("ner", TOKEN, labels, None, [], [], "f1")
    if train:
        sentences = read_conll(files["train"])
        labels = task.labels = conll_labels(sentences)
        label2id = {label: i for i, label in enumerate(labels)}
        task.train = _encoded(task, "train", token_classification_features(tok, sentences, label2id, cfg.max_length))
    for split in ("dev", "test"):
        if files[split] is None:
            continue
        sentences = read_conll(files[split])
        feats = token_classification_features(tok, sentences, None, cfg.max_length)
        _encoded(task, split, feats)

        def tags(o: Outputs, feats=feats) -> list[list[str]]:
            return align_predictions(o["tags"], feats, labels)

        def score(o: Outputs, sentences=sentences, tags=tags) -> dict[str, Any]:
            return entity_f1([s.tags for s in sentences], tags(o))

        def write(path: Path, o: Outputs, sentences=sentences, tags=tags) -> None:
            write_jsonl(path / "test_predictions.jsonl",
                        [{"tokens": s.tokens, "gold": s.tags, "tags": t} for s, t in zip(sentences, tags(o))])

        split_ = EvalSplit(split, {k: feats.tensors[k] for k in INPUTS}, len(sentences), score,
                           write if split == "test" else None)
        (task.evals if split == "dev" else task.tests).append(split_)
    return task


def _squad_task(cfg: FinetuneConfig, tok: ConvBertTokenizer, train: bool) -> Task:
    _need(cfg, train, "train", "dev")
    v2 = cfg.task == "squad_v2"
    windows = dict(max_length=cfg.max_length, doc_stride=cfg.doc_stride, max_query_length=cfg.max_query_length)
    task = Task(cfg.task, QA, None, None, [], [], "f1")
    if train:
        examples = read_squad(cfg.train)
        task.train = prepare_features(tok, examples, train=True, **windows).tensors
        task.counts["train"] = len(examples)
    dev = read_squad(cfg.dev)
    feats = prepare_features(tok, dev, train=False, **windows)
    task.counts["dev"] = len(dev)
    articles = json.loads(Path(cfg.dev).read_text(encoding="utf-8"))["data"]  # read_squad has validated it

    def decode(o: Outputs):
        return postprocess(dev, feats, o["start_logits"], o["end_logits"], version_2=v2,
                           null_threshold=cfg.null_threshold)

    def score(o: Outputs) -> dict[str, Any]:
        p = decode(o)
        return squad_evaluate(articles, p.predictions, p.null_odds if v2 else None)

    def write(path: Path, o: Outputs) -> None:
        p = decode(o)
        write_predictions(path, p.predictions, p.nbest, p.null_odds if v2 else None)

    task.evals.append(EvalSplit("dev", feats.tensors, len(dev), score, write))
    return task


# ------------------------------------------------------------------------------------------ running the model
def shard_indices(n: int, rank: int, world: int, seed: int | None = None, epoch: int = 0) -> np.ndarray:
    """This rank's rows, as torch's DistributedSampler: all rows (permuted by (seed, epoch) unless seed is None),
    repeated from the start up to a multiple of `world`, then every world-th one from `rank`."""
    order = np.arange(n) if seed is None else np.random.default_rng([seed, epoch]).permutation(n)
    return np.resize(order, -(-n // world) * world)[rank::world]


def merge_shards(parts: Sequence[tuple[np.ndarray, Outputs]], n: int) -> Outputs:
    """The outputs of rows 0..n-1, in order, from every rank's (rows, outputs); a row computed twice (the
    padding of `shard_indices`) counts once. Every row must be present."""
    rows = np.concatenate([np.asarray(r) for r, _ in parts])
    unique, first = np.unique(rows, return_index=True)
    if not np.array_equal(unique, np.arange(n)):
        raise RuntimeError(f"gathered outputs cover {len(unique)} distinct rows of {n}")
    return {k: np.concatenate([o[k] for _, o in parts])[first] for k in parts[0][1]}


def gather_outputs(rows: np.ndarray, outputs: Outputs, n: int, d: Dist) -> Outputs:
    """Every rank's outputs merged (each row once), on every rank."""
    parts: list[Any] = [(rows, outputs)]
    if d.world_size > 1:
        parts = [None] * d.world_size
        dist.all_gather_object(parts, (rows, outputs))
    return merge_shards(parts, n)


def _batch(tensors: Mapping[str, torch.Tensor], rows: np.ndarray, device: torch.device | None = None
           ) -> dict[str, torch.Tensor]:
    """The rows of every tensor, (N, T) ones cut to the longest attended length in the batch."""
    index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    width = int(tensors["attention_mask"][index].sum(1).max())
    return {k: (v[index][:, :width] if v.ndim == 2 else v[index]).to(device or "cpu") for k, v in tensors.items()}


def head_outputs(kind: str, raw: Mapping[str, Any]) -> Outputs:
    """The outputs a task uses from the raw head outputs (numpy): token logits become tag ids."""
    wanted = ("start_logits", "end_logits") if kind == QA else ("logits",)
    missing = [k for k in wanted if k not in raw]
    if missing:
        raise InputError(f"the model has outputs {sorted(raw)}, but a {kind} head needs {', '.join(wanted)}")
    if kind == TOKEN:
        return {"tags": np.asarray(raw["logits"]).argmax(-1)}
    return {k: np.asarray(raw[k], dtype=np.float32) for k in wanted}


def torch_runner(model: PreTrained, kind: str, device: torch.device, precision: str) -> Runner:
    names = ("start_logits", "end_logits") if kind == QA else ("logits",)

    @torch.no_grad()
    def run(batch: dict[str, torch.Tensor]) -> Outputs:
        with autocast(precision, device):
            out = model(**{k: v.to(device) for k, v in batch.items()})
        return head_outputs(kind, {k: getattr(out, k).float().cpu().numpy() for k in names})

    return run


def run_rows(run: Runner, inputs: Mapping[str, torch.Tensor], rows: np.ndarray, batch_size: int, desc: str,
             show: bool) -> Outputs:
    """Outputs of `rows` in batches; per-token outputs padded back to the split's width."""
    width = inputs["input_ids"].shape[1]
    chunks: dict[str, list[np.ndarray]] = {}
    for lo in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not show, leave=False, unit="batch"):
        for k, v in run(_batch(inputs, rows[lo:lo + batch_size])).items():
            if k in TOKEN_FILL:
                v = np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=TOKEN_FILL[k])
            chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def evaluate_splits(model: PreTrained, kind: str, splits: Sequence[EvalSplit], d: Dist, cfg: FinetuneConfig
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, Outputs]]:
    """Run every split, each rank a shard, and score it on the gathered outputs (every example exactly once)."""
    model.eval()
    run = torch_runner(model, kind, d.device, cfg.precision)
    metrics, outputs = {}, {}
    for s in splits:
        n = len(s.inputs["input_ids"])
        rows = shard_indices(n, d.rank, d.world_size)
        outputs[s.name] = gather_outputs(rows, run_rows(run, s.inputs, rows, cfg.batch_size, s.name, d.is_main), n, d)
        if s.score is not None:
            metrics[s.name] = {**s.score(outputs[s.name]), "num_examples": s.num_examples}
    return metrics, outputs


def load_head(model_dir: str | Path, kind: str, labels: list[str] | None = None, trained: bool = False,
              classifier_head: str = "linear") -> PreTrained:
    """The task head from a model dir; `labels` set the classes (None: regression for sequence heads).
    trained=True (evaluate/predict) keeps the saved labels and refuses a dir without head weights.
    A sequence head is `classifier_head` unless the dir already holds a sequence classifier."""
    cls = HEADS[kind]
    overrides: dict[str, Any] = {}
    if not trained and kind != QA:
        overrides = {"id2label": dict(enumerate(labels))} if labels else {"num_labels": 1}
        if kind == SEQUENCE:
            overrides["problem_type"] = "single_label_classification" if labels else "regression"
            saved = ConvBertConfig.from_json_file(Path(model_dir) / "config.json").architectures or []
            if cls.__name__ not in saved:
                overrides["classifier_head"] = classifier_head
    model, info = cls.from_pretrained(model_dir, output_loading_info=True, **overrides)
    if trained and info["missing_keys"]:
        raise InputError(f"{model_dir}: no trained {cls.__name__} head (missing {', '.join(info['missing_keys'])})")
    return model


# ------------------------------------------------------------------------------------------ training
def _state(model: PreTrained) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _value(x: Any) -> float:
    """A metric as a float for ranking epochs (NaN ranks lowest)."""
    v = float(x)
    return -math.inf if math.isnan(v) else v


def train_run(cfg: FinetuneConfig, task: Task, tok: ConvBertTokenizer, seed: int, d: Dist, dest: Path | None
              ) -> dict[str, Any]:
    """Fine-tune once with `seed`; rank 0 writes the run's files into `dest`. Returns the run's metrics.json."""
    t0 = time.perf_counter()
    seed_everything(seed)  # the same fresh head on every rank
    model = load_head(cfg.model, task.kind, task.labels, classifier_head=cfg.classifier_head).to(d.device)
    torch.manual_seed(seed + 1 + d.rank)  # dropout streams differ per rank
    net = DistributedDataParallel(model) if d.world_size > 1 else model
    per_rank = cfg.batch_size // d.world_size
    n = len(task.train["input_ids"])
    steps_per_epoch = -(-len(shard_indices(n, d.rank, d.world_size)) // per_rank)
    epochs = cfg.epochs or max(default_epochs(cfg.task), -(-cfg.min_steps // steps_per_epoch))
    eval_interval = -(-epochs // 10)  # short epochs: at most 10 evaluations a run (and the last epoch)
    total = min(epochs * steps_per_epoch, cfg.max_steps or math.inf)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, layer_decay=None if cfg.layer_decay == 1 else
                               cfg.layer_decay, num_layers=model.config.num_hidden_layers)
    scheduler = linear_schedule(optimizer, round(cfg.warmup_frac * total), total)
    scaler = grad_scaler(cfg.precision, d.device)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_outputs: dict[str, Outputs] = {}
    step = 0
    main_split = task.evals[0].name
    bar = tqdm(total=total, disable=not d.is_main, desc=f"{task.name} seed {seed}", unit="step")
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = loss_count = 0.0
        rows = shard_indices(n, d.rank, d.world_size, seed, epoch)
        for lo in range(0, len(rows), per_rank):
            with autocast(cfg.precision, d.device):
                loss = net(**_batch(task.train, rows[lo:lo + per_rank], d.device)).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
            if step >= total:
                break
        last = step >= total or epoch == epochs
        if not (cfg.eval_every_epoch and epoch % eval_interval == 0 or last):
            continue
        sums = all_reduce_sum({"loss": loss_sum, "n": loss_count}, d)
        metrics, outputs = evaluate_splits(model, task.kind, task.evals, d, cfg)
        entry = {"epoch": epoch, "step": step, "train_loss": sums["loss"] / max(sums["n"], 1), "metrics": metrics}
        history.append(entry)
        log.info("seed %d epoch %d step %d: %s", seed, epoch, step, _brief(metrics))
        value = _value(metrics[main_split][task.main])
        if best is None or value > _value(best["value"]):
            best = {"epoch": epoch, "step": step, "metric": f"{main_split}/{task.main}",
                    "value": metrics[main_split][task.main], "metrics": metrics}
            best_state = _state(model)
            best_outputs = {s.name: outputs[s.name] for s in task.evals if s.write is not None}
        if last:
            break
    bar.close()
    model.load_state_dict(best_state)
    test_metrics, test_outputs = evaluate_splits(model, task.kind, task.tests, d, cfg)
    result = {"task": task.name, "model": str(cfg.model), "seed": seed, "world_size": d.world_size,
              "config": dataclasses.asdict(cfg), "examples": task.counts, "truncated": task.truncated,
              "epochs": epochs, "steps": step, "elapsed_s": time.perf_counter() - t0, "history": history, "best": best,
              "test": test_metrics}
    if dest is not None:
        model.save_pretrained(dest / "best", tokenizer=tok)
        for s in task.evals:
            if s.write is not None:
                s.write(dest, best_outputs[s.name])
        for s in task.tests:
            if s.write is not None:
                s.write(dest, test_outputs[s.name])
        atomic_write_json(dest / "metrics.json", result)
    return result


def _brief(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(f"{split} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
                     for split, m in metrics.items())


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune (once per seed), keep the best epoch, write OUT atomically; returns metrics.json (or the
    aggregate over seeds)."""
    if cfg.out is None:
        raise InputError("--out is required")
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


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            flat.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[prefix + k] = float(v)
    return flat


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sample std, median and values of every metric of the runs' best epochs (and test splits), keyed
    "split/metric" (the paper reports medians over seeds)."""
    flats = [_flatten({**r["best"]["metrics"], **r["test"]}) for r in results]
    summary = {}
    for key in flats[0]:
        values = np.array([f.get(key, math.nan) for f in flats])
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "median": float(np.median(values)), "values": values.tolist()}
    return {"task": results[0]["task"], "seeds": [r["seed"] for r in results],
            "best_epochs": [r["best"]["epoch"] for r in results], "summary": summary}


def summary_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table of `aggregate`'s summary."""
    lines = ["| metric | mean | std | median | runs |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {s['mean']:.4f} | {s['std']:.4f} | {s['median']:.4f} | "
              f"{', '.join(f'{v:.4f}' for v in s['values'])} |" for k, s in summary.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ evaluate / predict
def evaluate(cfg: FinetuneConfig) -> dict[str, Any]:
    """Score a trained model on the dev split(s) (and a labelled custom/NER --test); distributed under torchrun."""
    kind = task_kind(cfg.task)
    model = load_head(cfg.model, kind, trained=True)
    cfg = resolve(cfg, model.config)
    d = setup_distributed(cfg.device)
    labels = None if kind == QA or model.config.num_labels == 1 else model.config.labels()
    if cfg.task in GLUE and GLUE[cfg.task].regression != (labels is None):
        raise InputError(f"{cfg.model}: a head with {model.config.num_labels} output(s) does not fit {cfg.task}")
    if cfg.task == "custom":
        cfg = dataclasses.replace(cfg, regression=labels is None)
    task = load_task(cfg, ConvBertTokenizer.from_pretrained(cfg.tokenizer or cfg.model), labels, train=False)
    metrics, _ = evaluate_splits(model.to(d.device), kind, task.evals + [t for t in task.tests if t.score], d, cfg)
    return {"task": cfg.task, "model": str(cfg.model), "truncated": task.truncated, **metrics}


def sequence_records(logits: np.ndarray, labels: list[str] | None) -> list[dict[str, Any]]:
    """Per row: {"score"} for regression (labels None), else {"label", "scores": {label: softmax probability}}."""
    if labels is None:
        return [{"score": float(row[0])} for row in logits]
    z = np.exp(logits - logits.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    return [{"label": labels[int(row.argmax())], "scores": dict(zip(labels, map(float, row)))} for row in probs]


def write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@dataclass
class PredictConfig:
    model: str  # trained model dir (config, tokenizer and, for --backend torch, weights)
    input: str  # .jsonl, or .tsv/.csv with a header
    output: str  # .jsonl, one record per input line
    tokenizer: str | None = None
    batch_size: int = 32
    max_length: int | None = None  # default 128; QA 384
    text_column: str | None = None  # default text (QA: question)
    text_pair_column: str | None = None  # default text_pair when the input has it (QA: context)
    backend: str = "torch"  # torch | onnx
    onnx: str | None = None  # the ONNX file (--backend onnx)
    device: str | None = None
    precision: str = "fp32"
    doc_stride: int = 128
    max_query_length: int = 64
    version_2: bool = False  # QA: answer "" when the null score wins
    null_threshold: float = 0.0


def _head_kind(config: ConvBertConfig, model_dir: str) -> str:
    for kind, cls in HEADS.items():
        if cls.__name__ in (config.architectures or []):
            return kind
    raise InputError(f"{model_dir}: config.json architectures {config.architectures} name no "
                     f"sequence/token classification or question answering head")


def predict(cfg: PredictConfig) -> int:
    """Predict every line of `cfg.input` into `cfg.output` (JSONL, atomic); returns the number of records.

    Sequence classification: label + softmax scores; regression: score; token classification: per-word tags
    of the whitespace-split text; QA (question/context fields): answer text + its n-best probability."""
    config = ConvBertConfig.from_json_file(Path(cfg.model) / "config.json")
    kind = _head_kind(config, cfg.model)
    max_length = cfg.max_length or (384 if kind == QA else 128)
    tok = ConvBertTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    text = cfg.text_column or ("question" if kind == QA else "text")
    pair = cfg.text_pair_column or ("context" if kind == QA else None)
    if pair is None and kind == SEQUENCE:
        first = next(iter(_records(Path(cfg.input))), (0, {}))[1]
        pair = "text_pair" if "text_pair" in first else None
    examples, _ = read_custom(cfg.input, text_column=text, text_pair_column=pair, label_column=None)
    if cfg.backend == "onnx":
        if cfg.onnx is None:
            raise InputError("--backend onnx needs --onnx FILE")
        from ..tools.export import OnnxPredictor

        predictor = OnnxPredictor(cfg.onnx)

        def run(batch: dict[str, torch.Tensor]) -> Outputs:
            arrays = {k: batch[k].numpy() for k in INPUTS}
            return head_outputs(kind, predictor(arrays["input_ids"], arrays["attention_mask"],
                                                arrays["token_type_ids"]))
    else:
        device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        run = torch_runner(load_head(cfg.model, kind, trained=True).to(device), kind, device, cfg.precision)

    def outputs(inputs: dict[str, torch.Tensor]) -> Outputs:
        rows = np.arange(len(inputs["input_ids"]))
        return run_rows(run, {k: inputs[k] for k in INPUTS}, rows, cfg.batch_size, "predict", True)

    if kind == SEQUENCE:
        feats = encode_examples(tok, examples, None, max_length)
        _report_truncated(cfg.input, feats.num_truncated, len(examples))
        labels = None if config.num_labels == 1 else config.labels()
        records = [{"line": int(e.guid), "text": e.text_a, **({"text_pair": e.text_b} if e.text_b else {}), **r}
                   for e, r in zip(examples, sequence_records(outputs(feats.tensors)["logits"], labels))]
    elif kind == TOKEN:
        sentences = [Sentence(e.text_a.split(), ["O"] * len(e.text_a.split()), f"{cfg.input}:{e.guid}")
                     for e in examples]
        feats = token_classification_features(tok, sentences, None, max_length)
        _report_truncated(cfg.input, feats.num_truncated, len(examples))
        tags = align_predictions(outputs(feats.tensors)["tags"], feats, config.labels())
        records = [{"line": int(e.guid), "tokens": s.tokens, "tags": t} for e, s, t in zip(examples, sentences, tags)]
    else:
        questions = [SquadExample(e.guid, e.text_a, e.text_b, []) for e in examples]
        feats = prepare_features(tok, questions, max_length, cfg.doc_stride, cfg.max_query_length, train=False)
        o = outputs(feats.tensors)
        p = postprocess(questions, feats, o["start_logits"], o["end_logits"], version_2=cfg.version_2,
                        null_threshold=cfg.null_threshold)
        records = []
        for q in questions:
            best = next((c for c in p.nbest[q.qid] if c["text"] == p.predictions[q.qid]), {"probability": 0.0})
            records.append({"line": int(q.qid), "question": q.question, "answer": p.predictions[q.qid],
                            "score": best["probability"],
                            **({"null_odds": p.null_odds[q.qid]} if cfg.version_2 else {})})
    write_jsonl(Path(cfg.output), records)
    return len(records)


def _report_truncated(source: str, count: int, total: int) -> None:
    if count:
        log.warning("%s: %d of %d inputs are longer than max_length and were truncated", source, count, total)


# ------------------------------------------------------------------------------------------ CLI
def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model dir (ours or saved by transformers)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", metavar="PATH", help="GLUE dir (root or task dir); NER: dir with train/dev[/test].txt")
    p.add_argument("--train", metavar="FILE", help="custom: .tsv/.csv/.jsonl; ner: CoNLL; squad: SQuAD JSON")
    p.add_argument("--dev", metavar="FILE")
    p.add_argument("--test", metavar="FILE", help="custom/ner: a labelled test file (scored and predicted)")
    p.add_argument("--tokenizer", metavar="DIR", help="default: the model dir")
    p.add_argument("--text-column", help="custom: text field (default text)")
    p.add_argument("--text-pair-column", help="custom: second text field")
    p.add_argument("--label-column", help="custom: label field (default label)")
    p.add_argument("--regression", action="store_true", default=None, help="custom: numeric labels")
    p.add_argument("--batch-size", type=int, help="default 32 (global when training)")
    p.add_argument("--max-length", type=int, help="default 128; SQuAD 384 (the paper: 512)")
    p.add_argument("--doc-stride", type=int, help="SQuAD: tokens shared by consecutive windows (default 128)")
    p.add_argument("--max-query-length", type=int, help="SQuAD (default 64)")
    p.add_argument("--null-threshold", type=float, help="SQuAD v2: no answer when null - best > this (default 0)")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--device", choices=("cpu", "cuda"))


def _config(args: argparse.Namespace, cls: type) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names and v is not None})


def _finetune_command(args: argparse.Namespace) -> int:
    result = finetune(_config(args, FinetuneConfig))
    if "summary" in result:
        print(summary_table(result["summary"]), end="")
    elif result["best"] is not None:
        print(json.dumps({"best": result["best"], "test": result["test"]}, indent=2))
    return 0


def _evaluate_command(args: argparse.Namespace) -> int:
    result = evaluate(_config(args, FinetuneConfig))
    if not dist.is_initialized() or dist.get_rank() == 0:
        text = json.dumps(result, indent=2)
        if args.out:
            atomic_write_text(args.out, text + "\n")
        print(text)
    return 0


def _predict_command(args: argparse.Namespace) -> int:
    n = predict(_config(args, PredictConfig))
    print(f"wrote {n} predictions to {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `finetune`, `evaluate` and `predict` to the CLI."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("finetune", help="fine-tune on GLUE, a custom file, NER or SQuAD",
                              description=__doc__, formatter_class=fmt)
    _task_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (written at the end)")
    p.add_argument("--lr", type=float, help="default 3e-4; 1e-4 for base-size models")
    p.add_argument("--layer-decay", type=float, help="layer-wise LR decay (default 0.8; 1.0 disables)")
    p.add_argument("--warmup-frac", type=float, help="default 0.1")
    p.add_argument("--weight-decay", type=float, help="default 0.01")
    p.add_argument("--epochs", type=int, help="default 3; RTE/STS-B 10; SQuAD 2; more to reach --min-steps")
    p.add_argument("--min-steps", type=int, help="optimizer steps at least, unless --epochs is given (default 600)")
    p.add_argument("--classifier-head", choices=CLASSIFIER_HEADS,
                   help="a fresh sequence head: linear (default, the official code's) or dense (transformers')")
    p.add_argument("--max-grad-norm", type=float, help="default 1.0")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--seeds", type=int, help="N runs (seeds seed..seed+N-1) and their mean/std/median")
    p.add_argument("--max-steps", type=int, help="cap on optimizer steps (smoke runs)")
    p.add_argument("--eval-every-epoch", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate after every epoch (default) or only at the end")
    p.add_argument("--double-unordered", action=argparse.BooleanOptionalAction, default=None,
                   help="MRPC/STS-B: also train on swapped pairs (default yes)")
    p.add_argument("--predict-test", action="store_true", default=None, help="GLUE: write test submission files")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --out")
    p.set_defaults(func=_finetune_command)

    e = subparsers.add_parser("evaluate", help="score a fine-tuned model on a task's dev data")
    _task_args(e)
    e.add_argument("--out", metavar="FILE", help="also write the metrics JSON here")
    e.set_defaults(func=_evaluate_command)

    r = subparsers.add_parser("predict", help="predict a JSONL/TSV/CSV file with a fine-tuned model")
    r.add_argument("--model", required=True, metavar="DIR")
    r.add_argument("--input", required=True, metavar="FILE", help=".jsonl with text[/text_pair] (QA: question, "
                                                                   "context), or .tsv/.csv with a header")
    r.add_argument("--output", required=True, metavar="FILE", help="JSONL, one record per input line")
    r.add_argument("--tokenizer", metavar="DIR")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--max-length", type=int, help="default 128; QA 384")
    r.add_argument("--text-column")
    r.add_argument("--text-pair-column")
    r.add_argument("--backend", choices=("torch", "onnx"))
    r.add_argument("--onnx", metavar="FILE", help="the exported model (--backend onnx)")
    r.add_argument("--device", choices=("cpu", "cuda"))
    r.add_argument("--precision", choices=PRECISIONS)
    r.add_argument("--doc-stride", type=int)
    r.add_argument("--max-query-length", type=int)
    r.add_argument("--version-2", action="store_true", default=None, help="QA: allow no answer")
    r.add_argument("--null-threshold", type=float)
    r.set_defaults(func=_predict_command)
