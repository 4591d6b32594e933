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
import csv
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import ConvBertConfig
from ..errors import InputError
from ..fileio import atomic_write_json, read_csv_rows
from ..flops import pretraining_flops
from ..metrics import roc_auc
from ..tokenizer import ConvBertTokenizer
from ..train_utils import (
    PRECISIONS,
    all_reduce_sum,
    autocast,
    barrier,
    find_checkpoints,
    grad_scaler,
    linear_schedule,
    load_checkpoint,
    make_optimizer,
    rng_state,
    save_checkpoint,
    seed_everything,
    setup_distributed,
)
from .data import PretrainShards, vocab_hash
from .objective import STATS, ElectraPretrainer, example_keys, generator_config, summarize

log = logging.getLogger(__name__)

RECIPE = {  # paper / official configure_pretraining.py: learning rate and generator fraction per size
    "small": (3e-4, 1 / 4), "medium-small": (5e-4, 1 / 4), "base": (2e-4, 1 / 3), "mini": (1e-3, 1 / 4),
    "tiny": (1e-3, 1 / 2)}
LOG_FIELDS = ("step", "lr", "loss", "mlm_loss", "disc_loss", "gen_acc", "disc_acc", "disc_precision",
              "disc_recall", "replaced_frac", "tokens_per_s", "train_flops", "elapsed_s", "skipped")


