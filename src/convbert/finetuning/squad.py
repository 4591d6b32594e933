"""SQuAD v1.1/v2.0: reading, doc-stride features and n-best answer decoding.

Windows come from the tokenizer's overflow support: `[CLS] question [SEP] context window [SEP]`,
consecutive windows of one context sharing `doc_stride` tokens (the Hugging Face convention; in the
original BERT/ELECTRA code `doc_stride` is the step between window starts instead). Answers are
character spans of the context, found through the tokens' character offsets.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import InputError
from ..fileio import atomic_write_json, parse_json
from ..tokenizer import ConvBertTokenizer

_CHUNK = 1000  # examples tokenized at a time (bounds the memory of the per-token Python lists)


@dataclass
class SquadExample:
    """One question; `answers` are {"text", "answer_start"} (character offset into `context`)."""

    qid: str
    question: str
    context: str
    answers: list[dict[str, Any]]
    is_impossible: bool = False
    source: str = ""  # where it was read: "FILE: question ID (data[a].paragraphs[p].qas[q])"


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise InputError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # JSON true is no int
        raise InputError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def read_squad(path: str | Path) -> list[SquadExample]:
    """Read a SQuAD v1.1 or v2.0 JSON file (`{"data": [{"paragraphs": [{"context", "qas"}]}]}`).

    Every answer must be the context text at its `answer_start`; unanswerable (v2) questions have
    `is_impossible: true` and no answers. Errors name the file, the question id and where it is.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1  # the line holding the bad byte
        raise InputError(f"{path}:{line}: not valid UTF-8: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    examples: list[SquadExample] = []
    seen: set[str] = set()
    for a, article in enumerate(_get(data, "data", list, str(path))):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _get(paragraph, "context", str, where)
            for q, qa in enumerate(_get(paragraph, "qas", list, where)):
                qid = _get(qa, "id", str, f"{where}.qas[{q}]")
                at = f"{path}: question {qid!r} (data[{a}].paragraphs[{p}].qas[{q}])"
                if qid in seen:
                    raise InputError(f"{at}: duplicate question id")
                seen.add(qid)
                impossible = _get(qa, "is_impossible", bool, at) if "is_impossible" in qa else False
                answers = []
                for k, answer in enumerate(_get(qa, "answers", list, at)):
                    text = _get(answer, "text", str, f"{at}.answers[{k}]")
                    start = _get(answer, "answer_start", int, f"{at}.answers[{k}]")
                    if not text.strip():
                        raise InputError(f"{at}: answer {k} is empty")
                    found = context[start : start + len(text)] if start >= 0 else ""
                    if found != text:
                        raise InputError(
                            f"{at}: answer {k} {text!r} does not match the context at "
                            f"answer_start {start} (found {found!r})"
                        )
                    answers.append({"text": text, "answer_start": start})
                if impossible and answers:
                    raise InputError(f"{at}: is_impossible is true but answers are given")
                question = _get(qa, "question", str, at)
                examples.append(SquadExample(qid, question, context, answers, impossible, source=at))
    if not examples:
        raise InputError(f"{path}: no questions")
    return examples


@dataclass
class SquadFeatures:
    """Model inputs, one row per context window.

    tensors: input_ids, token_type_ids, attention_mask (F, max_length); for training also
    start_positions, end_positions (F,) (0 = [CLS]: no answer in this window).
    """

    tensors: dict[str, torch.Tensor]
    example_ids: list[str]  # the qid of each feature
    offset_mapping: list[list[tuple[int, int] | None]]  # eval only: context (start, end) per token, else None


def _truncate_questions(tokenizer: ConvBertTokenizer, questions: list[str], max_query_length: int) -> list[str]:
    """Each question cut after its `max_query_length`-th token (at that token's end character)."""
    offsets = tokenizer(questions, padding=False, truncation=False, return_offsets=True, return_tensors=None)[
        "offset_mapping"
    ]
    return [
        q if len(offs) - 2 <= max_query_length else q[: offs[max_query_length][1]]  # offs[0] is [CLS]
        for q, offs in zip(questions, offsets)
    ]


def _no_answer(example: SquadExample) -> InputError:
    where = example.source or f"question {example.qid!r}"
    return InputError(f"{where}: no answer to train on (and not is_impossible)")


def _answer_positions(example: SquadExample, offsets: list[tuple[int, int] | None]) -> tuple[int, int]:
    """Token positions of the first answer inside this window; (0, 0) when it is not wholly inside."""
    if example.is_impossible:
        return 0, 0
    if not example.answers:
        raise _no_answer(example)
    text, start = example.answers[0]["text"], example.answers[0]["answer_start"]
    end = start + len(text.rstrip())
    start += len(text) - len(text.lstrip())  # span edges on the answer's first/last non-space character
    context = [t for t, o in enumerate(offsets) if o is not None]
    if not context or offsets[context[0]][0] > start or offsets[context[-1]][1] < end:
        return 0, 0
    first = max(t for t in context if offsets[t][0] <= start)
    last = min(t for t in context if offsets[t][1] >= end)
    return first, last


def prepare_features(
    tokenizer: ConvBertTokenizer,
    examples: Sequence[SquadExample],
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    train: bool = True,
) -> SquadFeatures:
    """Split each context into overlapping windows after its question (cut to `max_query_length` tokens).

    train=True labels each window with the first answer's token span (or [CLS]); train=False keeps the
    per-token context offsets that `postprocess` needs.
    """
    if not examples:
        raise InputError("no SQuAD examples")
    if max_query_length < 1 or max_length - max_query_length - 3 <= doc_stride or doc_stride < 0:
        raise InputError(
            f"max_length {max_length} must exceed max_query_length {max_query_length} + 3 + "
            f"doc_stride {doc_stride}, with max_query_length >= 1 and doc_stride >= 0"
        )
    if train:  # before any tokenizing
        for e in examples:
            if not e.is_impossible and not e.answers:
                raise _no_answer(e)
    questions = _truncate_questions(tokenizer, [e.question for e in examples], max_query_length)
    keys = ("input_ids", "token_type_ids", "attention_mask")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    example_ids: list[str] = []
    offset_mapping: list[list[tuple[int, int] | None]] = []
    positions: list[tuple[int, int]] = []
    for lo in range(0, len(examples), _CHUNK):
        chunk = examples[lo : lo + _CHUNK]
        enc = tokenizer(
            questions[lo : lo + _CHUNK], [e.context for e in chunk], max_length=max_length, padding="max_length",
            truncation="only_second", stride=doc_stride, return_overflowing_tokens=True, return_offsets=True,
            return_tensors=None,
        )  # fmt: skip
        for row, i in enumerate(enc["overflow_to_sample_mapping"]):
            offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][row], enc["sequence_ids"][row])]
            example_ids.append(chunk[i].qid)
            if train:
                positions.append(_answer_positions(chunk[i], offsets))
            else:
                offset_mapping.append(offsets)
        for k in keys:
            parts[k].append(torch.tensor(enc[k], dtype=torch.long))
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    if train:
        tensors["start_positions"], tensors["end_positions"] = torch.tensor(positions, dtype=torch.long).T
    return SquadFeatures(tensors, example_ids, offset_mapping)


