"""ONNX export of any ConvBERT head, verified against PyTorch with ONNX Runtime, and an ONNX Runtime predictor.

The graph comes from `torch.onnx.export(dynamo=True)` (torch.export + onnxscript) with dynamic batch and
sequence axes (and choices for multiple choice); the TorchScript exporter is not used because it bakes the
traced length into the position ids. The file is written whole (weights inside, no external-data sidecar)
and only after verification passed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..fileio import atomic_write_bytes
from ..model import ConvBertForMultipleChoice, ConvBertForQuestionAnswering, ConvBertModel, PreTrained, load_model_dir
from ..settings import PositiveInt, add_command, validate

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_OPSET = 18
TOLERANCE = 1e-4  # max |onnxruntime - torch| accepted in fp32
TRACE_BATCH, TRACE_CHOICES, TRACE_LEN = 2, 2, 16
CHECKS = ((3, 3, 7), (1, 2, 29))  # (batch, choices, length) for verification: none equals the traced shape


class VerificationError(RuntimeError):
    """The exported graph disagrees with PyTorch beyond TOLERANCE; nothing was written."""


def require(module: str) -> Any:
    """Import an optional dependency of the `[onnx]` extra, or explain how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"ONNX support needs the {module} package: pip install convbert[onnx]") from None


def output_names(model: PreTrained) -> list[str]:
    if isinstance(model, ConvBertModel):
        return ["last_hidden_state"]
    if isinstance(model, ConvBertForQuestionAnswering):
        return ["start_logits", "end_logits"]
    return ["logits"]


