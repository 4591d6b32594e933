"""Fine-tuning data shared by every task: the `Example` record, the UTF-8 line and field readers, custom
classification files, and encoding into model inputs.

GLUE lives in `glue`, CoNLL token classification in `conll`. Every reader raises `InputError` naming the
file and 1-based line.
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

import torch

from ..errors import InputError
from ..tokenizer import ConvBertTokenizer


@dataclass
class Example:
    """One sentence (pair) to classify or score; `label` is None for unlabelled (test) data."""

    text_a: str
    text_b: str | None
    label: str | float | None
    guid: str  # the file's index/id column where it has one, else the 1-based line number


# --------------------------------------------------------------------------------------------- readers


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
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


def required_text(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: {column!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{where}: empty text in {column!r}")
    return value


def finite_score(value: Any, where: str, column: str) -> float:
    score = math.nan
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        try:
            score = float(value)
        except ValueError:
            pass
    if not math.isfinite(score):
        raise InputError(f"{where}: {column!r} must be a finite number, got {value!r}")
    return score


# ------------------------------------------------------------------------------------------ custom files


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for a .tsv (no quoting), .csv (standard quoting) or .jsonl file.

    TSV/CSV files start with a header row naming the columns; blank lines are skipped.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for lineno, line in text_lines(path):
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
        rows: Iterator[tuple[int, list[str]]] = ((n, line.split("\t")) for n, line in text_lines(path) if line)
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
        text_a = required_text(record[text_column], where, text_column)
        text_b = None if text_pair_column is None else required_text(record[text_pair_column], where, text_pair_column)
        label: str | float | None = None
        if label_column is not None:
            value = record[label_column]
            if regression:
                label = finite_score(value, where, label_column)
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
