"""Named outputs like transformers' (last_hidden_state, hidden_states, attentions, inputs_embeds) and
gradient checkpointing."""

import pytest
import torch
from test_model import CONFIGS, HEADS, batch, make_config

import convbert
from convbert import model as model_module

transformers = pytest.importorskip("transformers")


def close(a, b, atol=1e-5) -> bool:
    return a.shape == b.shape and (a - b).abs().max() <= atol


def both(tmp_path, name: str, spec, seed: int = 0, **kw):
    """Our `name` with random weights and transformers' loaded from its save_pretrained dir, in eval mode."""
    c = make_config(spec, **kw)
    torch.manual_seed(seed)
    ours = getattr(convbert, name)(c).eval()
    ours.save_pretrained(tmp_path)
    return ours, getattr(transformers, name).from_pretrained(tmp_path).eval()


def run(model, inputs, **kw):
    ids, mask, types = inputs
    with torch.no_grad():
        return model(ids, attention_mask=mask, token_type_ids=types, **kw)


@pytest.mark.parametrize("spec", [CONFIGS[0], CONFIGS[1], CONFIGS[4]])  # projection, groups 2, head_ratio 3
def test_encoder_outputs_match_transformers(tmp_path, spec):
    ours, theirs = both(tmp_path, "ConvBertModel", spec)
    inputs = batch()  # padded rows
    flags = {"output_hidden_states": True, "output_attentions": True}
    a, b = run(ours, inputs, **flags), run(theirs, inputs, **flags)
    assert close(a.last_hidden_state, b.last_hidden_state)
    L, (B, T) = ours.config.num_hidden_layers, inputs[0].shape
    assert len(a.hidden_states) == len(b.hidden_states) == L + 1
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        assert close(x, y), f"hidden_states[{i}]"
    assert torch.equal(a.hidden_states[-1], a.last_hidden_state)
    emb = ours.embeddings(inputs[0], inputs[2])
    if hasattr(ours, "embeddings_project"):
        emb = ours.embeddings_project(emb)
    assert close(a.hidden_states[0], emb, 0), "the input to the first layer, after the embedding projection"
    assert len(a.attentions) == len(b.attentions) == L
    for i, (x, y) in enumerate(zip(a.attentions, b.attentions)):
        assert x.shape == (B, ours.config.attention_heads, T, T)
        assert close(x, y), f"attentions[{i}]"
    assert (a.attentions[0][1, :, :, 7:] == 0).all(), "no attention to pads"

    plain = run(ours, inputs)
    assert plain.hidden_states is None and plain.attentions is None
    assert close(plain.last_hidden_state, a.last_hidden_state, 1e-6)  # explicit softmax vs. SDPA


def test_output_indexing_like_transformers(tmp_path):
    ours, theirs = both(tmp_path, "ConvBertForSequenceClassification", CONFIGS[0])
    inputs, labels = batch(), torch.tensor([0, 2, 1])
    for kw in ({}, {"labels": labels}, {"output_hidden_states": True}, {"labels": labels, "output_attentions": True}):
        a, b = run(ours, inputs, **kw), run(theirs, inputs, **kw)
        ta, tb = a.to_tuple(), b.to_tuple()
        assert len(ta) == len(tb) and close(a[0], b[0]), kw
        assert a["logits"] is a.logits
    qa = run(convbert.ConvBertForQuestionAnswering(make_config(CONFIGS[0])).eval(), inputs)
    assert qa[0] is qa.start_logits and qa[1] is qa.end_logits
    assert torch.equal(qa.logits, torch.stack([qa.start_logits, qa.end_logits], -1))


