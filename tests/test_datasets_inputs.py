"""`datasets`-style inputs (convbert.tabular): Parquet/Arrow/CSV/JSON(L) files, save_to_disk directories and hub
names (from a datasets cache the tests build, offline) for finetune, evaluate, predict and data prepare; GLUE by
its datasets columns; errors naming the source and the column or row."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from glue_fixture import tiny_tokenizer
from test_finetune import finetune, run
from tokenizers import Tokenizer

from convbert import ConvBertConfig
from convbert.errors import InputError
from convbert.finetuning.config import EvaluateConfig
from convbert.finetuning.glue import GLUE, read_glue
from convbert.finetuning.tasks import read_custom, read_records
from convbert.model import ConvBertForSequenceClassification, ConvBertModel
from convbert.pretraining.shards import PretrainShards

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SENTENCES = ["the movie was good", "it was a bad movie", "the cat sat on the mat", "he said hello"]
LABELS = ["pos", "neg", "pos", "neg"]
ROWS = [{"sentence": s, "y": y} for s, y in zip(SENTENCES, LABELS)]
COLUMNS = ["--text-column", "sentence", "--label-column", "y"]


@pytest.fixture(autouse=True, scope="module")
def quiet():
    """One torch thread (tiny ops on a busy machine), no datasets progress bars."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny tokenizer, a bare tiny encoder (model/) and a tiny neg/pos classifier (clf/)."""
    root = tmp_path_factory.mktemp("datasets_inputs")
    tok = tiny_tokenizer(root / "vocab")
    torch.manual_seed(0)
    ConvBertModel(ConvBertConfig.preset("tiny", vocab_size=tok.vocab_size)).save_pretrained(root / "model", tok)
    config = ConvBertConfig.preset(
        "tiny", vocab_size=tok.vocab_size, mask_conv_padding=True, id2label={0: "neg", 1: "pos"}
    )
    ConvBertForSequenceClassification(config).save_pretrained(root / "clf", tok)
    return root


def features(names=("neg", "pos")):
    return datasets.Features({"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=list(names))})


# ------------------------------------------------------------------------------------------ input kinds
def write(kind: str, directory: Path, rows: list[dict]) -> str:
    """`rows` as a source of `kind`; the source string the flags take."""
    table = pa.Table.from_pylist(rows)
    if kind == "parquet":
        pq.write_table(table, directory / "data.parquet")
        return str(directory / "data.parquet")
    if kind == "arrow":  # an Arrow IPC file (Feather v2), as pyarrow / pandas write it
        with pa.ipc.new_file(directory / "data.arrow", table.schema) as writer:
            writer.write_table(table)
        return str(directory / "data.arrow")
    if kind == "csv":
        text = "sentence,y\n" + "".join(f'"{r["sentence"]}",{r["y"]}\n' for r in rows)
        (directory / "data.csv").write_text(text)
        return str(directory / "data.csv")
    if kind == "json":  # one array of objects, as pandas' to_json(orient="records") writes
        (directory / "data.json").write_text(json.dumps(rows, indent=2))
        return str(directory / "data.json")
    if kind == "jsonl":  # JSON Lines, as Dataset.to_json writes
        datasets.Dataset.from_list(rows).to_json(directory / "data.jsonl")
        return str(directory / "data.jsonl")
    if kind == "save_to_disk":  # a DatasetDict: DIR#SPLIT
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(directory / "saved")
        return f"{directory / 'saved'}#train"
    if kind == "save_to_disk_split":  # the split's own directory (a Dataset's save_to_disk)
        datasets.Dataset.from_list(rows).save_to_disk(directory / "saved")
        return str(directory / "saved")
    raise AssertionError(kind)


KINDS = ["parquet", "arrow", "csv", "json", "jsonl", "save_to_disk", "save_to_disk_split"]


@pytest.mark.parametrize("kind", KINDS)
def test_finetune_custom_reads_every_input_kind(root, tmp_path, kind):
    source = write(kind, tmp_path, ROWS)
    examples, labels = read_custom(source, text_column="sentence", label_column="y")
    assert [e.text_a for e in examples] == SENTENCES and [e.label for e in examples] == LABELS
    assert labels == ["neg", "pos"]
    m = finetune(root, tmp_path / "out", "--task", "custom", "--train", source, "--dev", source, *COLUMNS)
    assert m["best"]["metrics"]["dev"]["num_examples"] == 4 and m["examples"]["train"] == 4
    assert ConvBertForSequenceClassification.from_pretrained(tmp_path / "out" / "best").config.labels() == [
        "neg",
        "pos",
    ]


def test_json_array_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"text": "a", "label": "x"},\n  {"text": "b", "label": }\n]\n')
    with pytest.raises(InputError, match=f"{path}:3: invalid JSON"):
        list(read_records(path))
    path.write_text('[\n  {"text": "a", "label": "x"},\n  ["b"]\n]\n')
    with pytest.raises(InputError, match=f"{path}:3: expected a JSON object"):
        list(read_records(path))
    path.write_text("[]")
    assert list(read_records(path)) == []


