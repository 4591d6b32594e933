"""Fine-tuning data: the GLUE task registry and readers, custom classification files, CoNLL token
classification, and encoding into model inputs.

GLUE files are read as the GLUE download lays them out (`glue_data/<CoLA|SST-2|...>/<split>.tsv`):
tab-separated with no quoting (quote characters are literal text), each task with its own columns
and header convention (see `GLUE`). Every reader raises `InputError` naming the file and 1-based line.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import InputError
from ..fileio import atomic_write_text
from ..tokenizer import ConvBertTokenizer

IGNORE_INDEX = -100  # label of the positions the token-classification loss skips


@dataclass
class Example:
    """One sentence (pair) to classify or score; `label` is None for unlabelled (test) data."""

    text_a: str
    text_b: str | None
    label: str | float | None
    guid: str  # the file's index/id column where it has one, else the 1-based line number


# --------------------------------------------------------------------------------------- GLUE registry


@dataclass(frozen=True)
class TsvLayout:
    """The columns of one GLUE TSV file."""

    columns: tuple[str, ...]  # every column, in file order
    header: bool  # the first line names the columns (CoLA train/dev have no header)
    text_a: str
    text_b: str | None = None
    label: str | None = None  # None: unlabelled (test files)
    index: str | None = None  # id column; in test files, the index a submission refers to


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task: files, labels, metrics and the ELECTRA/ConvBERT fine-tuning defaults."""

    name: str
    dir_name: str  # directory of the task in the GLUE download
    layouts: dict[str, TsvLayout]  # split -> layout; the file is "<split>.tsv"
    labels: tuple[str, ...] | None  # class names (label id = position); None for regression
    metrics: tuple[str, ...]  # keys of metrics.glue_metrics(name, ...)
    eval_splits: tuple[str, ...]
    submissions: dict[str, str]  # test split -> GLUE submission file name
    epochs: int = 3
    double_unordered: bool = False  # also train on (text_b, text_a)

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.layouts)


def _layouts(
    train_dev: tuple[str, ...], test: tuple[str, ...], text_a: str, text_b: str | None, label: str, index: str | None
) -> dict[str, TsvLayout]:
    """train/dev/test layouts of a task whose files all have a header (all but CoLA)."""
    labelled = TsvLayout(train_dev, True, text_a, text_b, label, index)
    return {"train": labelled, "dev": labelled, "test": TsvLayout(test, True, text_a, text_b, None, test[0])}


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_ACC = ("accuracy",)
_ACC_F1 = ("accuracy", "f1", "combined")
_PAIR = ("index", "sentence1", "sentence2")
_MRPC = ("#1 ID", "#2 ID", "#1 String", "#2 String")
_STSB = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
_MNLI = (
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
)  # fmt: skip
_MNLI_TRAIN = TsvLayout((*_MNLI, "label1", "gold_label"), True, "sentence1", "sentence2", "gold_label", "index")
_MNLI_DEV = TsvLayout(
    (*_MNLI, "label1", "label2", "label3", "label4", "label5", "gold_label"),
    True, "sentence1", "sentence2", "gold_label", "index",
)  # fmt: skip
_MNLI_TEST = TsvLayout(_MNLI, True, "sentence1", "sentence2", None, "index")
_COLA = TsvLayout(("source", "label", "original_label_mark", "sentence"), False, "sentence", None, "label")

