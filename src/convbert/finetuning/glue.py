"""The GLUE task registry, the GLUE TSV reader and the GLUE server submission writer.

GLUE files are read as the GLUE download lays them out (`glue_data/<CoLA|SST-2|...>/<split>.tsv`):
tab-separated with no quoting (quote characters are literal text), each task with its own columns
and header convention (see `GLUE`). Every reader raises `InputError` naming the file and 1-based line.

GLUE as `datasets` has it (the hub's nyu-mll/glue, a config per task) is read too, with its own columns and class ids
(see `GLUE_DATASETS`): `hub:nyu-mll/glue` (the config defaults to the task), a `DatasetDict.save_to_disk` directory
of the task (or a directory with one per task, named as the configs), or a copy of the hub repository
(`<task>/<split>-NNNNN-of-NNNNN.parquet`). The splits dev, dev_matched, ... are datasets' validation,
validation_matched, ...; errors name the source and the 0-based row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from ..fileio import atomic_write_text
from ..tabular import HUB_PREFIX, Source, open_table, parse_source, with_split
from .tasks import Example, finite_score, required_text, text_lines

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
    score_range: tuple[float, float] | None = None  # regression: the scale of the scores (STS-B: 0 to 5)

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
        double_unordered=True, score_range=(0.0, 5.0),
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


@dataclass(frozen=True)
class DatasetsLayout:
    """The columns of a GLUE task in `datasets` (nyu-mll/glue): texts, `label` (class ids, -1 in the unlabelled test
    splits; STS-B: the score) and `idx` (the index a submission refers to)."""

    text_a: str
    text_b: str | None
    classes: tuple[str, ...] | None  # datasets' class names of the label ids; None: a score
    labels: tuple[str, ...] | None  # the registry label of each class id


GLUE_HUB = "nyu-mll/glue"
_IDS = ("0", "1")
GLUE_DATASETS: dict[str, DatasetsLayout] = {
    "cola": DatasetsLayout("sentence", None, ("unacceptable", "acceptable"), _IDS),
    "sst2": DatasetsLayout("sentence", None, ("negative", "positive"), _IDS),
    "mrpc": DatasetsLayout("sentence1", "sentence2", ("not_equivalent", "equivalent"), _IDS),
    "stsb": DatasetsLayout("sentence1", "sentence2", None, None),
    "qqp": DatasetsLayout("question1", "question2", ("not_duplicate", "duplicate"), _IDS),
    "mnli": DatasetsLayout("premise", "hypothesis", ("entailment", "neutral", "contradiction"),
                           ("entailment", "neutral", "contradiction")),
    "qnli": DatasetsLayout("question", "sentence", _NLI2, _NLI2),
    "rte": DatasetsLayout("sentence1", "sentence2", _NLI2, _NLI2),
    "wnli": DatasetsLayout("sentence1", "sentence2", ("not_entailment", "entailment"), _IDS),
}  # fmt: skip


def datasets_split(split: str) -> str:
    """The `datasets` name of a GLUE split: dev -> validation, dev_matched -> validation_matched, others the same."""
    return "validation" + split[3:] if split.startswith("dev") else split


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
    raise InputError(
        f"{data_dir}: neither {split}.tsv nor {spec.dir_name}/{split}.tsv exists, nor a datasets copy of {task} "
        f"(dataset_dict.json, {task}/{datasets_split(split)}-*.parquet; or use --data hub:{GLUE_HUB})"
    )


# ------------------------------------------------------------------------------- reading and submitting


def read_glue(task: str, data_dir: str | Path, split: str) -> list[Example]:
    """Read one split of a GLUE task (see `glue_file` for where it is looked for; `glue_sources` for `datasets`).

    Train/dev examples carry the label name (STS-B: the float score); test examples have label None
    and their guid is the file's index column, which `write_glue_submission` writes. Wrong column
    counts, unknown labels and empty texts raise InputError with the file and line. The original
    QQP.zip has a few malformed lines (rejected here); GLUE's QQP-clean release has none.
    """
    sources = glue_sources(task, data_dir, split)
    if sources:
        return [e for source in sources for e in read_glue_table(task, source, split)]
    spec = glue_task(task)
    path = glue_file(task, data_dir, split)
    layout = spec.layouts[split]
    lines = ((n, line) for n, line in text_lines(path) if line)
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
        text_a = required_text(fields[pos[layout.text_a]], where, layout.text_a)
        text_b = None if layout.text_b is None else required_text(fields[pos[layout.text_b]], where, layout.text_b)
        label: str | float | None = None
        if layout.label is not None:
            label = fields[pos[layout.label]]
            if spec.labels is None:
                label = finite_score(label, where, layout.label, spec.score_range)
            elif label not in spec.labels:
                raise InputError(f"{where}: unknown label {label!r}; expected one of {', '.join(spec.labels)}")
        guid = fields[pos[layout.index]] if layout.index is not None else str(lineno)
        examples.append(Example(text_a, text_b, label, guid))
    if not examples:
        raise InputError(f"{path}: no examples")
    return examples


def glue_sources(task: str, data: str | Path, split: str) -> list[Source]:
    """The `datasets` tables of a GLUE split, or [] for a GLUE download (TSV files).

    `hub:NAME[:CONFIG]` (CONFIG defaults to the task), a `DatasetDict.save_to_disk` directory (DATA, or DATA/<task>),
    or the Parquet files of a copy of the hub repository (DATA/<task>/<split>-*.parquet, or DATA/<split>-*.parquet).
    """
    spec = glue_task(task)
    if split not in spec.layouts:
        raise InputError(f"{task} has no split {split!r}; expected one of {', '.join(spec.splits)}")
    hub_split = datasets_split(split)
    if str(data).startswith(HUB_PREFIX):
        src = parse_source(data)
        if src.split is not None:
            raise InputError(f"{data}: name no split in --data; the task reads {', '.join(spec.splits)}")
        return [with_split(src, hub_split, config=task)]
    data = Path(data)
    if (data / f"{split}.tsv").is_file() or (data / spec.dir_name / f"{split}.tsv").is_file():
        return []
    for folder in (data, data / task):
        if (folder / "dataset_dict.json").is_file():
            return [Source(f"{folder}#{hub_split}", folder, split=hub_split)]
    for folder in (data / task, data):
        files = sorted(folder.glob(f"{hub_split}-*.parquet")) if folder.is_dir() else []
        if files:
            return [parse_source(f) for f in files]
    return []


def read_glue_table(task: str, source: str | Path | Source, split: str) -> list[Example]:
    """One GLUE split from a `datasets` table with the task's `GLUE_DATASETS` columns (see `glue_sources`).

    Class ids become the registry's labels (a string label must be one); guids are the idx column (else the row).
    """
    spec, columns = glue_task(task), GLUE_DATASETS[task]
    labelled = spec.layouts[split].label is not None
    table = open_table(source)
    table.require(columns.text_a, columns.text_b, "label" if labelled else None)
    names = table.class_names.get("label")
    if labelled and columns.classes is not None and names is not None and tuple(names) != columns.classes:
        raise InputError(
            f"{table.source}: the 'label' classes are {', '.join(names)}; {task} in datasets has "
            f"{', '.join(columns.classes)}"
        )
    examples = []
    for row, record in table.rows():
        where = table.where(row)
        text_a = required_text(record[columns.text_a], where, columns.text_a)
        text_b = None if columns.text_b is None else required_text(record[columns.text_b], where, columns.text_b)
        label: str | float | None = None
        if labelled:
            value = record["label"]
            if spec.labels is None:
                label = finite_score(value, where, "label", spec.score_range)
            elif isinstance(value, str) and value in spec.labels:
                label = value
            elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(columns.labels):
                label = columns.labels[value]
            else:
                unlabelled = " (-1: an unlabelled row, in a labelled split)" if value == -1 else ""
                raise InputError(
                    f"{where}: 'label' {value!r} is not a {task} class id 0..{len(columns.labels) - 1} "
                    f"({', '.join(columns.classes)}) or label ({', '.join(spec.labels)}){unlabelled}"
                )
        idx = record.get("idx")
        examples.append(Example(text_a, text_b, label, str(row if idx is None else idx)))
    if not examples:
        raise InputError(f"{table.source}: no examples")
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
