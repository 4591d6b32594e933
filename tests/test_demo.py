"""Smoke test of the main job: `convbert demo --budget tiny --ablation` writes every artefact with finite numbers."""

import json
import math
import re

import torch

from convbert.cli import main
from convbert.demo import label_subset
from convbert.demo_report import at_chance, interval, judged_loss, single_class


def test_demo_tiny_budget(tmp_path, vader_dir, capsys):
    torch.set_num_threads(1)
    args = [
        "demo",
        "--budget",
        "tiny",
        "--ablation",
        "--jobs",
        "2",
        "--out",
        str(tmp_path),
        "--data-dir",
        str(vader_dir.parent),
    ]
    assert main(args) == 0  # two worker processes: the default's parallel path
    printed = capsys.readouterr().out
    out = tmp_path / "tiny"
    table = (out / "results.md").read_text()
    assert table.strip() in printed
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    names = [
        "ConvBERT (sdconv)",
        "ELECTRA (noconv, head_ratio 1)",
        "ConvBERT (dconv)",
        "ConvBERT (lconv)",
        "ConvBERT, random init",
    ]
    assert [r.split("|")[1].strip() for r in rows] == names
    for row in rows:
        accuracies = re.findall(r"(\d+\.\d) ± (\d+\.\d)", row)
        assert len(accuracies) >= 2 and all(0 <= float(m) <= 100 and math.isfinite(float(h)) for m, h in accuracies)
    for png in ("pretraining_curves.png", "learning_curve.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in ("convbert-sdconv", "electra-noconv-head-ratio-1", "convbert-dconv", "convbert-lconv"):
        assert (out / "pretrain" / f"{run}-seed0" / "discriminator" / "model.safetensors").exists()
        assert (out / "pretrain" / f"{run}-seed0" / "eval.csv").exists()
    summary = json.loads((out / "results.json").read_text())
    by_model = {r["model"]: r for r in summary["rows"]}
    assert set(by_model) == set(names)
    assert all(0 <= e["disc_auc"] <= 1 for e in by_model["ConvBERT (sdconv)"]["held_out"])
    for r in by_model.values():
        assert len(r["labels=40"]["test_accuracy"]) == len(r["labels=all"]["test_accuracy"]) == 2  # 2 seeds


def test_label_subsets_are_seeded_and_shared(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"s{i}", "label": "pos"}) + "\n" for i in range(100)))
    a, b = label_subset(train, 10, 0), label_subset(train, 10, 1)
    assert len(a.read_text().splitlines()) == 10 and a.read_text() != b.read_text()
    assert label_subset(train, 10, 0).read_text() == a.read_text() and label_subset(train, None, 0) == train


def test_interval_is_a_t_interval():
    m, h = interval([1.0, 2.0, 3.0])
    assert m == 2.0 and math.isclose(h, 4.302652729911275 * 1.0 / math.sqrt(3))
    assert interval([5.0]) == (5.0, 0.0)


def test_at_chance_is_judged_after_the_first_epoch_or_over_the_last_stretch(tmp_path):
    ln2 = math.log(2)
    epochs = [  # 250 labels: evaluated after every second epoch, each entry's loss over its own epoch
        {"epoch": 2, "step": 16, "train_loss": 0.60, "train_batches": 8, "epoch_end": True},
        {"epoch": 4, "step": 32, "train_loss": ln2, "train_batches": 8, "epoch_end": True},
    ]
    assert judged_loss(epochs) == 0.60 and not at_chance({"history": epochs})
    inside = [  # all labels: three evaluations inside the first epoch, losses over the epoch so far
        {"epoch": 1, "step": 50, "train_loss": ln2, "train_batches": 50, "epoch_end": False},
        {"epoch": 1, "step": 100, "train_loss": 0.66, "train_batches": 100, "epoch_end": False},
        {"epoch": 1, "step": 150, "train_loss": 0.62, "train_batches": 150, "epoch_end": False},
    ]
    assert math.isclose(judged_loss(inside), (0.62 * 150 - 0.66 * 100) / 50)  # steps 101-150: 0.54
    assert not at_chance({"history": inside})
    one_epoch = [*inside, {"epoch": 1, "step": 250, "train_loss": 0.58, "train_batches": 250, "epoch_end": True}]
    assert math.isclose(judged_loss(one_epoch), (0.58 * 250 - 0.62 * 150) / 100)  # steps 151-250
    stuck = [dict(h, train_loss=ln2 + 0.001) for h in inside]
    assert at_chance({"history": stuck})
    assert at_chance({"history": [{"epoch": 1, "step": 5, "train_loss": ln2}]})  # an old entry: its own loss
    for name, labels in (("one", ["pos", "pos"]), ("two", ["pos", "neg"])):
        (tmp_path / name).mkdir()
        rows = [json.dumps({"text": "t", "label": y, "scores": {}}) + "\n" for y in labels]
        (tmp_path / name / "test_predictions.jsonl").write_text("".join(rows))
    assert single_class({"config": {"out": str(tmp_path / "one")}})
    assert not single_class({"config": {"out": str(tmp_path / "two")}})


def test_a_finished_run_with_other_settings_is_not_reused(tmp_path):
    import pytest

    from convbert.demo import require_same_settings
    from convbert.errors import InputError

    saved = tmp_path / "run_config.json"
    saved.write_text(json.dumps({"mask_prob": 0.15, "lr": 1e-3, "device": "cpu"}))
    require_same_settings(saved, {"mask_prob": 0.15, "lr": 1e-3, "device": "cuda", "tokenizer": None}, "run")
    with pytest.raises(InputError, match=r"run holds a run with other settings \(mask_prob 0.15 != 0.25\)"):
        require_same_settings(saved, {"mask_prob": 0.25, "lr": 1e-3}, "run")


def test_workers_end_when_the_demo_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "jobs.py"
    script.write_text(
        "import os, sys, time\n"
        "from convbert.demo import run_jobs\n"
        "def job(path):\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    run_jobs(job, sys.argv[1:], 2)\n"
    )
    pid_files = [tmp_path / "a", tmp_path / "b"]
    parent = subprocess.Popen([sys.executable, str(script), *map(str, pid_files)])
    deadline = time.monotonic() + 120
    while not all(p.exists() and p.read_text() for p in pid_files):
        assert time.monotonic() < deadline and parent.poll() is None, "the workers did not start"
        time.sleep(0.2)
    workers = [int(p.read_text()) for p in pid_files]
    parent.send_signal(signal.SIGTERM)
    parent.wait(30)

    def alive(pid: int) -> bool:
        try:
            state = next(ln for ln in open(f"/proc/{pid}/status") if ln.startswith("State:"))
        except FileNotFoundError:
            return False
        return "Z" not in state.split()[1]  # a zombie has exited

    deadline = time.monotonic() + 15
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, workers)), "a worker outlived the killed demo"