GLUE: dict[str, GlueTask] = {
    "cola": GlueTask(
        "cola", "CoLA",
        {"train": _COLA, "dev": _COLA, "test": TsvLayout(("index", "sentence"), True, "sentence", index="index")},
        _BINARY, ("matthews_correlation",), ("dev",), {"test": "CoLA.tsv"},
    ),
    "sst2": GlueTask(
        "sst2", "SST-2", _layouts(("sentence", "label"), ("index", "sentence"), "sentence", None, "label", None),
        _BINARY, _ACC, ("dev",), {"test": "SST-2.tsv"},
    ),
    "mrpc": GlueTask(
        "mrpc", "MRPC", _layouts(("Quality", *_MRPC), ("index", *_MRPC), "#1 String", "#2 String", "Quality", None),
        _BINARY, _ACC_F1, ("dev",), {"test": "MRPC.tsv"}, double_unordered=True,
    ),
    "stsb": GlueTask(
        "stsb", "STS-B", _layouts((*_STSB, "score"), _STSB, "sentence1", "sentence2", "score", "index"),
        None, ("pearson", "spearmanr", "combined"), ("dev",), {"test": "STS-B.tsv"}, epochs=10,
        double_unordered=True,
    ),
    "qqp": GlueTask(
        "qqp", "QQP",
        _layouts(("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), ("id", "question1", "question2"),
                 "question1", "question2", "is_duplicate", "id"),
        _BINARY, _ACC_F1, ("dev",), {"test": "QQP.tsv"},
    ),
    "mnli": GlueTask(
        "mnli", "MNLI",
        {"train": _MNLI_TRAIN, "dev_matched": _MNLI_DEV, "dev_mismatched": _MNLI_DEV,
         "test_matched": _MNLI_TEST, "test_mismatched": _MNLI_TEST},
        ("contradiction", "entailment", "neutral"), _ACC, ("dev_matched", "dev_mismatched"),
        {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
    ),
    "qnli": GlueTask(
        "qnli", "QNLI",
        _layouts(("index", "question", "sentence", "label"), ("index", "question", "sentence"),
                 "question", "sentence", "label", "index"),
        _NLI2, _ACC, ("dev",), {"test": "QNLI.tsv"},
    ),
    "rte": GlueTask(
        "rte", "RTE", _layouts((*_PAIR, "label"), _PAIR, "sentence1", "sentence2", "label", "index"),
        _NLI2, _ACC, ("dev",), {"test": "RTE.tsv"}, epochs=10,
    ),
    "wnli": GlueTask(
        "wnli", "WNLI", _layouts((*_PAIR, "label"), _PAIR, "sentence1", "sentence2", "label", "index"),
        _BINARY, _ACC, ("dev",), {"test": "WNLI.tsv"},
    ),
}  # fmt: skip


def glue_task(task: str) -> GlueTask:
    """The registry entry of `task` (lower-case: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)."""
    if task not in GLUE:
        raise InputError(f"unknown GLUE task {task!r}; expected one of {', '.join(GLUE)}")
    return GLUE[task]


def glue_file(task: str, data_dir: str | Path, split: str) -> Path:
    """`<data_dir>/<split>.tsv`, or `<data_dir>/<CoLA|SST-2|...>/<split>.tsv` when `data_dir` is the GLUE root."""
    spec = glue_task(task)
    if split not in spec.layouts:
        raise InputError(f"{task} has no split {split!r}; expected one of {', '.join(spec.splits)}")
    data_dir = Path(data_dir)
    for path in (data_dir / f"{split}.tsv", data_dir / spec.dir_name / f"{split}.tsv"):
        if path.is_file():
            return path
    raise InputError(f"{data_dir}: neither {split}.tsv nor {spec.dir_name}/{split}.tsv exists")


# --------------------------------------------------------------------------------------------- readers


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break) for each line of a UTF-8 file.

    Only "\\n" ends a line (a stray "\\r" inside a field stays in the text); a leading BOM is dropped.
    """
    lineno = 0
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\n").removesuffix("\r")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}:{lineno + 1}: not valid UTF-8: {e.reason}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def _text(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: {column!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{where}: empty text in {column!r}")
    return value


def _score(value: Any, where: str, column: str) -> float:
    score = math.nan
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        try:
            score = float(value)
        except ValueError:
            pass
    if not math.isfinite(score):
        raise InputError(f"{where}: {column!r} must be a finite number, got {value!r}")
    return score


def read_glue(task: str, data_dir: str | Path, split: str) -> list[Example]:
    """Read one split of a GLUE task (see `glue_file` for where it is looked for).

    Train/dev examples carry the label name (STS-B: the float score); test examples have label None
    and their guid is the file's index column, which `write_glue_submission` writes. Wrong column
    counts, unknown labels and empty texts raise InputError with the file and line. The original
    QQP.zip has a few malformed lines (rejected here); GLUE's QQP-clean release has none.
    """
    spec = glue_task(task)
    path = glue_file(task, data_dir, split)
    layout = spec.layouts[split]
    lines = ((n, line) for n, line in _text_lines(path) if line)
    columns, header_line = list(layout.columns), 1
    if layout.header:
        header_line, header = next(lines, (1, ""))
        columns = header.split("\t")
    wanted = [c for c in (layout.text_a, layout.text_b, layout.label, layout.index) if c is not None]
    missing = [c for c in wanted if c not in columns]
    if missing:
        expected = "\t".join(layout.columns)
        raise InputError(
            f"{path}:{header_line}: header lacks the column(s) {', '.join(map(repr, missing))}; expected {expected!r}"
        )
    pos = {c: columns.index(c) for c in wanted}
    examples = []
    for lineno, line in lines:
        where = f"{path}:{lineno}"
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise InputError(f"{where}: expected {len(columns)} tab-separated columns, got {len(fields)}")
        text_a = _text(fields[pos[layout.text_a]], where, layout.text_a)
        text_b = None if layout.text_b is None else _text(fields[pos[layout.text_b]], where, layout.text_b)
        label: str | float | None = None
        if layout.label is not None:
            label = fields[pos[layout.label]]
            if spec.labels is None:
                label = _score(label, where, layout.label)
            elif label not in spec.labels:
                raise InputError(f"{where}: unknown label {label!r}; expected one of {', '.join(spec.labels)}")
        guid = fields[pos[layout.index]] if layout.index is not None else str(lineno)
        examples.append(Example(text_a, text_b, label, guid))
    if not examples:
        raise InputError(f"{path}: no examples")
    return examples


def write_glue_submission(
    out_dir: str | Path, task: str, split: str, examples: Sequence[Example], predictions: ArrayLike
) -> Path:
    """Write the GLUE server file of a test split (e.g. CoLA.tsv, MNLI-m.tsv): `index<TAB>prediction`.

    `predictions` are label ids (STS-B: scores, clipped to [0, 5], 3 decimals); the index is each
    example's guid, i.e. the test file's index column.
    """
    spec = glue_task(task)
    if split not in spec.submissions:
        raise InputError(f"{task} split {split!r} is not a test split; expected one of {', '.join(spec.submissions)}")
    preds = np.asarray(predictions)
    if preds.shape != (len(examples),):
        raise InputError(f"expected {len(examples)} predictions, got shape {preds.shape}")
    if spec.labels is None:
        values = [f"{v:.3f}" for v in np.clip(preds.astype(float), 0.0, 5.0)]
    else:
        if not np.issubdtype(preds.dtype, np.integer) or preds.min() < 0 or preds.max() >= spec.num_labels:
            raise InputError(f"{task} predictions must be label ids in 0..{spec.num_labels - 1}")
        values = [spec.labels[i] for i in preds]
    path = Path(out_dir) / spec.submissions[split]
    atomic_write_text(path, "index\tprediction\n" + "".join(f"{e.guid}\t{v}\n" for e, v in zip(examples, values)))
    return path


def double_unordered(examples: Sequence[Example]) -> list[Example]:
    """The examples followed by copies with the two texts swapped (guid + "-swapped"); pairs only."""
    swapped = []
    for e in examples:
        if e.text_b is None:
            raise InputError(f"example {e.guid}: double_unordered needs sentence pairs")
        swapped.append(Example(e.text_b, e.text_a, e.label, f"{e.guid}-swapped"))
    return [*examples, *swapped]


# ------------------------------------------------------------------------------------------ custom files


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for a .tsv (no quoting), .csv (standard quoting) or .jsonl file.

    TSV/CSV files start with a header row naming the columns; blank lines are skipped.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for lineno, line in _text_lines(path):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record
        return
    if suffix == ".tsv":
        rows: Iterator[tuple[int, list[str]]] = ((n, line.split("\t")) for n, line in _text_lines(path) if line)
    elif suffix == ".csv":
        rows = _csv_rows(path)
    else:
        raise InputError(f"{path}: unknown file type {suffix!r}; expected .tsv, .csv or .jsonl")
    header = next(rows, None)
    if header is None:
        raise InputError(f"{path}: empty file")
    columns = header[1]
    for lineno, fields in rows:
        if len(fields) != len(columns):
            raise InputError(f"{path}:{lineno}: expected {len(columns)} columns (as the header), got {len(fields)}")
        yield lineno, dict(zip(columns, fields))


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record ends, fields) of the non-blank records of a CSV file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            try:
                for fields in reader:
                    if fields:
                        yield reader.line_num, fields
            except csv.Error as e:
                raise InputError(f"{path}:{reader.line_num}: {e}") from None
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{reader.line_num + 1}: not valid UTF-8: {e.reason}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def _sorted_labels(labels: set[str]) -> list[str]:
    """Sorted; numerically when every label is an integer ("2" before "10")."""
    if all(re.fullmatch(r"-?\d+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def read_custom(
    path: str | Path,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    labels: Sequence[str] | None = None,
    regression: bool = False,
) -> tuple[list[Example], list[str] | None]:
    """Read a custom classification/regression file: .tsv or .csv with a header row, or .jsonl.

    Returns the examples and the label list: `labels` when given (any other label is an error, so
    pass the training file's list when reading dev/test), else the sorted labels found in the file;
    None for regression. `label_column=None` reads unlabelled data.
    """
    path = Path(path)
    examples, seen = [], set()
    for lineno, record in read_records(path):
        where = f"{path}:{lineno}"
        for column in (text_column, text_pair_column, label_column):
            if column is not None and column not in record:
                raise InputError(f"{where}: missing field {column!r}")
        text_a = _text(record[text_column], where, text_column)
        text_b = None if text_pair_column is None else _text(record[text_pair_column], where, text_pair_column)
        label: str | float | None = None
        if label_column is not None:
            value = record[label_column]
            if regression:
                label = _score(value, where, label_column)
            elif isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
                label = str(value)
                if labels is not None and label not in labels:
                    raise InputError(f"{where}: unknown label {label!r}; expected one of {', '.join(labels)}")
                seen.add(label)
            else:
                raise InputError(f"{where}: label {value!r} must be a string or an integer")
        examples.append(Example(text_a, text_b, label, str(lineno)))
    if not examples:
        raise InputError(f"{path}: no examples")
    if regression:
        return examples, None
    return examples, list(labels) if labels is not None else _sorted_labels(seen) or None


# ------------------------------------------------------------------------------------------- encoding


@dataclass
class Features:
    """Model inputs: `tensors` holds input_ids, token_type_ids, attention_mask (N, T) and, for
    labelled data, labels (N,) (long for classes, float for regression)."""

    tensors: dict[str, torch.Tensor]
    num_truncated: int  # examples longer than max_length that were cut


def encode_examples(
    tokenizer: ConvBertTokenizer,
    examples: Sequence[Example],
    label2id: dict[str, int] | None,
    max_length: int,
    regression: bool = False,
) -> Features:
    """Tokenize `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, truncating longest-first to `max_length`
    and padding to the longest row. Labels are encoded when every example has one (classification
    needs `label2id`); unlabelled examples give no labels tensor.
    """
    if not examples:
        raise InputError("no examples to encode")
    pairs = [e.text_b for e in examples]
    if any(p is None for p in pairs) and any(p is not None for p in pairs):
        raise InputError("examples mix single sentences and sentence pairs")
    labelled = [e.label is not None for e in examples]
    if any(labelled) and not all(labelled):
        raise InputError(f"example {examples[labelled.index(False)].guid} has no label but others do")
    labels = None
    if all(labelled):
        if regression:
            labels = torch.tensor([float(e.label) for e in examples], dtype=torch.float)
        elif label2id is None:
            raise InputError("label2id is needed to encode class labels")
        else:
            for e in examples:
                if e.label not in label2id:
                    raise InputError(f"example {e.guid}: label {e.label!r} is not in label2id")
            labels = torch.tensor([label2id[e.label] for e in examples], dtype=torch.long)
    text_a = [e.text_a for e in examples]
    text_b = None if pairs[0] is None else pairs
    full = tokenizer(text_a, text_b, padding=False, truncation=False, return_tensors=None)["input_ids"]
    tensors = tokenizer(text_a, text_b, max_length=max_length, padding=True, truncation=True)
    if labels is not None:
        tensors["labels"] = labels
    return Features(tensors, sum(len(ids) > max_length for ids in full))


# -------------------------------------------------------------------------------- token classification


@dataclass
class Sentence:
    """Pre-split words and their tags (e.g. BIO), from `source` ("file:line" of its first word)."""

    tokens: list[str]
    tags: list[str]
    source: str = ""


def read_conll(path: str | Path) -> list[Sentence]:
    """CoNLL-style file: a word and its tag per line (tab- or else whitespace-separated; the first and
    last columns are used), a blank line between sentences, `-DOCSTART-` lines skipped."""
    path = Path(path)
    sentences: list[Sentence] = []
    current = Sentence([], [])
    for lineno, line in _text_lines(path):
        if not line.strip():
            if current.tokens:
                sentences.append(current)
            current = Sentence([], [])
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or not fields[0] or not fields[-1].strip():
            raise InputError(f"{path}:{lineno}: expected a word and its tag, got {line!r}")
        if not current.tokens:
            current.source = f"{path}:{lineno}"
        current.tokens.append(fields[0])
        current.tags.append(fields[-1].strip())
    if current.tokens:
        sentences.append(current)
    if not sentences:
        raise InputError(f"{path}: no sentences")
    return sentences


def conll_labels(sentences: Sequence[Sentence]) -> list[str]:
    """The sorted tag set (infer it from the training sentences)."""
    return sorted({tag for s in sentences for tag in s.tags})


@dataclass
class TokenFeatures:
    """Token-classification inputs: `tensors` holds input_ids, token_type_ids, attention_mask and
    (with label2id) labels, all (N, T); a word's label sits on its first wordpiece, IGNORE_INDEX elsewhere."""

    tensors: dict[str, torch.Tensor]
    word_ids: list[list[int | None]]  # per row, the word index of each (unpadded) token; None for [CLS]/[SEP]
    num_words: list[int]  # words per sentence (truncated ones included)
    num_truncated: int  # sentences cut at max_length: their last words get no prediction


def token_classification_features(
    tokenizer: ConvBertTokenizer,
    sentences: Sequence[Sentence],
    label2id: dict[str, int] | None,
    max_length: int,
) -> TokenFeatures:
    """Wordpieces of each word (a word the normaliser deletes entirely becomes [UNK], so every word
    keeps a position), `[CLS] ... [SEP]`, cut to `max_length`, padded to the longest row."""
    if not sentences:
        raise InputError("no sentences to encode")
    if max_length < 3:
        raise InputError(f"max_length {max_length} leaves no room for a word")
    words = [w for s in sentences for w in s.tokens]
    pieces = iter(tokenizer(words, padding=False, truncation=False, return_tensors=None)["input_ids"])
    rows, labels, word_ids, truncated = [], [], [], 0
    for s in sentences:
        ids, row_labels, row_words = [tokenizer.cls_token_id], [IGNORE_INDEX], [None]
        for w, tag in enumerate(s.tags):
            wordpieces = next(pieces)[1:-1] or [tokenizer.unk_token_id]  # drop the [CLS]/[SEP] of the word
            if label2id is not None and tag not in label2id:
                raise InputError(f"{s.source or 'sentence'}: tag {tag!r} is not in the label list")
            first = IGNORE_INDEX if label2id is None else label2id[tag]
            ids += wordpieces
            row_labels += [first] + [IGNORE_INDEX] * (len(wordpieces) - 1)
            row_words += [w] * len(wordpieces)
        if len(ids) + 1 > max_length:
            truncated += 1
            keep = max_length - 1  # room for the closing [SEP]
            ids, row_labels, row_words = ids[:keep], row_labels[:keep], row_words[:keep]
        rows.append(ids + [tokenizer.sep_token_id])
        labels.append(row_labels + [IGNORE_INDEX])
        word_ids.append(row_words + [None])
    width = max(map(len, rows))

    def padded(values: list[list[int]], fill: int) -> torch.Tensor:
        return torch.tensor([v + [fill] * (width - len(v)) for v in values], dtype=torch.long)

    tensors = {
        "input_ids": padded(rows, tokenizer.pad_token_id),
        "token_type_ids": torch.zeros(len(rows), width, dtype=torch.long),
        "attention_mask": padded([[1] * len(r) for r in rows], 0),
    }
    if label2id is not None:
        tensors["labels"] = padded(labels, IGNORE_INDEX)
    return TokenFeatures(tensors, word_ids, [len(s.tokens) for s in sentences], truncated)


def align_predictions(
    predictions: ArrayLike, features: TokenFeatures, labels: Sequence[str], fill: str = "O"
) -> list[list[str]]:
    """Per-word tags from token-level label ids (N, T) or logits (N, T, C): each word takes the
    prediction at its first wordpiece; words cut off by truncation get `fill`."""
    preds = np.asarray(predictions)
    if preds.ndim == 3:
        preds = preds.argmax(-1)
    if preds.ndim != 2 or len(preds) != len(features.word_ids):
        raise InputError(f"expected predictions of shape ({len(features.word_ids)}, T), got {preds.shape}")
    out = []
    for row, word_ids, n_words in zip(preds, features.word_ids, features.num_words):
        if len(row) < len(word_ids):
            raise InputError(f"predictions have {len(row)} positions but a row has {len(word_ids)} tokens")
        tags = [fill] * n_words
        previous = None
        for position, w in enumerate(word_ids):
            if w is not None and w != previous:
                label_id = int(row[position])
                if not 0 <= label_id < len(labels):
                    raise InputError(f"predicted label id {label_id} is outside 0..{len(labels) - 1}")
                tags[w] = labels[label_id]
            previous = w
        out.append(tags)
    return out
