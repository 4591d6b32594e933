"""config.json validation: every ConvBertConfig field is checked by type and range when it is read, so a bad
value is an error naming the file and the field (CLI: exit 2, nothing written), not a crash or a wrong model
later; every real config (our presets, transformers' ConvBERT, a BERT via `convert from-bert`) still loads."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest

import convbert
from convbert import cli
from convbert.config import FIELD_RULES, MAX_VOCAB, PRESETS, ConfigError, ConvBertConfig
from convbert.errors import InputError
from convbert.tools import convert

VOCAB = 50

# (field, bad value, what the message says is expected): one per finding, then the neighbouring rules
BAD = [
    ("id2label", {"a": "neg", "b": "pos"}, "keys that are label ids 0, 1, 2, ... (found 'a')"),
    ("id2label", ["neg", "pos"], "a non-empty mapping of label ids 0..N-1 to label names"),
    ("classifier_dropout", 5, "a finite number from 0 to 1 or null"),
    ("classifier_dropout", "abc", "a finite number from 0 to 1 or null"),
    ("layer_norm_eps", "abc", "a finite number > 0"),
    ("initializer_range", "abc", "a finite number > 0"),
    ("initializer_range", -1, "a finite number > 0"),
    ("pad_token_id", 1.5, "an integer from 0 to"),
    ("vocab_size", 2147483647, f"an integer from 1 to {MAX_VOCAB:,}"),
    ("layer_norm_eps", -1, "a finite number > 0"),
    ("layer_norm_eps", math.nan, "a finite number > 0"),
    ("mask_conv_padding", "yes", "true or false"),
    ("id2label", {"0": "neg", "5": "pos"}, "keys 0..1 without gaps (found 0, 5)"),
    # the same rules elsewhere
    ("id2label", {}, "a non-empty mapping"),
    ("id2label", {"0": "neg", "1": 7}, "label names (strings) as values (found 7)"),
    ("id2label", {"0": "neg", "-1": "pos"}, "keys that are label ids 0, 1, 2, ... (found '-1')"),
    ("label2id", {"neg": 0, "pos": 5}, "values 0..1 without gaps (found 0, 5)"),
    ("label2id", {"neg": "zero"}, "values that are label ids 0, 1, 2, ... (found 'zero')"),
    ("num_labels", 2.5, "an integer from 1 to"),
    ("num_hidden_layers", True, "an integer from 1 to 256"),
    ("num_hidden_layers", 1000, "an integer from 1 to 256"),
    ("hidden_size", 32768, "an integer from 1 to 16,384"),
    ("max_position_embeddings", 10**6, "an integer from 1 to 65,536"),
    ("intermediate_size", "128", "an integer from 1 to 65,536"),
    ("hidden_dropout_prob", 1.5, "a finite number from 0 to 1"),
    ("attention_probs_dropout_prob", -0.1, "a finite number from 0 to 1"),
    ("layer_norm_eps", math.inf, "a finite number > 0"),
    ("initializer_range", 0, "a finite number > 0"),
    ("hidden_act", "swish2", "one of gelu, relu"),
    ("conv_type", "xconv", "one of sdconv, dconv, lconv, noconv"),
    ("classifier_head", 1, "one of dense, linear"),
    ("problem_type", "ranking", "one of regression, single_label_classification"),
    ("architectures", "ConvBertModel", "a list of strings or null"),
    ("attention_head_size", 0, "an integer from 1 to 16,384 or null"),
    ("conv_kernel_size", 8, "an odd number"),
    ("pad_token_id", VOCAB, f"a token id below vocab_size {VOCAB}"),
]
IDS = [f"{field}={value!r}" for field, value, _ in BAD]


def good_config(**changes) -> dict:
    """A valid config.json dict of ours (tiny, two labels), with `changes`."""
    return {**ConvBertConfig.preset("tiny", vocab_size=VOCAB).to_dict(), **changes}


def write_config(path, d: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d), encoding="utf-8")  # NaN / Infinity as JSON's extensions, as Python writes them
    return path


def message(path, field: str, expected: str) -> str:
    return re.escape(f"{path}: {field}: expected {expected}") + f".*, got {field}="


@pytest.mark.parametrize("field, value, expected", BAD, ids=IDS)
def test_bad_config_json_names_file_and_field(tmp_path, field, value, expected):
    path = write_config(tmp_path / "config.json", good_config(**{field: value}))
    with pytest.raises(ConfigError, match=message(path, field, expected)) as e:
        ConvBertConfig.from_json_file(path)
    assert isinstance(e.value, InputError) and e.value.field == field


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    convbert.ConvBertModel(ConvBertConfig.preset("tiny", vocab_size=VOCAB)).save_pretrained(path)
    return path


@pytest.mark.parametrize("command", ["to-hf", "from-hf"])
@pytest.mark.parametrize("field, value, expected", BAD, ids=IDS)
def test_convert_refuses_bad_config_and_writes_nothing(model_dir, capsys, command, field, value, expected):
    config = write_config(model_dir / "config.json", good_config(**{field: value}))
    out = model_dir.parent / "out"
    assert cli.main(["convert", command, "--model", str(model_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search("convbert: error: " + message(config, field, expected), err), err
    assert not out.exists()


def test_to_hf_copied_invalid_values_before(model_dir, tmp_path):
    """The reported case: `convert to-hf` wrote classifier_dropout 5 into its output and exited 0."""
    write_config(model_dir / "config.json", good_config(classifier_dropout=5))
    with pytest.raises(ConfigError, match="classifier_dropout: expected"):
        convert.resave(model_dir, tmp_path / "hf", for_transformers=True)
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("layer_norm_eps", "abc", "a finite number > 0"),
        ("vocab_size", 2147483647, "an integer from 1 to"),
        ("num_attention_heads", 1.5, "an integer from 1 to"),
        ("hidden_act", "swish2", "one of gelu"),
    ],
)
def test_from_bert_refuses_bad_config_and_writes_nothing(tmp_path, capsys, field, value, expected):
    bert = {**MINILM_CONFIG, field: value}
    config = write_config(tmp_path / "bert" / "config.json", bert)
    out = tmp_path / "out"
    assert cli.main(["convert", "from-bert", "--model", str(config.parent), "--out", str(out)]) == 2
    assert re.search(message(config, field, expected), capsys.readouterr().err)
    assert not out.exists()


def test_num_labels_must_match_id2label(tmp_path):
    path = write_config(tmp_path / "config.json", good_config(num_labels=3))  # id2label has 2
    with pytest.raises(ConfigError, match=message(path, "num_labels", "2 (the id2label entries)")):
        ConvBertConfig.from_json_file(path)
    label2id = {"neg": 0, "pos": 1, "other": 2}
    path = write_config(tmp_path / "config.json", good_config(label2id=label2id))
    with pytest.raises(ConfigError, match=message(path, "label2id", "2 names with ids 0..1")):
        ConvBertConfig.from_json_file(path)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(pad_token_id=1.5), "pad_token_id"),
        (dict(num_hidden_layers=True), "num_hidden_layers"),
        (dict(layer_norm_eps=math.nan), "layer_norm_eps"),
        (dict(mask_conv_padding="yes"), "mask_conv_padding"),
        (dict(id2label={0: "a", 2: "b"}), "id2label"),
        (dict(vocab_size=2**31 - 1), "vocab_size"),
    ],
)
def test_constructor_checks_the_same_rules(kw, field):
    with pytest.raises(ConfigError, match=rf"ConvBertConfig\.{field}=.*: expected "):
        ConvBertConfig.preset("tiny", **{"vocab_size": VOCAB, **kw})


def test_every_field_has_a_rule():
    assert list(FIELD_RULES) == [f.name for f in dataclasses.fields(ConvBertConfig)]


# ------------------------------------------------------------------------------------------ real configs load
@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip(tmp_path, name):
    config = ConvBertConfig.preset(name)
    path = write_config(tmp_path / "config.json", config.to_dict())
    loaded = ConvBertConfig.from_json_file(path)
    assert loaded.to_dict() == config.to_dict() and loaded == config.replace(id2label=dict(enumerate(config.labels())))


def test_every_setting_round_trips(tmp_path):
    config = ConvBertConfig.preset(
        "small-generator",
        attention_head_size=64,
        classifier_head="linear",
        classifier_dropout=0.0,
        conv_type="lconv",
        mask_conv_padding=True,
        id2label={0: "arts", 1: "news", 2: "sports"},
        problem_type="multi_label_classification",
        architectures=["ConvBertForSequenceClassification"],
    )
    path = write_config(tmp_path / "config.json", config.to_dict())
    loaded = ConvBertConfig.from_json_file(path)
    assert loaded == config and loaded.labels() == ["arts", "news", "sports"]


def test_integral_floats_are_integers_and_integers_floats(tmp_path):
    path = write_config(tmp_path / "config.json", good_config(vocab_size=50.0, layer_norm_eps=1))
    config = ConvBertConfig.from_json_file(path)
    assert (config.vocab_size, type(config.vocab_size)) == (50, int)
    assert (config.layer_norm_eps, type(config.layer_norm_eps)) == (1.0, float)


@pytest.mark.parametrize("use_diff", [True, False])
def test_transformers_written_config_loads(tmp_path, use_diff):
    transformers = pytest.importorskip("transformers")
    kw = {} if use_diff else dict(num_labels=3, problem_type="single_label_classification", classifier_dropout=0.2)
    path = tmp_path / "config.json"
    transformers.ConvBertConfig(**kw).to_json_file(path, use_diff=use_diff)
    raw = json.loads(path.read_text())
    assert "transformers_version" in raw and raw["model_type"] == "convbert"
    config = ConvBertConfig.from_json_file(path)
    assert (config.hidden_size, config.num_hidden_layers, config.pad_token_id, config.head_ratio) == (768, 12, 1, 2)
    assert config.num_labels == (2 if use_diff else 3)


def test_transformers_extra_keys_are_ignored(tmp_path):
    extra = {"transformers_version": "4.40.0", "torch_dtype": "float32", "_name_or_path": "x/y", "bos_token_id": 0}
    path = write_config(tmp_path / "config.json", good_config(**extra))
    assert ConvBertConfig.from_json_file(path).to_dict() == ConvBertConfig.preset("tiny", vocab_size=VOCAB).to_dict()


# sentence-transformers/all-MiniLM-L6-v2's config.json (the BERT `convert from-bert` converts for the demo)
MINILM_CONFIG = {
    "_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "transformers_version": "4.8.2",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}


def test_minilm_bert_config_passes_the_checks(tmp_path):
    """convert_bert checks the config before it reads weights: with none there, the error is about weights."""
    config = write_config(tmp_path / "bert" / "config.json", MINILM_CONFIG)
    with pytest.raises(InputError) as e:
        convert.convert_bert(config.parent, tmp_path / "out")
    assert not isinstance(e.value, ConfigError) and "config.json" not in str(e.value)
    assert not (tmp_path / "out").exists()