def test_class_labels_and_dataset_flags(root, tmp_path):
    """A DatasetDict with a ClassLabel column: class names in id order; --dataset DIR names its splits."""
    ds = datasets.Dataset.from_dict({"sentence": SENTENCES, "y": [1, 0, 1, 0]}, features=features(("pos", "neg")))
    datasets.DatasetDict({"train": ds, "validation": ds.select([0, 1])}).save_to_disk(tmp_path / "saved")
    examples, labels = read_custom(tmp_path / "saved" / "validation", text_column="sentence", label_column="y")
    assert labels == ["pos", "neg"] and [e.label for e in examples] == ["neg", "pos"]
    cfg = EvaluateConfig(model="m", task="custom", dataset=str(tmp_path / "saved"), test="validation")
    saved = tmp_path / "saved"
    assert (cfg.train, cfg.dev, cfg.test) == (f"{saved}#train", f"{saved}#validation", f"{saved}#validation")
    mixed = EvaluateConfig(model="m", task="custom", dataset=str(saved), train="t.parquet", dev="dev.clean")
    assert (mixed.train, mixed.dev) == ("t.parquet", f"{saved}#dev.clean")  # a file stays a file
    m = finetune(root, tmp_path / "out", "--task", "custom", "--dataset", tmp_path / "saved", *COLUMNS)
    assert m["best"]["metrics"]["dev"]["num_examples"] == 2 and m["examples"]["train"] == 4
    assert m["config"]["train"] == f"{tmp_path / 'saved'}#train"
    best = ConvBertForSequenceClassification.from_pretrained(tmp_path / "out" / "best")
    assert best.config.labels() == ["pos", "neg"]
    again = EvaluateConfig(**{k: v for k, v in m["config"].items() if k in EvaluateConfig.__dataclass_fields__})
    assert (again.train, again.dev) == (m["config"]["train"], m["config"]["dev"])


def test_without_datasets_pyarrow_reads_files_and_saved_dirs(tmp_path, monkeypatch):
    ds = datasets.Dataset.from_dict({"sentence": SENTENCES, "y": [1, 0, 1, 0]}, features=features(("pos", "neg")))
    datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "saved")
    ds.to_parquet(tmp_path / "d.parquet")  # keeps the features in the schema metadata
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    for source in (tmp_path / "saved", tmp_path / "d.parquet"):
        examples, labels = read_custom(source, text_column="sentence", label_column="y")
        assert labels == ["pos", "neg"] and [e.label for e in examples] == ["neg", "pos", "neg", "pos"]
    with pytest.raises(InputError, match=r"hub:acme/x: reading the hub dataset 'acme/x' needs the datasets package: "
                       r"pip install convbert\[datasets\]"):  # fmt: skip
        read_custom("hub:acme/x")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(InputError, match=rf"{tmp_path / 'd.parquet'}: .*pip install convbert\[datasets\]"):
        read_custom(tmp_path / "d.parquet", text_column="sentence", label_column="y")


