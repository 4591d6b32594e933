"""The model against transformers' ConvBERT (both directions of checkpoint loading) and a naive reference."""

import json

import pytest
import torch
from reference import naive_encoder

import convbert
from convbert import ConvBertConfig

transformers = pytest.importorskip("transformers")

# (hidden, embedding, heads, head_ratio, groups, kernel, intermediate): projections, groups 1 and 2,
# kernels 3/7/9, several head counts, the H < head_ratio fallback and a head_ratio of 3.
CONFIGS = [
    (64, 32, 4, 2, 1, 9, 128),
    (48, 48, 2, 2, 2, 3, 96),
    (96, 64, 6, 2, 2, 7, 192),
    (32, 16, 1, 2, 1, 5, 64),
    (64, 64, 6, 3, 1, 9, 128),
]
HEADS = [
    "ConvBertModel",
    "ConvBertForMaskedLM",
    "ConvBertForSequenceClassification",
    "ConvBertForTokenClassification",
    "ConvBertForQuestionAnswering",
    "ConvBertForMultipleChoice",
]
VOCAB = 120


def make_config(spec, **kw) -> ConvBertConfig:
    d, e, h, r, g, k, f = spec
    return ConvBertConfig(
        vocab_size=VOCAB,
        hidden_size=d,
        embedding_size=e,
        num_hidden_layers=2,
        num_attention_heads=h,
        head_ratio=r,
        num_groups=g,
        conv_kernel_size=k,
        intermediate_size=f,
        num_labels=3,
        **kw,
    )


def hf_config(c: ConvBertConfig):
    d = c.to_dict()
    for key in ("conv_type", "mask_conv_padding", "architectures", "model_type"):
        d.pop(key, None)
    return transformers.ConvBertConfig(**d)


