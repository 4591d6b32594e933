"""Fine-tuning, evaluation and prediction end to end (tiny models, a few steps), distributed evaluation
counting, and bad input through the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from glue_fixture import N_ROWS, make_tiny_glue, tiny_tokenizer

from convbert import ConvBertConfig
from convbert.cli import main
from convbert.finetuning.config import FinetuneConfig, default_epochs, resolve
from convbert.finetuning.conll import read_conll
from convbert.finetuning.glue import GLUE
from convbert.finetuning.inference import head_outputs, merge_shards, shard_indices
from convbert.model import ConvBertForSequenceClassification, ConvBertModel

CONTEXT = "john went to the big red house . the cat sat on the mat . the dog was playing in the river ."


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two OpenMP threads on a busy 2-core machine make every tiny op wait ~10 ms; one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny GLUE download, a tiny tokenizer and a bare tiny encoder saved with it (model/)."""
    root = tmp_path_factory.mktemp("finetune")
    make_tiny_glue(root / "glue")
    tok = tiny_tokenizer(root / "vocab")
    torch.manual_seed(0)
    ConvBertModel(ConvBertConfig.preset("tiny", vocab_size=tok.vocab_size)).save_pretrained(root / "model", tok)
    return root


def run(*args: str | Path) -> int:
    return main([str(a) for a in args])


def finetune(root: Path, out: Path, *args: str | Path) -> dict:
    assert run("finetune", "--model", root / "model", "--out", out, "--max-steps", "1", *args) == 0
    return json.loads((out / "metrics.json").read_text())


def finite(metrics: dict) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


# ---------------------------------------------------------------------------------------------- GLUE
@pytest.mark.parametrize("task", list(GLUE))
def test_every_glue_task_trains_evaluates_and_writes_a_submission(root, tmp_path, task):
    spec = GLUE[task]
    m = finetune(root, tmp_path / "out", "--task", task, "--data", root / "glue", "--predict-test")
    assert m["best"]["metric"] == f"{spec.eval_splits[0]}/{m['best']['metric'].split('/')[1]}"
    assert set(m["best"]["metrics"]) == set(spec.eval_splits)  # MNLI: matched and mismatched
    for split in spec.eval_splits:
        scores = m["best"]["metrics"][split]
        assert set(spec.metrics) <= set(scores) and finite(scores) and scores["num_examples"] == N_ROWS
    assert m["examples"]["train"] == N_ROWS * (2 if spec.double_unordered else 1)
    steps_per_epoch = math.ceil(m["examples"]["train"] / 32)
    assert m["epochs"] == max(spec.epochs, math.ceil(600 / steps_per_epoch)), "600 steps at least"
    assert m["config"]["lr"] == 3e-4 and m["steps"] == 1
    for name in spec.submissions.values():
        lines = (tmp_path / "out" / "submission" / name).read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == N_ROWS + 1
        values = [line.split("\t")[1] for line in lines[1:]]
        assert all(0 <= float(v) <= 5 for v in values) if spec.regression else set(values) <= set(spec.labels)
    best = ConvBertForSequenceClassification.from_pretrained(tmp_path / "out" / "best")
    assert best.config.num_labels == spec.num_labels
    assert spec.regression or best.config.labels() == list(spec.labels)
    assert (tmp_path / "out" / "best" / "vocab.txt").exists()


def test_stsb_is_regression_with_pearson_and_spearman(root, tmp_path):
    m = finetune(root, tmp_path / "out", "--task", "stsb", "--data", root / "glue", "--no-double-unordered")
    dev = m["best"]["metrics"]["dev"]
    assert {"pearson", "spearmanr", "combined"} <= set(dev) and finite(dev)
    assert m["best"]["metric"] == "dev/combined" and m["examples"]["train"] == N_ROWS


