"""Running a head on encoded rows: distributed inference (each rank a shard of the rows, the outputs gathered on
every rank), the outputs a task uses, and loading a task head from a model dir."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..config import ConvBertConfig
from ..errors import InputError
from ..hub import resolve_dir
from ..model import (
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertForTokenClassification,
    PreTrained,
)
from ..train_utils import Dist, autocast
from .config import MULTI_LABEL, QA, SEQUENCE, TOKEN, TOKEN_FILL, InferenceConfig, Outputs, Runner
from .task_data import EvalSplit, score_split

HEAD_BY_KIND: dict[str, type[PreTrained]] = {
    SEQUENCE: ConvBertForSequenceClassification,
    TOKEN: ConvBertForTokenClassification,
    QA: ConvBertForQuestionAnswering,
}


def shard_indices(n: int, rank: int, world: int, seed: int | None = None, epoch: int = 0) -> np.ndarray:
    """This rank's rows, as torch's DistributedSampler: all rows (permuted by (seed, epoch) unless seed is None),
    repeated from the start up to a multiple of `world`, then every world-th one from `rank`."""
    order = np.arange(n) if seed is None else np.random.default_rng([seed, epoch]).permutation(n)
    return np.resize(order, -(-n // world) * world)[rank::world]


def length_grouped(rows: np.ndarray, lengths: np.ndarray, batch: int, seed: int, epoch: int) -> np.ndarray:
    """`rows` reordered so that each batch of `batch` holds rows of similar length: megabatches of 50 batches
    (consecutive in the shuffled order) sorted longest first and cut into batches, whose order is then shuffled
    (transformers' LengthGroupedSampler, without its order from long to short)."""
    mega = 50 * batch
    parts = [rows[i : i + mega] for i in range(0, len(rows), mega)]
    ordered = np.concatenate([p[np.argsort(-lengths[p], kind="stable")] for p in parts])
    batches = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]
    last = batches.pop() if len(batches[-1]) < batch else None  # a short batch stays last, as before
    order = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return np.concatenate([batches[k] for k in order] + ([last] if last is not None else []))


def merge_shards(parts: Sequence[tuple[np.ndarray, Outputs]], n: int) -> Outputs:
    """The outputs of rows 0..n-1, in order, from every rank's (rows, outputs); a row computed twice (the
    padding of `shard_indices`) counts once. Every row must be present."""
    rows = np.concatenate([np.asarray(r) for r, _ in parts])
    unique, first = np.unique(rows, return_index=True)
    if not np.array_equal(unique, np.arange(n)):
        raise RuntimeError(f"gathered outputs cover {len(unique)} distinct rows of {n}")
    return {k: np.concatenate([o[k] for _, o in parts])[first] for k in parts[0][1]}


def gather_outputs(rows: np.ndarray, outputs: Outputs, n: int, d: Dist) -> Outputs:
    """Every rank's outputs merged (each row once), on every rank."""
    parts: list[Any] = [(rows, outputs)]
    if d.world_size > 1:
        parts = [None] * d.world_size
        dist.all_gather_object(parts, (rows, outputs))
    return merge_shards(parts, n)


def make_batch(
    tensors: Mapping[str, torch.Tensor], rows: np.ndarray, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """The rows of every tensor, (N, T) ones cut to the longest attended length in the batch (the integer ones: a
    float (N, C) tensor is multi-hot labels, one column per class)."""
    index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    width = int(tensors["attention_mask"][index].sum(1).max())

    def cut(v: torch.Tensor) -> torch.Tensor:
        return v[:, :width] if v.ndim == 2 and not v.is_floating_point() else v

    return {k: cut(v[index]).to(device or "cpu") for k, v in tensors.items()}


def head_outputs(kind: str, raw: Mapping[str, Any]) -> Outputs:
    """The outputs a task uses from the raw head outputs (numpy): token logits become tag ids."""
    wanted = ("start_logits", "end_logits") if kind == QA else ("logits",)
    missing = [k for k in wanted if k not in raw]
    if missing:
        raise InputError(f"the model has outputs {sorted(raw)}, but a {kind} head needs {', '.join(wanted)}")
    if kind == TOKEN:
        return {"tags": np.asarray(raw["logits"]).argmax(-1)}
    return {k: np.asarray(raw[k], dtype=np.float32) for k in wanted}


def torch_runner(model: PreTrained, kind: str, device: torch.device, precision: str) -> Runner:
    names = ("start_logits", "end_logits") if kind == QA else ("logits",)

    @torch.no_grad()
    def run(batch: dict[str, torch.Tensor]) -> Outputs:
        with autocast(precision, device):
            out = model(**{k: v.to(device) for k, v in batch.items()})
        return head_outputs(kind, {k: getattr(out, k).float().cpu().numpy() for k in names})

    return run


def run_rows(
    run: Runner, inputs: Mapping[str, torch.Tensor], rows: np.ndarray, batch_size: int, desc: str, show: bool
) -> Outputs:
    """Outputs of `rows` in batches; per-token outputs padded back to the split's width."""
    width = inputs["input_ids"].shape[1]
    chunks: dict[str, list[np.ndarray]] = {}
    for lo in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not show, leave=False, unit="batch"):
        for k, v in run(make_batch(inputs, rows[lo : lo + batch_size])).items():
            if k in TOKEN_FILL:
                v = np.pad(v, ((0, 0), (0, width - v.shape[1])), constant_values=TOKEN_FILL[k])
            chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def evaluate_splits(
    model: PreTrained, kind: str, splits: Sequence[EvalSplit], d: Dist, cfg: InferenceConfig
) -> tuple[dict[str, dict[str, Any]], dict[str, Outputs]]:
    """Run every split, each rank a shard, and score it on the gathered outputs (every example exactly once)."""
    model.eval()
    run = torch_runner(model, kind, d.device, cfg.precision)
    metrics, outputs = {}, {}
    for s in splits:
        n = len(s.inputs["input_ids"])
        rows = shard_indices(n, d.rank, d.world_size)
        outputs[s.name] = gather_outputs(rows, run_rows(run, s.inputs, rows, cfg.batch_size, s.name, d.is_main), n, d)
        scores = score_split(s, outputs[s.name])
        if scores is not None:
            metrics[s.name] = {**scores, "num_examples": s.num_examples}
    return metrics, outputs


def load_head(
    model_dir: str | Path,
    kind: str,
    labels: list[str] | None = None,
    trained: bool = False,
    classifier_head: str = "linear",
    multi_label: bool = False,
) -> PreTrained:
    """The task head from a model dir; `labels` set the classes (None: regression for sequence heads;
    multi_label: a multi-label sequence head, config.problem_type multi_label_classification).
    trained=True (evaluate/predict) keeps the saved labels and refuses a dir without head weights.
    A sequence head is `classifier_head` unless the dir already holds a sequence classifier."""
    cls = HEAD_BY_KIND[kind]
    overrides: dict[str, Any] = {}
    if not trained and kind != QA:
        overrides = {"id2label": dict(enumerate(labels))} if labels else {"num_labels": 1}
        if kind == SEQUENCE:
            single = "single_label_classification" if labels else "regression"
            overrides["problem_type"] = MULTI_LABEL if multi_label else single
            saved = ConvBertConfig.from_json_file(resolve_dir(model_dir) / "config.json").architectures or []
            if cls.__name__ not in saved:
                overrides["classifier_head"] = classifier_head
    model, info = cls.from_pretrained(model_dir, output_loading_info=True, **overrides)
    if trained and info["missing_keys"]:
        raise InputError(f"{model_dir}: no trained {cls.__name__} head (missing {', '.join(info['missing_keys'])})")
    return model
