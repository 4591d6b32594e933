"""Evaluation metrics: GLUE, multi-label classification, SQuAD v1.1/v2.0 (official scoring) and entity-level token
classification.

Only numpy is needed; the semantics follow scikit-learn / scipy (GLUE), the official SQuAD v2.0
evaluation script, and seqeval's default (conlleval-compatible) chunking.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import InputError

# ---------------------------------------------------------------------------------------------- GLUE

# Number of classes of each classification task (labels are 0..n-1); "stsb" is regression.
GLUE_NUM_LABELS = {
    "cola": 2,
    "sst2": 2,
    "mrpc": 2,
    "qqp": 2,
    "mnli": 3,
    "mnli_matched": 3,
    "mnli_mismatched": 3,
    "qnli": 2,
    "rte": 2,
    "wnli": 2,
}
GLUE_TASKS = (*GLUE_NUM_LABELS, "stsb")


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """`values` as a non-empty 1-D numeric array."""
    try:
        arr = np.asarray(values)
    except ValueError as e:  # ragged nested sequences
        raise InputError(f"{name} is not a flat sequence of numbers: {e}") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _pair(predictions: ArrayLike, references: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    preds, refs = _as_1d(predictions, "predictions"), _as_1d(references, "references")
    if len(preds) != len(refs):
        raise InputError(f"predictions has {len(preds)} items but references has {len(refs)}")
    return preds, refs


def _labels(arr: np.ndarray, name: str, num_labels: int) -> np.ndarray:
    """Check that `arr` holds integer class ids in 0..num_labels-1 and return them as int64."""
    values = arr.astype(float)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= num_labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}[{i}] = {arr[i]} is not a class id in 0..{num_labels - 1}")
    return arr.astype(np.int64)


def _label_pair(predictions: ArrayLike, references: ArrayLike, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    preds, refs = _pair(predictions, references)
    return _labels(preds, "predictions", num_labels), _labels(refs, "references", num_labels)


def _confusion(preds: np.ndarray, refs: np.ndarray, num_labels: int) -> np.ndarray:
    """Confusion matrix C[true, pred] as float64."""
    return np.bincount(refs * num_labels + preds, minlength=num_labels**2).reshape(num_labels, -1).astype(float)


def _mcc(preds: np.ndarray, refs: np.ndarray, num_labels: int) -> float:
    """Matthews correlation (multi-class form, as sklearn); 0 when a class marginal is degenerate."""
    c = _confusion(preds, refs, num_labels)
    t, p, n = c.sum(axis=1), c.sum(axis=0), c.sum()
    cov_tp = np.trace(c) * n - t @ p
    cov_pp, cov_tt = n * n - p @ p, n * n - t @ t
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_pp * cov_tt))


def _f1_from_counts(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def _accuracy(preds: np.ndarray, refs: np.ndarray) -> float:
    return float(np.mean(preds == refs))


def classification_metrics(predictions: ArrayLike, references: ArrayLike, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 for class ids in 0..num_labels-1.

    Macro-F1 averages the per-class F1 over the classes that occur in the references or predictions
    (scikit-learn's `f1_score(average="macro")` without `labels`).
    """
    if num_labels < 2:
        raise InputError(f"num_labels must be at least 2, got {num_labels}")
    preds, refs = _label_pair(predictions, references, num_labels)
    c = _confusion(preds, refs, num_labels)
    tp, t, p = np.diag(c), c.sum(axis=1), c.sum(axis=0)
    present = (t + p) > 0
    f1s = [_f1_from_counts(tp[k], p[k] - tp[k], t[k] - tp[k]) for k in np.flatnonzero(present)]
    return {"accuracy": _accuracy(preds, refs), "macro_f1": float(np.mean(f1s))}


def _multi_hot(values: ArrayLike, name: str) -> np.ndarray:
    """`values` as a non-empty (N, C) bool matrix; every entry must be 0 or 1 (or a bool)."""
    try:
        arr = np.asarray(values)
    except ValueError as e:  # ragged rows
        raise InputError(f"{name} is not an (examples, labels) matrix: {e}") from None
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty (examples, labels) matrix, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise InputError(f"{name}[{i}, {j}] = {arr[i, j]} is not 0 or 1")
    return arr.astype(bool)


