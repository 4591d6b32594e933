"""Using a trained model: `evaluate` scores it on a task's labelled splits, `predict` labels a file (JSONL out)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConvBertConfig
from ..errors import InputError
from ..hub import resolve_dir
from ..tokenizer import ConvBertTokenizer
from ..train_utils import setup_distributed
from .config import (
    INPUTS,
    MULTI_LABEL,
    QA,
    SEQUENCE,
    TOKEN,
    EvaluateConfig,
    Outputs,
    PredictConfig,
    Runner,
    resolve,
    task_kind,
)
from .conll import Sentence, align_predictions, token_classification_features
from .glue import GLUE
from .inference import HEAD_BY_KIND, evaluate_splits, head_outputs, load_head, run_rows, torch_runner
from .squad import SquadExample, postprocess, prepare_features
from .task_data import load_task, sequence_records, write_jsonl
from .tasks import Example, encode_examples, read_custom, read_records

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score a trained model on the dev split(s) (and a labelled custom/NER --test); distributed under torchrun."""
    kind = task_kind(cfg.task)
    if cfg.output is not None and Path(cfg.output).is_dir():
        raise InputError(f"--output {cfg.output}: is a directory; name the JSON file to write")
    tok = ConvBertTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    tok.check_vocab(ConvBertConfig.from_json_file(resolve_dir(cfg.model) / "config.json").vocab_size)
    model = load_head(cfg.model, kind, trained=True)
    cfg = resolve(cfg, model.config)
    d = setup_distributed(cfg.device)
    labels = None if kind == QA or model.config.num_labels == 1 else model.config.labels()
    multi_label = kind == SEQUENCE and model.config.problem_type == MULTI_LABEL
    if cfg.task in GLUE and (GLUE[cfg.task].regression != (labels is None) or multi_label):
        what = "multi-label head" if multi_label else f"head with {model.config.num_labels} output(s)"
        raise InputError(f"{cfg.model}: a {what} does not fit {cfg.task}")
    if cfg.multi_label and not multi_label:
        raise InputError(f"--multi-label: {cfg.model} is not a multi-label model (config.json problem_type)")
    if cfg.task == "custom":
        cfg = dataclasses.replace(cfg, regression=labels is None, multi_label=multi_label)
    task = load_task(cfg, tok, labels, train=False)
    metrics, _ = evaluate_splits(model.to(d.device), kind, task.evals + [t for t in task.tests if t.scored], d, cfg)
    return {"task": cfg.task, "model": str(cfg.model), "truncated": task.truncated, **metrics}


def _head_kind(config: ConvBertConfig, model_dir: str) -> str:
    for kind, cls in HEAD_BY_KIND.items():
        if cls.__name__ in (config.architectures or []):
            return kind
    raise InputError(
        f"{model_dir}: config.json architectures {config.architectures} name no "
        f"sequence/token classification or question answering head"
    )


def predict(cfg: PredictConfig) -> int:
    """Predict every line of `cfg.input` into `cfg.output` (JSONL, atomic); returns the number of records.

    Sequence classification: label + softmax scores (multi-label, config.json problem_type
    multi_label_classification: the labels with sigmoid > 0.5 + sigmoid scores); regression: score; token
    classification: per-word tags of the whitespace-split text; QA (question/context fields): answer text + its
    n-best probability."""
    config = ConvBertConfig.from_json_file(resolve_dir(cfg.model) / "config.json")
    kind = _head_kind(config, cfg.model)
    if cfg.task is not None and task_kind(cfg.task) != kind:
        raise InputError(f"{cfg.model}: a {kind} head cannot do --task {cfg.task}")
    max_length = cfg.max_length or (384 if kind == QA else 128)
    if max_length > config.max_position_embeddings:
        raise InputError(
            f"--max-length {max_length} exceeds the model's max_position_embeddings {config.max_position_embeddings}"
        )
    tok = ConvBertTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    tok.check_vocab(config.vocab_size)
    text = cfg.text_column or ("question" if kind == QA else "text")
    pair = cfg.text_pair_column or ("context" if kind == QA else None)
    if pair is None and kind == SEQUENCE:
        first = next(iter(read_records(Path(cfg.input))), (0, {}))[1]
        pair = "text_pair" if "text_pair" in first else None
    cfg.check_max_length(kind, pair is not None)
    examples, _ = read_custom(cfg.input, text_column=text, text_pair_column=pair, label_column=None)
    run = _runner(cfg, kind)

    def outputs(inputs: dict[str, torch.Tensor]) -> Outputs:
        rows = np.arange(len(inputs["input_ids"]))
        return run_rows(run, {k: inputs[k] for k in INPUTS}, rows, cfg.batch_size, "predict", True)

    make = {SEQUENCE: _sequence_records, TOKEN: _token_records}.get(kind, _qa_records)
    records = make(cfg, config, tok, examples, max_length, outputs)
    write_jsonl(Path(cfg.output), records)
    return len(records)


