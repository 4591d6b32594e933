"""Bad input to the run commands (pretrain, finetune, evaluate, predict) exits 2 with `convbert: error: ...` naming
the file or field, and writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from glue_fixture import TINY_VOCAB
from test_finetune import SENTENCES, classifier_dir, one_thread, root, run, write_custom  # noqa: F401
from test_pretrain import corpus  # noqa: F401

from convbert.pretraining.shards import VERIFIED, PretrainShards


def failed(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run the CLI; it must exit 2 with a `convbert: error:` line; returns stderr."""
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert "convbert: error: " in err
    return err


# ----------------------------------------------------------------------------------- (A) pretraining shards
def copy_shards(base: Path, tmp_path: Path) -> Path:
    data = tmp_path / "shards"
    shutil.copytree(base / "shards", data)
    (data / VERIFIED).unlink(missing_ok=True)
    return data


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str | Path]:
    return ["pretrain", "--data", data, "--out", out, "--preset", "tiny", "--batch-size", "4", "--max-steps", "1",
            "--eval-every", "0", "--device", "cpu", "--no-compile", *extra]  # fmt: skip


def edit_manifest(data: Path, change: Callable[[dict], None]) -> None:
    path = data / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_tokenizer(data: Path) -> str:
    edit_manifest(data, lambda m: m.pop("tokenizer"))
    return "manifest.json: missing key 'tokenizer'"


def _bad_vocab_size(data: Path) -> str:
    edit_manifest(data, lambda m: m["tokenizer"].update(vocab_size="2000"))
    return "manifest.json: tokenizer.vocab_size must be a positive integer, got '2000'"


def _no_rows_file(data: Path) -> str:
    edit_manifest(data, lambda m: m["shards"][0].pop("rows_file"))
    return "manifest.json: missing key 'shards[0].rows_file'"


def _bad_max_seq_length(data: Path) -> str:
    edit_manifest(data, lambda m: m.update(max_seq_length=[32]))
    return "manifest.json: max_seq_length must be a positive integer"


def _changed_shard(data: Path) -> str:
    shard = data / json.loads((data / "manifest.json").read_text())["shards"][0]["file"]
    raw = bytearray(shard.read_bytes())
    raw[0] ^= 1  # same size, other content: only the sha256 tells
    shard.write_bytes(bytes(raw))
    return f"{shard}: sha256 does not match"


def _token_id_beyond_vocab(data: Path) -> str:
    manifest = json.loads((data / "manifest.json").read_text())
    shard = data / manifest["shards"][0]["file"]
    ids = np.fromfile(shard, dtype=manifest["dtype"])
    ids[1] = 65000  # vocab: 2000 tokens
    ids.tofile(shard)
    edit_manifest(data, lambda m: m["shards"][0].update(sha256=sha256(shard)))  # consistent, but out of range
    return f"{shard}: token ids 0..65000 outside the vocabulary of 2000 tokens"


def _negative_length(data: Path) -> str:
    rows_file = data / json.loads((data / "manifest.json").read_text())["shards"][0]["rows_file"]
    rows = np.load(rows_file)
    rows[3, 0] = -3
    np.save(rows_file, rows)
    edit_manifest(data, lambda m: m["shards"][0].update(rows_sha256=sha256(rows_file)))
    return f"{rows_file}: row 3 has length -3"


def _too_long_row(data: Path) -> str:
    rows_file = data / json.loads((data / "manifest.json").read_text())["shards"][0]["rows_file"]
    rows = np.load(rows_file)
    rows[0, 0] = 33  # max_seq_length 32
    np.save(rows_file, rows)
    return f"{rows_file}: row 0 has length 33"


@pytest.mark.parametrize(
    "case",
    [
        _no_tokenizer,
        _bad_vocab_size,
        _no_rows_file,
        _bad_max_seq_length,
        _changed_shard,
        _token_id_beyond_vocab,
        _negative_length,
        _too_long_row,
    ],  # fmt: skip
)
def test_bad_shards_exit_2_before_the_run_writes(corpus, tmp_path, capsys, case):  # noqa: F811
    data = copy_shards(corpus, tmp_path)
    message = case(data)
    out = tmp_path / "run"
    assert message in failed(capsys, *pretrain_args(data, out))
    assert not out.exists()


def test_token_ids_are_checked_against_the_model_vocab(corpus, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    err = failed(capsys, *pretrain_args(copy_shards(corpus, tmp_path), out, "model.vocab_size=100"))
    assert "does not fit the model's vocab_size 100" in err and "shard-00000.bin" in err
    assert not out.exists()


def test_verification_is_cached_by_size_and_mtime(corpus, tmp_path, monkeypatch):  # noqa: F811
    data = copy_shards(corpus, tmp_path)
    first = PretrainShards(data).ensure_verified()
    assert (data / VERIFIED).exists() and all(0 <= lo <= hi < 2000 for lo, hi in first)

    def hashed_again(self):
        raise AssertionError("hashed again")

    monkeypatch.setattr(PretrainShards, "verify", hashed_again)
    assert PretrainShards(data).ensure_verified() == first  # a second run skips hashing
    shard = data / PretrainShards(data).shards[0]["file"]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssertionError, match="hashed again"):
        PretrainShards(data).ensure_verified()


# ------------------------------------------------------------------------------ (B) finetune / evaluate / predict
@pytest.fixture(scope="module")
def clf(root, tmp_path_factory) -> Path:  # noqa: F811
    return classifier_dir(root, tmp_path_factory.mktemp("clf") / "clf", ["neg", "pos"])