@dataclass
class SquadPredictions:
    """Decoded answers: qid -> text ("" = no answer), qid -> n-best list, and (v2) qid -> null odds."""

    predictions: dict[str, str]
    nbest: dict[str, list[dict[str, Any]]]  # [{text, probability, start_logit, end_logit}], best first
    null_odds: dict[str, float]  # score_null - best_non_null (inf when no span qualifies); empty for v1


def _softmax(scores: list[float]) -> list[float]:
    x = np.exp(np.asarray(scores) - max(scores))
    return (x / x.sum()).tolist()


def postprocess(
    examples: Sequence[SquadExample],
    features: SquadFeatures,
    start_logits: ArrayLike,
    end_logits: ArrayLike,
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> SquadPredictions:
    """Turn per-feature start/end logits (F, T) into answer texts.

    Candidates pair the `n_best` highest start and end positions of every window of a question, with
    both inside the context, end >= start and at most `max_answer_length` tokens; a span found in
    several windows keeps its best score. v2: the null score is the lowest start[0] + end[0] over the
    question's windows, and the answer is "" when null - best non-null score > `null_threshold`.
    """
    starts = np.asarray(start_logits, dtype=np.float64)
    ends = np.asarray(end_logits, dtype=np.float64)
    if starts.shape != ends.shape or starts.ndim != 2 or len(starts) != len(features.example_ids):
        raise InputError(
            f"expected start/end logits of shape ({len(features.example_ids)}, T), got {starts.shape} and {ends.shape}"
        )
    if len(features.offset_mapping) != len(features.example_ids):
        raise InputError("features have no offset mapping: prepare them with train=False")
    windows: dict[str, list[int]] = defaultdict(list)
    for f, qid in enumerate(features.example_ids):
        windows[qid].append(f)
    out = SquadPredictions({}, {}, {})
    for example in examples:
        if example.qid not in windows:
            raise InputError(f"question {example.qid!r} has no features")
        spans: dict[tuple[int, int], tuple[float, float, float]] = {}  # (char start, end) -> scores
        null = (math.inf, 0.0, 0.0)
        for f in windows[example.qid]:
            offsets = features.offset_mapping[f]
            s, e = starts[f, : len(offsets)], ends[f, : len(offsets)]
            null = min(null, (s[0] + e[0], s[0], e[0]))
            top_ends = np.argsort(e)[::-1][:n_best]
            for i in np.argsort(s)[::-1][:n_best]:
                for j in top_ends:
                    if offsets[i] is None or offsets[j] is None or not 0 <= j - i < max_answer_length:
                        continue
                    span, score = (offsets[i][0], offsets[j][1]), s[i] + e[j]
                    if span not in spans or score > spans[span][0]:
                        spans[span] = (score, s[i], e[j])
        best = sorted(spans.items(), key=lambda item: -item[1][0])[:n_best]
        entries = [(example.context[a:b], *scores) for (a, b), scores in best]
        prediction = entries[0][0] if entries else ""
        if version_2:
            odds = null[0] - entries[0][1] if entries else math.inf
            out.null_odds[example.qid] = float(odds)
            if odds > null_threshold:
                prediction = ""
            entries = sorted([*entries, ("", *null)], key=lambda entry: -entry[1])
        out.predictions[example.qid] = prediction
        probabilities = _softmax([score for _, score, _, _ in entries]) if entries else []
        out.nbest[example.qid] = [
            {"text": text, "probability": p, "start_logit": float(sl), "end_logit": float(el)}
            for (text, _, sl, el), p in zip(entries, probabilities)
        ]
    return out


def write_predictions(
    out_dir: str | Path,
    predictions: Mapping[str, str],
    nbest: Mapping[str, list[dict[str, Any]]],
    null_odds: Mapping[str, float] | None = None,
) -> list[Path]:
    """Write predictions.json, nbest_predictions.json and (when given, v2) null_odds.json, each atomically.

    null_odds.json may hold `Infinity` (Python's json reads it) for a question with no candidate span.
    """
    out_dir = Path(out_dir)
    files = {"predictions.json": dict(predictions), "nbest_predictions.json": dict(nbest)}
    if null_odds:
        files["null_odds.json"] = dict(null_odds)
    for name, obj in files.items():
        atomic_write_json(out_dir / name, obj)
    return [out_dir / name for name in files]
