"""`convbert pretrain`: ELECTRA replaced-token detection (or MLM) on prepared shards.

One process:       convbert pretrain --data shards/ --out runs/small --preset small --batch-size 128
One node, 8 GPUs:  torchrun --nproc_per_node 8 -m convbert pretrain --data shards/ --out runs/small ...
Several nodes:     torchrun --nnodes 2 --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT \
                       --nproc_per_node 8 -m convbert pretrain ...
The global batch (--batch-size) is split over ranks, then into micro-batches (--micro-batch-size) with
gradient accumulation. Every rank reads its own slice of each global batch; masks and generator samples
depend only on (seed, step, example), so runs agree whatever the number of processes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoints import find_checkpoints, load_checkpoint, save_checkpoint
from ..config import ConvBertConfig
from ..errors import InputError
from ..flops import pretraining_flops
from ..settings import (
    add_command,
    write_run_config,
)
from ..tokenizer import ConvBertTokenizer
from ..train_utils import (
    Dist,
    autocast,
    barrier,
    grad_scaler,
    linear_schedule,
    make_optimizer,
    rng_state,
    seed_everything,
    setup_distributed,
)
from .config import PretrainConfig
from .heldout import evaluate, held_out_split, to_device
from .objective import ElectraPretrainer, PretrainOutput, example_keys, generator_config, summarize
from .runlog import RunLog, Window
from .shards import PretrainShards, vocab_hash

log = logging.getLogger(__name__)


class Batches:
    """Global batch `step` = examples [step x B, (step + 1) x B) of an endless stream of epochs over `rows`
    (the training rows of the shards), each a permutation seeded by (seed, epoch); rank r takes the r-th
    contiguous slice."""

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int, rank: int, world: int):
        self.pool, self.n, self.batch, self.seed = rows, len(rows), batch_size, seed
        self.rank, self.world = rank, world
        self._perm: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, self.pool[np.random.default_rng([self.seed, epoch]).permutation(self.n)])
        return self._perm[1]

    def local(self, step: int) -> np.ndarray:
        """Global stream positions of this rank's part of batch `step`."""
        per_rank = self.batch // self.world
        start = step * self.batch + self.rank * per_rank
        return np.arange(start, start + per_rank)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return np.array([self.order(int(p) // self.n)[int(p) % self.n] for p in positions], dtype=np.int64)


def build_configs(cfg: PretrainConfig, vocab_size: int, seq_len: int) -> tuple[ConvBertConfig, ConvBertConfig]:
    known = {f.name for f in dataclasses.fields(ConvBertConfig)}
    unknown = [k for k in cfg.model if k not in known]
    if unknown:
        raise InputError(f"model.{unknown[0]}: not a ConvBertConfig field (known: {', '.join(sorted(known))})")
    overrides = {"vocab_size": vocab_size, **cfg.model}
    disc = ConvBertConfig.preset(cfg.preset, **overrides)
    if disc.max_position_embeddings < seq_len:
        raise InputError(
            f"{cfg.data}: sequences of {seq_len} tokens exceed max_position_embeddings {disc.max_position_embeddings}"
        )
    return disc, generator_config(disc, cfg.generator_fraction)


@dataclass
class Training:
    """What the step loop of `pretrain` reads and advances; built by `start_training`."""

    cfg: PretrainConfig  # resolved
    d: Dist
    out: Path
    shards: PretrainShards
    tokenizer: ConvBertTokenizer
    model: ElectraPretrainer
    net: torch.nn.Module  # the model, or its DDP wrapper
    forward: Callable[..., PretrainOutput]  # `net`, compiled or not
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    params: list[torch.nn.Parameter]  # the trained ones
    batches: Batches
    eval_rows: np.ndarray  # held-out shard rows
    micro: int  # examples per forward pass
    accum: int  # forward passes per step on each rank
    step_flops: float
    start: int  # the first step to run (after a resume)
    logger: RunLog
    window: Window


def pretrain(cfg: PretrainConfig) -> Path:
    """Train, checkpoint and export; returns the run directory."""
    t = start_training(cfg.resolved())
    cfg, d = t.cfg, t.d
    bar = tqdm(total=cfg.max_steps, initial=t.start, disable=not d.is_main, desc=f"pretrain {t.out.name}", unit="step")
    for step in range(t.start, cfg.max_steps):
        train_step(t, step)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            log_training(t, done, bar)
        if len(t.eval_rows) and (done % cfg.eval_every == 0 or done == cfg.max_steps):
            log_evaluation(t, done)
        if done % cfg.save_every == 0 or done == cfg.max_steps:
            t.window.check()
            if t.window.streak == 0:  # never mid NaN streak
                checkpoint(t.out, done, t.model, t.optimizer, t.scheduler, t.scaler, d, cfg, t.logger.elapsed)
    bar.close()
    if d.is_main:
        save_models(t.model, t.tokenizer, t.out)
    barrier(d)
    return t.out


def start_training(cfg: PretrainConfig) -> Training:
    """Everything before the first step (of a resolved `cfg`): the process group, the shards and their
    tokenizer, the model, optimizer and schedule (resumed from a checkpoint), the run config and logs."""
    d = setup_distributed(cfg.device)
    out = Path(cfg.out)
    micro, accum = micro_batching(cfg, d.world_size)
    shards = PretrainShards(cfg.data)
    tokenizer = shards_tokenizer(shards, cfg.tokenizer)
    disc_cfg, gen_cfg = build_configs(cfg, tokenizer.vocab_size, shards.max_seq_length)
    verify_shards(shards, d)  # sha256s and token ids, before anything is written to OUT
    shards.check_token_ids(disc_cfg.vocab_size)
    tokenizer.check_vocab(disc_cfg.vocab_size)

    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = ElectraPretrainer(
        disc_cfg,
        gen_cfg,
        sorted(tokenizer.special_token_ids),
        tokenizer.mask_token_id,
        cfg.objective,
        cfg.disc_weight,
        cfg.mask_prob,
    ).to(d.device)
    torch.manual_seed(cfg.seed + 1 + d.rank)  # dropout streams differ per rank
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.adam_eps)
    scheduler = linear_schedule(optimizer, cfg.warmup_steps, cfg.max_steps)
    scaler = grad_scaler(cfg.precision, d.device)
    start = resume(cfg, out, model, optimizer, scheduler, scaler, d)
    net = DistributedDataParallel(model) if d.world_size > 1 else model
    # one graph without host syncs; DDP splits it at its gradient buckets
    compile_step = cfg.compile if cfg.compile is not None else d.device.type == "cuda"
    forward = torch.compile(net, fullgraph=d.world_size == 1, dynamic=False) if compile_step else net

    train_rows, eval_rows = held_out_split(len(shards), cfg.eval_examples if cfg.eval_every else 0)
    batches = Batches(train_rows, cfg.batch_size, cfg.seed, d.rank, d.world_size)
    step_flops = pretraining_flops(
        disc_cfg, gen_cfg if cfg.objective == "electra" else None, cfg.batch_size, shards.max_seq_length, 1
    )
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_run_config(out, cfg)
    return Training(
        cfg=cfg,
        d=d,
        out=out,
        shards=shards,
        tokenizer=tokenizer,
        model=model,
        net=net,
        forward=forward,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        params=[p for p in model.parameters() if p.requires_grad],
        batches=batches,
        eval_rows=eval_rows,
        micro=micro,
        accum=accum,
        step_flops=step_flops,
        start=start,
        logger=RunLog(out, d.is_main, start),
        window=Window(d, cfg.max_bad_steps, out),
    )


def micro_batching(cfg: PretrainConfig, world_size: int) -> tuple[int, int]:
    """(examples per forward pass, forward passes per step) on each of `world_size` ranks."""
    if cfg.batch_size % world_size:
        raise InputError(f"batch_size {cfg.batch_size} is not divisible by the {world_size} processes")
    per_rank = cfg.batch_size // world_size
    micro = cfg.micro_batch_size or per_rank
    if per_rank % micro:
        raise InputError(f"micro_batch_size {micro} does not divide the per-process batch {per_rank}")
    return micro, per_rank // micro


def verify_shards(shards: PretrainShards, d: Dist) -> None:
    """`shards.ensure_verified()` (sha256s and token ids; cached next to the manifest) on rank 0, its result (or
    its error) sent to the other ranks, so that every rank raises the same InputError."""
    if d.world_size == 1:
        shards.ensure_verified()
        return
    result: list[object] = [None, None]
    if d.is_main:
        try:
            result = [None, shards.ensure_verified()]
        except InputError as e:
            result = [str(e), None]
    torch.distributed.broadcast_object_list(result, src=0)
    if result[0] is not None:
        raise InputError(result[0])
    shards.token_ids = result[1]


def shards_tokenizer(shards: PretrainShards, tokenizer_dir: str | None) -> ConvBertTokenizer:
    """The tokenizer in `tokenizer_dir`, by default the one the shards were built with; InputError when its
    vocabulary is not the shards'."""
    tokenizer = ConvBertTokenizer.from_pretrained(tokenizer_dir or shards.manifest["tokenizer"]["path"])
    shards.check_tokenizer(tokenizer.vocab_size, vocab_hash(_tokens(tokenizer)))
    return tokenizer


def train_step(t: Training, step: int) -> None:
    """Global batch `step`: forward and backward over this rank's micro-batches, then the update, which every
    rank skips together when a loss or a gradient is not finite. The losses and counts go to `t.window`."""
    cfg, d = t.cfg, t.d
    positions = t.batches.local(step)
    keys = example_keys(cfg.seed, step, positions)
    step_losses = torch.zeros(3, device=d.device)
    for i in range(t.accum):
        part = slice(i * t.micro, (i + 1) * t.micro)
        arrays = t.shards[t.batches.rows(positions[part])]
        ids, mask, types, k = (
            to_device(a, d.device)
            for a in (arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"], keys[part])
        )
        sync = i == t.accum - 1 or d.world_size == 1
        with t.net.no_sync() if not sync else contextlib.nullcontext(), autocast(cfg.precision, d.device):
            res = t.forward(ids, mask, types, k)
        t.scaler.scale(res.loss / t.accum).backward()
        step_losses += torch.stack([res.loss.detach(), res.mlm_loss.detach(), res.disc_loss.detach()]) / t.accum
        t.window.stats += res.stats.detach()
        t.window.tokens += int(arrays["attention_mask"].sum())  # host data: no device sync
    bad = ~torch.isfinite(step_losses).all()
    if d.world_size > 1:  # every rank skips together (an asynchronous collective, no host sync)
        bad = bad.float()
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        bad = bad.bool()
    bad = apply_gradients(t.params, t.optimizer, t.scaler, cfg.max_grad_norm, bad)
    t.scheduler.step()
    t.window.end_step(step, bad, step_losses)


def log_training(t: Training, done: int, bar: tqdm) -> None:
    """The log.csv row (and progress bar figures) of the steps since the last row, after `done` steps."""
    agg, losses, skipped = t.window.flush()
    elapsed = time.perf_counter() - t.window.t0
    row = {
        "step": done,
        "lr": t.scheduler.get_last_lr()[0],
        "loss": losses[0],
        "mlm_loss": losses[1],
        "disc_loss": losses[2],
        **summarize(agg),
        "tokens_per_s": agg["tokens_seen"] / max(elapsed, 1e-9),
        "train_flops": t.step_flops * done,
        "elapsed_s": t.logger.elapsed + elapsed,
        "skipped": skipped,
    }
    t.logger.write(row)
    bar.set_postfix(
        loss=f"{row['loss']:.3f}",
        disc_acc=f"{row.get('disc_acc', float('nan')):.3f}",
        tok_s=f"{row['tokens_per_s']:.0f}",
    )
    t.window.restart()
    t.logger.elapsed = row["elapsed_s"]


def log_evaluation(t: Training, done: int) -> None:
    """The eval.csv row after `done` steps (computed on rank 0); its time is left out of tokens/s."""
    t_eval = time.perf_counter()
    if t.d.is_main:
        t.logger.write(
            {
                "step": done,
                "train_flops": t.step_flops * done,
                "elapsed_s": t.logger.elapsed,
                **evaluate(t.model, t.shards, t.eval_rows, t.micro, t.cfg.precision, t.d.device),
            },
            "eval",
        )
    barrier(t.d)
    t.window.t0 += time.perf_counter() - t_eval  # tokens/s counts training only


def apply_gradients(
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    max_grad_norm: float,
    bad: torch.Tensor,
) -> torch.Tensor:
    """Clip and take the optimizer step, skipped on the device where `bad` (a 0-d bool tensor) or the gradients
    are not finite; no host sync. Returns the skip flag."""
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
    if scaler.is_enabled():  # fp16: the scaler skips steps with non-finite gradients
        scaler.step(optimizer)
        scaler.update()
    else:  # the fused AdamW skips the update when found_inf is 1
        bad = bad | ~torch.isfinite(norm)
        optimizer.found_inf = bad.float()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return bad


def _tokens(tokenizer: ConvBertTokenizer) -> list[str]:
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    return sorted(vocab, key=vocab.__getitem__)


def checkpoint(
    out: Path, step: int, model, optimizer, scheduler, scaler, d, cfg: PretrainConfig, elapsed: float
) -> None:
    states = [rng_state(d)]
    if d.world_size > 1:  # rank 0 writes every rank's RNG state
        gathered = [None] * d.world_size
        torch.distributed.all_gather_object(gathered, states[0])
        states = gathered
    if d.is_main:
        save_checkpoint(
            out,
            step,
            model,
            optimizer,
            scheduler,
            scaler,
            d,
            {"examples_seen": step * cfg.batch_size, "elapsed_s": elapsed, "config": dataclasses.asdict(cfg)},
            keep=cfg.keep_checkpoints,
            rng_per_rank=states,
        )
    barrier(d)


def resume(cfg: PretrainConfig, out: Path, model, optimizer, scheduler, scaler, d) -> int:
    """Load a given checkpoint, or with --resume auto the newest one in OUT that passes load_checkpoint's checks
    (each one that fails is reported with why and skipped, the model and optimizer untouched by it); returns the
    step to start from. InputError when OUT has checkpoints and none passes, rather than starting over beside
    them (whose pruning would then remove the new ones)."""
    if cfg.resume == "none":
        return 0
    if cfg.resume != "auto":
        info = load_checkpoint(Path(cfg.resume), model, optimizer, scheduler, scaler, d)
        log.info("resumed from %s (step %d)", cfg.resume, info["step"])
        return int(info["step"])
    candidates = find_checkpoints(out)  # also removes what killed saves left
    for n, path in enumerate(candidates):
        try:
            info = load_checkpoint(path, model, optimizer, scheduler, scaler, d)
        except InputError as e:
            log.warning("skipping checkpoint %s", e if str(path) in str(e) else f"{path}: {e}")
            continue
        if n:
            log.warning("resumed from %s (step %d): the newest checkpoint that passes its checks", path, info["step"])
        else:
            log.info("resumed from %s (step %d)", path, info["step"])
        return int(info["step"])
    if candidates:
        raise InputError(
            f"{out}: none of its {len(candidates)} checkpoints passes its checks (the warnings above say why): "
            "remove them, or pass --resume none to start over"
        )
    return 0


def save_models(model: ElectraPretrainer, tokenizer: ConvBertTokenizer, out: Path) -> None:
    """Hugging Face dirs: OUT/discriminator (ConvBertForPreTraining) and OUT/generator (ConvBertForMaskedLM)."""
    if model.objective == "electra":
        model.discriminator.save_pretrained(out / "discriminator", tokenizer=tokenizer)
    model.generator.save_pretrained(out / "generator", tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------ CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "pretrain",
        PretrainConfig,
        pretrain,
        description=__doc__,
        help="pretrain a ConvBERT (ELECTRA replaced-token detection or MLM)",
        aliases={
            "lr": ["--learning_rate"],
            "out": ["--output_dir"],
            "micro_batch_size": ["--per_device_train_batch_size"],
        },
        metavars={"data": "DIR", "out": "DIR", "tokenizer": "DIR"},
    )
