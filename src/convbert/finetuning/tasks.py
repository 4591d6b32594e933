"""Fine-tuning data shared by every task: the `Example` record, the UTF-8 line and field readers, custom
classification files and tables, and encoding into model inputs.

GLUE lives in `glue`, CoNLL token classification in `conll`, Parquet/Arrow/`datasets` tables in `convbert.tabular`.
Every reader raises `InputError` naming the file and 1-based line (tables: the source and 0-based row).
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
from ..fileio import json_int, parse_json, utf8_error
from ..tabular import is_table, open_table
from ..tokenizer import ConvBertTokenizer


@dataclass
class Example:
    """One sentence (pair) to classify or score; `label` is None for unlabelled (test) data, a tuple of label names
    (maybe empty) for multi-label data."""

    text_a: str
    text_b: str | None
    label: str | float | tuple[str, ...] | None
    guid: str  # the file's index/id column where it has one, else the 1-based line number


# --------------------------------------------------------------------------------------------- readers


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break) for each line of a UTF-8 file.

    Only "\\n" ends a line (a stray "\\r" inside a field stays in the text); a leading BOM is dropped.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\n").removesuffix("\r")
    except UnicodeDecodeError as e:  # decoding runs a buffer ahead of `lineno`: find the bad byte's line
        raise utf8_error(path, e) from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def required_text(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: {column!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InputError(f"{where}: empty text in {column!r}")
    return value


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def finite_score(value: Any, where: str, column: str, bounds: tuple[float, float] | None = None) -> float:
    """A regression label: a number finite as the float32 the model trains on, within `bounds` when given."""
    score = math.nan
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        try:
            score = float(value)
        except (ValueError, OverflowError):  # OverflowError: an int beyond the float range
            pass
    if not math.isfinite(score) or abs(score) > _FLOAT32_MAX:
        raise InputError(f"{where}: {column!r} must be a finite number, got {value!r}")
    if bounds is not None and not bounds[0] <= score <= bounds[1]:
        raise InputError(f"{where}: {column!r} must be within [{bounds[0]:g}, {bounds[1]:g}], got {value!r}")
    return score


# ------------------------------------------------------------------------------------------ custom files


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for a .tsv (no quoting), .csv (standard quoting), .jsonl or .json file (JSON Lines, or
    one JSON array of objects); (row number from 0, record) for a table (see `convbert.tabular`: .parquet, .arrow, a
    `datasets` directory, hub:NAME[:CONFIG][#SPLIT]).

    TSV/CSV files start with a header row naming the columns; blank lines are skipped.
    """
    if is_table(path):
        yield from open_table(path).rows()
        return
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".tsv", ".csv"):
        raise InputError(
            f"{path}: unknown file type {suffix!r}; expected .tsv, .csv, .jsonl, .json, .parquet or .arrow, "
            "a datasets directory or hub:NAME[:CONFIG][#SPLIT]"
        )
    if not path.is_file():
        raise InputError(f"{path}: not found")
    if suffix == ".json" and _is_json_array(path):
        yield from _json_array(path)
        return
    if suffix in (".jsonl", ".json"):
        for lineno, line in text_lines(path):
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record
        return
    if suffix == ".tsv":
        rows: Iterator[tuple[int, list[str]]] = ((n, line.split("\t")) for n, line in text_lines(path) if line)
    else:
        rows = _csv_rows(path)
    header = next(rows, None)
    if header is None:
        raise InputError(f"{path}: empty file")
    columns = header[1]
    for lineno, fields in rows:
        if len(fields) != len(columns):
            raise InputError(f"{path}:{lineno}: expected {len(columns)} columns (as the header), got {len(fields)}")
        yield lineno, dict(zip(columns, fields))


def _is_json_array(path: Path) -> bool:
    """Whether a .json file holds one JSON array (its first non-blank character is "[")."""
    for _, line in text_lines(path):
        if line.strip():
            return line.lstrip().startswith("[")
    return False