def _runner(cfg: PredictConfig, kind: str) -> Runner:
    """The model's outputs on a batch: the exported ONNX file (--backend onnx) or the weights."""
    if cfg.backend == "onnx":
        if cfg.onnx is None:
            raise InputError("--backend onnx needs --onnx FILE")
        from ..tools.export import OnnxPredictor

        predictor = OnnxPredictor(cfg.onnx)

        def run(batch: dict[str, torch.Tensor]) -> Outputs:
            arrays = {k: batch[k].numpy() for k in INPUTS}
            return head_outputs(
                kind, predictor(arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"])
            )

        return run
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return torch_runner(load_head(cfg.model, kind, trained=True).to(device), kind, device, cfg.precision)


def _sequence_records(
    cfg: PredictConfig,
    config: ConvBertConfig,
    tok: ConvBertTokenizer,
    examples: list[Example],
    max_length: int,
    outputs: Callable[[dict[str, torch.Tensor]], Outputs],
) -> list[dict[str, Any]]:
    feats = encode_examples(tok, examples, None, max_length)
    _report_truncated(cfg.input, feats.num_truncated, len(examples))
    labels = None if config.num_labels == 1 else config.labels()
    multi = config.problem_type == MULTI_LABEL
    return [
        {"line": int(e.guid), "text": e.text_a, **({"text_pair": e.text_b} if e.text_b else {}), **r}
        for e, r in zip(examples, sequence_records(outputs(feats.tensors)["logits"], labels, multi_label=multi))
    ]


def _token_records(
    cfg: PredictConfig,
    config: ConvBertConfig,
    tok: ConvBertTokenizer,
    examples: list[Example],
    max_length: int,
    outputs: Callable[[dict[str, torch.Tensor]], Outputs],
) -> list[dict[str, Any]]:
    sentences = [Sentence(e.text_a.split(), ["O"] * len(e.text_a.split()), f"{cfg.input}:{e.guid}") for e in examples]
    feats = token_classification_features(tok, sentences, None, max_length)
    _report_truncated(cfg.input, feats.num_truncated, len(examples))
    tags = align_predictions(outputs(feats.tensors)["tags"], feats, config.labels())
    return [{"line": int(e.guid), "tokens": s.tokens, "tags": t} for e, s, t in zip(examples, sentences, tags)]


def _qa_records(
    cfg: PredictConfig,
    config: ConvBertConfig,
    tok: ConvBertTokenizer,
    examples: list[Example],
    max_length: int,
    outputs: Callable[[dict[str, torch.Tensor]], Outputs],
) -> list[dict[str, Any]]:
    version_2 = cfg.task == "squad_v2"
    questions = [SquadExample(e.guid, e.text_a, e.text_b, []) for e in examples]
    feats = prepare_features(tok, questions, max_length, cfg.doc_stride, cfg.max_query_length, train=False)
    o = outputs(feats.tensors)
    p = postprocess(
        questions, feats, o["start_logits"], o["end_logits"], version_2=version_2, null_threshold=cfg.null_threshold
    )
    records = []
    for q in questions:
        best = next((c for c in p.nbest[q.qid] if c["text"] == p.predictions[q.qid]), {"probability": 0.0})
        records.append(
            {
                "line": int(q.qid),
                "question": q.question,
                "answer": p.predictions[q.qid],
                "score": best["probability"],
                **({"null_odds": p.null_odds[q.qid]} if version_2 else {}),
            }
        )
    return records


def _report_truncated(source: str, count: int, total: int) -> None:
    if count:
        log.warning("%s: %d of %d inputs are longer than max_length and were truncated", source, count, total)
