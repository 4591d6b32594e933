"""Checkpoint conversion: official TF1 ConvBERT checkpoints (`convert_tf1`, in its own module), and
transformers and BERT model dirs, to ours (and back); the `convert` commands.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import BERT_CONFIG_KEYS, ConvBertConfig
from ..errors import InputError
from ..fileio import atomic_dir, atomic_write_json, read_json_object
from ..hub import CONFIG_FILES, IGNORED_SUFFIXES, read_weights, resolve_dir
from ..model import ConvBertModel, PreTrained, load_model_dir
from ..settings import add_command, validate, write_run_config
from ..tokenizer import ConvBertTokenizer
from .convert_tf1 import convert_tf1

# keys transformers ignores, with the values that match its model
OUR_CONFIG_KEYS = {
    "conv_type": "sdconv",
    "mask_conv_padding": False,
    "attention_head_size": None,
    "classifier_head": "dense",
}


# ------------------------------------------------------------------------------------------ model dirs
def resave(model_dir: str | Path, out_dir: str | Path, for_transformers: bool = False) -> PreTrained:
    """Load a model dir (safetensors or pytorch_model.bin, ours or transformers') and write it in our layout:
    config.json + model.safetensors (+ tokenizer files). for_transformers: refuse what transformers would
    silently misread and leave out our extra config keys. model_dir may be a hub id (see `hub.resolve_dir`)."""
    model_dir = resolve_dir(model_dir)
    model = load_model_dir(model_dir)
    if for_transformers:
        changed = [
            f"{k}={getattr(model.config, k)!r}" for k, v in OUR_CONFIG_KEYS.items() if getattr(model.config, k, v) != v
        ]
        if changed:
            raise InputError(
                f"{model_dir / 'config.json'}: {', '.join(changed)} has no transformers equivalent "
                "(transformers ignores the key and would build a different model)"
            )
    has_tokenizer = (model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.txt").is_file()
    tokenizer = ConvBertTokenizer.from_pretrained(model_dir) if has_tokenizer else None
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        if for_transformers:
            config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            atomic_write_json(tmp / "config.json", {k: v for k, v in config.items() if k not in OUR_CONFIG_KEYS})
    return model


# ------------------------------------------------------------------------------------------ BERT dirs


def convert_bert(model_dir: str | Path, out_dir: str | Path) -> ConvBertModel:
    """A BERT encoder dir (transformers' `BertModel` or a BERT head; safetensors or pytorch_model.bin) as our
    ConvBertModel with conv_type "noconv" and head_ratio 1, which computes BERT: the key names are the same
    (without a "bert." prefix); the pooler is left out. Writes out_dir with the tokenizer files found.
    model_dir may be a hub id (see `hub.resolve_dir`)."""
    model_dir = resolve_dir(model_dir)
    raw = read_json_object(model_dir / "config.json", "config")
    if raw.get("model_type") != "bert":
        raise InputError(f"{model_dir / 'config.json'}: model_type {raw.get('model_type')!r} is not bert")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise InputError(
            f"{model_dir / 'config.json'}: position_embedding_type "
            f"{raw['position_embedding_type']!r}: only absolute positions convert"
        )
    fields = {k: raw[k] for k in BERT_CONFIG_KEYS if raw.get(k) is not None}
    if "hidden_size" not in fields:
        raise InputError(f"{model_dir / 'config.json'}: not a BERT config: no hidden_size")
    # every field checked as a ConvBERT config.json is (`ConvBertConfig.from_dict`), before anything is written
    config = ConvBertConfig.from_dict(
        {**fields, "embedding_size": fields["hidden_size"], "conv_type": "noconv", "head_ratio": 1},
        source=str(model_dir / "config.json"),
    )
    weights = {
        k.removeprefix("bert."): v
        for k, v in read_weights(model_dir).items()
        if not k.removeprefix("bert.").startswith(("pooler.", "cls.", "classifier.", "qa_outputs."))
    }
    model = ConvBertModel(config)
    expected = {k for k in model.state_dict() if not k.endswith(IGNORED_SUFFIXES)}
    weights = {k: v for k, v in weights.items() if not k.endswith(IGNORED_SUFFIXES)}
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    bad = [
        f"{k} {tuple(v.shape)}" for k, v in weights.items() if k in expected and v.shape != model.state_dict()[k].shape
    ]
    if missing or unexpected or bad:
        raise InputError(
            f"{model_dir}: not a BERT encoder of its config.json: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, wrong shape {bad[:4]}"
        )
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    has_tokenizer = (model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.txt").is_file()
    tokenizer = ConvBertTokenizer.from_pretrained(model_dir) if has_tokenizer else None
    model.save_pretrained(out_dir, tokenizer=tokenizer)
    return model


# ------------------------------------------------------------------------------------------ CLI
@dataclass
class Tf1Config:
    checkpoint: str  # checkpoint prefix (e.g. .../model.ckpt-1000000) or its directory
    out: str  # output directory: discriminator/ and generator/
    preset: str | None = None  # model size; its *-generator preset checks the generator
    model: str | None = None  # config.json, model dir or hub id with the non-size settings, instead of --preset
    vocab: str | None = None  # vocab.txt or tokenizer.json to save with both models

    def __post_init__(self) -> None:
        validate(self)
        if self.preset is not None and self.model is not None:
            raise InputError("give --preset or --model, not both")


@dataclass
class ConvertConfig:
    model: str  # input model directory or hub id (org/name[@revision])
    out: str  # output model directory

    def __post_init__(self) -> None:
        validate(self)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `convert tf1`, `convert from-hf`, `convert to-hf` and `convert from-bert`."""
    p = subparsers.add_parser("convert", help="convert official TF1 checkpoints and transformers model dirs")
    sub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    dirs = {"out": "DIR", "model": "DIR|ID"}
    add_command(
        sub,
        "tf1",
        Tf1Config,
        _run_tf1,
        help="official TF1 checkpoint -> OUT/{discriminator,generator}",
        description="Convert an official ConvBERT TF1 checkpoint (needs pip install convbert[tf]). Sizes "
        "come from the variable shapes; --preset/--model supply the rest and must agree with "
        "them. The small generator (hidden 64, one head of 64) keeps TF's head size via "
        "attention_head_size (see `convbert.tools.convert_tf1`).",
        aliases={"out": ["--output_dir"]},
        metavars={**dirs, "checkpoint": "PATH", "vocab": "FILE"},
    )
    for name, run, text in (
        ("from-hf", _run_from_hf, "a transformers ConvBERT dir (safetensors or pytorch_model.bin) -> ours"),
        (
            "to-hf",
            _run_to_hf,
            "our dir -> transformers (refuses conv types / settings it lacks; drops our extra config keys)",
        ),
        (
            "from-bert",
            _run_from_bert,
            "a BERT dir (e.g. MiniLM, bert-base) -> ours as conv_type noconv, head_ratio 1 (the same encoder)",
        ),
    ):
        add_command(sub, name, ConvertConfig, run, help=text, aliases={"out": ["--output_dir"]}, metavars=dirs)


def _run_tf1(cfg: Tf1Config) -> int:
    report = convert_tf1(
        cfg.checkpoint,
        cfg.out,
        config=cfg.preset or (resolve_dir(cfg.model, CONFIG_FILES) if cfg.model else None),
        vocab=cfg.vocab,
    )
    write_run_config(cfg.out, cfg)
    for role in ("discriminator", "generator"):
        if role in report:
            r = report[role]
            print(
                f"{role}: {r['class']} -> {r['path']} (hidden {r['hidden_size']}, heads {r['num_attention_heads']}, "
                f"layers {r['layers']}, FFN {r['intermediate_size']}/{r['num_groups']} group(s), "
                f"{r['parameters'] / 1e6:.2f}M parameters)"
            )
    if "generator" not in report:
        print("no generator/ variables: discriminator only")
    print(f"{report['ignored_variables']} other variables (optimizer slots, step counters, ...) ignored")
    return 0


def _run_from_hf(cfg: ConvertConfig) -> int:
    model = resave(cfg.model, cfg.out, for_transformers=False)
    write_run_config(cfg.out, cfg)
    print(f"{type(model).__name__} -> {cfg.out}")
    return 0


def _run_to_hf(cfg: ConvertConfig) -> int:
    model = resave(cfg.model, cfg.out, for_transformers=True)
    write_run_config(cfg.out, cfg)
    print(f"{type(model).__name__} -> {cfg.out}")
    return 0


def _run_from_bert(cfg: ConvertConfig) -> int:
    model = convert_bert(cfg.model, cfg.out)
    write_run_config(cfg.out, cfg)
    print(
        f"{cfg.model} -> {cfg.out}: ConvBertModel (noconv, head_ratio 1), {model.num_parameters / 1e6:.2f}M parameters"
    )
    return 0