# ------------------------------------------------------------------------------------- predict / evaluate
def test_predict_and_evaluate_a_parquet_file(root, tmp_path):
    pq.write_table(
        pa.Table.from_pylist([{"text": s, "text_pair": "it is so"} for s in SENTENCES]), tmp_path / "in.parquet"
    )
    out = tmp_path / "p.jsonl"
    assert run("predict", "--model", root / "clf", "--input", tmp_path / "in.parquet", "--output", out) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [0, 1, 2, 3] and records[0]["text_pair"] == "it is so"
    assert all(r["label"] in ("neg", "pos") for r in records)
    dev = write("parquet", tmp_path, ROWS)
    report = tmp_path / "eval.json"
    assert run("evaluate", "--model", root / "clf", "--task", "custom", "--dev", dev, *COLUMNS, "--output", report) == 0
    scores = json.loads(report.read_text())["dev"]
    assert scores["num_examples"] == 4 and 0 <= scores["accuracy"] <= 1


# ---------------------------------------------------------------------------------------------- GLUE
# datasets' columns of each GLUE task, and the registry label of class ids 0, 1(, 2): written out independently
# of convbert.finetuning.glue.GLUE_DATASETS
HUB_GLUE = {
    "cola": (("sentence",), ["unacceptable", "acceptable"], ["0", "1"]),
    "sst2": (("sentence",), ["negative", "positive"], ["0", "1"]),
    "mrpc": (("sentence1", "sentence2"), ["not_equivalent", "equivalent"], ["0", "1"]),
    "stsb": (("sentence1", "sentence2"), None, None),
    "qqp": (("question1", "question2"), ["not_duplicate", "duplicate"], ["0", "1"]),
    "mnli": (("premise", "hypothesis"), ["entailment", "neutral", "contradiction"],
             ["entailment", "neutral", "contradiction"]),
    "qnli": (("question", "sentence"), ["entailment", "not_entailment"], ["entailment", "not_entailment"]),
    "rte": (("sentence1", "sentence2"), ["entailment", "not_entailment"], ["entailment", "not_entailment"]),
    "wnli": (("sentence1", "sentence2"), ["not_entailment", "entailment"], ["0", "1"]),
}  # fmt: skip
HUB_SPLITS = {"mnli": ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]}


def glue_dict(task: str) -> datasets.DatasetDict:
    """A tiny GLUE config as datasets has it: 4 rows a split, class ids (-1 in test), idx."""
    texts, names, _ = HUB_GLUE[task]
    label = datasets.Value("float32") if names is None else datasets.ClassLabel(names=names)
    feats = datasets.Features({**{c: datasets.Value("string") for c in texts}, "label": label,
                               "idx": datasets.Value("int32")})  # fmt: skip
    splits = {}
    for split in HUB_SPLITS.get(task, ["train", "validation", "test"]):
        ids = [-1] * 4 if split.startswith("test") else ([4.5, 3.0, 0.0, 5.0] if names is None else [0, 1, 1, 0])
        if names is not None and len(names) == 3 and not split.startswith("test"):
            ids = [0, 1, 2, 0]
        columns = {c: [f"{c} {w} ." for w in ("cat", "dog", "man", "fox")] for c in texts}
        splits[split] = datasets.Dataset.from_dict({**columns, "label": ids, "idx": [10, 11, 12, 13]}, features=feats)
    return datasets.DatasetDict(splits)


