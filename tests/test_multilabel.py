"""Multi-label classification (`--task custom --multi-label`): reading list labels (JSON(L), TSV/CSV text split at
--label-separator, Parquet/Arrow list and Sequence(ClassLabel) columns), multi-hot encoding, the metrics against
scikit-learn, fine-tuning / evaluate / predict end to end, and bad input through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from glue_fixture import tiny_tokenizer
from test_finetune import SENTENCES, finetune, one_thread, root, run, write_custom  # noqa: F401 (fixtures)

from convbert import ConvBertConfig
from convbert.errors import InputError
from convbert.finetuning.config import FinetuneConfig
from convbert.finetuning.task_data import sequence_records
from convbert.finetuning.tasks import Example, encode_examples, read_custom
from convbert.metrics import multilabel_metrics

LABELS = [["sports", "news"], ["news"], [], ["arts", "sports"], ["arts"], ["news", "arts", "sports"]]
METRICS = {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "num_examples"}


def _raises(where: str, match: str):
    return pytest.raises(InputError, match=f"{re.escape(where)}.*{match}")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -------------------------------------------------------------------------------------------------- reading
def test_read_list_labels_json_and_text(tmp_path):
    rows = [{"text": s, "label": y} for s, y in zip(SENTENCES, LABELS)]
    rows[1]["label"] = "news, sports ,news"  # a JSON string is split too; names stripped, repeats dropped
    examples, labels = read_custom(write_custom(tmp_path / "t.jsonl", rows), multi_label=True)
    assert labels == ["arts", "news", "sports"], "sorted, as single-label ones"
    assert [e.label for e in examples] == [
        ("sports", "news"),
        ("news", "sports"),
        (),
        ("arts", "sports"),
        ("arts",),
        ("news", "arts", "sports"),
    ]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("text\tlabel\nthe cat\t2|10\nthe dog\t\na bad house\t1\n")
    examples, labels = read_custom(tsv, multi_label=True, label_separator="|")
    assert labels == ["1", "2", "10"] and [e.label for e in examples] == [("2", "10"), (), ("1",)]
    examples, labels = read_custom(tsv, multi_label=True, label_separator="|", labels=["10", "2", "1", "3"])
    assert labels == ["10", "2", "1", "3"], "a given label list is kept (dev/test)"


def test_read_parquet_lists_and_class_label_ids(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"text": SENTENCES[:3], "tags": [["b", "a"], [], ["c"]]})
    pq.write_table(table, tmp_path / "t.parquet")
    examples, labels = read_custom(tmp_path / "t.parquet", label_column="tags", multi_label=True)
    assert labels == ["a", "b", "c"] and [e.label for e in examples] == [("b", "a"), (), ("c",)]
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "tags": datasets.Sequence(datasets.ClassLabel(names=["z", "y", "x"]))}
    )
    ds = datasets.Dataset.from_dict({"text": SENTENCES[:3], "tags": [[2, 0], [], [1]]}, features=features)
    ds.to_parquet(tmp_path / "ids.parquet")  # the features live in the schema metadata
    ds.save_to_disk(tmp_path / "saved")
    for source in (tmp_path / "ids.parquet", tmp_path / "saved"):
        examples, labels = read_custom(source, label_column="tags", multi_label=True)
        assert labels == ["z", "y", "x"], "a ClassLabel's names, in id order"
        assert [e.label for e in examples] == [("x", "z"), (), ("y",)]
    saved = pq.read_table(tmp_path / "ids.parquet")  # datasets refuses to write an id out of range: pyarrow does
    tags = pa.array([[0], [3], [1]], type=saved.schema.field("tags").type)
    pq.write_table(
        saved.set_column(1, "tags", tags).replace_schema_metadata(saved.schema.metadata), tmp_path / "bad.parquet"
    )
    with _raises(f"{tmp_path / 'bad.parquet'}: row 1", "'tags' 3 is not a class id"):
        read_custom(tmp_path / "bad.parquet", label_column="tags", multi_label=True)
    pq.write_table(pa.table({"text": SENTENCES[:2], "tags": [["a"], ["a", ""]]}), tmp_path / "empty.parquet")
    with _raises(f"{tmp_path / 'empty.parquet'}: row 1", "empty label name in 'tags'"):
        read_custom(tmp_path / "empty.parquet", label_column="tags", multi_label=True)


def test_read_errors_name_file_and_line(tmp_path):
    cases = {
        "list.jsonl": ('{"text": "a", "label": ["x"]}\n{"text": "b", "label": ["x", ""]}\n', 2, "empty label name"),
        "sep.tsv": ("text\tlabel\na\tx\nb\tx,,y\n", 3, "empty label name in 'label'"),
        "tail.csv": ('text,label\na,"x,"\n', 2, "empty label name"),
        "num.jsonl": ('{"text": "a", "label": 1.5}\n', 1, "must be a list of labels or text"),
        "bool.jsonl": ('{"text": "a", "label": [true]}\n', 1, "must be a string or an integer"),
        "unknown.jsonl": ('{"text": "a", "label": ["x", "w"]}\n', 1, "unknown label 'w'"),
    }
    for name, (content, line, match) in cases.items():
        (tmp_path / name).write_text(content)
        with _raises(f"{tmp_path / name}:{line}", match):
            read_custom(tmp_path / name, multi_label=True, labels=["x", "y"] if name == "unknown.jsonl" else None)
    (tmp_path / "none.jsonl").write_text('{"text": "a", "label": []}\n')
    with pytest.raises(InputError, match="no row has a label in 'label'"):
        read_custom(tmp_path / "none.jsonl", multi_label=True)


def test_encode_multi_hot(tmp_path):
    tok = tiny_tokenizer(tmp_path / "vocab")
    examples = [Example("the cat", None, ("b", "a"), "1"), Example("a dog", None, (), "2")]
    labels = encode_examples(tok, examples, {"a": 0, "b": 1, "c": 2}, 16, multi_label=True).tensors["labels"]
    assert labels.dtype == torch.float and labels.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    with pytest.raises(InputError, match="example 1: label 'b' is not in label2id"):
        encode_examples(tok, examples, {"a": 0}, 16, multi_label=True)


def test_records_use_sigmoid():
    (row,) = sequence_records(np.array([[2.0, -1.0, 0.0]]), ["a", "b", "c"], multi_label=True)
    assert row["labels"] == ["a"], "sigmoid > 0.5 (a logit of 0 is exactly 0.5: not predicted)"
    assert row["scores"] == pytest.approx({"a": 1 / (1 + np.exp(-2)), "b": 1 / (1 + np.exp(1)), "c": 0.5})


# -------------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("seed", range(6))
def test_multilabel_metrics_match_sklearn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n, c = rng.integers(1, 30), rng.integers(2, 8)  # one column: sklearn reads it as binary (both classes scored)
    refs, preds = rng.random((n, c)) < rng.random(), rng.random((n, c)) < rng.random()
    if seed % 2 == 0:
        refs[:, 0] = preds[:, 0] = False  # a label nobody has and nothing predicts: left out of macro_f1
    if seed == 4:
        refs[:, -1] = False  # predicted, never gold: F1 0, counted
    got = multilabel_metrics(preds.astype(int), refs.astype(float))
    expected = {
        "micro_f1": sk.f1_score(refs, preds, average="micro", zero_division=np.nan),
        "macro_f1": sk.f1_score(refs, preds, average="macro", zero_division=np.nan),
        "subset_accuracy": sk.accuracy_score(refs, preds),
        "hamming_loss": sk.hamming_loss(refs, preds),
    }
    assert got == pytest.approx(expected, nan_ok=True)


def test_multilabel_metrics_by_hand_and_bad_input():
    refs = [[1, 0, 0], [0, 1, 0]]
    m = multilabel_metrics([[1, 1, 0], [0, 0, 0]], refs)
    assert m["micro_f1"] == pytest.approx(2 / 4) and m["macro_f1"] == pytest.approx(0.5)  # (1 + 0) / 2 labels
    assert m["subset_accuracy"] == 0.0 and m["hamming_loss"] == pytest.approx(2 / 6)
    empty = multilabel_metrics([[0, 0]], [[0, 0]])
    assert np.isnan(empty["micro_f1"]) and np.isnan(empty["macro_f1"]) and empty["subset_accuracy"] == 1.0
    for preds, message in (([[1, 0]], "shape"), ([1, 0], "matrix"), ([[1, 0, 2], [0, 0, 0]], r"\[0, 2\] = 2")):
        with pytest.raises(InputError, match=message):
            multilabel_metrics(preds, refs)


# ------------------------------------------------------------------------------------------------ end to end
def test_finetune_jsonl_lists_then_evaluate_and_predict(root, tmp_path):  # noqa: F811
    rows = [{"text": s, "label": y} for s, y in zip(SENTENCES, LABELS)]
    data = write_custom(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    args = ["--task", "custom", "--multi-label", "--train", data, "--dev", data, "--test", data]
    m = finetune(root, out, *args, "--max-steps", "2", "--batch-size", "4")
    assert m["steps"] == 2 and m["best"]["metric"] == "dev/micro_f1"
    assert set(m["best"]["metrics"]["dev"]) == METRICS and set(m["test"]["test"]) == METRICS
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "arts", "1": "news", "2": "sports"}
    assert ConvBertConfig.from_json_file(out / "best" / "config.json").labels() == ["arts", "news", "sports"]
    transformers = pytest.importorskip("transformers")
    assert transformers.AutoConfig.from_pretrained(out / "best").problem_type == "multi_label_classification"

    test = records(out / "test_predictions.jsonl")
    assert [r["text"] for r in test] == SENTENCES and [r["gold"] for r in test] == LABELS
    for r in test:
        assert set(r["scores"]) == {"arts", "news", "sports"} and all(0 < p < 1 for p in r["scores"].values())
        assert r["labels"] == [y for y in ("arts", "news", "sports") if r["scores"][y] > 0.5]

    report = tmp_path / "eval.json"
    assert run("evaluate", "--model", out / "best", "--task", "custom", "--dev", data, "--output", report) == 0
    assert json.loads(report.read_text())["dev"] == pytest.approx(m["test"]["test"], nan_ok=True)
    texts = write_custom(tmp_path / "in.jsonl", [{"text": s} for s in SENTENCES])  # the same batch: the same pads
    assert run("predict", "--model", out / "best", "--input", texts, "--output", tmp_path / "p.jsonl") == 0
    predicted = records(tmp_path / "p.jsonl")
    assert [r["line"] for r in predicted] == list(range(1, 7))
    for r, t in zip(predicted, test):
        assert r["labels"] == t["labels"] and r["scores"] == pytest.approx(t["scores"], abs=1e-5)


def test_finetune_tsv_text_labels(root, tmp_path):  # noqa: F811
    rows = [{"text": s, "label": ",".join(y)} for s, y in zip(SENTENCES, LABELS)]
    data = write_custom(tmp_path / "train.tsv", rows)
    out = tmp_path / "out"
    m = finetune(root, out, "--task", "custom", "--multi-label", "--train", data, "--dev", data, "--max-steps", "2")
    assert set(m["best"]["metrics"]["dev"]) == METRICS and m["config"]["multi_label"] is True
    config = ConvBertConfig.from_json_file(out / "best" / "config.json")
    assert config.problem_type == "multi_label_classification" and config.labels() == ["arts", "news", "sports"]


# ------------------------------------------------------------------------------------------------ bad input
def test_config_checks():
    with pytest.raises(InputError, match="--multi-label works with --task custom, not --task sst2"):
        FinetuneConfig(model="m", task="sst2", out="o", multi_label=True)
    with pytest.raises(InputError, match="--multi-label and --regression"):
        FinetuneConfig(model="m", task="custom", out="o", multi_label=True, regression=True)
    with pytest.raises(InputError, match="--label-separator"):
        FinetuneConfig(model="m", task="custom", out="o", multi_label=True, label_separator="")


def _empty_name(tmp_path: Path) -> tuple[list[str], str]:
    train = write_custom(tmp_path / "train.jsonl", [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": [""]}])
    return ["--task", "custom", "--multi-label", "--train", str(train), "--dev", str(train)], f"{train}:2: empty label"


def _with_regression(tmp_path: Path) -> tuple[list[str], str]:
    train = write_custom(tmp_path / "train.jsonl", [{"text": "a", "label": 1}])
    return ["--task", "custom", "--multi-label", "--regression", "--train", str(train), "--dev", str(train)], (
        "--multi-label and --regression"
    )


def _with_glue(tmp_path: Path) -> tuple[list[str], str]:
    return ["--task", "sst2", "--multi-label", "--data", str(tmp_path)], "--multi-label works with --task custom"


@pytest.mark.parametrize("case", [_empty_name, _with_regression, _with_glue])
def test_bad_input_exits_2(root, tmp_path, capsys, case):  # noqa: F811
    args, message = case(tmp_path)
    out = tmp_path / "out"
    assert run("finetune", "--model", root / "model", "--out", out, *args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_refuses_multi_label_on_a_single_label_model(root, tmp_path, capsys):  # noqa: F811
    data = write_custom(tmp_path / "d.jsonl", [{"text": s, "label": "pos" if i % 2 else "neg"} for i, s in
                                                enumerate(SENTENCES)])  # fmt: skip
    finetune(root, tmp_path / "out", "--task", "custom", "--train", data, "--dev", data)
    args = ["evaluate", "--model", tmp_path / "out" / "best", "--task", "custom", "--dev", data, "--multi-label"]
    assert run(*args) == 2 and "is not a multi-label model" in capsys.readouterr().err
