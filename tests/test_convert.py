"""TF1 checkpoint conversion (official variable names, incl. the one-head small generator) and HF dir round trips.

The official checkpoints cannot be downloaded here, so each test writes a TF1 checkpoint (tf.compat.v1 Saver,
exact TF1 names) from a model of ours with random weights, or, for the small generator (one head of 64, which
transformers' layout cannot hold), from random TF-shaped weights; a direct TF-math forward written here is
the reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convbert.config import ConvBertConfig
from convbert.errors import InputError
from convbert.model import ConvBertForMaskedLM, ConvBertForPreTraining, ConvBertForSequenceClassification, ConvBertModel
from convbert.settings import RUN_CONFIG
from convbert.tools import convert, convert_tf1

VOCAB = 500
HEAD_SIZE_OVERRIDE = "attention_head_size" in {f.name for f in dataclasses.fields(ConvBertConfig)}


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere (biases and LayerNorms too), so that every weight matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            p.copy_(base + 0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def tf_name(key: str, scope: str, emb: str, groups: int) -> str:
    """Our state-dict key -> official TF1 variable name; written independently of convert_tf1.py."""
    key = key.removeprefix("convbert.")
    rules = [
        (r"embeddings\.(\w+_embeddings)\.weight", emb + r"/\1", "none"),
        (r"embeddings\.LayerNorm\.weight", emb + "/LayerNorm/gamma", "none"),
        (r"embeddings\.LayerNorm\.bias", emb + "/LayerNorm/beta", "none"),
        (r"embeddings_project\.(weight|bias)", scope + r"/embeddings_project/\1", "dense"),
        (r"encoder\.layer\.(\d+)\.(.*)", scope + r"/encoder/layer_\1/\2", "layer"),
        (
            r"discriminator_predictions\.dense_prediction\.(weight|bias)",
            r"discriminator_predictions/dense_1/\1",
            "dense",
        ),
        (r"(discriminator|generator)_predictions\.dense\.(weight|bias)", r"\1_predictions/dense/\2", "dense"),
        (r"generator_predictions\.LayerNorm\.weight", "generator_predictions/LayerNorm/gamma", "none"),
        (r"generator_predictions\.LayerNorm\.bias", "generator_predictions/LayerNorm/beta", "none"),
        (r"generator_lm_head\.bias", "generator_predictions/output_bias", "none"),
    ]
    for pattern, repl, kind in rules:
        if re.fullmatch(pattern, key):
            name = re.sub(pattern, repl, key)
            layer = kind == "layer"
            break
    else:
        raise KeyError(key)
    if layer:
        for old, new in (
            ("key_conv_attn_layer.depthwise.weight", "conv_attn_key/depthwise_kernel"),
            ("key_conv_attn_layer.pointwise.weight", "conv_attn_key/pointwise_kernel"),
            ("key_conv_attn_layer.bias", "conv_attn_key/bias"),
            ("conv_kernel_layer", "conv_attn_kernel"),
            ("conv_out_layer", "conv_attn_point"),
            ("LayerNorm.weight", "LayerNorm/gamma"),
            ("LayerNorm.bias", "LayerNorm/beta"),
            (".", "/"),
        ):
            name = name.replace(old, new)
    name = name.replace("/weight", "/kernel")
    if groups > 1:  # grouped FFN: scope g_dense
        name = re.sub(r"/layer_(\d+)/(intermediate|output)/dense/", r"/layer_\1/\2/g_dense/", name)
    return name


def tf_variables(model: torch.nn.Module, scope: str, emb: str = "electra/embeddings") -> dict[str, np.ndarray]:
    out = {}
    for key, t in model.state_dict().items():
        if key == "generator_lm_head.weight":  # tied to the word embeddings
            continue
        name = tf_name(key, scope, emb, model.config.num_groups)
        t = t.detach()
        if name.endswith("depthwise_kernel"):
            t = t.permute(2, 0, 1)  # (d, 1, K) -> (K, d, 1)
        elif name.endswith("pointwise_kernel"):
            t = t.permute(2, 1, 0)  # (A, d, 1) -> (1, d, A)
        elif name.endswith("conv_attn_key/bias"):
            t = t.squeeze(-1)
        elif name.endswith("/kernel") and t.dim() == 2:
            t = t.t()  # nn.Linear (out, in) -> TF (in, out); grouped (G, in/G, out/G) kernels are stored as is
        out[name] = t.numpy().copy()
    return out


def random_tf_generator(
    d: int, A: int, heads: int, E: int, F_: int, layers: int, seed: int, K: int = 9
) -> dict[str, np.ndarray]:
    """TF-shaped random weights of a generator (sharing electra/embeddings) with q/k/v width A, any A."""
    rng = np.random.default_rng(seed)
    emb = "electra/embeddings"
    shapes = {
        f"{emb}/word_embeddings": (VOCAB, E),
        f"{emb}/position_embeddings": (512, E),
        f"{emb}/token_type_embeddings": (2, E),
        f"{emb}/LayerNorm/gamma": (E,),
        f"{emb}/LayerNorm/beta": (E,),
        "generator/embeddings_project/kernel": (E, d),
        "generator/embeddings_project/bias": (d,),
        "generator_predictions/dense/kernel": (d, E),
        "generator_predictions/dense/bias": (E,),
        "generator_predictions/LayerNorm/gamma": (E,),
        "generator_predictions/LayerNorm/beta": (E,),
        "generator_predictions/output_bias": (VOCAB,),
    }
    for j in range(layers):
        p = f"generator/encoder/layer_{j}/"
        for n in ("query", "key", "value", "conv_attn_point"):
            shapes.update({f"{p}attention/self/{n}/kernel": (d, A), f"{p}attention/self/{n}/bias": (A,)})
        shapes.update(
            {
                f"{p}attention/self/conv_attn_key/depthwise_kernel": (K, d, 1),
                f"{p}attention/self/conv_attn_key/pointwise_kernel": (1, d, A),
                f"{p}attention/self/conv_attn_key/bias": (A,),
                f"{p}attention/self/conv_attn_kernel/kernel": (A, heads * K),
                f"{p}attention/self/conv_attn_kernel/bias": (heads * K,),
                f"{p}attention/output/dense/kernel": (2 * A, d),
                f"{p}attention/output/dense/bias": (d,),
                f"{p}intermediate/dense/kernel": (d, F_),
                f"{p}intermediate/dense/bias": (F_,),
                f"{p}output/dense/kernel": (F_, d),
                f"{p}output/dense/bias": (d,),
            }
        )
        for ln in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes.update({f"{p}{ln}/gamma": (d,), f"{p}{ln}/beta": (d,)})
    return {
        k: ((1.0 if k.endswith("gamma") else 0.0) + 0.1 * rng.standard_normal(s)).astype(np.float32)
        for k, s in shapes.items()
    }


def save_tf1(variables: dict[str, np.ndarray], prefix) -> str:
    tf = pytest.importorskip("tensorflow")
    extra = {"global_step": np.array(1000, np.int64)}  # and Adam slots: not model weights
    extra.update({f"{k}/adam_m": v for k, v in list(variables.items())[:3]})
    saver = tf.compat.v1.train.Saver(var_list={k: tf.Variable(v) for k, v in {**variables, **extra}.items()})
    prefix.parent.mkdir(parents=True, exist_ok=True)
    return saver.save(None, str(prefix))


# ------------------------------------------------------------------------------------------ TF math reference
def tf_forward(v: dict[str, np.ndarray], scope: str, emb: str, ids, mask, types, head: str) -> torch.Tensor:
    """The official TF computation, from the TF variables, in float64."""
    w = {k: torch.from_numpy(a).double() for k, a in v.items()}

    def dense(x, name):
        return x @ w[f"{name}/kernel"] + w[f"{name}/bias"]

    def layer_norm(x, name):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-12) * w[f"{name}/gamma"] + w[f"{name}/beta"]

    def gdense(x, name):
        k = w[f"{name}/kernel"]  # (G, in/G, out/G)
        y = torch.einsum("btgi,gio->btgo", x.view(*x.shape[:2], k.shape[0], k.shape[1]), k)
        return y.reshape(*x.shape[:2], -1) + w[f"{name}/bias"]

    def shifted(x, K):  # the K "same"-padded slices x[t + j - K//2]
        xp = F.pad(x, (0, 0, K // 2, K // 2))
        return [xp[:, j : j + x.shape[1]] for j in range(K)]

    B, T = ids.shape
    x = w[f"{emb}/word_embeddings"][ids] + w[f"{emb}/position_embeddings"][:T]
    x = layer_norm(x + w[f"{emb}/token_type_embeddings"][types], f"{emb}/LayerNorm")
    if f"{scope}/embeddings_project/kernel" in w:
        x = dense(x, f"{scope}/embeddings_project")
    adder = (1.0 - mask.double())[:, None, None, :] * -10000.0
    j = 0
    while f"{scope}/encoder/layer_{j}/attention/self/query/kernel" in w:
        p = f"{scope}/encoder/layer_{j}/"
        s = p + "attention/self/"
        dw = w[s + "conv_attn_key/depthwise_kernel"][:, :, 0]  # (K, d)
        K, A = dw.shape[0], w[s + "query/kernel"].shape[1]
        Hn = w[s + "conv_attn_kernel/kernel"].shape[1] // K
        hs = A // Hn
        q, k, val = dense(x, s + "query"), dense(x, s + "key"), dense(x, s + "value")
        span_key = sum(sl * dw[i] for i, sl in enumerate(shifted(x, K))) @ w[s + "conv_attn_key/pointwise_kernel"][0]
        span_key = span_key + w[s + "conv_attn_key/bias"]
        kernel = dense(q * span_key, s + "conv_attn_kernel").view(B, T, Hn, K).softmax(-1)
        conv = sum(
            sl.view(B, T, Hn, hs) * kernel[..., i : i + 1]
            for i, sl in enumerate(shifted(dense(x, s + "conv_attn_point"), K))
        )
        heads = [t.view(B, T, Hn, hs).transpose(1, 2) for t in (q, k, val)]
        scores = heads[0] @ heads[1].transpose(-1, -2) / hs**0.5 + adder
        ctx = (scores.softmax(-1) @ heads[2]).transpose(1, 2)  # (B, T, Hn, hs)
        cat = torch.cat([ctx, conv], dim=2).reshape(B, T, 2 * A)
        h = layer_norm(x + dense(cat, p + "attention/output/dense"), p + "attention/output/LayerNorm")
        ffn = gdense if f"{p}intermediate/g_dense/kernel" in w else dense
        kind = "g_dense" if ffn is gdense else "dense"
        inner = F.gelu(ffn(h, f"{p}intermediate/{kind}"))
        x = layer_norm(h + ffn(inner, f"{p}output/{kind}"), p + "output/LayerNorm")
        j += 1
    if head == "generator":
        h = layer_norm(F.gelu(dense(x, "generator_predictions/dense")), "generator_predictions/LayerNorm")
        return h @ w[f"{emb}/word_embeddings"].T + w["generator_predictions/output_bias"]
    return dense(F.gelu(dense(x, "discriminator_predictions/dense")), "discriminator_predictions/dense_1")[..., 0]


def batch(T: int = 12):
    g = torch.Generator().manual_seed(T)
    ids = torch.randint(1, VOCAB, (2, T), generator=g)
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    types = torch.zeros(2, T, dtype=torch.long)
    types[:, 4:7] = 1
    return ids, mask, types


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("size, preset", [("small", "small"), ("medium-small", None), ("base", "base")])
def test_tf1_presets_convert_exactly(tmp_path, size, preset):
    pytest.importorskip("tensorflow")
    disc = randomize(ConvBertForPreTraining(ConvBertConfig.preset(size, num_hidden_layers=2, vocab_size=VOCAB)), 1)
    variables = tf_variables(disc, "electra")
    gen = None
    if size == "small":  # hidden 64, one head: TF's q/k/v are 64 wide, which our layout cannot hold directly
        gen_vars = random_tf_generator(d=64, A=64, heads=1, E=128, F_=256, layers=2, seed=2)
        variables.update({k: v for k, v in gen_vars.items() if not k.startswith("electra/")})
    else:
        gen = ConvBertForMaskedLM(ConvBertConfig.preset(f"{size}-generator", num_hidden_layers=2, vocab_size=VOCAB))
        randomize(gen, 2).convbert.embeddings.load_state_dict(disc.convbert.embeddings.state_dict())  # shared
        variables.update({k: v for k, v in tf_variables(gen, "generator").items() if not k.startswith("electra/")})
    prefix = save_tf1(variables, tmp_path / "ckpt" / "model.ckpt-100")
    if size == "small" and not HEAD_SIZE_OVERRIDE:
        with pytest.raises(InputError, match="need ConvBertConfig.attention_head_size"):
            convert_tf1.convert_tf1(prefix, tmp_path / "out", config=preset)
        pytest.skip("the small generator needs ConvBertConfig.attention_head_size (a model change)")

    report = convert_tf1.convert_tf1(prefix, tmp_path / "out", config=preset)
    assert report["ignored_variables"] == 4  # global_step + 3 Adam slots
    ids, mask, types = batch()
    with torch.no_grad():
        original = disc(ids, mask, types).logits
        converted = ConvBertForPreTraining.from_pretrained(tmp_path / "out" / "discriminator")
        assert max_diff(converted(ids, mask, types).logits, original) <= 1e-5
        assert (
            max_diff(
                tf_forward(variables, "electra", "electra/embeddings", ids, mask, types, "discriminator"), original
            )
            <= 1e-5
        )  # the reference is TF's math
        generator = ConvBertForMaskedLM.from_pretrained(tmp_path / "out" / "generator")
        reference = tf_forward(variables, "generator", "electra/embeddings", ids, mask, types, "generator")
        assert max_diff(generator(ids, mask, types).logits, reference) <= 1e-5
        if gen is not None:
            assert max_diff(gen(ids, mask, types).logits, reference) <= 1e-5
    c = generator.config
    assert (c.hidden_size, c.num_attention_heads, c.attention_heads, c.head_size) == {
        "small": (64, 1, 1, 64),
        "medium-small": (96, 2, 1, 48),
        "base": (256, 4, 2, 64),
    }[size]
    assert report["generator"]["hidden_size"] == c.hidden_size


@pytest.fixture
def small_checkpoint(tmp_path):
    pytest.importorskip("tensorflow")
    disc = randomize(ConvBertForPreTraining(ConvBertConfig.preset("small", num_hidden_layers=1, vocab_size=VOCAB)), 5)
    return tf_variables(disc, "electra"), disc


def test_tf1_missing_variable_is_named(tmp_path, small_checkpoint):
    variables, _ = small_checkpoint
    name = "electra/encoder/layer_0/attention/self/conv_attn_point/bias"
    del variables[name]
    prefix = save_tf1(variables, tmp_path / "model.ckpt")
    with pytest.raises(InputError, match=f"missing variable {name}"):
        convert_tf1.convert_tf1(prefix, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tf1_wrong_shape_and_wrong_preset_are_named(tmp_path, small_checkpoint):
    variables, _ = small_checkpoint
    prefix = save_tf1(variables, tmp_path / "good" / "model.ckpt")
    with pytest.raises(InputError, match=r"attention/output/dense/kernel \(256, 256\) gives hidden_size 256.*'base'"):
        convert_tf1.convert_tf1(prefix, tmp_path / "out", config="base")
    name = "electra/encoder/layer_0/attention/self/value/kernel"
    variables[name] = variables[name][:, :64]
    prefix = save_tf1(variables, tmp_path / "bad" / "model.ckpt")
    with pytest.raises(InputError, match=rf"variable {name} has shape \(256, 64\), expected \(256, 128\)"):
        convert_tf1.convert_tf1(prefix, tmp_path / "out", config="small")
    with pytest.raises(InputError, match="not a readable TF checkpoint"):
        convert_tf1.convert_tf1(tmp_path / "nothing" / "model.ckpt", tmp_path / "out")


def test_tf1_discriminator_only_and_cli(tmp_path, small_checkpoint, capsys):
    variables, disc = small_checkpoint
    save_tf1(variables, tmp_path / "model.ckpt")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(VOCAB - 5)]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    assert (
        run_cli(
            [
                "convert",
                "tf1",
                "--checkpoint",
                str(tmp_path),
                "--out",
                str(tmp_path / "out"),
                "--preset",
                "small",
                "--vocab",
                str(tmp_path / "vocab.txt"),
            ]
        )
        == 0
    )
    assert "no generator/ variables" in capsys.readouterr().out
    assert not (tmp_path / "out" / "generator").exists()
    assert (tmp_path / "out" / "discriminator" / "vocab.txt").exists()
    converted = ConvBertForPreTraining.from_pretrained(tmp_path / "out" / "discriminator")
    ids, mask, types = batch()
    with torch.no_grad():
        assert max_diff(converted(ids, mask, types).logits, disc(ids, mask, types).logits) <= 1e-5


def test_tensorflow_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow", None)
    with pytest.raises(InputError, match=r"pip install convbert\[tf\]"):
        convert_tf1.convert_tf1(tmp_path / "model.ckpt", tmp_path / "out")


# ------------------------------------------------------------------------------------------ HF dirs
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    convert.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_from_hf_normalises_pytorch_bin_and_to_hf_strips_our_keys(tmp_path):
    config = ConvBertConfig.preset("tiny", vocab_size=VOCAB, num_labels=3)
    model = randomize(ConvBertForSequenceClassification(config), 6)
    hf = tmp_path / "hf"
    hf.mkdir()
    hf_config = {
        k: v
        for k, v in config.replace(architectures=[type(model).__name__]).to_dict().items()
        if k not in ("conv_type", "mask_conv_padding")
    }
    (hf / "config.json").write_text(json.dumps(hf_config), encoding="utf-8")
    torch.save(model.state_dict(), hf / "pytorch_model.bin")
    assert run_cli(["convert", "from-hf", "--model", str(hf), "--out", str(tmp_path / "ours")]) == 0
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors", RUN_CONFIG]
    assert json.loads((tmp_path / "ours" / RUN_CONFIG).read_text()) == {"model": str(hf), "out": str(tmp_path / "ours")}
    ours = ConvBertForSequenceClassification.from_pretrained(tmp_path / "ours")
    ids, mask, types = batch()
    with torch.no_grad():
        assert torch.equal(ours(ids, mask, types).logits, model(ids, mask, types).logits)

    assert run_cli(["convert", "to-hf", "--model", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    back = json.loads((tmp_path / "back" / "config.json").read_text(encoding="utf-8"))
    assert "conv_type" not in back and "mask_conv_padding" not in back and len(back["id2label"]) == 3
    randomize(ConvBertForSequenceClassification(config.replace(conv_type="lconv")), 7).save_pretrained(tmp_path / "lc")
    with pytest.raises(InputError, match="conv_type='lconv' has no transformers equivalent"):
        convert.resave(tmp_path / "lc", tmp_path / "lc-hf", for_transformers=True)
    linear = ConvBertForSequenceClassification(config.replace(classifier_head="linear"))
    linear.save_pretrained(tmp_path / "linear")
    with pytest.raises(InputError, match="classifier_head='linear' has no transformers equivalent"):
        convert.resave(tmp_path / "linear", tmp_path / "linear-hf", for_transformers=True)


def test_from_bert_computes_transformers_bert(tmp_path):
    """A BERT dir (here a random transformers BertModel, with a BertForSequenceClassification's "bert." prefix)
    becomes a noconv, head_ratio-1 ConvBERT with the same outputs; the pooler and heads are left out."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(cfg).eval()
    bert.save_pretrained(tmp_path / "bert")
    model = convert.convert_bert(tmp_path / "bert", tmp_path / "ours")
    ours = ConvBertModel.from_pretrained(tmp_path / "ours")
    assert (ours.config.conv_type, ours.config.head_ratio, ours.config.embedding_size) == ("noconv", 1, 48)
    assert model.num_parameters == sum(p.numel() for n, p in bert.bert.named_parameters() if "pooler" not in n)
    ids, mask, types = batch()
    mask[1, -3:] = 0
    with torch.no_grad():
        ref = bert.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        assert (ours(ids, mask, types).last_hidden_state - ref).abs().max() <= 1e-5
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(InputError, match="is not bert"):
        convert.convert_bert(tmp_path / "bert", tmp_path / "x")


def test_minilm_converts_with_transformers_parity(tmp_path):
    """The real pretrained BERT the demo fine-tunes (MiniLM-L6-H384, 90 MB download)."""
    transformers = pytest.importorskip("transformers")
    from convbert.tools import fetch

    src = fetch.minilm_dir()
    convert.convert_bert(src, tmp_path / "minilm")
    ours = ConvBertModel.from_pretrained(tmp_path / "minilm")
    bert = transformers.BertModel.from_pretrained(src).eval()
    ids = torch.randint(1000, 30000, (2, 24))
    with torch.no_grad():
        got = ours(ids, torch.ones_like(ids)).last_hidden_state
        diff = (got - bert(input_ids=ids).last_hidden_state).abs().max()
    assert diff <= 1e-4 and (tmp_path / "minilm" / "vocab.txt").exists()