@pytest.mark.parametrize("task", list(GLUE))
def test_glue_by_datasets_columns_saved_to_disk(tmp_path, task):
    glue_dict(task).save_to_disk(tmp_path / "glue" / task)  # a dir with one per config, as --data
    _, names, ids = HUB_GLUE[task]
    for split in GLUE[task].splits:
        examples = read_glue(task, tmp_path / "glue", split)
        texts = HUB_GLUE[task][0]
        assert examples[0].text_a == f"{texts[0]} cat ." and [e.guid for e in examples] == ["10", "11", "12", "13"]
        assert examples[0].text_b == (f"{texts[1]} cat ." if len(texts) == 2 else None)
        if split.startswith("test"):
            assert all(e.label is None for e in examples)
        elif names is None:
            assert [e.label for e in examples] == [4.5, 3.0, 0.0, 5.0]
        else:
            assert [e.label for e in examples] == [ids[i] for i in ([0, 1, 2, 0] if len(ids) == 3 else [0, 1, 1, 0])]
            assert set(e.label for e in examples) <= set(GLUE[task].labels)
    assert read_glue(task, tmp_path / "glue" / task, "train")[1].text_a == f"{HUB_GLUE[task][0][0]} dog ."


def test_glue_parquet_repo_copy_and_bad_classes(tmp_path):
    """A copy of the hub repo (<task>/<split>-NNNNN-of-NNNNN.parquet); classes that are not GLUE's are an error."""
    for split, ds in glue_dict("rte").items():
        ds.to_parquet(tmp_path / "repo" / "rte" / f"{split}-00000-of-00001.parquet")
    assert [e.label for e in read_glue("rte", tmp_path / "repo", "dev")] == ["entailment", *["not_entailment"] * 2,
                                                                             "entailment"]  # fmt: skip
    swapped = glue_dict("rte")["train"].cast_column(
        "label", datasets.ClassLabel(names=["not_entailment", "entailment"])
    )
    datasets.DatasetDict({"train": swapped}).save_to_disk(tmp_path / "swapped")
    with pytest.raises(InputError, match=r"swapped#train: the 'label' classes are not_entailment, entailment"):
        read_glue("rte", tmp_path / "swapped", "train")
    glue_dict("sst2").save_to_disk(tmp_path / "sst2")
    with pytest.raises(
        InputError, match=r"sst2#train: no columns 'premise', 'hypothesis'; its columns are sentence, label, idx"
    ):
        read_glue("mnli", tmp_path / "sst2", "train")


