"""Tables: Parquet and Arrow files, directories written by `datasets` and hub datasets, read as columns and rows.

A source is one of
- a `.parquet` file, or an `.arrow` file (Arrow IPC file or stream, as `datasets` writes them);
- a directory written by `Dataset.save_to_disk` (state.json + data-*.arrow), or by `DatasetDict.save_to_disk`
  (dataset_dict.json + a directory per split): `DIR#SPLIT` or `DIR/SPLIT` picks a split;
- another directory of data files, as `datasets.load_dataset(DIR)` reads it (split names in the file names);
- `hub:NAME[:CONFIG][#SPLIT]`, a hub dataset loaded by `datasets.load_dataset(NAME, CONFIG, split=SPLIT)`: from the
  `datasets` cache when it is there (offline too: HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1), else downloaded.
A source with several splits needs one named. Files and save_to_disk directories need only pyarrow; hub names and
other directories need `datasets` (`pip install convbert[datasets]` brings both).

Rows are numbered from 0, as `datasets` indexes them (`ds[i]`). Every error is an `InputError` naming the source and
the column or row. `ClassLabel` columns, and list columns of them (`Sequence(ClassLabel)`), keep their class names
(`Table.class_names`), from the `datasets` features or, without `datasets`, the features `datasets` stores in the
files' schema metadata.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

HUB_PREFIX = "hub:"
TABLE_SUFFIXES = (".parquet", ".arrow")
INSTALL = "pip install convbert[datasets]"
_BATCH_ROWS = 4096


@dataclass(frozen=True)
class Source:
    """Where a table is: a file or directory (`path`), or a hub dataset (`name`, `config`); `split` picks one."""

    text: str  # as given; what messages name
    path: Path | None = None
    name: str | None = None
    config: str | None = None
    split: str | None = None


def parse_source(source: str | Path | Source) -> Source:
    """`hub:NAME[:CONFIG][#SPLIT]`, `DIR#SPLIT`, or a path."""
    if isinstance(source, Source):
        return source
    text = str(source)
    if text.startswith(HUB_PREFIX):
        rest, _, split = text[len(HUB_PREFIX) :].partition("#")
        name, _, config = rest.partition(":")
        if not name or not re.fullmatch(r"[\w.\-]*", config) or not re.fullmatch(r"[\w.\-]*", split):
            raise InputError(f"{text}: expected hub:NAME[:CONFIG][#SPLIT], e.g. hub:nyu-mll/glue:mnli#train")
        return Source(text, name=name, config=config or None, split=split or None)
    path = Path(source)
    head, sep, split = text.rpartition("#")
    if sep and not path.exists() and Path(head).is_dir():
        return Source(text, Path(head), split=split)
    return Source(text, path)


def is_table(source: str | Path | Source) -> bool:
    """Whether `source` is read as a table (not as a text, CSV, TSV or JSON file)."""
    src = parse_source(source)
    return src.name is not None or src.path.is_dir() or src.path.suffix.lower() in TABLE_SUFFIXES


def with_split(source: str | Path | Source, split: str, config: str | None = None) -> Source:
    """`source` with `split` (and a hub `config` when it names none); an error if it names another split."""
    src = parse_source(source)
    if src.split is not None and src.split != split:
        raise InputError(f"{src.text}: names the split {src.split!r}, but {split!r} is read from it")
    return dataclasses.replace(src, split=split, config=src.config or (config if src.name is not None else None))


# ------------------------------------------------------------------------------------------------ tables
@dataclass
class Table:
    """A table's columns (a `pyarrow.Table`) and the class names of its ClassLabel columns (and lists of them)."""

    source: str
    data: Any  # pyarrow.Table
    class_names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return list(self.data.column_names)

    def __len__(self) -> int:
        return self.data.num_rows

    def where(self, row: int) -> str:
        return f"{self.source}: row {row}"

    def require(self, *columns: str | None) -> None:
        """An InputError naming the source and the first of `columns` (None: skipped) it lacks."""
        check_columns(self.source, self.columns, [c for c in columns if c is not None])

    def rows(self, columns: Sequence[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row number, {column: value}) for every row; `columns` (default: all) must exist (see `require`)."""
        data = self.data if columns is None else self.data.select(list(dict.fromkeys(columns)))
        row = 0
        for batch in data.to_batches(max_chunksize=_BATCH_ROWS):
            for record in batch.to_pylist():
                yield row, record
                row += 1


def check_columns(source: str, names: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(
            f"{source}: no column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"its columns are {', '.join(names) or '(none)'}"
        )


def open_table(source: str | Path | Source, columns: Sequence[str] | None = None) -> Table:
    """The table at `source` (see the module docstring); `columns`: the ones read (each must exist; default all)."""
    src = parse_source(source)
    if src.name is not None:
        return _from_dataset(src, _load_dataset(src, src.name), columns)
    path = src.path
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            split = choose_split(src, _saved_splits(src, path))
            return _saved_dataset(dataclasses.replace(src, split=None), path / split, columns)
        if (path / "state.json").is_file():
            if src.split is not None:
                raise InputError(f"{src.text}: {path} holds one dataset, with no splits to pick from")
            return _saved_dataset(src, path, columns)
        return _from_dataset(src, _load_dataset(src, str(path)), columns)
    if not path.is_file():
        raise InputError(f"{src.text}: not found")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"{src.text}: not a table; expected a .parquet or .arrow file or a datasets directory")
    pa = _pyarrow(src.text)
    names = file_schema(path).names
    check_columns(src.text, names, columns or ())
    try:
        if path.suffix.lower() == ".parquet":
            data = _pq().read_table(path, columns=None if columns is None else list(dict.fromkeys(columns)))
        else:
            data = _read_arrow(path)
            if columns is not None:
                data = data.select(list(dict.fromkeys(columns)))
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{src.text}: cannot read: {e}") from None
    return Table(src.text, data, _class_names(_schema_features(data.schema)))


def choose_split(src: Source, splits: Sequence[str]) -> str:
    """The split `src` names (which must be one of `splits`), or the only one."""
    if src.split is not None:
        if src.split not in splits:
            raise InputError(f"{src.text}: no split {src.split!r}; its splits are {', '.join(splits)}")
        return src.split
    if len(splits) == 1:
        return splits[0]
    base = src.text.rpartition("#")[0] if "#" in src.text else src.text
    raise InputError(f"{src.text}: has the splits {', '.join(splits)}; name one, e.g. {base}#{splits[0]}")


def table_files(source: str | Path | Source) -> list[Path]:
    """The Parquet/Arrow files that hold the rows of `source` (for a hub dataset: its files in the datasets cache)."""
    src = parse_source(source)
    if src.name is None:
        path = src.path
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise InputError(f"{src.text}: not found")
        if (path / "dataset_dict.json").is_file():
            path = path / choose_split(src, _saved_splits(src, path))
        if (path / "state.json").is_file():
            return _saved_files(src.text, path)
    ds = _load_dataset(src, src.name or str(src.path))
    if getattr(ds, "_indices", None) is not None:
        raise InputError(f"{src.text}: the dataset has an indices mapping; save it with save_to_disk first")
    files = [Path(f["filename"]) for f in ds.cache_files]
    if not files:
        raise InputError(f"{src.text}: the dataset has no files on disk (it is in memory)")
    return files


# ---------------------------------------------------------------------------------- Parquet/Arrow files
def file_schema(path: Path) -> Any:
    """The pyarrow schema of a .parquet or .arrow file."""
    pa = _pyarrow(str(path))
    try:
        if path.suffix.lower() == ".parquet":
            return _pq().read_schema(path)
        return _open_arrow(path).schema
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a readable {path.suffix[1:]} file: {e}") from None


def file_rows(path: Path) -> int:
    """The number of rows of a .parquet or .arrow file."""
    pa = _pyarrow(str(path))
    try:
        if path.suffix.lower() == ".parquet":
            return _pq().ParquetFile(path).metadata.num_rows
        return _read_arrow(path).num_rows
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a readable {path.suffix[1:]} file: {e}") from None


def check_text_column(path: Path, column: str) -> None:
    """An InputError unless the .parquet/.arrow file has a string column `column`."""
    pa = _pyarrow(str(path))
    schema = file_schema(path)
    check_columns(str(path), schema.names, [column])
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view"):
        raise InputError(f"{path}: column {column!r} holds {kind}, not text")


def read_column(path: Path, column: str, start: int, stop: int) -> list[Any]:
    """The values of `column` in rows [start, stop) of a .parquet or .arrow file (Parquet: only the row groups
    that hold them are read)."""
    pa = _pyarrow(str(path))
    check_columns(str(path), file_schema(path).names, [column])
    try:
        if path.suffix.lower() != ".parquet":
            return _read_arrow(path).column(column).slice(start, stop - start).to_pylist()
        parquet = _pq().ParquetFile(path)
        groups, offset, skip = [], 0, 0
        for i in range(parquet.metadata.num_row_groups):
            n = parquet.metadata.row_group(i).num_rows
            if offset < stop and offset + n > start:
                skip = skip if groups else start - offset
                groups.append(i)
            offset += n
        data = parquet.read_row_groups(groups, columns=[column], use_threads=False)  # a worker process: one core
        return data.column(column).slice(skip, stop - start).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: cannot read rows {start}..{stop - 1}: {e}") from None


def _open_arrow(path: Path) -> Any:
    """A reader of an Arrow IPC file, or of an IPC stream (what datasets writes), memory-mapped."""
    pa = _pyarrow(str(path))
    try:
        return pa.ipc.open_file(pa.memory_map(str(path)))
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(pa.memory_map(str(path)))


def _read_arrow(path: Path) -> Any:
    return _open_arrow(path).read_all()


def _schema_features(schema: Any) -> dict[str, Any]:
    """The `datasets` features stored in a schema's metadata (b"huggingface"), or {}."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def _class_names(features: dict[str, Any]) -> dict[str, list[str]]:
    """{column: class names} of the ClassLabel columns of serialised `datasets` features, and of their list
    columns (Sequence/List/LargeList of ClassLabel, or [ClassLabel])."""

    def class_label(f: Any) -> Any:
        if isinstance(f, list) and len(f) == 1:
            f = f[0]
        elif isinstance(f, dict) and f.get("_type") in ("Sequence", "List", "LargeList"):
            f = f.get("feature")
        return f if isinstance(f, dict) and f.get("_type") == "ClassLabel" else None

    return {
        name: list(c["names"])
        for name, f in features.items()
        if (c := class_label(f)) is not None and isinstance(c.get("names"), list)
    }


# ---------------------------------------------------------------------------------------- datasets dirs
def _saved_splits(src: Source, path: Path) -> list[str]:
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{src.text}: unreadable {path / 'dataset_dict.json'}: {e}") from None
    return [str(s) for s in splits]


def _saved_files(text: str, path: Path) -> list[Path]:
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{text}: unreadable {path / 'state.json'}: {e}") from None
    if state.get("_indices_data_files"):
        raise InputError(f"{text}: {path} has an indices mapping, which only `datasets` reads: {INSTALL}")
    return files


def _saved_dataset(src: Source, path: Path, columns: Sequence[str] | None) -> Table:
    """A `Dataset.save_to_disk` directory: through `datasets` when it is installed, else its Arrow files."""
    datasets = _datasets()
    if datasets is not None:
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 (datasets raises many kinds)
            raise InputError(f"{src.text}: cannot load the saved dataset {path}: {e}") from None
        return _from_dataset(src, ds, columns)
    pa = _pyarrow(src.text)
    files = _saved_files(src.text, path)
    try:
        data = pa.concat_tables([_read_arrow(f) for f in files])
        info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise InputError(f"{src.text}: cannot read the saved dataset {path}: {e}") from None
    check_columns(src.text, data.column_names, columns or ())
    if columns is not None:
        data = data.select(list(dict.fromkeys(columns)))
    features = info.get("features") if isinstance(info, dict) else None
    return Table(src.text, data, _class_names(features if isinstance(features, dict) else {}))


# ----------------------------------------------------------------------------------------------- datasets
def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        return None
    return datasets


def _load_dataset(src: Source, path: str) -> Any:
    """`datasets.load_dataset(path, src.config, split=src.split)`, one split of it (see `choose_split`)."""
    datasets = _datasets()
    if datasets is None:
        what = f"the hub dataset {src.name!r}" if src.name is not None else f"the data files in {path}"
        raise InputError(f"{src.text}: reading {what} needs the datasets package: {INSTALL}")
    try:
        loaded = datasets.load_dataset(path, src.config, split=src.split)
    except Exception as e:  # noqa: BLE001 (datasets and huggingface_hub raise many kinds)
        hint = ""
        if isinstance(e, ConnectionError):
            hint = " (not in the datasets cache, and the hub cannot be reached)"
        raise InputError(f"{src.text}: cannot load the dataset{hint}: {type(e).__name__}: {e}") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[choose_split(src, list(loaded))]
    return loaded


def _from_dataset(src: Source, ds: Any, columns: Sequence[str] | None) -> Table:
    check_columns(src.text, ds.column_names, columns or ())
    if columns is not None:
        ds = ds.select_columns(list(dict.fromkeys(columns)))
    datasets = _datasets()
    names = {}
    for k, f in ds.features.items():
        if not isinstance(f, datasets.ClassLabel):  # a list of ClassLabel: Sequence/List(ClassLabel), [ClassLabel]
            f = f[0] if isinstance(f, list) and len(f) == 1 else getattr(f, "feature", None)
        if isinstance(f, datasets.ClassLabel):
            names[k] = list(f.names)
    return Table(src.text, ds.with_format("arrow")[:], names)


# ------------------------------------------------------------------------------------------------ pyarrow
def _pyarrow(what: str) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401
    except ImportError:
        raise InputError(f"{what}: reading Parquet/Arrow needs pyarrow: {INSTALL}") from None
    return pa


def _pq() -> Any:
    import pyarrow.parquet as pq

    return pq
