"""ELECTRA objective and the pretraining loop: masking statistics, labels, sampling, tying, exact resume, DDP."""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from convbert import ConvBertConfig, ConvBertModel
from convbert.counter_rng import uniform
from convbert.pretraining.config import PretrainConfig
from convbert.pretraining.data import prepare
from convbert.pretraining.heldout import held_out_split
from convbert.pretraining.objective import (
    STATS,
    ElectraPretrainer,
    example_keys,
    generator_config,
    mask_tokens,
    max_predictions,
    sample_tokens,
)
from convbert.pretraining.recipe import Batches, pretrain
from convbert.pretraining.shards import PretrainShards
from convbert.tokenizer import ConvBertTokenizer
from convbert.tools.fetch import read_vader

CLS, SEP, PAD, MASK = 2, 3, 0, 4


def test_generator_sizes_follow_the_paper():
    for preset, frac, (d, h, f) in (
        ("small", 1 / 4, (64, 1, 256)),
        ("medium-small", 1 / 4, (96, 2, 384)),
        ("base", 1 / 3, (256, 4, 1024)),
    ):
        g = generator_config(ConvBertConfig.preset(preset), frac)
        ref = ConvBertConfig.preset(f"{preset}-generator")
        assert (g.hidden_size, g.num_attention_heads, g.intermediate_size) == (d, h, f)
        assert (ref.hidden_size, ref.num_attention_heads, ref.intermediate_size) == (d, h, f)


def random_batch(B=400, T=128, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (B, T), generator=g)
    lengths = torch.randint(8, T + 1, (B,), generator=g)
    ids[:, 0] = CLS
    for b, n in enumerate(lengths.tolist()):
        ids[b, n - 1] = SEP
        ids[b, n // 2] = SEP
        ids[b, n:] = PAD
    special = torch.zeros(vocab, dtype=torch.bool)
    special[[CLS, SEP, PAD, MASK]] = True
    return ids, special


def keys_for(seed, step, n):
    return torch.from_numpy(example_keys(seed, step, np.arange(n)))


def selected_of(m):
    """(B, T) bool: the positions of the real prediction slots."""
    return torch.zeros_like(m.masked_ids, dtype=torch.bool).scatter(1, m.positions, m.weights)


def test_uniform_hash_is_uniform_and_streams_are_independent():
    keys = keys_for(0, 0, 4096)
    u = uniform(keys, 1, torch.arange(256))  # (4096, 256): 1M draws
    assert u.dtype == torch.float32 and 0 <= u.min() and u.max() < 1
    counts = torch.histc(u, bins=64, min=0, max=1)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    assert abs(u.mean() - 0.5) < 2e-3 and abs(u.var() - 1 / 12) < 1e-3
    other = uniform(keys, 2, torch.arange(256))
    for a, b in ((u, other), (u[:, :-1], u[:, 1:]), (u[:-1], u[1:])):  # streams, neighbouring positions, examples
        assert abs(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]) < 5e-3
    assert torch.equal(u, uniform(keys, 1, torch.arange(256))), "a pure function of (key, stream, counter)"


def test_example_keys_are_a_function_of_seed_step_and_index():
    a = example_keys(3, 7, np.arange(8))
    assert a.dtype == np.int64 and (a >= 0).all() and len(set(a.tolist())) == 8
    assert (example_keys(3, 7, np.arange(4, 8)) == a[4:]).all()
    assert not (example_keys(3, 8, np.arange(8)) == a).any() and not (example_keys(4, 7, np.arange(8)) == a).any()


