"""Hugging Face hub ids (`org/name[@revision]`) wherever a model or tokenizer dir is taken, resolved offline
against a cache laid out by hand as huggingface_hub lays it out:
`<cache>/models--org--name/{blobs/<sha256>, snapshots/<40-hex commit>/<file> -> ../../blobs/<sha256>, refs/<ref>}`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch

from convbert import ConvBertConfig, ConvBertModel, InputError, cli
from convbert.flops import param_count
from convbert.hub import parse_hub_id, resolve_dir
from convbert.model import load_model_dir
from convbert.tokenizer import SPECIAL_TOKENS, ConvBertTokenizer

hf_constants = pytest.importorskip("huggingface_hub.constants")

REV_A, REV_B = "a" * 40, "b" * 40
FAKE_TOKEN = "hf_" + "x" * 34


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty HF cache in tmp_path, offline; huggingface_hub.constants read the env at import, so patch both."""
    home = tmp_path / "hf_home"
    hub_cache = home / "hub"
    hub_cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"), raising=False)
    return hub_cache


def tokenizer() -> ConvBertTokenizer:
    words = ["the", "cat", "sat", "on", "mat", "##s", "dog", "a"]
    return ConvBertTokenizer.from_vocab({t: i for i, t in enumerate([*SPECIAL_TOKENS, *words])})


def model_dir(path: Path, seed: int) -> Path:
    """A tiny ConvBertModel with tokenizer, saved by our save_pretrained."""
    torch.manual_seed(seed)
    ConvBertModel(ConvBertConfig.preset("tiny", vocab_size=50)).save_pretrained(path, tokenizer=tokenizer())
    return path