def multilabel_metrics(predictions: ArrayLike, references: ArrayLike) -> dict[str, float]:
    """Multi-label scores of 0/1 matrices (examples, labels): micro_f1 (F1 of all (example, label) decisions),
    macro_f1 (mean of the per-label F1 over the labels that occur in the references or predictions), subset_accuracy
    (rows predicted exactly) and hamming_loss (the fraction of wrong decisions).

    As scikit-learn's `f1_score(average="micro" | "macro", zero_division=np.nan)`, `accuracy_score` and
    `hamming_loss`: a label with no gold and no predicted positive is left out of macro_f1 (NaN when every label
    is; micro_f1 is NaN when there is no positive at all).
    """
    preds, refs = _multi_hot(predictions, "predictions"), _multi_hot(references, "references")
    if preds.shape != refs.shape:
        raise InputError(f"predictions has shape {preds.shape} but references has {refs.shape}")
    tp, fp, fn = ((a & b).sum(0).astype(float) for a, b in ((preds, refs), (preds, ~refs), (~preds, refs)))
    present = (tp + fp + fn) > 0
    macro = [_f1_from_counts(tp[k], fp[k], fn[k]) for k in np.flatnonzero(present)]
    return {
        "micro_f1": _f1_from_counts(tp.sum(), fp.sum(), fn.sum()) if present.any() else float("nan"),
        "macro_f1": float(np.mean(macro)) if macro else float("nan"),
        "subset_accuracy": float(np.mean((preds == refs).all(1))),
        "hamming_loss": float(np.mean(preds != refs)),
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when either input is constant (as scipy)."""
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx @ dx) * (dy @ dy))
    return float(dx @ dy / denom) if denom > 0 else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties getting the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first occurrence
    return (first + (counts + 1) / 2)[inverse]


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); NaN with one class only."""
    y, x = np.asarray(labels).astype(bool).ravel(), np.asarray(scores, dtype=float).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((_ranks(x)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def regression_metrics(predictions: ArrayLike, references: ArrayLike) -> dict[str, float]:
    """Pearson and Spearman correlation (NaN for constant input, as scipy) and mean squared error."""
    preds, refs = _pair(predictions, references)
    preds, refs = preds.astype(float), refs.astype(float)
    for name, arr in (("predictions", preds), ("references", refs)):
        if not np.isfinite(arr).all():
            raise InputError(f"{name}[{int(np.flatnonzero(~np.isfinite(arr))[0])}] is not finite")
    if len(preds) < 2:
        raise InputError("correlations need at least 2 items")
    return {
        "pearson": _pearson(preds, refs),
        "spearman": _pearson(_ranks(preds), _ranks(refs)),
        "mse": float(np.mean((preds - refs) ** 2)),
    }


def glue_metrics(task: str, predictions: ArrayLike, references: ArrayLike) -> dict[str, float]:
    """The GLUE metrics of `task` (keys as Hugging Face `evaluate`'s glue metric, plus "combined").

    cola: matthews_correlation; mrpc, qqp: accuracy, f1 (positive label 1), combined (their mean);
    stsb: pearson, spearmanr, combined; the others: accuracy. Classification predictions and references
    are class ids; stsb takes scores.
    """
    if task == "stsb":
        reg = regression_metrics(predictions, references)
        return {
            "pearson": reg["pearson"],
            "spearmanr": reg["spearman"],
            "combined": (reg["pearson"] + reg["spearman"]) / 2,
        }
    if task not in GLUE_NUM_LABELS:
        raise InputError(f"unknown GLUE task {task!r}; expected one of {', '.join(GLUE_TASKS)}")
    num_labels = GLUE_NUM_LABELS[task]
    preds, refs = _label_pair(predictions, references, num_labels)
    if task == "cola":
        return {"matthews_correlation": _mcc(preds, refs, num_labels)}
    accuracy = _accuracy(preds, refs)
    if task in ("mrpc", "qqp"):
        tp = float(np.sum((preds == 1) & (refs == 1)))
        f1 = _f1_from_counts(tp, float(np.sum(preds == 1)) - tp, float(np.sum(refs == 1)) - tp)
        return {"accuracy": accuracy, "f1": f1, "combined": (accuracy + f1) / 2}
    return {"accuracy": accuracy}


# --------------------------------------------------------------------------------------------- SQuAD

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of the normalised answers; when either is empty, 1.0 if both are else 0.0."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def _field(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise InputError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise InputError(f"{where}: missing {key!r}")
    return obj[key]


def _list_field(obj: Any, key: str, where: str) -> list:
    value = _field(obj, key, where)
    if not isinstance(value, list):
        raise InputError(f"{where}.{key}: expected a list, got {type(value).__name__}")
    return value


def _squad_gold(dataset: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[str], bool]]:
    """qid -> (gold answer texts, has_answer); unanswerable questions get the gold answers [""]."""
    if not isinstance(dataset, list):
        raise InputError(f"dataset must be the list of articles (the 'data' field), got {type(dataset).__name__}")
    gold: dict[str, tuple[list[str], bool]] = {}
    for a, article in enumerate(dataset):
        for p, paragraph in enumerate(_list_field(article, "paragraphs", f"data[{a}]")):
            for q, qa in enumerate(_list_field(paragraph, "qas", f"data[{a}].paragraphs[{p}]")):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                qid = _field(qa, "id", where)
                texts = [_field(ans, "text", f"{where}.answers") for ans in _list_field(qa, "answers", where)]
                if not all(isinstance(t, str) for t in texts):
                    raise InputError(f"{where}: answer texts must be strings")
                if qa.get("is_impossible") and texts:
                    raise InputError(f"{where} (id {qid!r}): is_impossible is true but answers are given")
                if qid in gold:
                    raise InputError(f"{where}: duplicate question id {qid!r}")
                # As the official script: answers that normalise to "" are dropped; none left -> [""].
                gold[qid] = ([t for t in texts if normalize_answer(t)] or [""], bool(texts))
    if not gold:
        raise InputError("dataset has no questions")
    return gold


def _best_thresh(
    raw: Mapping[str, float],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
    total: int,
) -> tuple[float, float]:
    """The official `find_best_thresh`: the best score (percent) over no-answer thresholds, and that threshold.

    Start from abstaining on every question, then answer them one by one in order of increasing
    no-answer probability (ties in `na_probs` order), keeping the best running score.
    """
    score = sum(1.0 for qid in raw if not has_answer[qid])
    best, best_thresh = score, 0.0
    for qid in sorted(na_probs, key=na_probs.__getitem__):
        if has_answer[qid]:
            score += raw[qid]
        elif predictions[qid]:  # the official script tests the raw prediction string
            score -= 1.0
        if score > best:
            best, best_thresh = score, na_probs[qid]
    return 100.0 * best / total, best_thresh


def _checked_na_probs(na_probs: Mapping[str, float], answered: Mapping[str, float]) -> dict[str, float]:
    """`na_probs` restricted to the answered questions (in `na_probs` order), as floats; all must be there."""
    probs: dict[str, float] = {}
    for qid, prob in na_probs.items():
        if qid in answered:
            try:
                probs[qid] = float(prob)
            except (TypeError, ValueError):
                raise InputError(f"na_probs[{qid!r}] = {prob!r} is not a number") from None
    absent = [qid for qid in answered if qid not in probs]
    if absent:
        raise InputError(f"na_probs has no probability for {len(absent)} question(s), e.g. {absent[0]!r}")
    return probs


def squad_evaluate(
    dataset: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Score SQuAD v1.1/v2.0 predictions like the official v2.0 script (percentages).

    `dataset` is the SQuAD JSON "data" list, `predictions` maps question id -> answer text ("" = no answer),
    `na_probs` maps question id -> no-answer probability; a question whose probability exceeds
    `na_prob_thresh` is scored as if unanswered. Questions without a prediction score 0 and are counted
    in "missing". Keys: exact, f1, total, HasAns_*/NoAns_* (exact, f1, total; when such questions exist),
    best_exact, best_exact_thresh, best_f1, best_f1_thresh (with `na_probs`), missing.
    """
    gold = _squad_gold(dataset)
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for qid, (answers, _) in gold.items():
        if qid not in predictions:
            continue
        pred = predictions[qid]
        if not isinstance(pred, str):
            raise InputError(f"prediction for {qid!r} must be a string, got {type(pred).__name__}")
        exact_raw[qid] = max(exact_match_score(pred, ans) for ans in answers)
        f1_raw[qid] = max(f1_score(pred, ans) for ans in answers)
    has_answer = {qid: has for qid, (_, has) in gold.items()}
    probs = {} if na_probs is None else _checked_na_probs(na_probs, exact_raw)

    def thresholded(raw: Mapping[str, float]) -> dict[str, float]:
        return {
            qid: float(not has_answer[qid]) if probs.get(qid, 0.0) > na_prob_thresh else score
            for qid, score in raw.items()
        }

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)

    def percent(scores: Mapping[str, float], qids: list[str]) -> float:
        return 100.0 * sum(scores.get(qid, 0.0) for qid in qids) / len(qids)

    out: dict[str, float] = {
        "exact": percent(exact, list(gold)),
        "f1": percent(f1, list(gold)),
        "total": len(gold),
    }
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_answer.items() if has == want]
        if qids:
            out[f"{prefix}_exact"] = percent(exact, qids)
            out[f"{prefix}_f1"] = percent(f1, qids)
            out[f"{prefix}_total"] = len(qids)
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(exact_raw, predictions, probs, has_answer, len(gold))
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(f1_raw, predictions, probs, has_answer, len(gold))
    out["missing"] = len(gold) - len(exact_raw)
    return out


# ---------------------------------------------------------------------------------- token classification


def _split_tag(tag: str, where: str) -> tuple[str, str | None]:
    """("O", None) for "O", else (prefix, entity type) for "B-/I-/E-/S-<type>"."""
    if tag == "O":
        return "O", None
    if isinstance(tag, str) and len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-":
        return tag[0], tag[2:]
    raise InputError(f"{where}: tag {tag!r} is neither 'O' nor B-/I-/E-/S- followed by an entity type")


def _entities(tags: Sequence[str], where: str) -> list[tuple[str, int, int]]:
    chunks: list[tuple[str, int, int]] = []
    prev, prev_type, begin = "O", None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, type_ = _split_tag(tag, f"{where}tag {i}")
        if prev != "O" and (prev in ("E", "S") or prefix in ("B", "S", "O") or type_ != prev_type):
            chunks.append((prev_type, begin, i - 1))
        if prefix != "O" and (prefix in ("B", "S") or prev in ("E", "S", "O") or type_ != prev_type):
            begin = i
        prev, prev_type = prefix, type_
    return chunks


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity chunks (type, start, end inclusive) of one tag sequence, by seqeval's default rules.

    A chunk ends after E-/S-, before B-/S-/O, or at a type change; it starts at B-/S-, at an I-/E- that
    follows O/E-/S-, or at a type change. So IOB1 and IOB2 (BIO) and IOBES tags are all accepted.
    """
    return _entities(tags, "")


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_f1(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1 (as seqeval), per-type scores and token accuracy.

    Returns precision, recall, f1, support (number of true entities), accuracy (of tags), and
    per_type: {type: {precision, recall, f1, support}} over the types in either side. An entity counts
    as correct when its type, start and end all match.
    """
    if len(true_seqs) != len(pred_seqs):
        raise InputError(f"true_seqs has {len(true_seqs)} sentences but pred_seqs has {len(pred_seqs)}")
    true_ents: set[tuple[str, int, int, int]] = set()
    pred_ents: set[tuple[str, int, int, int]] = set()
    correct_tags = total_tags = 0
    for s, (true_tags, pred_tags) in enumerate(zip(true_seqs, pred_seqs)):
        if len(true_tags) != len(pred_tags):
            raise InputError(f"sentence {s}: {len(true_tags)} true tags but {len(pred_tags)} predicted tags")
        true_ents.update((t, s, a, b) for t, a, b in _entities(true_tags, f"true sentence {s}, "))
        pred_ents.update((t, s, a, b) for t, a, b in _entities(pred_tags, f"predicted sentence {s}, "))
        correct_tags += sum(t == p for t, p in zip(true_tags, pred_tags))
        total_tags += len(true_tags)
    if total_tags == 0:
        raise InputError("no tags to score")
    hits = true_ents & pred_ents
    n_true, n_pred, n_hit = (Counter(e[0] for e in ents) for ents in (true_ents, pred_ents, hits))
    per_type = {
        t: {**_prf(n_hit[t], n_pred[t], n_true[t]), "support": n_true[t]} for t in sorted(n_true.keys() | n_pred.keys())
    }
    return {
        **_prf(len(hits), len(pred_ents), len(true_ents)),
        "support": len(true_ents),
        "accuracy": correct_tags / total_tags,
        "per_type": per_type,
    }