def test_masking_statistics():
    ids, special = random_batch()
    m = mask_tokens(ids, special, MASK, keys_for(0, 0, len(ids)))
    selected = selected_of(m)
    P = max_predictions(128, 0.15)
    assert m.positions.shape == m.weights.shape == (len(ids), P) == (len(ids), 19), "static slots"
    candidates = ~special[ids]
    assert not (selected & ~candidates).any(), "[CLS]/[SEP]/[PAD] are never selected"
    n_cand, n_sel = candidates.sum(1), selected.sum(1)
    expected = torch.clamp(torch.round(n_cand * 0.15), 1, P)
    assert torch.equal(n_sel, expected), "round(15%) per sequence, at least 1, at most max_predictions (19)"
    assert torch.equal(m.weights.sum(1), n_sel) and (m.positions.sort(1).values.diff(dim=1) > 0).all()
    changed = m.masked_ids != ids
    assert not (changed & ~selected).any()
    assert (m.masked_ids[changed] == MASK).all(), "no random-token replacement: only [MASK]"
    n, k = int(selected.sum()), int(changed.sum())
    assert stats.binomtest(k, n, 0.85).pvalue > 1e-3, f"85% of selected positions become [MASK], got {k / n:.3f}"
    # the draw is uniform over candidate positions: position frequencies are flat
    per_pos = selected[:, 1:60].float().sum(0) / candidates[:, 1:60].float().sum(0)
    assert per_pos.std() < 0.03 and abs(per_pos.mean() - 0.15) < 0.02


def test_masks_and_samples_depend_only_on_the_example():
    """What a global batch gets does not depend on how it is split over ranks or micro-batches."""
    ids, special = random_batch(B=8)
    keys = keys_for(3, 7, 8)
    whole = mask_tokens(ids, special, MASK, keys)
    halves = [mask_tokens(ids[sl], special, MASK, keys[sl]) for sl in (slice(0, 4), slice(4, 8))]
    for field in ("masked_ids", "positions", "weights"):
        assert torch.equal(getattr(whole, field), torch.cat([getattr(h, field) for h in halves]))
    log_probs = torch.randn(8, whole.positions.shape[1], 1000).log_softmax(-1)
    s = sample_tokens(log_probs, keys, whole.positions)
    assert torch.equal(
        s, torch.cat([sample_tokens(log_probs[sl], keys[sl], whole.positions[sl]) for sl in (slice(0, 4), slice(4, 8))])
    )
    assert not torch.equal(whole.masked_ids, mask_tokens(ids, special, MASK, keys_for(3, 8, 8)).masked_ids)