def _json_array(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number where it starts, object) for each element of a .json file holding an array of objects."""
    text = "\n".join(line for _, line in text_lines(path))
    decoder = json.JSONDecoder(parse_int=json_int)
    pos = text.index("[") + 1

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip(pos)
    if text.startswith("]", pos):
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{text.count(chr(10), 0, e.pos) + 1}: invalid JSON: {e.msg}") from None
        except ValueError:  # json_int: a number of 4,000 digits or more
            raise InputError(f"{path}:{line}: invalid JSON: a number of 4,000 digits or more") from None
        except RecursionError:
            raise InputError(f"{path}:{line}: invalid JSON: nested too deep") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
        yield line, record
        pos = skip(pos)
        if text.startswith("]", pos):
            if skip(pos + 1) < len(text):
                raise InputError(f"{path}:{text.count(chr(10), 0, pos) + 1}: unexpected text after the JSON array")
            return
        if not text.startswith(",", pos):
            raise InputError(f"{path}:{text.count(chr(10), 0, pos) + 1}: expected ',' or ']' in the JSON array")
        pos = skip(pos + 1)


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
                raise utf8_error(path, e) from None
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
    multi_label: bool = False,
    label_separator: str = ",",
) -> tuple[list[Example], list[str] | None]:
    """Read a custom classification/regression file: .tsv or .csv with a header row, .jsonl or .json, or a table
    (.parquet, .arrow, a `datasets` directory, hub:NAME[:CONFIG][#SPLIT]; see `convbert.tabular`).

    Returns the examples and the label list: `labels` when given (any other label is an error, so
    pass the training file's list when reading dev/test), else the sorted labels found in the file (a table's
    ClassLabel column: its class names, in class id order, and its ids are read as those names);
    None for regression. `label_column=None` reads unlabelled data. A table's guids are its row numbers (from 0).

    multi_label: a row's label is a list of names (or of a table's ClassLabel ids), or text split at
    `label_separator` (each name stripped; "" is no label); each example's label is then a tuple of names.
    """
    class_names = None
    if is_table(path):
        table = open_table(path, [c for c in (text_column, text_pair_column, label_column) if c is not None])
        records, place = table.rows(), table.where
        if label_column is not None and not regression:
            class_names = table.class_names.get(label_column)  # ClassLabel, or a list of them (multi_label)
    else:
        path = Path(path)
        records, place = read_records(path), lambda n: f"{path}:{n}"
    examples, seen = [], set()
    for lineno, record in records:
        where = place(lineno)
        for column in (text_column, text_pair_column, label_column):
            if column is not None and column not in record:
                raise InputError(f"{where}: missing field {column!r}")
        text_a = required_text(record[text_column], where, text_column)
        text_b = None if text_pair_column is None else required_text(record[text_pair_column], where, text_pair_column)
        label: str | float | tuple[str, ...] | None = None
        if label_column is not None:
            value = record[label_column]
            if regression:
                label = finite_score(value, where, label_column)
            elif multi_label:
                names = _label_list(value, where, label_column, label_separator)
                label = tuple(dict.fromkeys(_label_name(v, class_names, labels, where, label_column) for v in names))
                seen.update(label)
            else:
                label = _label_name(value, class_names, labels, where, label_column)
                seen.add(label)
        examples.append(Example(text_a, text_b, label, str(lineno)))
    if not examples:
        raise InputError(f"{path}: no examples")
    if regression:
        return examples, None
    if multi_label and label_column is not None and labels is None and class_names is None and not seen:
        raise InputError(f"{path}: no row has a label in {label_column!r}")
    if labels is not None:
        return examples, list(labels)
    return examples, list(class_names) if class_names is not None else _sorted_labels(seen) or None


def _class_name(value: Any, class_names: Sequence[str] | None, where: str, column: str) -> Any:
    """A table's ClassLabel id as its class name; any other value as it is."""
    if class_names is None or not isinstance(value, int) or isinstance(value, bool):
        return value
    if not 0 <= value < len(class_names):
        raise InputError(
            f"{where}: {column!r} {value} is not a class id (0..{len(class_names) - 1} for "
            f"{', '.join(class_names)})" + ("; -1 marks an unlabelled row" if value == -1 else "")
        )
    return class_names[value]


def _label_name(
    value: Any, class_names: Sequence[str] | None, labels: Sequence[str] | None, where: str, column: str
) -> str:
    """One class label as its name (a string, an integer, a ClassLabel id), checked against `labels`."""
    value = _class_name(value, class_names, where, column)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InputError(f"{where}: label {value!r} must be a string or an integer")
    if isinstance(value, str) and not value.strip():
        raise InputError(f"{where}: empty label in {column!r}")
    label = str(value)
    if labels is not None and label not in labels:
        raise InputError(f"{where}: unknown label {label!r}; expected one of {', '.join(labels)}")
    return label


def _label_list(value: Any, where: str, column: str, separator: str) -> list[Any]:
    """A multi-label cell's labels: a list as it is, text split at `separator` (each name stripped; "" or blank:
    none). An empty name is an error."""
    if isinstance(value, (list, tuple)):
        names = list(value)
    elif isinstance(value, str):
        names = [] if not value.strip() else [name.strip() for name in value.split(separator)]
    else:
        raise InputError(
            f"{where}: {column!r} must be a list of labels or text with labels separated by {separator!r}, "
            f"got {value!r}"
        )
    if any(isinstance(name, str) and not name.strip() for name in names):
        raise InputError(f"{where}: empty label name in {column!r} ({value!r})")
    return names


# ------------------------------------------------------------------------------------------- encoding


@dataclass
class Features:
    """Model inputs: `tensors` holds input_ids, token_type_ids, attention_mask (N, T) and, for
    labelled data, labels (N,) (long for classes, float for regression; multi-label: a float multi-hot (N, C))."""

    tensors: dict[str, torch.Tensor]
    num_truncated: int  # examples longer than max_length that were cut


def encode_examples(
    tokenizer: ConvBertTokenizer,
    examples: Sequence[Example],
    label2id: dict[str, int] | None,
    max_length: int,
    regression: bool = False,
    multi_label: bool = False,
) -> Features:
    """Tokenize `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, truncating longest-first to `max_length`
    and padding to the longest row. Labels are encoded when every example has one (classification
    needs `label2id`; multi_label: each label a tuple of names, encoded multi-hot); unlabelled examples give no
    labels tensor.
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
        elif multi_label:
            labels = torch.zeros(len(examples), len(label2id), dtype=torch.float)
            for i, e in enumerate(examples):
                if not isinstance(e.label, (tuple, list)):
                    raise InputError(f"example {e.guid}: multi-label data needs a list of labels, got {e.label!r}")
                for name in e.label:
                    if name not in label2id:
                        raise InputError(f"example {e.guid}: label {name!r} is not in label2id")
                    labels[i, label2id[name]] = 1.0
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