class _Graph(nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> a tuple of output tensors, in `output_names` order."""

    def __init__(self, model: PreTrained):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> tuple[Tensor, ...]:
        out = self.model(input_ids, attention_mask, token_type_ids)
        if isinstance(self.model, ConvBertModel):
            return (out.last_hidden_state,)
        if isinstance(self.model, ConvBertForQuestionAnswering):
            return out.start_logits, out.end_logits
        return (out.logits,)


def sample_inputs(model: PreTrained, batch: int, choices: int, length: int, seed: int = 0) -> dict[str, Tensor]:
    """Random token ids with right padding (row i keeps length >> i tokens, at least 1) and two segments."""
    c = model.config
    shape = (batch, choices, length) if isinstance(model, ConvBertForMultipleChoice) else (batch, length)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, c.vocab_size, shape, generator=g)
    real = torch.tensor([max(1, length >> i) for i in range(batch)]).view(batch, *[1] * (len(shape) - 1))
    mask = (torch.arange(length) < real).long().expand(shape).contiguous()  # (B, [C,] T)
    types = ((torch.arange(length) >= real // 2) & mask.bool()).long() if c.type_vocab_size > 1 else mask * 0
    return {"input_ids": torch.where(mask.bool(), ids, c.pad_token_id), "attention_mask": mask, "token_type_ids": types}


def trace_inputs(model: PreTrained) -> dict[str, Tensor]:
    return sample_inputs(model, TRACE_BATCH, TRACE_CHOICES, min(TRACE_LEN, model.config.max_position_embeddings))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (internal to torch.export / onnxscript, not about the model);
    a failed export still raises."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def to_onnx(model: PreTrained, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialised ONNX model with dynamic batch / (choices) / sequence axes."""
    require("onnxscript")
    require("onnx")
    from torch.export import Dim

    graph = _Graph(model).eval()
    inputs = trace_inputs(model)
    axes: dict[int, Any] = {
        0: Dim("batch"),
        inputs["input_ids"].dim() - 1: Dim("sequence", max=model.config.max_position_embeddings),
    }
    if isinstance(model, ConvBertForMultipleChoice):
        axes[1] = Dim("choices")
    try:
        with torch.no_grad(), _quiet():
            program = torch.onnx.export(
                graph,
                tuple(inputs.values()),
                dynamo=True,
                verbose=False,
                input_names=list(INPUT_NAMES),
                output_names=output_names(model),
                opset_version=opset,
                dynamic_shapes={k: axes for k in INPUT_NAMES},
            )
    except Exception as e:  # the exporter raises many types; report what failed, with the opset asked for
        raise RuntimeError(f"ONNX export of {type(model).__name__} (opset {opset}) failed: {e}") from e
    proto = program.model_proto
    for key, value in (
        ("convbert_head", type(model).__name__),
        ("max_position_embeddings", str(model.config.max_position_embeddings)),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


class OnnxPredictor:
    """An ONNX Runtime session over an exported model: `predictor(ids, mask, types) -> {output name: array}`."""

    def __init__(self, path: str | Path | bytes, providers: list[str] | None = None):
        ort = require("onnxruntime")
        source = path if isinstance(path, bytes) else str(path)
        if not isinstance(path, bytes) and not Path(path).is_file():
            raise InputError(f"{path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(source, providers=providers or ort.get_available_providers())
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise InputError(f"{'ONNX model' if isinstance(path, bytes) else path}: cannot load: {e}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = self.session.get_modelmeta().custom_metadata_map  # convbert_head, max_position_embeddings

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> dict[str, np.ndarray]:
        """Integer arrays or tensors of shape (B, T) ((B, C, T) for multiple choice); defaults: all-ones mask,
        segment 0."""
        ids = np.asarray(input_ids, dtype=np.int64)
        limit = int(self.metadata.get("max_position_embeddings", ids.shape[-1]))
        if ids.shape[-1] > limit:
            raise InputError(
                f"sequence length {ids.shape[-1]} exceeds max_position_embeddings {limit}; truncate the input"
            )
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids) if attention_mask is None else attention_mask,
            "token_type_ids": np.zeros_like(ids) if token_type_ids is None else token_type_ids,
        }
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in feed.items() if k in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


def verify_onnx(model: PreTrained, onnx_model: bytes) -> list[dict[str, Any]]:
    """Max |onnxruntime - torch| per output on each CHECKS shape (padded masks, two segments)."""
    predictor = OnnxPredictor(onnx_model, providers=["CPUExecutionProvider"])
    graph = _Graph(model).eval()
    checks = []
    for batch, choices, length in CHECKS:
        length = min(length, model.config.max_position_embeddings)
        inputs = sample_inputs(model, batch, choices, length, seed=length)
        with torch.no_grad():
            expected = graph(*inputs.values())
        got = predictor(*(t.numpy() for t in inputs.values()))
        diffs = {
            name: float(np.abs(got[name] - ref.float().numpy()).max())
            for name, ref in zip(output_names(model), expected)
        }
        checks.append({"shape": list(inputs["input_ids"].shape), "max_abs_diff": diffs})
    return checks


def export_onnx(
    model_dir: str | Path, out_path: str | Path, opset: int | None = None, verify: bool = True
) -> dict[str, Any]:
    """Export the model dir's (or hub id's, see `hub.resolve_dir`) head (config.json `architectures`) to one
    .onnx file; returns a report.

    With verify, ONNX Runtime and PyTorch run the same padded batches at shapes other than the traced one and
    the file is written only if every output agrees within TOLERANCE (else VerificationError).
    """
    if verify:
        require("onnxruntime")
    model = load_model_dir(model_dir)
    opset = DEFAULT_OPSET if opset is None else opset
    data = to_onnx(model, opset)
    traced = list(trace_inputs(model)["input_ids"].shape)
    report: dict[str, Any] = {
        "path": str(out_path),
        "head": type(model).__name__,
        "opset": opset,
        "inputs": list(INPUT_NAMES),
        "outputs": output_names(model),
        "traced_shape": traced,
        "verified": False,
        "tolerance": TOLERANCE,
    }
    if verify:
        report["checks"] = verify_onnx(model, data)
        report["max_abs_diff"] = max(v for c in report["checks"] for v in c["max_abs_diff"].values())
        if not report["max_abs_diff"] <= TOLERANCE:
            raise VerificationError(
                f"{out_path} not written: ONNX Runtime differs from PyTorch by "
                f"{report['max_abs_diff']:.3g} > {TOLERANCE} ({report['checks']})"
            )
        report["verified"] = True
    atomic_write_bytes(out_path, data)
    report["bytes"] = len(data)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"wrote {report['path']} ({report['head']}, opset {report['opset']}, {report['bytes'] / 1e6:.1f} MB; "
        f"outputs {', '.join(report['outputs'])}; traced at shape {report['traced_shape']}, "
        f"batch and sequence axes dynamic)"
    ]
    if report["verified"]:
        lines.append(f"verified with onnxruntime (max |diff| {report['max_abs_diff']:.2e} <= {report['tolerance']}):")
        lines += [
            f"  shape {c['shape']}: " + ", ".join(f"{k} {v:.2e}" for k, v in c["max_abs_diff"].items())
            for c in report["checks"]
        ]
    else:
        lines.append("not verified (--no-verify)")
    return "\n".join(lines)


@dataclass
class ExportConfig:
    model: str  # model directory (config.json + weights) or hub id (org/name[@revision])
    output: str  # the .onnx file to write
    opset: PositiveInt = DEFAULT_OPSET  # ONNX opset
    verify: bool = True  # ONNX Runtime must reproduce PyTorch before the file is written

    def __post_init__(self) -> None:
        validate(self)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export onnx`."""
    p = subparsers.add_parser("export", help="export a model to another runtime format")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    add_command(
        formats,
        "onnx",
        ExportConfig,
        run,
        help="export a model dir to ONNX, verified against PyTorch",
        description="Export any head in --model to one .onnx file with dynamic batch and sequence axes; "
        f"unless --no-verify, ONNX Runtime must reproduce PyTorch within {TOLERANCE} on padded "
        "batches of other shapes before the file is written. Needs pip install convbert[onnx].",
        metavars={"model": "DIR|ID", "output": "FILE"},
    )


def run(cfg: ExportConfig) -> int:
    try:
        report = export_onnx(cfg.model, cfg.output, opset=cfg.opset, verify=cfg.verify)
    except VerificationError as e:
        print(f"convbert: export failed verification: {e}")
        return 1
    print(format_report(report))
    return 0