def batch(seed=0, B=3, T=11, choices=None):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T) if choices is None else (B, choices, T)
    ids = torch.randint(1, VOCAB, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    mask[..., 1, 7:] = 0  # padded rows
    mask[..., -1, 4:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.zeros_like(ids)
    types[..., 5:] = 1
    return ids, mask, types


def outputs(model, name, inputs, ours: bool):
    ids, mask, types = inputs
    with torch.no_grad():
        out = model(ids, attention_mask=mask, token_type_ids=types)
    if name == "ConvBertModel":
        return out.last_hidden_state
    if name == "ConvBertForQuestionAnswering":
        return torch.stack([out.start_logits, out.end_logits], -1)
    return out.logits


@pytest.mark.parametrize("spec", CONFIGS)
@pytest.mark.parametrize("name", HEADS)
def test_transformers_parity_both_directions(tmp_path, spec, name):
    c = make_config(spec)
    if name == "ConvBertForQuestionAnswering":
        c = c.replace(num_labels=2)
    inputs = batch(choices=2 if name == "ConvBertForMultipleChoice" else None)

    # theirs -> ours
    torch.manual_seed(1)
    theirs = getattr(transformers, name)(hf_config(c)).eval()
    theirs.save_pretrained(tmp_path / "hf")
    ours = getattr(convbert, name).from_pretrained(tmp_path / "hf")
    diff = (outputs(ours, name, inputs, True) - outputs(theirs, name, inputs, False)).abs().max()
    assert diff <= 1e-5, f"theirs->ours {name} {spec}: {diff}"

    # ours -> theirs
    torch.manual_seed(2)
    ours = getattr(convbert, name)(c).eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs, info = getattr(transformers, name).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    diff = (outputs(ours, name, inputs, True) - outputs(theirs.eval(), name, inputs, False)).abs().max()
    assert diff <= 1e-5, f"ours->theirs {name} {spec}: {diff}"


def test_bare_model_into_head_and_back(tmp_path):
    c = make_config(CONFIGS[0])
    inputs = batch()
    theirs = transformers.ConvBertModel(hf_config(c)).eval()
    theirs.save_pretrained(tmp_path / "bare")
    head, info = convbert.ConvBertForSequenceClassification.from_pretrained(tmp_path / "bare", output_loading_info=True)
    assert sorted(info["missing_keys"]) == [
        "classifier.dense.bias",
        "classifier.dense.weight",
        "classifier.out_proj.bias",
        "classifier.out_proj.weight",
    ]
    ref = outputs(theirs, "ConvBertModel", inputs, False)
    assert (outputs(head.convbert, "ConvBertModel", inputs, True) - ref).abs().max() <= 1e-5

    head.save_pretrained(tmp_path / "head")  # a head dir loads as a bare model, here and in transformers
    bare, info = convbert.ConvBertModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert sorted(info["unexpected_keys"])[0].startswith("classifier.")
    theirs2, info2 = transformers.ConvBertModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert not info2["missing_keys"]
    for m, ours in ((bare, True), (theirs2, False)):
        assert (outputs(m, "ConvBertModel", inputs, ours) - ref).abs().max() <= 1e-5


def test_linear_classifier_head_and_what_transformers_does_with_it(tmp_path):
    """The official code's head: dropout, one glorot-initialised linear layer on [CLS]. transformers loads the
    encoder exactly but rebuilds its own dense -> GELU -> out_proj head with a fresh dense (missing keys), so its
    predictions differ: a dir for transformers needs classifier_head "dense"."""
    c = make_config(CONFIGS[0]).replace(classifier_head="linear", num_labels=3)
    torch.manual_seed(0)
    model = convbert.ConvBertForSequenceClassification(c).eval()
    assert sorted(k for k in model.state_dict() if k.startswith("classifier.")) == [
        "classifier.out_proj.bias",
        "classifier.out_proj.weight",
    ]
    w = model.classifier["out_proj"].weight
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= bound and w.std() > 0.5 * bound / 3**0.5, "glorot-uniform, not N(0, 0.02)"
    ids, mask, types = batch()
    with torch.no_grad():
        h = model.convbert(ids, mask, types).last_hidden_state[:, 0]
        assert torch.allclose(model(ids, mask, types).logits, model.classifier["out_proj"](h), atol=1e-6)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["classifier_head"] == "linear"
    again = convbert.ConvBertForSequenceClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids, mask, types).logits, model(ids, mask, types).logits)
    theirs, info = transformers.ConvBertForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.dense.bias", "classifier.dense.weight"]
    with torch.no_grad():
        ref = theirs.convbert(ids, attention_mask=mask, token_type_ids=types).last_hidden_state[:, 0]
    assert (ref - h).abs().max() <= 1e-5


def test_pretraining_head_matches_electra_head(tmp_path):
    c = make_config(CONFIGS[2])
    ids, mask, types = batch()
    ours = convbert.ConvBertForPreTraining(c).eval()
    ours.save_pretrained(tmp_path)
    body = transformers.ConvBertModel.from_pretrained(tmp_path).eval()  # loads the discriminator's encoder
    ecfg = transformers.ElectraConfig(hidden_size=c.hidden_size, hidden_act="gelu")
    head = transformers.models.electra.modeling_electra.ElectraDiscriminatorPredictions(ecfg).eval()
    head.load_state_dict(
        {k.split(".", 1)[1]: v for k, v in ours.state_dict().items() if k.startswith("discriminator_predictions.")}
    )
    with torch.no_grad():
        ref = head(body(ids, attention_mask=mask, token_type_ids=types).last_hidden_state)
        got = ours(ids, mask, types)
    assert (got.logits - ref).abs().max() <= 1e-5
    labels = (torch.rand(ids.shape) > 0.8).long()
    with torch.no_grad():
        loss = ours(ids, mask, types, labels=labels).loss
    keep = mask.bool()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(ref[keep], labels[keep].float())
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize(
    "name",
    [
        "ConvBertForMaskedLM",
        "ConvBertForSequenceClassification",
        "ConvBertForTokenClassification",
        "ConvBertForQuestionAnswering",
    ],
)
def test_losses_match_transformers(tmp_path, name):
    c = make_config(CONFIGS[0]).replace(num_labels=2 if "Question" in name else 3)
    ids, mask, types = batch()
    torch.manual_seed(0)
    ours = getattr(convbert, name)(c).eval()
    ours.save_pretrained(tmp_path)
    theirs = getattr(transformers, name).from_pretrained(tmp_path).eval()
    if name == "ConvBertForQuestionAnswering":
        kw = {"start_positions": torch.tensor([1, 3, 40]), "end_positions": torch.tensor([2, 5, 40])}
    elif name == "ConvBertForSequenceClassification":
        kw = {"labels": torch.tensor([0, 2, 1])}
    else:
        labels = torch.randint(0, 3 if "Token" in name else VOCAB, ids.shape)
        kw = {"labels": labels.masked_fill(mask == 0, -100)}
    with torch.no_grad():
        a = ours(ids, mask, types, **kw).loss
        b = theirs(ids, attention_mask=mask, token_type_ids=types, **kw).loss
    assert torch.allclose(a, b, atol=1e-6), (a, b)