def test_sampling_is_categorical_under_the_softmax():
    """One inverse-CDF draw per slot has the generator's distribution (ELECTRA draws it by Gumbel-max)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g) * 2
    log_probs = logits.log_softmax(-1).expand(500, 100, 50)  # 50,000 slots with one distribution
    s = sample_tokens(log_probs, keys_for(0, 0, 500), torch.arange(100).expand(500, 100))
    assert not s.requires_grad and s.min() >= 0 and s.max() < 50
    observed = torch.bincount(s.flatten(), minlength=50).double()
    expected = logits.double().softmax(-1) * s.numel()
    assert stats.chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3
    assert (
        sample_tokens(torch.tensor([[[0.0, -1e9, -1e9]]]), keys_for(0, 0, 1), torch.zeros(1, 1, dtype=torch.long)) == 0
    ).all(), "a certain token is always drawn"


def tiny_pretrainer(objective="electra", dropout=0.1):
    c = ConvBertConfig.preset("tiny", vocab_size=60, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    return ElectraPretrainer(c, generator_config(c, 0.25), [CLS, SEP, PAD, MASK], MASK, objective)


def test_embeddings_are_tied_and_labels_are_built_from_samples():
    model = tiny_pretrainer(dropout=0.0)
    g, dsc = model.generator.convbert.embeddings, model.discriminator.convbert.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        assert getattr(g, name) is getattr(dsc, name)
    assert model.generator.generator_lm_head.weight is dsc.word_embeddings.weight
    assert hasattr(model.generator.convbert, "embeddings_project")  # own projection E -> d_gen

    ids, _ = random_batch(B=6, T=24, vocab=60)
    mask = (ids != PAD).long()
    keys = keys_for(0, 0, 6)
    captured = {}
    disc_forward = model.discriminator.forward
    model.discriminator.forward = lambda x, *a, **k: captured.setdefault("x", x) is not None and disc_forward(x, *a)
    out = model(ids, mask, torch.zeros_like(ids), keys)
    corrupted = captured["x"]
    m = mask_tokens(ids, model.special, MASK, keys)
    selected = selected_of(m)
    assert torch.equal(corrupted[~selected], ids[~selected]), "only masked positions are replaced"
    # the samples are the generator's, drawn from its distribution at the masked positions
    h = model.generator.convbert(m.masked_ids, mask, torch.zeros_like(ids)).last_hidden_state
    log_probs = model.generator.predict(h).log_softmax(-1)
    drawn = sample_tokens(log_probs.gather(1, m.positions[..., None].expand(-1, -1, 60)), keys, m.positions)
    assert torch.equal(corrupted.gather(1, m.positions)[m.weights], drawn[m.weights])
    targets = ids.gather(1, m.positions)
    nll = -log_probs.gather(-1, ids[..., None]).squeeze(-1).gather(1, m.positions)
    assert torch.allclose(out.mlm_loss, nll[m.weights].mean(), atol=1e-6), "MLM loss over the real slots only"
    # the loss is MLM + 50 x BCE(replaced = sample != original) over real tokens
    disc_logits = disc_forward(corrupted, mask, torch.zeros_like(ids)).logits
    real = mask.bool()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(disc_logits[real], (corrupted != ids)[real].float())
    assert torch.allclose(out.disc_loss, bce, atol=1e-6)
    assert torch.allclose(out.loss, out.mlm_loss + 50 * out.disc_loss, atol=1e-5)
    counts = dict(zip(STATS, out.stats.tolist()))
    sampled_same = (corrupted == ids) & selected
    assert counts["replaced"] == ((corrupted != ids) & real).sum()
    assert sampled_same.sum() + counts["replaced"] == selected.sum() == counts["masked"]
    assert counts["gen_correct"] == ((log_probs.argmax(-1).gather(1, m.positions) == targets) & m.weights).sum()


def test_mlm_objective_has_no_discriminator():
    model = tiny_pretrainer("mlm")
    assert not hasattr(model, "discriminator")
    ids, _ = random_batch(B=4, T=16, vocab=60)
    out = model(ids, (ids != PAD).long(), torch.zeros_like(ids), keys_for(0, 0, 4))
    assert out.disc_loss == 0 and torch.isfinite(out.mlm_loss)


def test_the_pretraining_step_compiles_as_one_graph():
    """fullgraph=True fails on any graph break, so the forward has no host sync; with dropout off it computes
    what eager computes, and its gradients too."""
    ids, _ = random_batch(B=4, T=16, vocab=60)
    args = (ids, (ids != PAD).long(), torch.zeros_like(ids), keys_for(0, 0, 4))
    eager, compiled = tiny_pretrainer(dropout=0.0), tiny_pretrainer(dropout=0.0)
    compiled_forward = torch.compile(compiled, fullgraph=True, dynamic=False)
    a, b = eager(*args), compiled_forward(*args)
    for name in ("loss", "mlm_loss", "disc_loss"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-5), name
    assert torch.equal(a.stats, b.stats)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    with_dropout = torch.compile(tiny_pretrainer(dropout=0.1), fullgraph=True, dynamic=False)
    torch.manual_seed(0)
    first = with_dropout(*args).loss
    torch.manual_seed(0)
    assert torch.equal(first, with_dropout(*args).loss), "compiled dropout follows torch's generator state"
    assert not torch.allclose(first, b.loss)


# ------------------------------------------------------------------------------------------ the loop
@pytest.fixture(scope="module")
def corpus(tmp_path_factory, vader_dir):
    """Real text (VADER sentences, 20 a document), a WordPiece vocab trained on it, and 64-token shards."""
    root = tmp_path_factory.mktemp("pretrain")
    rows = [
        t
        for name in ("movieReviewSnippets", "nytEditorialSnippets")
        for _, _, t in read_vader(vader_dir / f"{name}_GroundTruth.txt")
    ]
    text = root / "corpus.txt"
    text.write_text("".join(f"{t}\n" + ("\n" if i % 20 == 19 else "") for i, t in enumerate(rows)))
    tok = ConvBertTokenizer.train([text], vocab_size=2000)
    tok.save_pretrained(root / "tok")
    prepare([text], root / "tok", root / "shards", max_seq_length=32, num_workers=1)
    return root


def cli(*args, env_extra=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "convbert", *args], env=env, **kw)


def base_args(corpus, out, steps):
    return [
        "pretrain",
        "--data",
        str(corpus / "shards"),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--max-steps",
        str(steps),
        "--log-every",
        "2",
        "--seed",
        "1",
    ]


def final_weights(run: Path):
    return load_file(run / "discriminator" / "model.safetensors"), load_file(run / "generator" / "model.safetensors")


def test_resume_after_sigkill_is_bit_identical(corpus, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert cli(*base_args(corpus, straight, 8), "--save-every", "4", "--micro-batch-size", "4").wait() == 0
    p = cli(
        *base_args(corpus, killed, 8),
        "--save-every",
        "4",
        "--micro-batch-size",
        "4",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "step-00000004").exists():
        assert p.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "discriminator").exists()
    assert (
        cli(*base_args(corpus, killed, 8), "--save-every", "4", "--micro-batch-size", "4", "--resume", "auto").wait()
        == 0
    )
    for a, b in zip(final_weights(straight), final_weights(killed)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    rows = (killed / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6", "8"]


def test_resume_skips_a_corrupt_checkpoint(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    cfg = PretrainConfig(
        data=str(corpus / "shards"),
        out=str(run),
        preset="tiny",
        batch_size=4,
        max_steps=4,
        save_every=2,
        log_every=2,
        resume="none",
    )
    pretrain(cfg)
    (run / "step-00000004" / "optimizer.safetensors").write_bytes(b"garbage")
    import dataclasses

    pretrain(dataclasses.replace(cfg, max_steps=6, resume="auto"))
    assert "skipping" in caplog.text and "step-00000004" in caplog.text
    assert (run / "step-00000006").exists()


def test_loss_falls_and_exports_load_in_transformers(corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    run = tmp_path / "run"
    pretrain(
        PretrainConfig(
            data=str(corpus / "shards"),
            out=str(run),
            preset="tiny",
            batch_size=16,
            max_steps=40,
            save_every=40,
            log_every=5,
            lr=2e-3,
        )
    )
    import csv

    rows = list(csv.DictReader((run / "log.csv").open()))
    first, last = rows[0], rows[-1]
    assert float(last["disc_loss"]) < float(first["disc_loss"])
    assert float(last["mlm_loss"]) < float(first["mlm_loss"])
    evals = list(csv.DictReader((run / "eval.csv").open()))  # held-out: every 4 steps (10 a run) and at the end
    assert [int(r["step"]) for r in evals] == list(range(4, 41, 4))
    for r in evals:
        assert 0 <= float(r["disc_auc"]) <= 1 and 0 < float(r["constant_loss"]) < math.log(2)
        assert float(r["tokens"]) > 0 and 0 < float(r["replaced_frac"]) < 1
    assert float(evals[-1]["mlm_loss"]) < float(evals[0]["mlm_loss"])
    assert float(evals[-1]["disc_loss"]) < float(evals[-1]["constant_loss"]), "it detects replaced tokens"
    assert float(evals[-1]["disc_auc"]) > 0.6
    assert all(0 < float(r["token_cosine"]) < 1 for r in evals)
    if importlib.util.find_spec("matplotlib"):
        from convbert.tools.plots import plot_run

        assert plot_run(run).stat().st_size > 10_000  # curves.png with the held-out panels
    _, info = transformers.ConvBertModel.from_pretrained(run / "discriminator", output_loading_info=True)
    assert not info["missing_keys"]
    _, info = transformers.ConvBertForMaskedLM.from_pretrained(run / "generator", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert ConvBertModel.from_pretrained(run / "discriminator").config.vocab_size == 2000


def test_held_out_evaluation_is_fixed_and_in_eval_mode(corpus):
    """The same weights give the same held-out numbers (no dropout, fixed corruptions), whatever the run seed."""
    from convbert.pretraining.heldout import evaluate

    shards = PretrainShards(corpus / "shards")
    _, rows = held_out_split(len(shards), 1024)
    tok = ConvBertTokenizer.from_pretrained(corpus / "tok")
    config = ConvBertConfig.preset("tiny", vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    model = ElectraPretrainer(
        config, generator_config(config, 0.25), sorted(tok.special_token_ids), tok.mask_token_id
    ).train()
    torch.manual_seed(1)
    a = evaluate(model, shards, rows, 7, "fp32", torch.device("cpu"))
    torch.manual_seed(2)
    b = evaluate(model, shards, rows, 16, "fp32", torch.device("cpu"))
    assert model.training, "the model goes back to training mode"
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-5), k
    assert 0.3 < a["disc_auc"] < 0.7, "an untrained discriminator is near chance"
    assert 0.0 < a["token_cosine"] < 0.9, "a random encoder's tokens are not one vector"


def test_token_cosine_matches_pairwise_and_flags_collapse():
    from convbert.pretraining.heldout import token_cosine

    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 6, 8, generator=g)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    got = token_cosine(h, mask)
    for b in range(3):
        u = torch.nn.functional.normalize(h[b, : int(mask[b].sum())], dim=-1)
        c = u @ u.T
        n = len(u)
        assert got[b] == pytest.approx(float((c.sum() - c.diag().sum()) / (n * (n - 1))), abs=1e-6)
    collapsed = torch.randn(1, 1, 8, generator=g).expand(2, 6, 8) * torch.rand(2, 6, 1, generator=g)
    assert torch.allclose(token_cosine(collapsed, mask[:2]), torch.ones(2), atol=1e-6)


def test_vocab_mismatch_is_an_error(corpus, tmp_path):
    other = ConvBertTokenizer.train([corpus / "corpus.txt"], vocab_size=500)
    other.save_pretrained(tmp_path / "tok")
    from convbert.errors import InputError

    with pytest.raises(InputError, match="different vocabulary"):
        pretrain(
            PretrainConfig(
                data=str(corpus / "shards"),
                out=str(tmp_path / "r"),
                tokenizer=str(tmp_path / "tok"),
                preset="tiny",
                batch_size=2,
                max_steps=1,
            )
        )


def test_batches_split_the_global_batch_over_ranks(corpus):
    shards = PretrainShards(corpus / "shards")
    train, held_out = held_out_split(len(shards), 1024)
    assert len(held_out) == min(1024, len(shards) // 10) and not set(train) & set(held_out)
    assert len(train) + len(held_out) == len(shards)
    one = Batches(train, 8, 0, 0, 1)
    two = [Batches(train, 8, 0, r, 2) for r in range(2)]
    for step in (0, 5, len(shards) // 8 + 1):  # also across an epoch boundary
        whole = one.rows(one.local(step))
        parts = [b.rows(b.local(step)) for b in two]
        assert list(whole) == [*parts[0], *parts[1]]
        assert not set(whole) & set(held_out), "held-out rows are never trained on"


def test_torchrun_two_processes_equal_one(corpus, tmp_path):
    """Same global batch, 2 gloo ranks vs 1 process with 2 micro-batches: the same weights (dropout off)."""
    common = ["model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0"]
    single = tmp_path / "single"
    assert cli(*base_args(corpus, single, 3), "--micro-batch-size", "4", *common).wait() == 0
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "convbert",
        *base_args(corpus, ddp, 3),
        *common,
    ]
    assert subprocess.run(cmd, env=env, timeout=300).returncode == 0
    for a, b in zip(final_weights(single), final_weights(ddp)):
        for k in a:
            assert (a[k] - b[k]).abs().max() <= 1e-5, k


def test_non_finite_losses_skip_steps_then_stop(corpus, tmp_path, monkeypatch, caplog):
    """A NaN loss skips the step (logged); too many in a row stop the run, the last good checkpoint intact."""
    import convbert.pretraining.objective as electra

    calls = {"n": 0}
    real_forward = electra.ElectraPretrainer.forward

    def flaky(self, *args, **kw):
        out = real_forward(self, *args, **kw)
        calls["n"] += 1
        if calls["n"] > 4:  # steps 1-4 are fine, then every loss is NaN
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(electra.ElectraPretrainer, "forward", flaky)
    run = tmp_path / "run"
    cfg = PretrainConfig(
        data=str(corpus / "shards"),
        out=str(run),
        preset="tiny",
        batch_size=4,
        max_steps=20,
        save_every=2,
        log_every=1,
        max_bad_steps=3,
        resume="none",
        eval_every=0,
    )
    with pytest.raises(RuntimeError, match="3 non-finite losses in a row at step 6"):
        pretrain(cfg)
    assert "step 4: non-finite loss" in caplog.text
    good = load_file(run / "step-00000004" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (run / "step-00000006").exists()
    skipped = [r.split(",")[-1] for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert skipped == ["0", "0", "0", "0", "1", "1"]


def test_run_config_reruns_the_same_run(corpus, tmp_path):
    """The resolved settings a run writes (run_config.json) read back with --config give the same run."""
    first, again = tmp_path / "first", tmp_path / "again"
    assert cli(*base_args(corpus, first, 3), "model.hidden_dropout_prob=0.05", "mask_prob=0.2").wait() == 0
    saved = json.loads((first / "run_config.json").read_text())
    assert saved["mask_prob"] == 0.2 and saved["model"] == {"hidden_dropout_prob": 0.05} and saved["lr"] == 1e-3
    assert cli("pretrain", "--config", str(first / "run_config.json"), f"out={again}").wait() == 0
    assert json.loads((again / "run_config.json").read_text()) == {**saved, "out": str(again)}
    for a, b in zip(final_weights(first), final_weights(again)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_sweep_exports_any_checkpoint_of_a_run_still_under_way(corpus, tmp_path):
    import shutil

    spec = importlib.util.spec_from_file_location(
        "pretraining_sweep", Path(__file__).parents[1] / "benchmarks" / "pretraining_sweep.py"
    )
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    run = tmp_path / "run"
    cfg = PretrainConfig(
        data=str(corpus / "shards"),
        out=str(run),
        preset="tiny",
        model={"num_hidden_layers": 1, "hidden_dropout_prob": 0.0},
        batch_size=4,
        max_steps=4,
        save_every=2,
        log_every=2,
        lr=1e-2,
    )
    pretrain(cfg)
    final = ConvBertModel.from_pretrained(run / "discriminator")  # what the finished run exports
    shutil.rmtree(run / "discriminator")  # as in a run still under way
    shutil.rmtree(run / "generator")
    tok = ConvBertTokenizer.from_pretrained(corpus / "tok")
    mid, end = (ConvBertModel.from_pretrained(sweep.checkpoint_model(run, s, tok)) for s in (2, 4))
    assert end.config.num_hidden_layers == 1 and end.config.hidden_dropout_prob == 0.1  # fine-tuning's dropout
    expected = final.state_dict()
    assert end.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in end.state_dict().items())
    assert not all(torch.equal(v, expected[k]) for k, v in mid.state_dict().items())