@pytest.fixture(scope="module")
def big_tokenizer(tmp_path_factory) -> Path:
    """A vocab.txt with more tokens than the tiny models' embedding."""
    d = tmp_path_factory.mktemp("big-vocab")
    (d / "vocab.txt").write_text("".join(t + "\n" for t in [*TINY_VOCAB, *(f"extra{i}" for i in range(40))]))
    return d


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "sst2", "--max-length", "1"], "--max-length 1 is too short: it must be at least 3"),
        (["--task", "mrpc", "--max-length", "4"], "--max-length 4 is too short: it must be at least 5"),
        (["--task", "squad", "--max-length", "100"], "--max-length 100 must exceed --max-query-length 64 + 3"),
        (["--task", "sst2", "--batch-size", "0"], "batch_size must be 1 <= batch_size, got 0"),
        (["--task", "sst2", "--batch-size", "-3"], "batch_size must be 1 <= batch_size, got -3"),
        (["--task", "sst2", "--lr", "nan"], "lr must be a finite number, got nan"),
    ],
)
def test_finetune_bad_arguments(root, tmp_path, capsys, args, message):  # noqa: F811
    out = tmp_path / "out"
    data = [] if "squad" in args else ["--data", root / "glue"]
    assert message in failed(capsys, "finetune", "--model", root / "model", "--out", out, *data, *args)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_tokenizer_larger_than_the_model_vocab(root, clf, big_tokenizer, tmp_path, capsys):  # noqa: F811
    expected = f"tokenizer vocab size {len(TINY_VOCAB) + 40} exceeds the model config's vocab_size {len(TINY_VOCAB)}"
    out = tmp_path / "out"
    glue = ["--task", "sst2", "--data", root / "glue"]
    assert expected in failed(
        capsys, "finetune", "--model", root / "model", "--out", out, *glue, "--tokenizer", big_tokenizer
    )
    report = tmp_path / "eval.json"
    assert expected in failed(
        capsys, "evaluate", "--model", clf, *glue, "--tokenizer", big_tokenizer, "--output", report
    )
    texts = write_custom(tmp_path / "in.jsonl", [{"text": s} for s in SENTENCES])
    predictions = tmp_path / "p.jsonl"
    assert expected in failed(
        capsys, "predict", "--model", clf, "--input", texts, "--output", predictions, "--tokenizer", big_tokenizer
    )
    assert not out.exists() and not report.exists() and not predictions.exists()


def test_predict_and_evaluate_bad_arguments(root, clf, tmp_path, capsys):  # noqa: F811
    texts = write_custom(tmp_path / "in.jsonl", [{"text": s} for s in SENTENCES])
    pairs = write_custom(tmp_path / "pairs.jsonl", [{"text": s, "text_pair": "it is so"} for s in SENTENCES])
    p = tmp_path / "p.jsonl"
    predict = ["predict", "--model", clf, "--output", p]
    assert "--max-length 1 is too short" in failed(capsys, *predict, "--input", texts, "--max-length", "1")
    assert "--max-length 4 is too short: it must be at least 5" in failed(
        capsys, *predict, "--input", pairs, "--max-length", "4"
    )  # the pair is known once the input is read
    assert "batch_size must be 1 <= batch_size, got 0" in failed(
        capsys, *predict, "--input", texts, "--batch-size", "0"
    )
    assert not p.exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    err = failed(capsys, "predict", "--model", clf, "--input", texts, "--output", folder)
    assert f"--output {folder}: is a directory" in err
    err = failed(capsys, "evaluate", "--model", clf, "--task", "sst2", "--data", root / "glue", "--output", folder)
    assert f"--output {folder}: is a directory" in err
    assert not list(folder.iterdir())
    assert run(*predict, "--input", pairs, "--max-length", "5") == 0  # the least that fits a pair


# ---------------------------------------------------------------------------------------- (C) pretrain settings
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (['batch_size="abc"'], "override: batch_size must be an integer, got"),
        (["model.zzz=1"], "model.zzz: not a ConvBertConfig field"),
        (["--lr", "-1"], "lr must be 0 < lr, got -1.0"),
        (["adam_eps=-1"], "adam_eps must be 0 < adam_eps, got -1.0"),
        (['max_grad_norm="x"'], "override: max_grad_norm must be a finite number, got"),
        (["--micro-batch-size", "-1"], "micro_batch_size must be 1 <= micro_batch_size, got -1"),
        (["--micro-batch-size", "3"], "micro_batch_size 3 does not divide the per-process batch 4"),
        (["mask_prob=2"], "mask_prob must be 0 < mask_prob <= 1, got 2.0"),
        (["disc_weight=nan"], "disc_weight must be a finite number, got nan"),
    ],
)
def test_pretrain_bad_settings(corpus, tmp_path, capsys, args, message):  # noqa: F811
    out = tmp_path / "run"
    assert message in failed(capsys, *pretrain_args(corpus / "shards", out, *args))
    assert not out.exists()


def test_pretrain_config_file_must_be_a_mapping(corpus, tmp_path, capsys):  # noqa: F811
    config = tmp_path / "list.json"
    config.write_text("[1, 2]")
    out = tmp_path / "run"
    err = failed(capsys, *pretrain_args(corpus / "shards", out, "--config", config))
    assert f"{config}: a config file must hold a mapping of settings, not list" in err
    assert not out.exists()
