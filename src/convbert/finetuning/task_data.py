"""A fine-tuning task's data: every split read and encoded (`load_task`), and what the model's outputs on a split
mean (`score_split`: its metrics; `write_split`: its prediction files)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..fileio import atomic_write_text
from ..metrics import (
    classification_metrics,
    entity_f1,
    glue_metrics,
    multilabel_metrics,
    regression_metrics,
    squad_evaluate,
)
from ..tokenizer import ConvBertTokenizer
from .config import (
    GLUE_MAIN,
    INPUTS,
    QA,
    SEQUENCE,
    TOKEN,
    FinetuneConfig,
    Outputs,
    TaskConfig,
    task_kind,
)
from .conll import Sentence, TokenFeatures, align_predictions, conll_labels, read_conll, token_classification_features
from .glue import GLUE, double_unordered, glue_task, read_glue, write_glue_submission
from .squad import (
    SquadExample,
    SquadFeatures,
    SquadPredictions,
    postprocess,
    prepare_features,
    read_squad,
    write_predictions,
)
from .tasks import Example, Features, encode_examples, read_custom

log = logging.getLogger(__name__)

CLASSIFICATION, MULTILABEL, REGRESSION, NER, SQUAD = "classification", "multilabel", "regression", "ner", "squad"


@dataclass
class EvalSplit:
    """Rows to run the model on, and the plain data `score_split` and `write_split` need for their outputs.

    kind: classification (logits -> class ids, `remap`ped to task order), multilabel (sigmoid(logits) > 0.5 -> a
    multi-hot row, columns `remap`ped), regression (logits[:, 0]), ner (tag ids -> per-word tags) or squad (span
    logits -> answers). Only the fields of the split's kind are set.
    """

    name: str
    kind: str  # classification | multilabel | regression | ner | squad
    inputs: dict[str, torch.Tensor]  # input_ids, token_type_ids, attention_mask (N, T)
    num_examples: int  # examples (SQuAD: questions; N counts their windows)
    scored: bool  # labelled: score_split returns its metrics
    writes: bool  # write_split writes its prediction files
    labels: list[str] | None = None  # classification / ner: class (tag) names in model id order
    # classification / multilabel / regression
    remap: np.ndarray | None = None  # classification, multilabel: model label id -> task label id
    references: np.ndarray | None = None  # gold task label ids / multi-hot (N, C) rows / scores (scored splits)
    examples: list[Example] = field(default_factory=list)  # the texts, for the written records
    glue: str | None = None  # a GLUE task: its metrics; written as its submission file for this split
    # ner
    sentences: list[Sentence] = field(default_factory=list)  # words and gold tags
    token_features: TokenFeatures | None = None  # the rows' word alignment
    # squad
    questions: list[SquadExample] = field(default_factory=list)
    squad_features: SquadFeatures | None = None  # the rows' windows (question ids, context offsets)
    articles: list[dict[str, Any]] = field(default_factory=list)  # the dev file's data, for the official scoring
    version_2: bool = False  # SQuAD v2: null answers and their odds
    null_threshold: float = 0.0


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
    multi_label: bool = False  # a sequence task whose rows hold any number of labels


# ------------------------------------------------------------------------------------------ outputs of a split
def score_split(split: EvalSplit, outputs: Outputs) -> dict[str, Any] | None:
    """The metrics of the model's outputs on a labelled split; None for an unlabelled one."""
    if not split.scored:
        return None
    if split.kind == NER:
        return entity_f1([s.tags for s in split.sentences], ner_tags(split, outputs))
    if split.kind == SQUAD:
        p = squad_answers(split, outputs)
        return squad_evaluate(split.articles, p.predictions, p.null_odds if split.version_2 else None)
    predictions = sequence_predictions(split, outputs)
    if split.glue is not None:
        return glue_metrics(split.glue, predictions, split.references)
    if split.kind == REGRESSION:
        return regression_metrics(predictions, split.references)
    if split.kind == MULTILABEL:
        return multilabel_metrics(predictions, split.references)
    return classification_metrics(predictions, split.references, len(split.labels))