@dataclass
class PretrainConfig:
    data: str  # directory written by `convbert data prepare`
    out: str  # run directory: checkpoints, logs, final model dirs
    tokenizer: str | None = None  # default: the tokenizer the shards were built with
    preset: str = "small"  # discriminator size
    model: dict[str, Any] = field(default_factory=dict)  # ConvBertConfig overrides, e.g. {"conv_type": "noconv"}
    objective: str = "electra"  # electra | mlm
    generator_fraction: float | None = None  # generator hidden size / discriminator's (default per preset)
    disc_weight: float = 50.0
    mask_prob: float = 0.15
    batch_size: int = 128  # global batch, over all ranks and micro-batches
    micro_batch_size: int | None = None  # per rank and forward pass (default: batch_size / world size)
    max_steps: int = 1000
    lr: float | None = None  # default per preset
    warmup_steps: int | None = None  # default: 10% of max_steps, at most 10,000
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16
    compile: bool | None = None  # torch.compile the step (default: on CUDA; on a CPU it compiles for minutes)
    save_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_every: int | None = None  # held-out evaluation every N steps and at the end (default: 10 a run; 0: never)
    eval_examples: int = 1024  # held-out rows (at most a tenth of the shards), never trained on
    seed: int = 0
    resume: str = "auto"  # auto | none | a step-XXXXXXXX dir
    device: str | None = None  # cpu | cuda (default: cuda when available)
    max_bad_steps: int = 10  # consecutive NaN/inf losses before the run stops

    def resolved(self) -> PretrainConfig:
        lr, fraction = RECIPE.get(self.preset, (3e-4, 1 / 4))
        warmup = self.warmup_steps if self.warmup_steps is not None else min(10_000, self.max_steps // 10)
        c = dataclasses.replace(self, lr=self.lr or lr, generator_fraction=self.generator_fraction or fraction,
                                warmup_steps=warmup, eval_every=max(1, self.max_steps // 10)
                                if self.eval_every is None else self.eval_every)
        if c.objective not in ("electra", "mlm"):
            raise InputError(f"objective must be electra or mlm, not {c.objective!r}")
        if c.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, not {c.precision!r}")
        for name in ("batch_size", "max_steps", "save_every", "log_every"):
            if getattr(c, name) < 1:
                raise InputError(f"{name} must be >= 1")
        for name in ("eval_every", "eval_examples"):
            if getattr(c, name) < 0:
                raise InputError(f"{name} must be >= 0")
        return c


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


def held_out_split(n: int, eval_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of n shard rows: min(eval_examples, n // 10) rows drawn with a fixed seed,
    so that every run on the same shards is evaluated on the same examples."""
    k = min(eval_examples, n // 10)
    perm = np.random.default_rng(0).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def build_configs(cfg: PretrainConfig, vocab_size: int, seq_len: int) -> tuple[ConvBertConfig, ConvBertConfig]:
    overrides = {"vocab_size": vocab_size, **cfg.model}
    disc = ConvBertConfig.preset(cfg.preset, **overrides)
    if disc.max_position_embeddings < seq_len:
        raise InputError(f"{cfg.data}: sequences of {seq_len} tokens exceed max_position_embeddings "
                         f"{disc.max_position_embeddings}")
    return disc, generator_config(disc, cfg.generator_fraction)


def pretrain(cfg: PretrainConfig) -> Path:
    """Train, checkpoint and export; returns the run directory."""
    cfg = cfg.resolved()
    d = setup_distributed(cfg.device)
    out = Path(cfg.out)
    if cfg.batch_size % d.world_size:
        raise InputError(f"batch_size {cfg.batch_size} is not divisible by the {d.world_size} processes")
    per_rank = cfg.batch_size // d.world_size
    micro = cfg.micro_batch_size or per_rank
    if per_rank % micro:
        raise InputError(f"micro_batch_size {micro} does not divide the per-process batch {per_rank}")
    accum = per_rank // micro

    shards = PretrainShards(cfg.data)
    tok_dir = cfg.tokenizer or shards.manifest["tokenizer"]["path"]
    tokenizer = ConvBertTokenizer.from_pretrained(tok_dir)
    shards.check_tokenizer(tokenizer.vocab_size, vocab_hash(_tokens(tokenizer)))
    disc_cfg, gen_cfg = build_configs(cfg, tokenizer.vocab_size, shards.max_seq_length)

    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = ElectraPretrainer(disc_cfg, gen_cfg, sorted(tokenizer.special_token_ids), tokenizer.mask_token_id,
                              cfg.objective, cfg.disc_weight, cfg.mask_prob).to(d.device)
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
    step_flops = pretraining_flops(disc_cfg, gen_cfg if cfg.objective == "electra" else None, cfg.batch_size,
                                   shards.max_seq_length, 1)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "pretrain_config.json", {**dataclasses.asdict(cfg), "world_size": d.world_size,
                                                        "discriminator": disc_cfg.to_dict(),
                                                        "generator": gen_cfg.to_dict()})
    logger = RunLog(out, d.is_main, start)
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not d.is_main, desc=f"pretrain {out.name}", unit="step")
    window = Window(d, cfg.max_bad_steps, out)
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(start, cfg.max_steps):
        positions = batches.local(step)
        keys = example_keys(cfg.seed, step, positions)
        step_losses = torch.zeros(3, device=d.device)
        for i in range(accum):
            part = slice(i * micro, (i + 1) * micro)
            arrays = shards[batches.rows(positions[part])]
            ids, mask, types, k = (to_device(a, d.device) for a in (
                arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"], keys[part]))
            sync = i == accum - 1 or d.world_size == 1
            with net.no_sync() if not sync else contextlib.nullcontext(), autocast(cfg.precision, d.device):
                res = forward(ids, mask, types, k)
            scaler.scale(res.loss / accum).backward()
            step_losses += torch.stack([res.loss.detach(), res.mlm_loss.detach(), res.disc_loss.detach()]) / accum
            window.stats += res.stats.detach()
            window.tokens += int(arrays["attention_mask"].sum())  # host data: no device sync
        bad = ~torch.isfinite(step_losses).all()
        if d.world_size > 1:  # every rank skips together (an asynchronous collective, no host sync)
            bad = bad.float()
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
            bad = bad.bool()
        bad = apply_gradients(params, optimizer, scaler, cfg.max_grad_norm, bad)
        scheduler.step()
        window.end_step(step, bad, step_losses)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            agg, losses, skipped = window.flush()
            elapsed = time.perf_counter() - window.t0
            row = {"step": done, "lr": scheduler.get_last_lr()[0], "loss": losses[0], "mlm_loss": losses[1],
                   "disc_loss": losses[2], **summarize(agg),
                   "tokens_per_s": agg["tokens_seen"] / max(elapsed, 1e-9), "train_flops": step_flops * done,
                   "elapsed_s": logger.elapsed + elapsed, "skipped": skipped}
            logger.write(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", disc_acc=f"{row.get('disc_acc', float('nan')):.3f}",
                            tok_s=f"{row['tokens_per_s']:.0f}")
            window.restart()
            logger.elapsed = row["elapsed_s"]
        if len(eval_rows) and (done % cfg.eval_every == 0 or done == cfg.max_steps):
            t_eval = time.perf_counter()
            if d.is_main:
                logger.write({"step": done, "train_flops": step_flops * done, "elapsed_s": logger.elapsed,
                              **evaluate(model, shards, eval_rows, micro, cfg.precision, d.device)}, "eval")
            barrier(d)
            window.t0 += time.perf_counter() - t_eval  # tokens/s counts training only
        if done % cfg.save_every == 0 or done == cfg.max_steps:
            window.check()
            if window.streak == 0:  # never mid NaN streak
                checkpoint(out, done, model, optimizer, scheduler, scaler, d, cfg, logger.elapsed)
    bar.close()
    if d.is_main:
        export(model, tokenizer, out)
    barrier(d)
    return out


def apply_gradients(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, max_grad_norm: float, bad: torch.Tensor) -> torch.Tensor:
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


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on the device: through pinned memory and without blocking on CUDA."""
    t = torch.from_numpy(a)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


class Window:
    """What the steps since the last log row leave on the device (summed stats, skip flags), read at log
    and save steps only; the host keeps the run of consecutive skipped steps."""

    def __init__(self, d, max_bad_steps: int, out: Path):
        self.d, self.max_bad, self.out = d, max_bad_steps, out
        self.streak, self.last_losses = 0, None
        self.restart()

    def restart(self) -> None:
        self.stats = torch.zeros(len(STATS), device=self.d.device)
        self.tokens, self.flags, self.skipped, self.t0 = 0, [], 0, time.perf_counter()

    def end_step(self, step: int, bad: torch.Tensor, losses: torch.Tensor) -> None:
        self.flags.append((step, bad))
        self.last_losses = losses

    def check(self) -> None:
        """Read the pending skip flags (one host sync); raise after max_bad_steps skipped in a row."""
        if not self.flags:
            return
        values = torch.stack([bad for _, bad in self.flags]).tolist()
        for (step, _), bad in zip(self.flags, values):
            if not bad:
                self.streak = 0
                continue
            self.streak += 1
            self.skipped += 1
            log.warning("step %d: non-finite loss or gradients, step skipped (%d in a row)", step, self.streak)
            if self.streak >= self.max_bad:
                raise RuntimeError(f"{self.streak} non-finite losses in a row at step {step}; stopping. The last "
                                   f"good checkpoint in {self.out} is intact: lower the learning rate or use "
                                   "bf16/fp32.")
        self.flags = []

    def flush(self) -> tuple[dict[str, float], list[float], int]:
        """Summed counts over steps and ranks, the last step's losses, and the steps skipped since the last row."""
        self.check()
        values = torch.cat([self.stats, self.last_losses]).tolist()
        agg = all_reduce_sum({**dict(zip(STATS, values)), "tokens_seen": self.tokens}, self.d)
        return agg, values[len(STATS):], self.skipped


def _tokens(tokenizer: ConvBertTokenizer) -> list[str]:
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    return sorted(vocab, key=vocab.__getitem__)


EVAL_SEED = 0x5EED  # the held-out corruptions: the same in every run on the same shards
EVAL_FIELDS = ("step", "train_flops", "elapsed_s", "disc_loss", "constant_loss", "disc_auc", "disc_acc",
               "replaced_frac", "mlm_loss", "gen_acc", "token_cosine", "tokens")
COSINE_EXAMPLES = 64  # held-out sequences whose token vectors `token_cosine` compares


def evaluate(model: ElectraPretrainer, shards: PretrainShards, rows: np.ndarray, micro: int, precision: str,
             device: torch.device) -> dict[str, float]:
    """Held-out metrics in eval mode (no dropout), with fixed masks (keys from EVAL_SEED and the row):
    the discriminator's BCE against the constant guess of the replaced fraction, its ROC-AUC and accuracy,
    the generator's MLM loss and accuracy on the masked slots. These move while threshold-0.5 recall is 0.
    `token_cosine` watches for collapse: the mean cosine between the top-layer vectors of two tokens of a
    sequence (of the encoder that is fine-tuned) on the uncorrupted text, ~0.2-0.4 at random init and ~1 once
    every token maps to the same vector, as in a discriminator stuck in the trivial phase of replaced-token
    detection, which fine-tuning cannot move."""
    was_training = model.training
    model.eval()
    logits, labels, stats, mlm, cos = [], [], torch.zeros(len(STATS)), 0.0, []
    encoder = (model.discriminator if model.objective == "electra" else model.generator).convbert
    with torch.no_grad(), autocast(precision, device):
        for i in range(0, len(rows), micro):
            part = rows[i:i + micro]
            arrays = shards[part]
            ids, mask, types, keys = (to_device(a, device) for a in (
                arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"],
                example_keys(EVAL_SEED, 0, part)))
            out = model(ids, mask, types, keys)
            stats += out.stats.float().cpu()
            mlm += float(out.mlm_loss) * float(out.stats[0])  # summed over the masked slots
            if out.disc_logits is not None:
                real = mask.bool()
                logits.append(out.disc_logits[real].float().cpu())
                labels.append(out.replaced[real].cpu())
            if i < COSINE_EXAMPLES:
                cos.append(token_cosine(encoder(ids, mask, types).float(), mask).cpu())
    model.train(was_training)
    counts = dict(zip(STATS, stats.tolist()))
    rates = summarize(counts)
    result = {"mlm_loss": mlm / max(counts["masked"], 1.0), "gen_acc": rates["gen_acc"],
              "token_cosine": float(torch.cat(cos)[:COSINE_EXAMPLES].mean()), "tokens": counts["tokens"]}
    if logits:
        x, y = torch.cat(logits), torch.cat(labels)
        p = min(max(float(y.float().mean()), 1e-7), 1 - 1e-7)
        result.update(disc_loss=float(F.binary_cross_entropy_with_logits(x, y.float())),
                      constant_loss=-(p * math.log(p) + (1 - p) * math.log(1 - p)),
                      disc_auc=roc_auc(y.numpy(), x.numpy()), disc_acc=rates["disc_acc"],
                      replaced_frac=rates["replaced_frac"])
    return result


def token_cosine(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per sequence, the mean cosine between the vectors of two different attended tokens: h (B, T, d)."""
    m = mask.to(h.dtype)[..., None]  # (B, T, 1)
    u = F.normalize(h, dim=-1) * m
    n = m.sum((1, 2))  # (B,)
    total = u.sum(1).pow(2).sum(-1)  # (B,) = sum over token pairs (i, j) of cos(i, j), i == j included
    return (total - n) / (n * (n - 1)).clamp(min=1)


class RunLog:
    """log.csv (training) and eval.csv (held-out), appended across resumes with the rows after the resume point
    dropped; TensorBoard if installed."""

    def __init__(self, out: Path, active: bool, start: int):
        self.active, self.elapsed = active, 0.0
        self.files = {"train": (out / "log.csv", LOG_FIELDS), "eval": (out / "eval.csv", EVAL_FIELDS)}
        self.tb = None
        if not active:
            return
        for kind, (path, fields) in self.files.items():
            if path.exists():  # keep the rows up to the checkpoint we resumed from
                rows = [r for r in read_csv_rows(path) if r.get("step", "").isdigit() and int(r["step"]) <= start]
                if kind == "train":
                    self.elapsed = float(rows[-1]["elapsed_s"]) if rows else 0.0
                self._rewrite(path, fields, rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    @staticmethod
    def _rewrite(path: Path, fields: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any], kind: str = "train") -> None:
        if not self.active:
            return
        path, fields = self.files[kind]
        if not path.exists():
            self._rewrite(path, fields, [])
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k if kind == "train" else f"eval/{k}", v, row["step"])



def checkpoint(out: Path, step: int, model, optimizer, scheduler, scaler, d, cfg: PretrainConfig,
               elapsed: float) -> None:
    states = [rng_state(d)]
    if d.world_size > 1:  # rank 0 writes every rank's RNG state
        gathered = [None] * d.world_size
        torch.distributed.all_gather_object(gathered, states[0])
        states = gathered
    if d.is_main:
        save_checkpoint(out, step, model, optimizer, scheduler, scaler, d,
                        {"examples_seen": step * cfg.batch_size, "elapsed_s": elapsed,
                         "config": dataclasses.asdict(cfg)}, keep=cfg.keep_checkpoints, rng_per_rank=states)
    barrier(d)


def resume(cfg: PretrainConfig, out: Path, model, optimizer, scheduler, scaler, d) -> int:
    """Load the newest complete checkpoint (--resume auto) or a given one; returns the step to start from."""
    if cfg.resume == "none":
        return 0
    candidates = [Path(cfg.resume)] if cfg.resume != "auto" else find_checkpoints(out)
    for path in candidates:
        try:
            info = load_checkpoint(path, model, optimizer, scheduler, scaler, d)
        except InputError as e:
            if cfg.resume != "auto":
                raise
            log.warning("skipping %s: %s", path, e)
            continue
        log.info("resumed from %s (step %d)", path, info["step"])
        return int(info["step"])
    return 0


def export(model: ElectraPretrainer, tokenizer: ConvBertTokenizer, out: Path) -> None:
    """Hugging Face dirs: OUT/discriminator (ConvBertForPreTraining) and OUT/generator (ConvBertForMaskedLM)."""
    if model.objective == "electra":
        model.discriminator.save_pretrained(out / "discriminator", tokenizer=tokenizer)
    model.generator.save_pretrained(out / "generator", tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------ CLI
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """--config FILE (JSON, or YAML when PyYAML is installed), then the flags given, then --set key=value."""
    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix in (".yaml", ".yml"):
                import yaml
                values = yaml.safe_load(text) or {}
            else:
                values = json.loads(text)
        except (OSError, ValueError, ImportError) as e:
            raise InputError(f"{path}: cannot read config: {e}") from None
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    for name in names:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"--set {item!r}: expected key=value")
        if key.startswith("model."):
            values.setdefault("model", {})[key[6:]] = _parse_value(raw)
        elif key in names:
            values[key] = _parse_value(raw)
        else:
            raise InputError(f"--set {key}: unknown setting (known: {', '.join(sorted(names))}, model.*)")
    unknown = set(values) - names
    if unknown:
        raise InputError(f"unknown settings: {', '.join(sorted(unknown))}")
    for req in ("data", "out"):
        if req not in values:
            raise InputError(f"--{req} is required")
    try:
        return PretrainConfig(**values)
    except TypeError as e:
        raise InputError(str(e)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain a ConvBERT (ELECTRA replaced-token detection or MLM)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON/YAML file with any of the settings below")
    p.add_argument("--data", help="shards from `convbert data prepare`")
    p.add_argument("--out", help="run directory")
    p.add_argument("--tokenizer", help="tokenizer dir (default: the one the shards were built with)")
    p.add_argument("--preset", help="small | medium-small | base | tiny (default small)")
    p.add_argument("--objective", choices=("electra", "mlm"))
    p.add_argument("--generator-fraction", dest="generator_fraction", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int, help="global batch (default 128)")
    p.add_argument("--micro-batch-size", dest="micro_batch_size", type=int)
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--save-every", dest="save_every", type=int)
    p.add_argument("--log-every", dest="log_every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", help="auto (default) | none | a checkpoint dir")
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any setting, or model.FIELD=VALUE for the model config (e.g. model.conv_type=noconv)")
    p.set_defaults(func=lambda args: (pretrain(config_from_args(args)), 0)[1])