@pytest.fixture
def glue_cache(tmp_path, monkeypatch) -> Path:
    """A datasets cache holding nyu-mll/glue's sst2 and mnli as an online load_dataset leaves them, and offline mode.

    Built by loading a local parquet copy of the repo once (datasets caches it under the directory's name, glue/)
    and renaming the cache entry to the hub name's (nyu-mll___glue/<config>/0.0.0/<hash>/glue-<split>.arrow)."""
    repo = tmp_path / "glue"
    for task in ("sst2", "mnli"):
        for split, ds in glue_dict(task).items():
            ds.to_parquet(repo / task / f"{split}-00000-of-00001.parquet")
    card = "---\nconfigs:\n"
    for task in ("sst2", "mnli"):
        card += f"- config_name: {task}\n  data_files:\n"
        for split in HUB_SPLITS.get(task, ["train", "validation", "test"]):
            card += f"  - split: {split}\n    path: {task}/{split}-*\n"
    (repo / "README.md").write_text(card + "---\n")
    cache = tmp_path / "cache"
    for task in ("sst2", "mnli"):
        datasets.load_dataset(str(repo), task, cache_dir=str(cache))
    shutil.move(cache / "glue", cache / "nyu-mll___glue")
    shutil.rmtree(repo)  # only the cache is left
    import huggingface_hub.constants

    for env in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(env, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_glue_by_hub_name_offline_from_the_datasets_cache(root, tmp_path, glue_cache):
    examples = read_glue("mnli", "hub:nyu-mll/glue", "dev_mismatched")
    assert [e.label for e in examples] == ["entailment", "neutral", "contradiction", "entailment"]
    assert examples[0].text_b == "hypothesis cat ."
    custom, labels = read_custom("hub:nyu-mll/glue:sst2#validation", text_column="sentence")
    assert labels == ["negative", "positive"]
    assert [e.label for e in custom] == ["negative", "positive", "positive", "negative"]
    out = tmp_path / "out"
    m = finetune(root, out, "--task", "sst2", "--dataset", "nyu-mll/glue", "--predict-test")
    assert m["config"]["data"] == "hub:nyu-mll/glue:sst2" and m["examples"]["train"] == 4
    assert m["best"]["metrics"]["dev"]["num_examples"] == 4
    lines = (out / "submission" / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["10", "11", "12", "13"]
    m = finetune(root, tmp_path / "custom", "--task", "custom", "--dataset", "nyu-mll/glue", "--dataset-config", "sst2",
                 "--text-column", "sentence")  # fmt: skip
    hub = "hub:nyu-mll/glue:sst2"
    assert (m["config"]["train"], m["config"]["dev"]) == (f"{hub}#train", f"{hub}#validation")
    best = ConvBertForSequenceClassification.from_pretrained(tmp_path / "custom" / "best")
    assert best.config.labels() == ["negative", "positive"]
    out = tmp_path / "shards"
    args = ["--input", "hub:nyu-mll/glue:sst2#train", "--text-field", "sentence", "--workers", "1"]
    assert run("data", "prepare", *args, "--tokenizer", root / "model", "--out", out) == 0
    manifest = PretrainShards(out).manifest
    assert manifest["counts"]["documents"] == 4 and Path(manifest["inputs"][0]["path"]).name == "glue-train.arrow"
    assert json.loads((out / "run_config.json").read_text())["input"] == ["hub:nyu-mll/glue:sst2#train"]
    with pytest.raises(InputError, match=r"hub:nyu-mll/glue:sst2#nope: cannot load the dataset"):
        read_custom("hub:nyu-mll/glue:sst2#nope", text_column="sentence")
    with pytest.raises(InputError, match=r"hub:acme/missing: cannot load the dataset \(not in the datasets cache"):
        read_custom("hub:acme/missing")


# --------------------------------------------------------------------------------------- data prepare
DOCS = ["the cat sat on the mat .\nthe dog was playing .", "he said hello .", "a bad red house .\nthe river ."]


def test_data_prepare_reads_a_parquet_text_column(root, tmp_path):
    pq.write_table(pa.table({"id": [1, 2, 3], "body": DOCS}), tmp_path / "docs.parquet")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    common = ["--tokenizer", root / "model", "--max-length", "16", "--workers", "1", "--text-field", "body"]
    for name in ("docs.parquet", "docs.jsonl"):
        assert run("data", "prepare", "--input", tmp_path / name, "--out", tmp_path / f"out-{name}", *common) == 0
    table, lines = (PretrainShards(tmp_path / f"out-docs.{k}").manifest for k in ("parquet", "jsonl"))
    assert table["counts"]["documents"] == 3 and table["counts"]["sentences"] == 5
    assert table["inputs"][0]["format"] == "parquet" and table["inputs"][0]["rows"] == 3
    assert [s["sha256"] for s in table["shards"]] == [s["sha256"] for s in lines["shards"]], "same as the JSONL"
    assert table["counts"] == lines["counts"]

    many = [DOCS[i % 3] for i in range(60)]  # small shards: table rows cut into several segments and shards
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": many})}).save_to_disk(tmp_path / "saved")
    pq.write_table(pa.table({"body": many}), tmp_path / "many.parquet", row_group_size=7)
    small = ["--shard-size", "300", "--workers", "2"]
    tok = Tokenizer.from_file(str(root / "model" / "tokenizer.json"))
    tokens = sum(len(tok.encode(line, add_special_tokens=False).ids) for d in DOCS for line in d.split("\n"))
    for name, source in (("saved", f"{tmp_path / 'saved'}#train"), ("groups", tmp_path / "many.parquet")):
        assert run("data", "prepare", "--input", source, "--out", tmp_path / f"out-{name}", *common, *small) == 0
    saved, groups = (PretrainShards(tmp_path / f"out-{name}").manifest for name in ("saved", "groups"))
    assert saved["inputs"][0]["format"] == "arrow" and len(saved["shards"]) > 3 and len(groups["shards"]) > 3
    for m in (saved, groups):
        assert (m["counts"]["documents"], m["counts"]["sentences"]) == (60, 100)
        assert m["counts"]["input_tokens"] == 20 * tokens


def test_data_prepare_table_errors(root, tmp_path, capsys):
    pq.write_table(pa.table({"body": ["a cat .", None], "n": [1, 2]}), tmp_path / "docs.parquet")
    common = ["--tokenizer", root / "model", "--workers", "1"]
    assert run("data", "prepare", "--input", tmp_path / "docs.parquet", "--out", tmp_path / "o", *common) == 2
    assert f"{tmp_path / 'docs.parquet'}: no column 'text'; its columns are body, n" in capsys.readouterr().err
    assert run("data", "prepare", "--input", tmp_path / "docs.parquet", "--out", tmp_path / "o", *common,
               "--text-field", "n") == 2  # fmt: skip
    assert "column 'n' holds int64, not text" in capsys.readouterr().err
    assert run("data", "prepare", "--input", tmp_path / "docs.parquet", "--out", tmp_path / "o", *common,
               "--text-field", "body") == 2  # fmt: skip
    assert f"{tmp_path / 'docs.parquet'}: row 1: column 'body' is null" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------- errors
def test_bad_sources_name_the_file_column_and_row(root, tmp_path, capsys):
    source = write("parquet", tmp_path, [*ROWS, {"sentence": " ", "y": "pos"}])
    with pytest.raises(InputError, match=rf"{source}: no columns 'text', 'label'; its columns are sentence, y"):
        read_custom(source)
    with pytest.raises(InputError, match=rf"{source}: no column 'label';"):
        read_custom(source, text_column="sentence")
    with pytest.raises(InputError, match=rf"{source}: row 4: empty text in 'sentence'"):
        read_custom(source, text_column="sentence", label_column="y")
    with pytest.raises(InputError, match=rf"{tmp_path / 'missing.parquet'}: not found"):
        read_custom(tmp_path / "missing.parquet")
    saved = write("save_to_disk", tmp_path, ROWS).removesuffix("#train")
    with pytest.raises(InputError, match=rf"{saved}#dev: no split 'dev'; its splits are train"):
        read_custom(f"{saved}#dev", text_column="sentence", label_column="y")
    with pytest.raises(InputError, match="expected hub:NAME"):
        read_custom("hub:")
    ds = datasets.Dataset.from_dict({"sentence": SENTENCES, "y": [0, -1, 1, 0]}, features=features())
    ds.to_parquet(tmp_path / "unlabelled.parquet")
    with pytest.raises(
        InputError, match=r"unlabelled.parquet: row 1: 'y' -1 is not a class id .*-1 marks an unlabelled"
    ):
        read_custom(tmp_path / "unlabelled.parquet", text_column="sentence", label_column="y")

    out = tmp_path / "out"
    args = ["--task", "custom", "--train", source, "--dev", tmp_path / "nope.arrow", *COLUMNS]
    assert run("finetune", "--model", root / "model", "--out", out, *args) == 2
    assert f"{source}: row 4: empty text in 'sentence'" in capsys.readouterr().err
    train = tmp_path / "unlabelled.parquet"
    args = ["--task", "custom", "--train", train, "--dev", source, "--text-column", "x", "--label-column", "y"]
    assert run("finetune", "--model", root / "model", "--out", out, *args) == 2
    assert f"{train}: no column 'x'; its columns are sentence, y" in capsys.readouterr().err
    assert run("finetune", "--model", root / "model", "--out", out, "--task", "ner", "--dataset", "acme/x") == 2
    assert "--dataset works with the GLUE tasks and custom" in capsys.readouterr().err
    assert not out.exists()