def write_split(split: EvalSplit, path: Path, outputs: Outputs) -> None:
    """Write a split's prediction files into the directory `path` (nothing for a split that writes none): GLUE
    submission/, custom and NER test_predictions.jsonl, SQuAD predictions.json, nbest_predictions.json
    (+ null_odds.json)."""
    if not split.writes:
        return
    if split.kind == NER:
        write_jsonl(
            path / "test_predictions.jsonl",
            [
                {"tokens": s.tokens, "gold": s.tags, "tags": t}
                for s, t in zip(split.sentences, ner_tags(split, outputs))
            ],
        )
    elif split.kind == SQUAD:
        p = squad_answers(split, outputs)
        write_predictions(path, p.predictions, p.nbest, p.null_odds if split.version_2 else None)
    elif split.glue is not None:
        write_glue_submission(
            path / "submission", split.glue, split.name, split.examples, sequence_predictions(split, outputs)
        )
    else:
        rows = sequence_records(outputs["logits"], split.labels, multi_label=split.kind == MULTILABEL)
        write_jsonl(
            path / "test_predictions.jsonl",
            [
                {
                    "text": e.text_a,
                    **({"text_pair": e.text_b} if e.text_b else {}),
                    "gold": list(e.label) if isinstance(e.label, tuple) else e.label,
                    **r,
                }
                for e, r in zip(split.examples, rows)
            ],
        )


def sequence_predictions(split: EvalSplit, outputs: Outputs) -> np.ndarray:
    """Class ids in task order (remapped from model ids), multi-hot rows (N, C) in task order, or regression
    scores."""
    logits = outputs["logits"]
    if split.kind == MULTILABEL:
        hot = np.zeros(logits.shape, dtype=bool)
        hot[:, split.remap] = logits > 0  # sigmoid(logit) > 0.5
        return hot
    return logits[:, 0] if split.kind == REGRESSION else split.remap[logits.argmax(1)]


def ner_tags(split: EvalSplit, outputs: Outputs) -> list[list[str]]:
    """Per sentence, one tag per word."""
    return align_predictions(outputs["tags"], split.token_features, split.labels)


def squad_answers(split: EvalSplit, outputs: Outputs) -> SquadPredictions:
    return postprocess(
        split.questions,
        split.squad_features,
        outputs["start_logits"],
        outputs["end_logits"],
        version_2=split.version_2,
        null_threshold=split.null_threshold,
    )


