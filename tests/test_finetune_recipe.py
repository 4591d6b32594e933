"""The fine-tuning recipe beyond one plain run: resume after SIGKILL, evaluation every N steps, early stopping,
--metric-for-best, gradient accumulation, multi-seed OUT/best, the files of a run, and the README's sequence."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_finetune import SENTENCES, finetune, root, run, write_custom  # noqa: F401 (root is a fixture)

from convbert import ConvBertConfig, ConvBertModel, ConvBertTokenizer
from convbert.settings import RUN_CONFIG


def custom_data(tmp_path: Path) -> list[str]:
    rows = [{"text": s, "label": "pos" if i % 2 else "neg"} for i, s in enumerate(SENTENCES * 4)]
    train = write_custom(tmp_path / "train.jsonl", rows)
    dev = write_custom(tmp_path / "dev.jsonl", rows[:8])
    return ["--task", "custom", "--train", str(train), "--dev", str(dev)]


def cli(*args: str | Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "convbert", *map(str, args)], env=env, **kw)


def test_resume_after_sigkill_is_bit_identical(root, tmp_path):  # noqa: F811
    args = ["finetune", "--model", root / "model", *custom_data(tmp_path), "--batch-size", "4", "--max-steps",
            "120", "--eval-steps", "10", "--device", "cpu"]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert cli(*args, "--out", straight).wait() == 0
    p = cli(*args, "--out", killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "killed.partial" / "seed-0").glob("step-0000002*")):
        assert p.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not killed.exists() and (tmp_path / "killed.partial").is_dir()
    assert cli(*args, "--out", killed).wait() == 0  # --resume auto is the default
    a, b = load_file(straight / "best" / "model.safetensors"), load_file(killed / "best" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert ma["history"] == mb["history"] and ma["best"] == mb["best"] and len(ma["history"]) == 12
    assert not (tmp_path / "killed.partial").exists()


def test_resume_refuses_other_settings(root, tmp_path, capsys):  # noqa: F811
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / RUN_CONFIG).write_text(json.dumps({"lr": 1.0}))
    assert run("finetune", "--model", root / "model", "--out", tmp_path / "out", *custom_data(tmp_path)) == 2
    assert "holds an unfinished run with other settings" in capsys.readouterr().err


def test_eval_steps_early_stopping_and_metric_for_best(root, tmp_path, capsys):  # noqa: F811
    data = custom_data(tmp_path)
    m = finetune(
        root,
        tmp_path / "a",
        *data,
        "--max-steps",
        "40",
        "--batch-size",
        "4",
        "--eval-steps",
        "3",
        "--early-stopping-patience",
        "2",
        "--metric-for-best",
        "macro_f1",
        "--no-eval-every-epoch",
    )
    steps = [h["step"] for h in m["history"]]
    assert steps[:3] == [3, 6, 9] and m["best"]["metric"] == "dev/macro_f1"
    best_at = steps.index(m["best"]["step"])
    if m["stopped_early"]:
        assert len(steps) == best_at + 1 + 2 and m["steps"] == steps[-1] < 40
    else:
        assert m["steps"] == 40
    rows = list(csv.DictReader((tmp_path / "a" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == steps and "dev/macro_f1" in rows[0] and float(rows[0]["lr"]) > 0
    args = ["finetune", "--model", root / "model", "--out", tmp_path / "b", *data, "--metric-for-best", "dev/bleu"]
    assert run(*args, "--max-steps", "1") == 2
    assert (
        "--metric-for-best dev/bleu: not a metric of this task (dev/accuracy, dev/macro_f1)" in capsys.readouterr().err
    )


def test_gradient_accumulation_matches_one_big_batch(root, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    tok_dir = root / "model"
    config = ConvBertConfig.from_json_file(tok_dir / "config.json").replace(
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0, conv_type="noconv"
    )  # noconv: outputs do not depend on the padding width (micro-batches are padded to their own longest row)
    ConvBertModel(config).save_pretrained(tmp_path / "nodrop", tokenizer=ConvBertTokenizer.from_pretrained(tok_dir))
    common = ["--model", tmp_path / "nodrop", *custom_data(tmp_path), "--batch-size", "8", "--max-steps", "4"]
    assert run("finetune", "--out", tmp_path / "one", *common) == 0
    assert run("finetune", "--out", tmp_path / "four", *common, "--gradient_accumulation_steps", "4") == 0
    a, b = (load_file(tmp_path / d / "best" / "model.safetensors") for d in ("one", "four"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # equal up to the order of float sums


def test_readme_sequence_seeds_evaluate_predict_export(root, tmp_path, capsys):  # noqa: F811
    """The README's commands in order: finetune --seeds -> evaluate OUT/best -> predict -> export onnx."""
    data = custom_data(tmp_path)
    out = tmp_path / "runs" / "sentiment"
    assert run("finetune", "--model", root / "model", "--out", out, *data, "--seeds", "2", "--max-steps", "2") == 0
    summary = json.loads((out / "aggregate.json").read_text())
    best_seed = summary["best_seed"]
    assert best_seed in (0, 1) and (out / "aggregate.md").exists()
    assert (out / "best" / "model.safetensors").read_bytes() == (
        out / f"seed-{best_seed}" / "best" / "model.safetensors"
    ).read_bytes()
    card = (out / "best" / "README.md").read_text()
    assert "# ConvBERT fine-tuned on custom" in card and "dev | accuracy" in card and "convbert finetune" in card
    saved = json.loads((out / "best" / RUN_CONFIG).read_text())
    assert saved["seeds"] == 2 and saved["out"] == str(out)
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert run("evaluate", "--model", out / "best", *data[:2], "--dev", data[5], "--output", report) == 0
    assert json.loads(report.read_text())["dev"]["num_examples"] == 8
    assert run("predict", "--model", out / "best", "--input", data[5], "--output", tmp_path / "p.jsonl") == 0
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(r["label"] in ("neg", "pos") for r in records)
    pytest.importorskip("onnxruntime")
    assert run("export", "onnx", "--model", out / "best", "--output", tmp_path / "m.onnx") == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_length_grouped_batches_hold_similar_lengths_and_every_row_once():
    import numpy as np

    from convbert.finetuning.inference import length_grouped

    lengths = np.random.default_rng(0).integers(3, 65, 2000)
    rows = np.random.default_rng(1).permutation(1990)  # an epoch's shuffled rows (10 left out)
    grouped = length_grouped(rows, lengths, 32, seed=0, epoch=1)
    assert sorted(grouped.tolist()) == sorted(rows.tolist())
    batches = [grouped[i : i + 32] for i in range(0, len(grouped), 32)]
    assert len(batches[-1]) == 1990 % 32  # the short batch stays last
    spread = np.mean([np.ptp(lengths[b]) for b in batches[:-1]])
    random_spread = np.mean([np.ptp(lengths[rows[i : i + 32]]) for i in range(0, 1984, 32)])
    assert spread < 4 < 50 < random_spread  # 50 batches of 32 sorted from 1,600 rows: ~1 token apart
    longest = [int(lengths[b].max()) for b in batches[:-1]]
    assert longest != sorted(longest, reverse=True)  # the batches' order is shuffled, not long to short
    assert np.array_equal(grouped, length_grouped(rows, lengths, 32, seed=0, epoch=1))  # resumable
    assert not np.array_equal(grouped, length_grouped(rows, lengths, 32, seed=0, epoch=2))