def test_regression_head_uses_mse(tmp_path):
    c = make_config(CONFIGS[0]).replace(num_labels=1)
    ours = convbert.ConvBertForSequenceClassification(c).eval()
    ours.save_pretrained(tmp_path)
    theirs = transformers.ConvBertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, types = batch()
    y = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        out = ours(ids, mask, types, labels=y)
        ref = theirs(ids, attention_mask=mask, token_type_ids=types, labels=y)
    assert out.logits.shape == (3, 1)
    assert torch.allclose(out.loss, torch.mean((out.logits.squeeze(-1) - y) ** 2), atol=1e-6)
    assert torch.allclose(out.loss, ref.loss, atol=1e-6)


@pytest.mark.parametrize("preset", ["small", "medium-small", "base"])
def test_preset_parameter_counts_equal_transformers(preset):
    c = ConvBertConfig.preset(preset)
    theirs = transformers.ConvBertModel(hf_config(c))
    assert convbert.ConvBertModel(c).num_parameters == theirs.num_parameters()


def test_noconv_head_ratio_1_is_electra_sized():
    c = ConvBertConfig.preset("small", conv_type="noconv", head_ratio=1)
    electra = transformers.ElectraModel(
        transformers.ElectraConfig(
            vocab_size=c.vocab_size,
            embedding_size=c.embedding_size,
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size,
        )
    )
    assert convbert.ConvBertModel(c).num_parameters == electra.num_parameters()


