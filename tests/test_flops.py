import argparse
import json
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from convbert import flops
from convbert.config import ConvBertConfig
from convbert.flops import PAPER_TABLE3, forward_flops_per_token, param_count, pretraining_flops

transformers = pytest.importorskip("transformers")

SIZE_KEYS = (
    "vocab_size",
    "hidden_size",
    "embedding_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "head_ratio",
    "conv_kernel_size",
    "num_groups",
    "pad_token_id",
)


def hf_convbert(config: ConvBertConfig, device: str = "meta") -> torch.nn.Module:
    with torch.device(device):
        return transformers.ConvBertModel(transformers.ConvBertConfig(**{k: getattr(config, k) for k in SIZE_KEYS}))


def random_configs(n: int) -> list[ConvBertConfig]:
    rng = random.Random(0)
    configs = [
        # H < head_ratio: transformers falls back to one attention head
        ConvBertConfig(
            hidden_size=48,
            embedding_size=16,
            num_hidden_layers=2,
            num_attention_heads=1,
            intermediate_size=96,
            vocab_size=100,
        ),
        ConvBertConfig(
            hidden_size=48,
            embedding_size=48,
            num_hidden_layers=1,
            num_attention_heads=3,
            head_ratio=4,
            intermediate_size=64,
            num_groups=2,
            vocab_size=50,
            conv_kernel_size=5,
        ),
    ]
    while len(configs) < n:
        heads = rng.choice([1, 2, 4, 6])
        ratio = rng.choice([1, 2, 3])
        d = 2 * max(1, heads // ratio) * rng.choice([4, 8, 12])
        g = rng.choice([1, 2])
        configs.append(
            ConvBertConfig(
                hidden_size=d,
                embedding_size=rng.choice([d, 16, 24]),
                num_hidden_layers=rng.randint(1, 3),
                num_attention_heads=heads,
                head_ratio=ratio,
                intermediate_size=g * rng.choice([16, 40]),
                num_groups=g,
                vocab_size=rng.randint(50, 500),
                conv_kernel_size=rng.choice([3, 7, 9]),
                max_position_embeddings=rng.choice([64, 128]),
                type_vocab_size=rng.choice([1, 2]),
            )
        )
    return configs


@pytest.mark.parametrize(
    "name", ["small", "medium-small", "base", "small-generator", "medium-small-generator", "base-generator"]
)
def test_param_count_presets(name):
    config = ConvBertConfig.preset(name)
    model = hf_convbert(config)
    assert param_count(config) == model.num_parameters()
    assert param_count(config, include_embeddings=False) == model.num_parameters(exclude_embeddings=True)


def test_param_count_matches_paper_sizes():
    millions = {name: param_count(ConvBertConfig.preset(name)) / 1e6 for name in ("small", "medium-small", "base")}
    assert round(millions["small"]) == 13 and round(millions["medium-small"]) == 17
    assert round(millions["base"]) == 106


@pytest.mark.parametrize(
    "config",
    random_configs(8),
    ids=lambda c: f"d{c.hidden_size}H{c.num_attention_heads}r{c.head_ratio}G{c.num_groups}E{c.embedding_size}",
)
def test_param_count_random_configs(config):
    assert param_count(config) == hf_convbert(config).num_parameters()


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_noconv_param_count_equals_electra(name):
    config = ConvBertConfig.preset(name, conv_type="noconv", head_ratio=1)
    with torch.device("meta"):
        electra = transformers.ElectraModel(
            transformers.ElectraConfig(
                **{
                    k: getattr(config, k)
                    for k in SIZE_KEYS
                    if k not in ("head_ratio", "conv_kernel_size", "num_groups")
                }
            )
        )
    assert param_count(config) == electra.num_parameters()


def test_conv_variants_param_differences():
    sd = ConvBertConfig.preset("small")
    d, a, hn, k = sd.hidden_size, sd.all_head_size, sd.attention_heads, sd.conv_kernel_size
    layers = sd.num_hidden_layers
    dconv, lconv = sd.replace(conv_type="dconv"), sd.replace(conv_type="lconv")
    assert param_count(sd) - param_count(dconv) == layers * (d * k + d * a + a)  # the span-aware key
    assert param_count(dconv) - param_count(lconv) == layers * (a * hn * k)  # kernel generator vs static kernel
    assert param_count(sd.replace(conv_type="noconv", head_ratio=1)) == param_count(
        sd.replace(conv_type="noconv", head_ratio=2)
    )


@pytest.mark.parametrize("name", ["tiny", "small", "medium-small"])
def test_matmul_flops_match_flop_counter(name):
    config = ConvBertConfig.preset(name, num_hidden_layers=2)
    model = hf_convbert(config, device="cpu").eval()
    batch, seq = 2, 48
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    ours = batch * seq * forward_flops_per_token(config, seq, matmul_only=True)["total"]
    assert ours == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_forward_breakdown():
    config = ConvBertConfig.preset("base")
    full = forward_flops_per_token(config, 128, head="mlm")
    assert full["total"] == pytest.approx(sum(v for k, v in full.items() if k != "total"))
    assert "embedding_projection" not in full and full["mlm_head"] > 0
    assert forward_flops_per_token(config, 128, matmul_only=True)["total"] < full["total"]
    noconv = forward_flops_per_token(config.replace(conv_type="noconv"), 128)
    assert "key_sepconv" not in noconv and "lightweight_conv" not in noconv
    lconv = forward_flops_per_token(config.replace(conv_type="lconv"), 128)
    assert "conv_kernel" not in lconv and "lightweight_conv" in lconv
    # ConvBERT-base needs fewer forward FLOPs than BERT-base (paper §1.2: ~5 % less at 128)
    bert = forward_flops_per_token(config.replace(conv_type="noconv", head_ratio=1), 128)
    assert 0.85 < forward_flops_per_token(config, 128)["total"] / bert["total"] < 1.0
    with pytest.raises(ValueError):
        forward_flops_per_token(config, 128, head="nsp")


def test_model_flops_training_is_three_forwards():
    config = ConvBertConfig.preset("small")
    forward = flops.model_flops(config, 8, 128, training=False)
    assert flops.model_flops(config, 8, 128, training=True) == 3 * forward
    assert forward == 8 * 128 * forward_flops_per_token(config, 128, matmul_only=True)["total"]


@pytest.mark.parametrize("name", ["ConvBERT-small", "ConvBERT-medium-small", "ConvBERT-base", "BERT-base"])
def test_paper_table3_within_5_percent(name):
    disc, gen, batch, seq, steps, paper = PAPER_TABLE3[name]
    assert pretraining_flops(disc, gen, batch, seq, steps) == pytest.approx(paper, rel=0.05)


def test_electra_small_matches_electra_script():
    """ELECTRA's own flops_computation.py gives 1.2937e18 for ELECTRA-small (generator d=64); its paper prints
    1.4e18, 8 % more, which no counting of the 1/4 generator reproduces (see the module docstring)."""
    disc, gen, batch, seq, steps, paper = PAPER_TABLE3["ELECTRA-small"]
    ours = pretraining_flops(disc, gen, batch, seq, steps)
    assert ours == pytest.approx(1.2937e18, rel=0.005)
    assert ours / paper == pytest.approx(0.925, abs=0.005)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="convbert")
    flops.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_preset(capsys):
    args = parse(["flops", "--preset", "small", "--generator", "small-generator"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "13,143,768" in out and "key_sepconv" in out and "pretraining FLOPs" in out
    assert "1.239e+18" in out


def test_cli_config_dir_and_conv_type(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(ConvBertConfig.preset("tiny").to_dict()), encoding="utf-8")
    args = parse(["flops", "--model", str(tmp_path), "--conv-type", "noconv", "--max-length", "64"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "key_sepconv" not in out and "seq_len 64" in out


def test_cli_paper(capsys):
    args = parse(["flops", "--paper"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for name in PAPER_TABLE3:
        assert name in out
    assert "6.4e+19" in out


@pytest.mark.parametrize(
    "overrides",
    [
        {"conv_type": "dconv"},
        {"conv_type": "lconv"},
        {"conv_type": "noconv"},
        {"conv_type": "noconv", "head_ratio": 1},
        {"num_attention_heads": 1, "hidden_size": 64, "attention_head_size": 64},
        {"head_ratio": 3, "num_groups": 2},
    ],
)
def test_param_count_matches_our_model(overrides):
    from convbert import ConvBertModel

    c = ConvBertConfig.preset("tiny", vocab_size=100, **overrides)
    assert param_count(c) == ConvBertModel(c).num_parameters