@pytest.mark.parametrize("name", HEADS[1:] + ["ConvBertForPreTraining"])
def test_every_head_passes_hidden_states_and_attentions_up(tmp_path, name):
    mc = name == "ConvBertForMultipleChoice"
    c = make_config(CONFIGS[0]).replace(num_labels=2 if "Question" in name else 3)
    torch.manual_seed(0)
    ours = getattr(convbert, name)(c).eval()
    inputs = batch(choices=2 if mc else None)
    out = run(ours, inputs, output_hidden_states=True, output_attentions=True)
    flat = [t.flatten(0, 1) for t in inputs] if mc else inputs
    enc = run(ours.convbert, flat, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == c.num_hidden_layers + 1 and len(out.attentions) == c.num_hidden_layers
    assert all(torch.equal(x, y) for x, y in zip(out.hidden_states, enc.hidden_states))
    assert all(torch.equal(x, y) for x, y in zip(out.attentions, enc.attentions))
    plain = run(ours, inputs)
    assert plain.hidden_states is None and plain.attentions is None
    if hasattr(transformers, name):  # transformers has no ConvBertForPreTraining
        ours.save_pretrained(tmp_path)
        theirs = getattr(transformers, name).from_pretrained(tmp_path).eval()
        ref = run(theirs, inputs, output_hidden_states=True, output_attentions=True)
        assert all(close(x, y) for x, y in zip(out.hidden_states, ref.hidden_states))
        assert all(close(x, y) for x, y in zip(out.attentions, ref.attentions))


@pytest.mark.parametrize("name", ["ConvBertModel", "ConvBertForMultipleChoice"])
def test_inputs_embeds_is_the_word_embedding_lookup(name):
    torch.manual_seed(0)
    model = getattr(convbert, name)(make_config(CONFIGS[0])).eval()
    ids, mask, types = batch(choices=2 if "Multiple" in name else None)
    embeds = (model if name == "ConvBertModel" else model.convbert).embeddings.word_embeddings(ids)  # (B, [C,] T, E)
    with torch.no_grad():
        a = model(ids, mask, types, output_hidden_states=True)
        b = model(attention_mask=mask, token_type_ids=types, inputs_embeds=embeds, output_hidden_states=True)
        assert torch.equal(a[0], b[0]) and all(map(torch.equal, a.hidden_states, b.hidden_states))
        assert torch.equal(model(ids).to_tuple()[0], model(inputs_embeds=embeds).to_tuple()[0])  # default types
    for bad in ({"input_ids": ids, "inputs_embeds": embeds}, {"attention_mask": mask}):
        with pytest.raises(convbert.InputError, match="exactly one of input_ids and inputs_embeds"):
            model(**bad)


def test_inputs_embeds_matches_transformers(tmp_path):
    ours, theirs = both(tmp_path, "ConvBertModel", CONFIGS[0])
    ids, mask, types = batch()
    embeds = torch.randn(*ids.shape, ours.config.embedding_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = ours(attention_mask=mask, token_type_ids=types, inputs_embeds=embeds).last_hidden_state
        b = theirs(attention_mask=mask, token_type_ids=types, inputs_embeds=embeds).last_hidden_state
    assert close(a, b)


def checkpointed_grads(model, inputs, labels, calls: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    n = len(calls)
    torch.manual_seed(7)  # the same dropout masks, if the recomputation replays them
    out = model(*inputs, labels=labels)
    out.loss.backward()
    assert len(calls) - n == (model.config.num_hidden_layers if model.is_gradient_checkpointing else 0)
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("conv_type", ["sdconv", "lconv"])
def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch, conv_type):
    calls = []

    def counting(*args, **kw):
        calls.append(kw)
        return torch.utils.checkpoint.checkpoint(*args, **kw)

    monkeypatch.setattr(model_module, "checkpoint", counting)
    c = make_config(CONFIGS[0], conv_type=conv_type, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    torch.manual_seed(0)
    model = convbert.ConvBertForSequenceClassification(c).train()
    inputs, labels = batch(), torch.tensor([0, 2, 1])
    assert not model.is_gradient_checkpointing
    loss, grads = checkpointed_grads(model, inputs, labels, calls)
    torch.manual_seed(8)
    assert not torch.equal(model(*inputs, labels=labels).loss, loss), "dropout is on"

    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing and model.convbert.gradient_checkpointing is not None
    loss2, grads2 = checkpointed_grads(model, inputs, labels, calls)
    assert calls[-1] == {"use_reentrant": False}
    assert torch.equal(loss, loss2)
    assert grads.keys() == grads2.keys()
    for name, g in grads.items():
        assert torch.allclose(g, grads2[name], atol=1e-6), name
    with torch.no_grad():  # eval mode does not checkpoint
        n = len(calls)
        model.eval()(*inputs)
        assert len(calls) == n
    model.train()

    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    loss3, grads3 = checkpointed_grads(model, inputs, labels, calls)
    assert torch.equal(loss, loss3) and all(torch.equal(g, grads3[name]) for name, g in grads.items())
