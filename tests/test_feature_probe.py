"""benchmarks/feature_probe.py: linear probes on frozen features find a signal that is there, and none that is not."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from convbert.config import ConvBertConfig
from convbert.model import ConvBertModel
from convbert.tokenizer import ConvBertTokenizer

spec = importlib.util.spec_from_file_location(
    "feature_probe", Path(__file__).parents[1] / "benchmarks" / "feature_probe.py"
)
feature_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(feature_probe)


def test_probe_reads_word_identity_from_a_random_encoder_and_nothing_from_noise(tmp_path):
    rng = np.random.default_rng(0)
    filler = [f"w{i}" for i in range(40)]
    splits = {}
    for split, n in (("train", 1200), ("dev", 200), ("test", 200)):
        labels = rng.choice(["pos", "neg"], n)  # "good" or "bad" once among filler words: the label is the word
        splits[split] = [(" ".join(rng.permutation([*rng.choice(filler, 6), {"pos": "good", "neg": "bad"}[y]])), y)
                         for y in labels]  # fmt: skip
    for name, shuffle in (("signal", False), ("noise", True)):
        (tmp_path / name).mkdir()
        for split, rows in splits.items():
            labels = rng.permutation([y for _, y in rows]) if shuffle else [y for _, y in rows]
            lines = [json.dumps({"text": t, "label": str(y)}) + "\n" for (t, _), y in zip(rows, labels, strict=True)]
            (tmp_path / name / f"sentiment-{split}.jsonl").write_text("".join(lines))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(t for t, _ in splits["train"]))
    tok = ConvBertTokenizer.train([corpus], vocab_size=120)
    torch.manual_seed(0)
    model = ConvBertModel(ConvBertConfig.preset("tiny").replace(vocab_size=tok.vocab_size))
    model.save_pretrained(tmp_path / "model", tokenizer=tok)
    accuracy = {}
    for name in ("signal", "noise"):
        out = tmp_path / f"out-{name}"
        feature_probe.main(["--data", str(tmp_path / name), "--out", str(out), f"random={tmp_path / 'model'}"])
        result = json.loads((out / "probe.json").read_text())["results"]["random"]
        assert set(result) == {"L0 mean", "L1 mean", "L2 mean", "top [CLS]"}  # tiny: 2 layers
        assert "| random |" in (out / "probe.md").read_text()
        accuracy[name] = result["L0 mean"]["1000"]
    assert min(accuracy["signal"]) > 0.9  # the embeddings' mean keeps which of the two words is there
    assert max(accuracy["noise"]) < 0.65  # shuffled labels: chance


def test_bad_input_names_the_file_and_line(tmp_path):
    import pytest

    (tmp_path / "sentiment-train.jsonl").write_text('{"text": "a", "label": "pos"}\n{"text": 3, "label": "pos"}\n')
    with pytest.raises(SystemExit, match=r"sentiment-train.jsonl:2: expected an object"):
        feature_probe.main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), f"m={tmp_path}"])
    with pytest.raises(SystemExit, match=r"sentiment-train.jsonl: no such file"):
        feature_probe.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), f"m={tmp_path}"])
    assert not (tmp_path / "out").exists()
