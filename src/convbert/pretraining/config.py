"""`PretrainConfig`: every setting of a pretraining run, and the paper's per-size defaults (`RECIPE`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from ..settings import (
    Device,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Precision,
    Range,
    validate,
)

RECIPE = {  # paper / official configure_pretraining.py: learning rate and generator fraction per size
    "small": (3e-4, 1 / 4),
    "medium-small": (5e-4, 1 / 4),
    "base": (2e-4, 1 / 3),
    "mini": (1e-3, 1 / 4),
    "tiny": (1e-3, 1 / 2),
}


@dataclass
class PretrainConfig:
    data: str  # shards written by `convbert data prepare`
    out: str  # run directory: checkpoints, logs, final model dirs
    tokenizer: str | None = None  # default: the tokenizer the shards were built with
    preset: str = "small"  # discriminator size: small | medium-small | base | mini | tiny
    model: dict[str, Any] = field(default_factory=dict)  # ConvBertConfig overrides, e.g. model.conv_type=noconv
    objective: Literal["electra", "mlm"] = "electra"  # replaced-token detection, or masked LM alone
    generator_fraction: Annotated[float, Range(0, 1, lo_open=True)] | None = None  # generator hidden size /
    # discriminator's (default per preset)
    disc_weight: NonNegativeFloat = 50.0  # weight of the discriminator loss
    mask_prob: Annotated[float, Range(0, 1, lo_open=True)] = 0.15  # fraction of tokens masked for the generator
    batch_size: PositiveInt = 128  # global batch, over all ranks and micro-batches
    micro_batch_size: PositiveInt | None = None  # per rank and forward pass (default: batch_size / world size)
    max_steps: PositiveInt = 1000  # optimizer steps
    lr: PositiveFloat | None = None  # peak learning rate (default per preset)
    warmup_steps: NonNegativeInt | None = None  # default: 10% of max_steps, at most 10,000
    weight_decay: NonNegativeFloat = 0.01  # AdamW, not on biases and LayerNorm
    adam_eps: PositiveFloat = 1e-6  # AdamW epsilon
    max_grad_norm: PositiveFloat = 1.0  # gradient clipping
    precision: Precision = "fp32"  # bf16/fp16: autocast (fp16 with a loss scaler)
    compile: bool | None = None  # torch.compile the step (default: on CUDA; on a CPU it compiles for minutes)
    save_every: PositiveInt = 1000  # steps between checkpoints
    keep_checkpoints: PositiveInt = 3  # newest checkpoints kept
    log_every: PositiveInt = 10  # steps between log.csv rows (the only host syncs)
    eval_every: NonNegativeInt | None = None  # held-out evaluation every N steps and at the end (default: 10 a
    # run; 0: never)
    eval_examples: NonNegativeInt = 1024  # held-out rows (at most a tenth of the shards), never trained on
    seed: int = 0  # masks, samples, dropout and data order follow from it
    resume: str = "auto"  # auto | none | a step-XXXXXXXX dir
    device: Device | None = None  # default: cuda when available
    max_bad_steps: PositiveInt = 10  # consecutive NaN/inf losses before the run stops

    def __post_init__(self) -> None:
        validate(self)

    def resolved(self) -> PretrainConfig:
        """The per-preset defaults filled in."""
        lr, fraction = RECIPE.get(self.preset, (3e-4, 1 / 4))
        warmup = self.warmup_steps if self.warmup_steps is not None else min(10_000, self.max_steps // 10)
        return dataclasses.replace(
            self,
            lr=self.lr or lr,
            generator_fraction=self.generator_fraction or fraction,
            warmup_steps=warmup,
            eval_every=max(1, self.max_steps // 10) if self.eval_every is None else self.eval_every,
        )