def test_seeds_write_mean_std_median(root, tmp_path):
    out = tmp_path / "out"
    assert (
        run(
            "finetune",
            "--model",
            root / "model",
            "--out",
            out,
            "--task",
            "sst2",
            "--data",
            root / "glue",
            "--seeds",
            "2",
            "--seed",
            "3",
            "--epochs",
            "2",
            "--batch-size",
            "2",
        )
        == 0
    )
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["seeds"] == [3, 4]
    acc = agg["summary"]["dev/accuracy"]
    assert set(acc) == {"mean", "std", "median", "values"} and len(acc["values"]) == 2
    assert acc["mean"] == pytest.approx(np.mean(acc["values"])) and acc["median"] == pytest.approx(acc["mean"])
    assert acc["std"] == pytest.approx(np.std(acc["values"], ddof=1))
    assert "| dev/accuracy |" in (out / "aggregate.md").read_text()
    for seed in (3, 4):
        m = json.loads((out / f"seed-{seed}" / "metrics.json").read_text())
        assert m["seed"] == seed and len(m["history"]) == 2 and m["steps"] == 4  # 2 batches x 2 epochs
        assert [(h["epoch"], h["train_batches"], h["epoch_end"]) for h in m["history"]] == [(1, 2, True), (2, 2, True)]
        assert (out / f"seed-{seed}" / "best" / "model.safetensors").exists()


def test_recipe_defaults_follow_the_paper():
    small, base = ConvBertConfig.preset("small"), ConvBertConfig.preset("base")
    c = resolve(FinetuneConfig(model="m", task="rte", out="o"), small)
    assert (c.lr, c.max_length, c.layer_decay, c.warmup_frac, c.weight_decay, c.batch_size, c.min_steps) == (
        3e-4,
        128,
        0.8,
        0.1,
        0.01,
        32,
        600,
    )
    assert (default_epochs("rte"), default_epochs("stsb"), default_epochs("cola"), default_epochs("custom")) == (
        10,
        10,
        3,
        3,
    )
    assert c.classifier_head == "linear", "the official code's head for a fresh classifier"
    assert resolve(FinetuneConfig(model="m", task="mnli", out="o"), base).lr == 1e-4
    squad = resolve(FinetuneConfig(model="m", task="squad_v2", out="o"), small)
    assert (default_epochs("squad_v2"), squad.max_length, squad.doc_stride, squad.max_query_length) == (2, 384, 128, 64)
    assert resolve(FinetuneConfig(model="m", task="cola", out="o", lr=1e-3, epochs=1), base).lr == 1e-3


# --------------------------------------------------------------------------------------- custom tasks
def write_custom(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        columns = list(rows[0])
        path.write_text("\t".join(columns) + "\n" + "".join("\t".join(str(r[c]) for c in columns) + "\n" for r in rows))
    return path


SENTENCES = [
    "the movie was good",
    "it was a bad movie",
    "the cat sat on the mat",
    "he said hello",
    "what a good dog",
    "a bad red house",
]


def test_custom_tsv_pairs_with_test_predictions(root, tmp_path):
    rows = [{"a": s, "b": "it is so", "y": y} for s, y in zip(SENTENCES, ["pos", "neg", "pos", "neg", "pos", "neg"])]
    train = write_custom(tmp_path / "train.tsv", rows)
    long = {"a": " ".join(["the big red house"] * 20), "b": "it is so", "y": "pos"}
    test = write_custom(tmp_path / "test.tsv", [*rows[:3], long])
    m = finetune(
        root,
        tmp_path / "out",
        "--task",
        "custom",
        "--train",
        train,
        "--dev",
        train,
        "--test",
        test,
        "--text-column",
        "a",
        "--text-pair-column",
        "b",
        "--label-column",
        "y",
        "--max-length",
        "24",
    )
    assert set(m["best"]["metrics"]["dev"]) == {"accuracy", "macro_f1", "num_examples"}
    assert m["test"]["test"]["num_examples"] == 4 and m["truncated"]["test"] == 1
    records = [json.loads(line) for line in (tmp_path / "out" / "test_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and records[0]["text"] == rows[0]["a"] and records[0]["text_pair"] == "it is so"
    assert all(r["label"] in ("neg", "pos") and sum(r["scores"].values()) == pytest.approx(1) for r in records)
    assert [r["gold"] for r in records] == ["pos", "neg", "pos", "pos"], "the gold label is kept next to the prediction"
    assert ConvBertForSequenceClassification.from_pretrained(tmp_path / "out" / "best").config.labels() == [
        "neg",
        "pos",
    ]


def test_custom_jsonl_regression(root, tmp_path):
    train = write_custom(tmp_path / "train.jsonl", [{"text": s, "label": i / 2} for i, s in enumerate(SENTENCES)])
    m = finetune(root, tmp_path / "out", "--task", "custom", "--train", train, "--dev", train, "--regression")
    dev = m["best"]["metrics"]["dev"]
    assert {"pearson", "spearman", "mse"} <= set(dev) and finite(dev) and m["best"]["metric"] == "dev/spearman"
    out = tmp_path / "pred.jsonl"
    assert run("predict", "--model", tmp_path / "out" / "best", "--input", train, "--output", out) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, 7)) and all(isinstance(r["score"], float) for r in records)


# ------------------------------------------------------------------------------------------------ NER
def write_conll(path: Path, sentences) -> Path:
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(s.tokens, s.tags)) + "\n" for s in sentences))
    return path