def put_in_cache(cache: Path, repo: str, rev: str, src: Path, refs: tuple[str, ...] = ("main",)) -> Path:
    """Place src's files as snapshot `rev` of `repo` (blobs + relative symlinks, as huggingface_hub does)."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / rev
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        try:
            (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
        except OSError:  # no symlinks (Windows without developer mode): huggingface_hub copies too
            (snapshot / f.name).write_bytes(data)
    for ref in refs:
        (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(rev)
    return snapshot


def outputs(model: ConvBertModel) -> torch.Tensor:
    ids = torch.tensor([[2, 5, 6, 7, 3, 0]])
    with torch.no_grad():
        out = model(ids, attention_mask=(ids != 0).long())
    return getattr(out, "last_hidden_state", out)  # a tensor, or the output object's (B, T, d)


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("YituTech/conv-bert-base", ("YituTech/conv-bert-base", None)),
        ("org/name@v1.0", ("org/name", "v1.0")),
        (f"org/name@{REV_A}", ("org/name", REV_A)),
        ("bert-base-uncased", ("bert-base-uncased", None)),
        ("org/name@refs/pr/1", ("org/name", "refs/pr/1")),
        ("./name", None),
        ("/abs/name", None),
        ("a/b/c", None),
        ("org--x/name", None),
        ("org/..name", None),
        ("org/name@", None),
        ("", None),
    ],
)
def test_what_counts_as_a_hub_id(text, parsed):
    assert parse_hub_id(text) == parsed


def test_model_loads_by_id_like_the_dir(cache, tmp_path):
    src = model_dir(tmp_path / "src", seed=0)
    snapshot = put_in_cache(cache, "org/name", REV_A, src)
    assert resolve_dir("org/name") == snapshot
    expected = outputs(ConvBertModel.from_pretrained(src))
    torch.testing.assert_close(outputs(ConvBertModel.from_pretrained("org/name")), expected, rtol=0, atol=0)
    torch.testing.assert_close(outputs(load_model_dir("org/name")), expected, rtol=0, atol=0)


def test_revision_picks_its_snapshot(cache, tmp_path):
    put_in_cache(cache, "org/name", REV_A, model_dir(tmp_path / "a", seed=0))
    put_in_cache(cache, "org/name", REV_B, model_dir(tmp_path / "b", seed=1), refs=("v2",))
    a, b = (outputs(ConvBertModel.from_pretrained(tmp_path / d)) for d in ("a", "b"))
    assert not torch.equal(a, b)
    torch.testing.assert_close(outputs(ConvBertModel.from_pretrained("org/name")), a, rtol=0, atol=0)
    torch.testing.assert_close(outputs(ConvBertModel.from_pretrained("org/name@main")), a, rtol=0, atol=0)
    torch.testing.assert_close(outputs(ConvBertModel.from_pretrained(f"org/name@{REV_B}")), b, rtol=0, atol=0)
    torch.testing.assert_close(outputs(ConvBertModel.from_pretrained("org/name@v2")), b, rtol=0, atol=0)


def test_tokenizer_loads_by_id(cache, tmp_path):
    src = model_dir(tmp_path / "src", seed=0)
    put_in_cache(cache, "org/name", REV_A, src)
    for name in ("org/name", f"org/name@{REV_A}"):
        tok = ConvBertTokenizer.from_pretrained(name)
        assert tok.encode("the cats sat on a mat") == ConvBertTokenizer.from_pretrained(src).encode(
            "the cats sat on a mat"
        )
        assert tok.vocab_size == tokenizer().vocab_size


def test_flops_cli_takes_a_hub_id(cache, tmp_path, capsys):
    put_in_cache(cache, "org/name", REV_A, model_dir(tmp_path / "src", seed=0))
    assert cli.main(["flops", "--model", "org/name"]) == 0
    count = param_count(ConvBertConfig.from_json_file(tmp_path / "src" / "config.json"))
    assert f"{count:,}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["flops", "--model", "org/missing"],
        ["convert", "from-hf", "--model", "org/missing", "--out", "OUT"],
        ["export", "onnx", "--model", "org/missing", "--output", "OUT.onnx", "--no-verify"],
    ],
)
def test_missing_id_offline_exits_2_and_says_what_to_do(cache, tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    put_in_cache(cache, "org/other", REV_A, model_dir(tmp_path / "src", seed=0))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "org/missing" in err and f"not in the Hugging Face cache at {cache}" in err
    assert "network" in err and "huggingface-cli download org/missing" in err and "local directory" in err
    assert FAKE_TOKEN not in err
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "OUT.onnx").exists()


def test_missing_revision_offline_names_it(cache, tmp_path):
    put_in_cache(cache, "org/name", REV_A, model_dir(tmp_path / "src", seed=0))
    with pytest.raises(InputError, match="org/name@v9.*not in the Hugging Face cache.*download org/name --revision v9"):
        ConvBertModel.from_pretrained("org/name@v9")


def test_local_dir_named_like_an_id_wins(cache, tmp_path, monkeypatch):
    put_in_cache(cache, "org/name", REV_A, model_dir(tmp_path / "cached", seed=0))
    monkeypatch.chdir(tmp_path)
    model_dir(Path("org/name"), seed=1)
    local = outputs(ConvBertModel.from_pretrained(tmp_path / "org" / "name"))
    assert resolve_dir("org/name") == Path("org/name")
    torch.testing.assert_close(outputs(ConvBertModel.from_pretrained("org/name")), local, rtol=0, atol=0)
    assert not torch.equal(local, outputs(ConvBertModel.from_pretrained(tmp_path / "cached")))


def test_not_an_id_keeps_the_local_error(cache, tmp_path):
    with pytest.raises(InputError, match="not a model directory"):
        ConvBertModel.from_pretrained(tmp_path / "nowhere" / "a" / "b")
    with pytest.raises(InputError, match="no such tokenizer file or directory"):
        ConvBertTokenizer.from_pretrained(tmp_path / "nowhere" / "a" / "b")


def test_without_huggingface_hub_says_pip_install(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    with pytest.raises(InputError, match=r"org/name: .*pip install convbert\[hub\]"):
        ConvBertModel.from_pretrained("org/name")
    with pytest.raises(InputError, match=r"pip install convbert\[hub\]"):
        ConvBertTokenizer.from_pretrained("org/name")


def test_other_hub_errors_name_the_id_and_no_token(cache, monkeypatch):
    import huggingface_hub

    def fail(repo_id, **kw):
        raise RuntimeError(f"server said no to Authorization: Bearer {FAKE_TOKEN}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(InputError, match="org/name: cannot fetch hub id org/name: RuntimeError") as e:
        ConvBertModel.from_pretrained("org/name")
    assert FAKE_TOKEN not in str(e.value)