def sequence_records(logits: np.ndarray, labels: list[str] | None, multi_label: bool = False) -> list[dict[str, Any]]:
    """Per row: {"score"} for regression (labels None), {"labels": [label with sigmoid probability > 0.5],
    "scores": {label: sigmoid probability}} for multi_label, else {"label", "scores": {label: softmax probability}}."""
    if labels is None:
        return [{"score": float(row[0])} for row in logits]
    if multi_label:
        probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
        return [
            {"labels": [y for y, hot in zip(labels, row > 0) if hot], "scores": dict(zip(labels, map(float, p)))}
            for row, p in zip(logits, probs)
        ]
    z = np.exp(logits - logits.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    return [{"label": labels[int(row.argmax())], "scores": dict(zip(labels, map(float, row)))} for row in probs]


def write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ------------------------------------------------------------------------------------------ reading a task
def load_task(
    cfg: TaskConfig, tok: ConvBertTokenizer, model_labels: list[str] | None = None, train: bool = True
) -> Task:
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


def _need(cfg: TaskConfig, train: bool, *names: str) -> None:
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


def _sequence_split(
    task: Task,
    name: str,
    examples: list[Example],
    tok: ConvBertTokenizer,
    max_length: int,
    label2id: dict[str, int] | None,
    remap: np.ndarray | None,
    *,
    scored: bool,
    writes: bool,
    glue: str | None = None,
) -> EvalSplit:
    """Encode a sequence-classification split (regression when `remap` is None, multi-label for a multi-label
    task); `glue` names a GLUE task."""
    multi = task.multi_label
    feats = _encoded(
        task,
        name,
        encode_examples(tok, examples, label2id, max_length, regression=label2id is None, multi_label=multi),
    )
    return EvalSplit(
        name,
        REGRESSION if remap is None else MULTILABEL if multi else CLASSIFICATION,
        {k: feats[k] for k in INPUTS},
        len(examples),
        scored,
        writes,
        labels=task.labels,
        remap=remap,
        references=feats["labels"].numpy() if "labels" in feats else None,
        examples=examples,
        glue=glue,
    )


def _encoded(task: Task, name: str, feats: Features | TokenFeatures) -> dict[str, torch.Tensor]:
    """Record a split's size and truncation count (logged); its tensors."""
    n = len(feats.tensors["input_ids"])
    task.counts[name], task.truncated[name] = n, feats.num_truncated
    if feats.num_truncated:
        log.warning("%s: %d of %d examples are longer than max_length and were truncated", name, feats.num_truncated, n)
    return feats.tensors


def _glue_task(cfg: TaskConfig, tok: ConvBertTokenizer, model_labels: list[str] | None, train: bool) -> Task:
    _need(cfg, train, "data")
    spec = glue_task(cfg.task)
    labels = None if spec.regression else list(spec.labels)
    remap = None if labels is None else _label_map(labels, model_labels or labels)
    label2id = None if labels is None else {label: i for i, label in enumerate(labels)}
    task = Task(
        cfg.task,
        SEQUENCE,
        labels if model_labels is None else model_labels,
        None,
        [],
        [],
        GLUE_MAIN.get(cfg.task, "accuracy"),
    )
    if train:
        examples = read_glue(cfg.task, cfg.data, "train")
        if spec.double_unordered and isinstance(cfg, FinetuneConfig) and cfg.double_unordered:
            examples = double_unordered(examples)
        task.train = _encoded(
            task, "train", encode_examples(tok, examples, label2id, cfg.max_length, regression=labels is None)
        )
    for split in spec.eval_splits:
        task.evals.append(
            _sequence_split(
                task,
                split,
                read_glue(cfg.task, cfg.data, split),
                tok,
                cfg.max_length,
                label2id,
                remap,
                scored=True,
                writes=False,
                glue=cfg.task,
            )
        )
    for split in spec.submissions if isinstance(cfg, FinetuneConfig) and cfg.predict_test else ():
        task.tests.append(
            _sequence_split(
                task,
                split,
                read_glue(cfg.task, cfg.data, split),
                tok,
                cfg.max_length,
                label2id,
                remap,
                scored=False,
                writes=True,
                glue=cfg.task,
            )
        )
    return task


def _custom_task(cfg: TaskConfig, tok: ConvBertTokenizer, model_labels: list[str] | None, train: bool) -> Task:
    _need(cfg, train, "train", "dev")
    read = dict(
        text_column=cfg.text_column or "text",
        text_pair_column=cfg.text_pair_column,
        label_column=cfg.label_column,
        regression=cfg.regression,
        multi_label=cfg.multi_label,
        label_separator=cfg.label_separator,
    )
    labels, train_examples = model_labels, None
    if train:
        train_examples, labels = read_custom(cfg.train, **read)
        if labels is not None and len(labels) < 2:
            raise InputError(f"{cfg.train}: only one label ({labels[0]!r}); classification needs at least two")
    main = "spearman" if cfg.regression else "micro_f1" if cfg.multi_label else "accuracy"
    task = Task("custom", SEQUENCE, labels, None, [], [], main, multi_label=cfg.multi_label)
    label2id = None if labels is None else {label: i for i, label in enumerate(labels)}
    remap = None if labels is None else np.arange(len(labels))
    if train_examples is not None:
        feats = encode_examples(
            tok, train_examples, label2id, cfg.max_length, regression=cfg.regression, multi_label=cfg.multi_label
        )
        task.train = _encoded(task, "train", feats)
    dev_examples, _ = read_custom(cfg.dev, **read, labels=labels)
    task.evals.append(
        _sequence_split(task, "dev", dev_examples, tok, cfg.max_length, label2id, remap, scored=True, writes=False)
    )
    if cfg.test:
        test_examples, _ = read_custom(cfg.test, **read, labels=labels)
        task.tests.append(
            _sequence_split(task, "test", test_examples, tok, cfg.max_length, label2id, remap, scored=True, writes=True)
        )
    return task


def _ner_task(cfg: TaskConfig, tok: ConvBertTokenizer, model_labels: list[str] | None, train: bool) -> Task:
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
        split_ = EvalSplit(
            split,
            NER,
            {k: feats.tensors[k] for k in INPUTS},
            len(sentences),
            scored=True,
            writes=split == "test",
            labels=labels,
            sentences=sentences,
            token_features=feats,
        )
        (task.evals if split == "dev" else task.tests).append(split_)
    return task


def _squad_task(cfg: TaskConfig, tok: ConvBertTokenizer, train: bool) -> Task:
    _need(cfg, train, "train", "dev")
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
    task.evals.append(
        EvalSplit(
            "dev",
            SQUAD,
            feats.tensors,
            len(dev),
            scored=True,
            writes=True,
            questions=dev,
            squad_features=feats,
            articles=articles,
            version_2=cfg.task == "squad_v2",
            null_threshold=cfg.null_threshold,
        )
    )
    return task