def test_noconv_head_ratio_1_computes_electra(tmp_path):
    """With every head attention and head_ratio 1, the encoder is ELECTRA's, key for key."""
    c = make_config(CONFIGS[0], conv_type="noconv").replace(head_ratio=1)
    ours = convbert.ConvBertModel(c).eval()
    ecfg = transformers.ElectraConfig(
        vocab_size=VOCAB,
        embedding_size=c.embedding_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=2,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        pad_token_id=0,
    )
    electra = transformers.ElectraModel(ecfg).eval()
    missing, unexpected = electra.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    ids, mask, types = batch()
    with torch.no_grad():
        ref = electra(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        assert (ours(ids, mask, types).last_hidden_state - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("conv_type", ["sdconv", "dconv", "lconv", "noconv"])
@pytest.mark.parametrize("mask_conv_padding", [False, True])
def test_every_conv_type_matches_naive_reference(conv_type, mask_conv_padding):
    torch.manual_seed(0)
    c = make_config(CONFIGS[2], conv_type=conv_type, mask_conv_padding=mask_conv_padding)
    model = convbert.ConvBertModel(c).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        got = model(ids, mask, types).last_hidden_state
        assert (got - naive_encoder(model, ids, mask, types)).abs().max() <= 1e-5


@pytest.mark.parametrize("conv_type", ["sdconv", "dconv", "lconv", "noconv"])
def test_every_conv_type_trains(conv_type):
    torch.manual_seed(0)
    c = make_config(CONFIGS[1], conv_type=conv_type)
    model = convbert.ConvBertForSequenceClassification(c).train()
    ids, mask, types = batch()
    out = model(ids, mask, types, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    names = " ".join(grads)
    assert ("key_conv_attn_layer" in names) == (conv_type == "sdconv")
    assert ("conv_kernel_layer" in names) == (conv_type in ("sdconv", "dconv"))
    assert any(n.endswith(".conv_kernel") for n in grads) == (conv_type == "lconv")
    assert ("conv_out_layer" in names) == (conv_type != "noconv")


def padded_vs_unpadded(mask_conv_padding: bool) -> float:
    torch.manual_seed(0)
    c = make_config(CONFIGS[0], mask_conv_padding=mask_conv_padding, hidden_dropout_prob=0.0)
    model = convbert.ConvBertModel(c).eval()
    ids = torch.randint(1, VOCAB, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    mask = (padded != 0).long()
    with torch.no_grad():
        a = model(ids).last_hidden_state
        b = model(padded, mask).last_hidden_state[:, :10]
    return (a - b).abs().max().item()


def test_mask_conv_padding_makes_real_tokens_independent_of_padding():
    assert padded_vs_unpadded(True) <= 1e-6


def test_reference_behaviour_conv_sees_padding():
    """Documented reference behaviour (transformers and the official TF code): pads leak into the conv."""
    assert padded_vs_unpadded(False) > 1e-4


def test_over_long_input_is_an_error():
    model = convbert.ConvBertModel(make_config(CONFIGS[0], max_position_embeddings=16))
    with pytest.raises(convbert.InputError, match="max_position_embeddings"):
        model(torch.ones(1, 17, dtype=torch.long))


def test_generator_head_is_tied():
    model = convbert.ConvBertForMaskedLM(make_config(CONFIGS[0]))
    assert model.generator_lm_head.weight is model.convbert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("conv_type", ["sdconv", "dconv", "lconv", "noconv"])
def test_gradients_match_naive_reference(conv_type):
    """Train-mode gradients of the fast path (custom backward included) against autograd through the naive math."""
    torch.manual_seed(0)
    c = make_config(
        CONFIGS[2],
        conv_type=conv_type,
        mask_conv_padding=conv_type == "dconv",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = convbert.ConvBertModel(c).train()
    ids, mask, types = batch()
    weight = torch.randn(*ids.shape, c.hidden_size, generator=torch.Generator().manual_seed(3))
    grads = []
    for forward in (lambda *a: model(*a).last_hidden_state, lambda *a: naive_encoder(model, *a)):
        model.zero_grad()
        (forward(ids, mask, types) * weight).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        ref = grads[1][name]
        assert (g - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-6, name


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_dropout_keeps_each_element_with_probability_one_minus_p(p):
    """The eager CPU dropout (16 random bits per element): keep rate within 5 sigma of 1 - p in each of the four
    16-bit lanes of a 64-bit draw (a biased lane would show), kept values scaled so that E[out] = x, the
    backward masks the same elements, and torch's seed reproduces the mask."""
    from convbert.model import dropout

    n = 1 << 20
    x = torch.full((n,), 3.0, requires_grad=True)
    torch.manual_seed(0)
    out = dropout(x, p, True)
    kept = out != 0
    sigma = (p * (1 - p) / (n // 4)) ** 0.5
    for lane in range(4):
        assert abs(kept[lane::4].float().mean().item() - (1 - p)) < 5 * sigma
    assert torch.allclose(out[kept], torch.tensor(3.0 / (1 - p)), rtol=1e-4)
    assert abs(out.mean().item() - 3.0) < 5 * 3.0 * (p / (1 - p) / n) ** 0.5
    out.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept], torch.tensor(1 / (1 - p)), rtol=1e-4)
    torch.manual_seed(0)
    assert torch.equal(dropout(x.detach(), p, True), out.detach())
    assert not torch.equal(dropout(x.detach(), p, True), out.detach())
    assert dropout(x, p, False) is x
