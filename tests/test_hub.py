"""Config validation and checkpoint I/O: bad input is an error naming the problem; writes are atomic."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import convbert
from convbert import ConfigError, ConvBertConfig, InputError


def tiny(**kw) -> ConvBertConfig:
    return ConvBertConfig.preset("tiny", vocab_size=50, **kw)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(hidden_size=66), "hidden_size"),  # not divisible by 2 x heads
        (dict(conv_kernel_size=8), "conv_kernel_size"),  # even kernel
        (dict(num_groups=3), "num_groups"),  # does not divide the sizes
        (dict(conv_type="xconv"), "conv_type"),
        (dict(hidden_act="swish2"), "hidden_act"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(pad_token_id=50), "pad_token_id"),
    ],
)
def test_invalid_config_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"ConvBertConfig.{field}="):
        tiny(**kw)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        ConvBertConfig.preset("huge")


def test_config_json_round_trip_uses_transformers_names(tmp_path):
    c = tiny(id2label={0: "neg", 1: "pos"})
    d = c.to_dict()
    assert d["model_type"] == "convbert" and d["label2id"] == {"neg": 0, "pos": 1}
    for key in ("vocab_size", "hidden_size", "embedding_size", "head_ratio", "conv_kernel_size", "num_groups"):
        assert key in d
    assert ConvBertConfig.from_dict(json.loads(json.dumps(d))) == c


def saved(tmp_path, cls=convbert.ConvBertForSequenceClassification):
    model = cls(tiny())
    model.save_pretrained(tmp_path)
    return model


def test_missing_weight_is_named(tmp_path):
    saved(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["convbert.encoder.layer.1.attention.self.query.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(
        InputError,
        match=r"missing weights: convbert\.encoder\.layer\.1\.attention\.self\.query"
        r"\.weight",
    ):
        convbert.ConvBertForSequenceClassification.from_pretrained(tmp_path)


def test_misshaped_weight_is_named(tmp_path):
    saved(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["convbert.embeddings_project.weight"] = torch.zeros(3, 3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(InputError, match=r"embeddings_project\.weight: checkpoint \(3, 3\) vs model \(64, 32\)"):
        convbert.ConvBertModel.from_pretrained(tmp_path)


def test_unexpected_weight_is_named(tmp_path):
    saved(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["convbert.encoder.layer.7.extra"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(InputError, match=r"unexpected weights: convbert\.encoder\.layer\.7\.extra"):
        convbert.ConvBertModel.from_pretrained(tmp_path)


def test_truncated_safetensors(tmp_path):
    saved(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="model.safetensors: cannot read safetensors file"):
        convbert.ConvBertModel.from_pretrained(tmp_path)


def test_tokenizer_larger_than_embedding_table(tmp_path):
    saved(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(60)) + "\n")
    with pytest.raises(InputError, match="tokenizer has 60 tokens but config.json vocab_size is 50"):
        convbert.ConvBertModel.from_pretrained(tmp_path)


def test_bad_config_json(tmp_path):
    saved(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: cannot read config"):
        convbert.ConvBertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="model_type 'bert' is not convbert"):
        convbert.ConvBertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**tiny().to_dict(), "conv_kernel_size": 4}))
    with pytest.raises(InputError, match="conv_kernel_size=4"):
        convbert.ConvBertModel.from_pretrained(tmp_path)


def test_missing_dir_and_missing_weights(tmp_path):
    with pytest.raises(InputError, match="not a model directory"):
        convbert.ConvBertModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps(tiny().to_dict()))
    with pytest.raises(InputError, match="no model.safetensors or pytorch_model.bin"):
        convbert.ConvBertModel.from_pretrained(tmp_path)


class Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pytorch_bin_is_read_without_unpickling_code(tmp_path, capsys):
    model = saved(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = convbert.ConvBertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(loaded.classifier["out_proj"].weight, model.classifier["out_proj"].weight)
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    with pytest.raises(InputError, match="pytorch_model.bin: cannot read weights safely"):
        convbert.ConvBertModel.from_pretrained(tmp_path)
    assert "unpickled!" not in capsys.readouterr().out


def test_save_keeps_other_files_and_is_atomic(tmp_path):
    model = saved(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_text() == "[PAD]\n"

    class FailingTokenizer:
        def save_pretrained(self, path):
            (path / "half.txt").write_text("x")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        model.save_pretrained(tmp_path / "new", tokenizer=FailingTokenizer())
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_round_trip_every_conv_type(tmp_path):
    for conv_type in ("sdconv", "dconv", "lconv", "noconv"):
        model = convbert.ConvBertForMaskedLM(tiny(conv_type=conv_type)).eval()
        model.save_pretrained(tmp_path / conv_type)
        loaded = convbert.ConvBertForMaskedLM.from_pretrained(tmp_path / conv_type)
        ids = torch.randint(1, 50, (2, 9))
        with torch.no_grad():
            assert torch.equal(model(ids).logits, loaded(ids).logits)
        assert loaded.generator_lm_head.weight is loaded.convbert.embeddings.word_embeddings.weight
