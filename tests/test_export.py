"""ONNX export: parity with PyTorch at shapes other than the traced one (padded masks, two segments), for
the encoder and classification heads and every conv type (sdconv, dconv, lconv, noconv); atomic writes."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch

from convbert.config import ConvBertConfig
from convbert.errors import InputError
from convbert.model import (
    ConvBertForMultipleChoice,
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertModel,
)
from convbert.tools import export

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def save(cls, tmp_path, name: str, **overrides):
    torch.manual_seed(0)
    model = cls(ConvBertConfig.preset("tiny", vocab_size=100, **overrides)).eval()
    model.save_pretrained(tmp_path / name)
    return model, tmp_path / name


def assert_verified(report: dict, outputs: list[str]) -> None:
    assert report["verified"] and report["outputs"] == outputs
    assert report["max_abs_diff"] <= 1e-4
    lengths = {c["shape"][-1] for c in report["checks"]}
    assert len(lengths) == 2 and report["traced_shape"][-1] not in lengths
    assert all(c["shape"] != report["traced_shape"] for c in report["checks"])


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    model, model_dir = save(ConvBertModel, tmp, "encoder")
    report = export.export_onnx(model_dir, tmp / "encoder.onnx")
    return model, tmp / "encoder.onnx", report


def test_encoder_parity_at_other_lengths(encoder):
    model, path, report = encoder
    assert_verified(report, ["last_hidden_state"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["encoder", "encoder.onnx"]  # no external data
    predictor = export.OnnxPredictor(path)
    assert predictor.input_names == list(export.INPUT_NAMES)
    assert predictor.metadata == {"convbert_head": "ConvBertModel", "max_position_embeddings": "512"}
    with pytest.raises(InputError, match="exceeds max_position_embeddings 512"):
        predictor(np.ones((1, 513)))
    for length in (5, 40):  # a third and fourth length, through the predictor API
        inputs = export.sample_inputs(model, 4, 1, length, seed=1)
        assert inputs["attention_mask"].min() == 0  # padded rows
        with torch.no_grad():
            expected = model(*inputs.values()).last_hidden_state.numpy()
        got = predictor(*(t.numpy() for t in inputs.values()))["last_hidden_state"]
        assert np.abs(got - expected).max() <= 1e-4


def test_sequence_classification_parity_dconv(tmp_path):
    _, model_dir = save(
        ConvBertForSequenceClassification, tmp_path, "cls", num_labels=3, num_hidden_layers=1, conv_type="dconv"
    )
    assert_verified(export.export_onnx(model_dir, tmp_path / "cls.onnx"), ["logits"])


def test_question_answering_lconv_opset_20(tmp_path):
    _, model_dir = save(ConvBertForQuestionAnswering, tmp_path, "qa", conv_type="lconv", num_hidden_layers=1)
    report = export.export_onnx(model_dir, tmp_path / "qa.onnx", opset=20)
    assert_verified(report, ["start_logits", "end_logits"])
    assert report["opset"] == 20


def test_cli_multiple_choice_noconv(tmp_path, capsys):
    _, model_dir = save(ConvBertForMultipleChoice, tmp_path, "mc", conv_type="noconv", num_hidden_layers=1)
    parser = argparse.ArgumentParser()
    export.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", "onnx", "--model", str(model_dir), "--output", str(tmp_path / "mc.onnx")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ConvBertForMultipleChoice" in out and "verified with onnxruntime" in out
    assert "traced at shape [2, 2, 16]" in out and "shape [3, 3, 7]: logits" in out and "shape [1, 2, 29]" in out
    assert (tmp_path / "mc.onnx").is_file()


def test_failed_verification_writes_nothing(encoder, tmp_path, monkeypatch):
    model, path, _ = encoder
    model.save_pretrained(tmp_path / "encoder")
    monkeypatch.setattr(export, "to_onnx", lambda model, opset: path.read_bytes())  # skip re-exporting
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    with pytest.raises(export.VerificationError, match="not written"):
        export.export_onnx(tmp_path / "encoder", tmp_path / "out.onnx")
    assert list(tmp_path.glob("*out.onnx*")) == []


def test_missing_onnxruntime_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(InputError, match=r"pip install convbert\[onnx\]"):
        export.OnnxPredictor(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="not a model directory"):
        export.export_onnx(tmp_path / "missing", tmp_path / "m.onnx", verify=False)
