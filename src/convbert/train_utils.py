"""Training pieces shared by pretraining and fine-tuning: processes, optimizer, schedule, precision, RNG state."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ processes
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def setup_distributed(device: str | None = None) -> Dist:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK (single process when unset); gloo on CPU, nccl on GPU."""
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device(want))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want == "cuda" else "gloo")
    return Dist(rank, world, local, torch.device(f"cuda:{local}" if want == "cuda" else "cpu"))


def all_reduce_sum(values: dict[str, float], d: Dist) -> dict[str, float]:
    if d.world_size == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return dict(zip(values, t.tolist()))


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


# ------------------------------------------------------------------------------------------ optimisation
def param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None, num_layers: int | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and LayerNorm; optional layer-wise LR decay (ELECTRA fine-tuning).

    With layer_decay, encoder layer i gets lr x decay^(L - i), the embeddings lr x decay^(L + 1) and the
    task head lr (ELECTRA's `_get_layer_lrs`, without its off-by-one on the embeddings).
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        decay = 0.0 if (p.ndim < 2 or "LayerNorm" in name or name.endswith("bias")) else weight_decay
        scale = 1.0
        if layer_decay is not None:
            m = re.search(r"encoder\.layer\.(\d+)\.", name)
            if m:
                scale = layer_decay ** (num_layers - int(m.group(1)))
            elif "embeddings" in name:
                scale = layer_decay ** (num_layers + 1)
        groups.setdefault((lr * scale, decay), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    eps: float = 1e-6,
    betas: tuple[float, float] = (0.9, 0.999),
    layer_decay: float | None = None,
    num_layers: int | None = None,
) -> torch.optim.AdamW:
    """The fused AdamW (one kernel over all parameters; 3.6x the default's speed on a CPU), which can also skip
    a step on the device (`optimizer.found_inf`)."""
    groups = param_groups(model, lr, weight_decay, layer_decay, num_layers)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=True)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup from 0, then linear decay to 0 at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(precision: str, device: torch.device):
    """torch.autocast for bf16/fp16; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def compile_for_inference(model: nn.Module) -> Any:
    """torch.compile with inductor's freezing around every call: in inference graphs (grad disabled) the weights
    become constants, folded and pre-packed for the GEMMs; a training graph compiles as without it. Freezing is
    read when dynamo traces, so `torch.compile(options={"freezing": True})` alone does not apply it."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)

    def call(*args: Any, **kwargs: Any) -> Any:
        with inductor_config.patch(freezing=True):
            return compiled(*args, **kwargs)

    return call


# ------------------------------------------------------------------------------------------ RNG state
def rng_state(d: Dist) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every library's RNG state: tensors (torch, cuda, numpy keys) and JSON (python, numpy scalars)."""
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available() and d.device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(d.device)
    py = random.getstate()
    meta = {"python": [py[0], list(py[1]), py[2]], "numpy": [np_state[0], *map(float, np_state[2:])]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], d: Dist) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and d.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["cuda"], d.device)
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