def test_ner_on_wnut16_end_to_end(wnut16_file, bert_vocab_dir, tmp_path):
    from convbert.tokenizer import ConvBertTokenizer

    tok = ConvBertTokenizer.from_pretrained(bert_vocab_dir)
    ConvBertModel(ConvBertConfig.preset("tiny", vocab_size=tok.vocab_size)).save_pretrained(tmp_path / "m", tok)
    sentences = read_conll(wnut16_file)[:40]
    data = tmp_path / "wnut"
    data.mkdir()
    for split, part in (("train", sentences[:24]), ("dev", sentences[24:32]), ("test", sentences[32:])):
        write_conll(data / f"{split}.txt", part)
    out = tmp_path / "out"
    assert (
        run(
            "finetune",
            "--model",
            tmp_path / "m",
            "--task",
            "ner",
            "--data",
            data,
            "--out",
            out,
            "--max-steps",
            "2",
            "--batch-size",
            "16",
            "--lr",
            "1e-3",
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "per_type"} <= set(m["best"]["metrics"]["dev"])
    assert m["best"]["metric"] == "dev/f1" and m["test"]["test"]["num_examples"] == 8
    records = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert [len(r["tags"]) for r in records] == [len(s.tokens) for s in sentences[32:]]
    assert [r["gold"] for r in records] == [s.tags for s in sentences[32:]]

    report = tmp_path / "eval.json"
    assert run("evaluate", "--model", out / "best", "--task", "ner", "--dev", data / "dev.txt", "--output", report) == 0
    assert json.loads(report.read_text())["dev"]["f1"] == m["best"]["metrics"]["dev"]["f1"]
    texts = write_custom(tmp_path / "in.jsonl", [{"text": " ".join(s.tokens)} for s in sentences[:3]])
    assert run("predict", "--model", out / "best", "--input", texts, "--output", tmp_path / "tags.jsonl") == 0
    tagged = [json.loads(line) for line in (tmp_path / "tags.jsonl").read_text().splitlines()]
    labels = set(ConvBertConfig.from_json_file(out / "best" / "config.json").labels())
    assert [r["tokens"] for r in tagged] == [s.tokens for s in sentences[:3]]
    assert all(set(r["tags"]) <= labels for r in tagged)


# ---------------------------------------------------------------------------------------------- SQuAD
def squad_json(path: Path, version_2: bool, bad_offset: bool = False) -> Path:
    def answer(text: str) -> dict:
        return {"text": text, "answer_start": CONTEXT.index(text) + (3 if bad_offset else 0)}

    qas = [
        {"id": "q1", "question": "where did john go ?", "answers": [answer("the big red house")]},
        {"id": "q2", "question": "what did the cat sat on ?", "answers": [answer("the mat")]},
        {"id": "q3", "question": "where was the dog playing ?", "answers": [answer("in the river")]},
    ]
    if version_2:
        qas.append({"id": "q4", "question": "who live in paris ?", "answers": [], "is_impossible": True})
    path.write_text(
        json.dumps(
            {
                "version": "2.0" if version_2 else "1.1",
                "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}],
            }
        )
    )
    return path


@pytest.mark.parametrize("version_2", [False, True])
def test_squad_trains_and_writes_official_files(root, tmp_path, version_2):
    data = squad_json(tmp_path / "squad.json", version_2)
    out = tmp_path / "out"
    m = finetune(
        root,
        out,
        "--task",
        "squad_v2" if version_2 else "squad",
        "--train",
        data,
        "--dev",
        data,
        "--max-length",
        "40",
        "--doc-stride",
        "8",
        "--max-query-length",
        "12",
    )
    dev = m["best"]["metrics"]["dev"]
    assert {"exact", "f1", "total"} <= set(dev) and dev["total"] == dev["num_examples"] == (4 if version_2 else 3)
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(predictions) == set(json.loads((out / "nbest_predictions.json").read_text()))
    assert (out / "null_odds.json").exists() == version_2
    if version_2:
        assert {"HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(dev)
        assert set(json.loads((out / "null_odds.json").read_text())) == set(predictions)
    questions = write_custom(tmp_path / "qa.jsonl", [{"question": "where did john go ?", "context": CONTEXT}])
    args = ["--task", "squad_v2"] if version_2 else []
    assert (
        run(
            "predict",
            "--model",
            out / "best",
            "--input",
            questions,
            "--output",
            tmp_path / "a.jsonl",
            "--max-length",
            "40",
            "--doc-stride",
            "8",
            "--max-query-length",
            "12",
            *args,
        )
        == 0
    )
    (record,) = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert (record["answer"] in CONTEXT or version_2) and 0 <= record["score"] <= 1


# ---------------------------------------------------------------------------------- distributed counting
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_sharded_evaluation_counts_every_example_once(n, world):
    shards = [shard_indices(n, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal work per rank (padded by repeating rows)
    for shuffled in (False, True):
        if shuffled:  # training shards: a seeded permutation per epoch, the same on every rank
            shards = [shard_indices(n, rank, world, seed=5, epoch=2) for rank in range(world)]
            assert np.array_equal(shards[0], shard_indices(n, 0, world, seed=5, epoch=2))
        parts = [(rows, {"logits": np.stack([rows, -rows], 1).astype(float)}) for rows in shards]
        merged = merge_shards(parts, n)["logits"]
        assert np.array_equal(merged[:, 0], np.arange(n))  # each row once, in order
    sampler_parts = []  # torch's own DistributedSampler pads the same way
    for rank in range(world):
        rows = np.array(list(torch.utils.data.DistributedSampler(range(n), world, rank, shuffle=False)))
        sampler_parts.append((rows, {"tags": rows[:, None] * np.ones((1, 3), dtype=int)}))
    assert np.array_equal(merge_shards(sampler_parts, n)["tags"][:, 0], np.arange(n))
    with pytest.raises(RuntimeError, match="distinct rows"):
        merge_shards([(np.arange(n - 1), {"logits": np.zeros((n - 1, 2))})], n)


def test_epochs_shuffle_differently():
    assert not np.array_equal(shard_indices(50, 0, 1, seed=0, epoch=1), shard_indices(50, 0, 1, seed=0, epoch=2))


def classifier_dir(root: Path, out: Path, labels: list[str]) -> Path:
    """A randomly initialised sequence classifier (conv padding masked, so batching cannot change outputs)."""
    from convbert.tokenizer import ConvBertTokenizer

    tok = ConvBertTokenizer.from_pretrained(root / "vocab")
    torch.manual_seed(1)
    config = ConvBertConfig.preset(
        "tiny", vocab_size=tok.vocab_size, mask_conv_padding=True, id2label=dict(enumerate(labels))
    )
    ConvBertForSequenceClassification(config).save_pretrained(out, tok)
    return out


def test_torchrun_evaluate_counts_each_example_once(root, tmp_path):
    model = classifier_dir(root, tmp_path / "clf", ["neg", "pos"])
    dev = write_custom(
        tmp_path / "dev.tsv",
        [{"text": s, "label": y} for s, y in zip(SENTENCES[:5], ["pos", "neg", "pos", "neg", "pos"])],
    )
    args = [
        "evaluate",
        "--model",
        str(model),
        "--task",
        "custom",
        "--dev",
        str(dev),
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    assert run(*args, "--output", tmp_path / "one.json") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "convbert",
        *args,
        "--output",
        str(tmp_path / "two.json"),
    ]
    proc = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{k}.json").read_text())["dev"] for k in ("one", "two"))
    assert two["num_examples"] == 5 and (two["accuracy"] * 5) == pytest.approx(round(two["accuracy"] * 5))
    assert two == pytest.approx(one)


def test_torchrun_finetune_trains_on_shards_and_rank0_writes(root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "convbert",
        "finetune",
        "--model",
        str(root / "model"),
        "--task",
        "mrpc",
        "--data",
        str(root / "glue"),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]
    assert subprocess.run(cmd, env=env, timeout=300, capture_output=True).returncode == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 2  # 8 pairs (double_unordered) / 2 ranks / 2 per rank
    assert m["best"]["metrics"]["dev"]["num_examples"] == N_ROWS and not list(tmp_path.glob(".out*"))


# ------------------------------------------------------------------------------ transformers-saved models
def test_evaluate_and_predict_a_dir_saved_by_transformers(root, tmp_path):
    transformers = pytest.importorskip("transformers")
    from convbert.tokenizer import ConvBertTokenizer

    tok = ConvBertTokenizer.from_pretrained(root / "vocab")
    config = transformers.ConvBertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        embedding_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        pad_token_id=0,
        num_labels=2,
    )
    torch.manual_seed(0)
    hf = transformers.ConvBertForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    report = tmp_path / "eval.json"
    assert (
        run("evaluate", "--model", tmp_path / "hf", "--task", "sst2", "--data", root / "glue", "--output", report) == 0
    )
    dev = json.loads(report.read_text())["dev"]
    assert dev["num_examples"] == N_ROWS and 0 <= dev["accuracy"] <= 1

    texts = write_custom(tmp_path / "in.jsonl", [{"text": s} for s in SENTENCES])
    assert (
        run(
            "predict",
            "--model",
            tmp_path / "hf",
            "--input",
            texts,
            "--output",
            tmp_path / "p.jsonl",
            "--batch-size",
            "1",
        )
        == 0
    )  # no padding: transformers' ConvBERT convolves pads too
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    with torch.no_grad():
        expected = torch.cat([hf(**tok([s])).logits.softmax(-1) for s in SENTENCES]).numpy()
    got = np.array([[r["scores"]["LABEL_0"], r["scores"]["LABEL_1"]] for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["label"] for r in records] == [f"LABEL_{i}" for i in expected.argmax(1)]


def test_predict_onnx_backend_uses_onnx_predictor(root, tmp_path, monkeypatch):
    """The ONNX path against `convbert.tools.export.OnnxPredictor`'s interface (stubbed with the torch model)."""
    model_dir = classifier_dir(root, tmp_path / "clf", ["neg", "pos"])
    model = ConvBertForSequenceClassification.from_pretrained(model_dir)
    calls = []

    class OnnxPredictor:
        def __init__(self, path):
            calls.append(path)

        def __call__(self, input_ids, attention_mask, token_type_ids):
            assert all(
                isinstance(a, np.ndarray) and a.dtype == np.int64 for a in (input_ids, attention_mask, token_type_ids)
            )
            with torch.no_grad():
                logits = model(*(torch.from_numpy(a) for a in (input_ids, attention_mask, token_type_ids))).logits
            return {"logits": logits.numpy()}

    monkeypatch.setitem(sys.modules, "convbert.tools.export", types.SimpleNamespace(OnnxPredictor=OnnxPredictor))
    texts = write_custom(tmp_path / "in.tsv", [{"text": s, "text_pair": "it is so"} for s in SENTENCES])
    outs = {}
    for backend in ("torch", "onnx"):
        outs[backend] = tmp_path / f"{backend}.jsonl"
        assert (
            run(
                "predict",
                "--model",
                model_dir,
                "--input",
                texts,
                "--output",
                outs[backend],
                "--backend",
                backend,
                "--onnx",
                tmp_path / "model.onnx",
            )
            == 0
        )
    assert calls == [str(tmp_path / "model.onnx")]
    onnx, ref = ([json.loads(line) for line in outs[k].read_text().splitlines()] for k in ("onnx", "torch"))
    assert [r["label"] for r in onnx] == [r["label"] for r in ref] and onnx[0]["text_pair"] == "it is so"
    with pytest.raises(Exception, match="needs start_logits"):
        head_outputs("qa", {"logits": np.zeros((1, 2))})


# ------------------------------------------------------------------------------------------ bad input
def _bad_glue(tmp_path: Path) -> tuple[list[str], str]:
    glue = make_tiny_glue(tmp_path / "glue")
    path = glue / "SST-2" / "train.tsv"
    path.write_text(path.read_text() + "an extra\tcolumn\t1\n")
    return ["--task", "sst2", "--data", str(glue)], f"{path}:{N_ROWS + 2}: expected 2 tab-separated columns"


def _unknown_label(tmp_path: Path) -> tuple[list[str], str]:
    train = write_custom(
        tmp_path / "train.jsonl", [{"text": s, "label": "pos" if i % 2 else "neg"} for i, s in enumerate(SENTENCES)]
    )
    dev = write_custom(tmp_path / "dev.jsonl", [{"text": "good", "label": "pos"}, {"text": "so", "label": "meh"}])
    return ["--task", "custom", "--train", str(train), "--dev", str(dev)], f"{dev}:2: unknown label 'meh'"


def _empty_text(tmp_path: Path) -> tuple[list[str], str]:
    train = tmp_path / "train.tsv"
    train.write_text("text\tlabel\nthe cat\t1\n \t0\n")
    return ["--task", "custom", "--train", str(train), "--dev", str(train)], f"{train}:3: empty text in 'text'"


def _squad_offset(tmp_path: Path) -> tuple[list[str], str]:
    data = squad_json(tmp_path / "squad.json", False, bad_offset=True)
    return ["--task", "squad", "--train", str(data), "--dev", str(data)], f"{data}: question 'q1'"


@pytest.mark.parametrize("case", [_bad_glue, _unknown_label, _empty_text, _squad_offset])
def test_bad_input_exits_2_naming_file_and_line_without_output(root, tmp_path, capsys, case):
    args, message = case(tmp_path)
    out = tmp_path / "out"
    assert run("finetune", "--model", root / "model", "--out", out, *args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_out_is_kept_without_overwrite(root, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = ["--task", "sst2", "--data", root / "glue"]
    assert run("finetune", "--model", root / "model", "--out", out, *args) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    finetune(root, out, *args, "--overwrite", "--no-eval-every-epoch", "--epochs", "2", "--max-steps", "2")
    assert not (out / "keep.txt").exists()
    assert [h["epoch"] for h in json.loads((out / "metrics.json").read_text())["history"]] == [2]


@pytest.mark.slow  # the ONNX export alone takes ~30 s on 2 CPU cores
def test_predict_onnx_backend_matches_torch(root, tmp_path):
    """A real export (convbert.tools.export) of a token-classification head: the same per-word tags."""
    pytest.importorskip("onnxruntime")
    from convbert.model import ConvBertForTokenClassification
    from convbert.tokenizer import ConvBertTokenizer
    from convbert.tools.export import export_onnx

    tok = ConvBertTokenizer.from_pretrained(root / "vocab")
    torch.manual_seed(2)
    config = ConvBertConfig.preset("tiny", vocab_size=tok.vocab_size, id2label=dict(enumerate(["B-x", "I-x", "O"])))
    ConvBertForTokenClassification(config).save_pretrained(tmp_path / "tagger", tok)
    export_onnx(tmp_path / "tagger", tmp_path / "tagger.onnx", verify=False)
    texts = write_custom(tmp_path / "in.jsonl", [{"text": s} for s in SENTENCES])
    tags = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.jsonl"
        assert (
            run(
                "predict",
                "--model",
                tmp_path / "tagger",
                "--input",
                texts,
                "--output",
                out,
                "--backend",
                backend,
                "--onnx",
                tmp_path / "tagger.onnx",
                "--batch-size",
                "4",
            )
            == 0
        )
        tags[backend] = [json.loads(line)["tags"] for line in out.read_text().splitlines()]
    assert tags["onnx"] == tags["torch"] and [len(t) for t in tags["onnx"]] == [len(s.split()) for s in SENTENCES]


@pytest.fixture(scope="module")
def sentiment_1000(vader_dir, tmp_path_factory):
    """1,000 labelled movie-review sentences (and dev/test) from the demo's split, its tokenizer, and a mini
    ConvBERT pretrained (MLM) on the demo's VADER text for a minute. (An RTD discriminator this young is still in
    its trivial phase, every token's top-layer vector the same, and no fine-tuning recipe moves it.)"""
    from convbert.demo import label_subset, write_data
    from convbert.pretraining.config import PretrainConfig
    from convbert.pretraining.data import prepare
    from convbert.pretraining.recipe import pretrain
    from convbert.tokenizer import ConvBertTokenizer

    root = tmp_path_factory.mktemp("sentiment")
    splits, text = write_data(vader_dir, root / "data")
    ConvBertTokenizer.train([text], vocab_size=4000).save_pretrained(root / "tok")
    prepare([text], root / "tok", root / "shards", max_seq_length=64, num_workers=1, progress=False)
    run = pretrain(
        PretrainConfig(
            data=str(root / "shards"),
            out=str(root / "pretrain"),
            preset="mini",
            objective="mlm",
            batch_size=32,
            max_steps=150,
            save_every=150,
            eval_every=0,
            lr=1e-3,
        )
    )
    tok = ConvBertTokenizer.from_pretrained(root / "tok")
    torch.manual_seed(0)
    ConvBertModel(ConvBertConfig.preset("mini", vocab_size=tok.vocab_size)).save_pretrained(root / "random", tok)
    return {**splits, "train": label_subset(splits["train"], 1000, 0)}, run / "generator", root / "random"


@pytest.mark.parametrize("which", ["pretrained", "random"])
def test_defaults_learn_from_1000_labels(sentiment_1000, tmp_path, which):
    """With the defaults (the official linear head, >= 600 steps, best evaluation kept) a mini learns from 1,000
    sentences whether pretrained or not: no plateau at chance, no majority-class predictor."""
    splits, pretrained, random = sentiment_1000
    model = pretrained if which == "pretrained" else random
    assert (
        run(
            "finetune",
            "--model",
            model,
            "--task",
            "custom",
            "--train",
            splits["train"],
            "--dev",
            splits["dev"],
            "--test",
            splits["test"],
            "--max-length",
            "64",
            "--out",
            tmp_path / "out",
        )
        == 0
    )
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["steps"] >= 600 and m["epochs"] == 19  # 32 batches an epoch
    assert abs(m["history"][0]["train_loss"] - math.log(2)) > 0.01, "it left chance by its first evaluation"
    test = m["test"]["test"]
    assert test["macro_f1"] > 0.55 and test["accuracy"] > 0.58, test  # a majority-class predictor: F1 ~0.33
