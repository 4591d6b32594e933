"""Tests for convbert.pretraining.data: ELECTRA example building, shards, determinism, errors, reader, CLI."""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from convbert.errors import InputError
from convbert.pretraining.data import ExampleBuilder, prepare, register
from convbert.pretraining.shards import PretrainShards, vocab_hash
from convbert.settings import RUN_CONFIG

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, CLS, SEP = 0, 2, 3
_rng = random.Random(1234)
WORDS = sorted({"".join(_rng.choice("abcdefghijklmnop") for _ in range(_rng.randint(3, 9))) for _ in range(150)})


def write_docs(path: Path, docs: list[list[str]]) -> Path:
    """Plain-text corpus: a sentence per line, a blank line between documents."""
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")
    return path


def random_docs(seed: int, n_docs: int, max_sentences: int, max_words: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [
        [" ".join(rng.choices(WORDS, k=rng.randint(1, max_words))) for _ in range(rng.randint(1, max_sentences))]
        for _ in range(n_docs)
    ]


def all_rows(out: Path) -> tuple[PretrainShards, dict[str, np.ndarray]]:
    ds = PretrainShards(out)
    return ds, ds[np.arange(len(ds))]


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small uncased WordPiece tokenizer ([PAD]=0, [CLS]=2, [SEP]=3) trained on WORDS."""
    d = tmp_path_factory.mktemp("tok")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    text = [" ".join(random.Random(i).choices(WORDS, k=40)) for i in range(300)]
    tok.train_from_iterator(
        text, trainers.WordPieceTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False)
    )
    tok.save(str(d / "tokenizer.json"))
    assert [tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]")] == [PAD, CLS, SEP]
    return d


@pytest.fixture(scope="module")
def tokenizer(tok_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tok_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, tok_dir: Path) -> tuple[Path, Path]:
    """(corpus, out): 300 documents of 1-30 sentences of 1-25 words, L=64, 2 workers, several shards."""
    d = tmp_path_factory.mktemp("mixed")
    corpus = write_docs(d / "corpus.txt", random_docs(0, 300, 30, 25))
    prepare([corpus], tok_dir, d / "out", max_seq_length=64, num_workers=2, shard_size=100_000, progress=False)
    return corpus, d / "out"


def test_example_builder_follows_electra(tmp_path: Path) -> None:
    examples: list[tuple[list[int], list[int]]] = []
    builder = ExampleBuilder(16, random.Random(0), lambda a, b: examples.append((a, b)))
    builder.add_sentence(list(range(100, 130)))  # 30 tokens >= target 16: an example, A cut to 16 - 2
    assert examples == [(list(range(100, 114)), [])]
    assert builder.counts["truncated_tokens"] == 16
    builder.add_sentence([5, 6])
    builder.add_sentence([7])
    builder.end_document()  # the end of a document flushes, nothing is lost
    a, b = examples[1]
    assert a + b == [5, 6, 7] and a[:2] == [5, 6]
    builder.end_document()  # nothing accumulated: no example
    assert len(examples) == 2 and builder.counts["examples"] == 2 and builder.counts["input_tokens"] == 33


def test_example_structure_and_segment_ids(mixed: tuple[Path, Path]) -> None:
    _, out = mixed
    ds, rows = all_rows(out)
    manifest = ds.manifest
    assert len(manifest["shards"]) > 2 and len(ds) == manifest["counts"]["examples"] > 1000
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["special_ids"]["pad"] == PAD
    n_two = 0
    for ids, mask, types in zip(rows["input_ids"], rows["attention_mask"], rows["token_type_ids"]):
        length = int(mask.sum())
        assert 3 <= length <= 64 and (mask[:length] == 1).all()  # mask is a prefix
        body, pad = ids[:length], ids[length:]
        assert (pad == PAD).all() and PAD not in body  # [PAD] only at the end
        assert body[0] == CLS and CLS not in body[1:] and body[-1] == SEP
        seps = np.flatnonzero(body == SEP)
        assert len(seps) in (1, 2)
        expected = np.zeros(64, dtype=np.int64)
        if len(seps) == 2:
            n_two += 1
            expected[seps[0] + 1 : length] = 1  # B and the second [SEP]
        np.testing.assert_array_equal(types, expected)
    assert 0 < n_two < len(ds)


def test_segment_and_short_target_proportions(tmp_path: Path, tok_dir: Path, tokenizer: Tokenizer) -> None:
    # One-token sentences: every example without a random target fills exactly L, so the rows shorter
    # than L are the short-target examples (plus at most one flush per document).
    single = [w for w in WORDS if len(tokenizer.encode(w, add_special_tokens=False).ids) == 1]
    assert len(single) > 50
    rng = random.Random(5)
    corpus = write_docs(tmp_path / "c.txt", [rng.choices(single, k=30_000) for _ in range(4)])
    L = 32
    m = prepare([corpus], tok_dir, tmp_path / "out", max_seq_length=L, num_workers=2, shard_size=100_000)
    ds, rows = all_rows(tmp_path / "out")
    n = len(ds)
    assert n > 3500
    lengths = rows["attention_mask"].sum(axis=1)
    single_segment = (rows["token_type_ids"].sum(axis=1) == 0).mean()
    assert 0.08 < single_segment < 0.12  # ELECTRA: 10%
    assert single_segment == pytest.approx(m["counts"]["single_segment_examples"] / n)
    short = m["counts"]["short_target_examples"]
    assert 0.035 < short / n < 0.065  # ELECTRA: 5%, target in [5, L]
    n_shorter = int((lengths < L).sum())
    assert 0.5 * short < n_shorter <= short + m["counts"]["documents"]


def test_token_multiset_exact_without_truncation(tmp_path: Path, tok_dir: Path, tokenizer: Tokenizer) -> None:
    L = 64

    def n_tokens(doc: list[str]) -> int:
        return sum(len(tokenizer.encode(s, add_special_tokens=False).ids) for s in doc)

    docs = [doc for doc in random_docs(1, 1500, 5, 8) if n_tokens(doc) <= L - 3]  # never truncated
    assert len(docs) > 500
    corpus = write_docs(tmp_path / "c.txt", docs)
    m = prepare([corpus], tok_dir, tmp_path / "out", max_seq_length=L, num_workers=2, shard_size=20_000)
    _, rows = all_rows(tmp_path / "out")
    ids = rows["input_ids"]
    stored = collections.Counter(ids[(ids != PAD) & (ids != CLS) & (ids != SEP)].tolist())
    expected = collections.Counter(
        t for doc in docs for s in doc for t in tokenizer.encode(s, add_special_tokens=False).ids
    )
    assert stored == expected
    c = m["counts"]
    assert c["truncated_tokens"] == 0 and c["tokens"] == c["input_tokens"] == sum(expected.values())
    assert c["documents"] == len(docs) and c["sentences"] == sum(map(len, docs))


def test_truncation_is_counted_exactly(mixed: tuple[Path, Path], tokenizer: Tokenizer) -> None:
    corpus, out = mixed
    ds, rows = all_rows(out)
    lines = [s for s in corpus.read_text(encoding="utf-8").splitlines() if s.strip()]
    expected = collections.Counter(t for s in lines for t in tokenizer.encode(s, add_special_tokens=False).ids)
    ids = rows["input_ids"]
    stored = collections.Counter(ids[(ids != PAD) & (ids != CLS) & (ids != SEP)].tolist())
    c = ds.manifest["counts"]
    assert c["input_tokens"] == sum(expected.values())
    assert c["tokens"] == sum(stored.values()) == c["input_tokens"] - c["truncated_tokens"]
    assert c["truncated_tokens"] > 0 and not stored - expected  # stored tokens all come from the input


def test_same_output_with_1_and_2_workers_and_seed_matters(tmp_path: Path, tok_dir: Path) -> None:
    corpus = write_docs(tmp_path / "c.txt", random_docs(2, 200, 20, 20))

    def run(name: str, workers: int, seed: int) -> dict[str, bytes]:
        prepare([corpus], tok_dir, tmp_path / name, max_seq_length=48, seed=seed, num_workers=workers,
                shard_size=30_000, progress=False)  # fmt: skip
        return shard_files(tmp_path / name)

    one, two = run("w1", 1, 7), run("w2", 2, 7)
    assert len(one) > 5 and one == two  # shards, row indexes and manifest: byte-identical
    other = run("s8", 2, 8)
    assert other.keys() == one.keys()
    assert all(other[k] != one[k] for k in one if k.endswith(".bin"))


def test_jsonl_input_matches_text(tmp_path: Path, tok_dir: Path) -> None:
    docs = random_docs(3, 100, 10, 15)
    text = write_docs(tmp_path / "c.txt", docs)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": "\n".join(d)}) + "\n" for i, d in enumerate(docs)))
    a = prepare([text], tok_dir, tmp_path / "a", max_seq_length=64, num_workers=1)
    b = prepare([jsonl], tok_dir, tmp_path / "b", max_seq_length=64, num_workers=1, text_field="body")
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["counts"] == b["counts"] and b["counts"]["documents"] == 100
    assert b["inputs"][0]["format"] == "jsonl"


def test_invalid_utf8_reports_byte_offset(tmp_path: Path, tok_dir: Path) -> None:
    bad = tmp_path / "in" / "bad.txt"
    bad.parent.mkdir()
    bad.write_bytes(b"good line here\n\xef\xbf\xbd second \xff line\n")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"bad\.txt:2: invalid UTF-8 .*byte offset 26"):
        prepare([bad], tok_dir, out, max_seq_length=32, num_workers=1)
    assert_no_output(out)
    m = prepare([bad], tok_dir, out, max_seq_length=32, num_workers=1, errors="replace")
    assert m["counts"]["replaced_chars"] == 1  # the U+FFFD already in the file is not counted
    assert m["settings"]["errors"] == "replace"


def test_empty_file_warns_and_is_skipped(tmp_path: Path, tok_dir: Path) -> None:
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.txt"
    empty.write_bytes(b"")
    blank.write_text("  \n\n\t\n")
    good = write_docs(tmp_path / "good.txt", random_docs(4, 20, 5, 10))
    with pytest.warns(UserWarning) as record:
        m = prepare([empty, good, blank], tok_dir, tmp_path / "a", max_seq_length=32, num_workers=1)
    assert [str(w.message) for w in record] == [f"{p}: input file has no text; skipped" for p in (empty, blank)]
    alone = prepare([good], tok_dir, tmp_path / "b", max_seq_length=32, num_workers=1)
    assert [e["skipped"] for e in m["inputs"]] == [True, False, True]
    assert m["shards"][0]["sha256"] == alone["shards"][0]["sha256"]
    with pytest.warns(UserWarning), pytest.raises(InputError, match="all input files are empty"):
        prepare([empty, blank], tok_dir, tmp_path / "c", max_seq_length=32, num_workers=1)
    assert_no_output(tmp_path / "c")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "unterminated', r"bad\.jsonl:3: invalid JSON \(Unterminated string.*\) at byte offset 30"),
        ('{"body": "no text field"}', r"bad\.jsonl:3: JSON object has no 'text' field"),
        ('["not", "an", "object"]', r"bad\.jsonl:3: JSON object has no 'text' field"),
        ('{"text": 5}', r"bad\.jsonl:3: field 'text' is int"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, tok_dir: Path, line: str, message: str) -> None:
    bad = tmp_path / "in" / "bad.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"text": "abc def"}\n\n' + line + "\n")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        prepare([bad], tok_dir, out, max_seq_length=32, num_workers=2)
    assert_no_output(out)


def test_bad_arguments(tmp_path: Path, tok_dir: Path, mixed: tuple[Path, Path]) -> None:
    corpus, out = mixed
    with pytest.raises(InputError, match="missing.txt: input file not found"):
        prepare([tmp_path / "missing.txt"], tok_dir, tmp_path / "o")
    with pytest.raises(InputError, match="already exists"):
        prepare([corpus], tok_dir, out)
    with pytest.raises(InputError, match="tokenizer file not found"):
        prepare([corpus], tmp_path, tmp_path / "o")
    assert_no_output(tmp_path / "o")


def test_reader_random_access(mixed: tuple[Path, Path]) -> None:
    _, out = mixed
    ds, rows = all_rows(out)
    n = len(ds)
    idx = np.array([n - 1, 0, 17, 17, n // 2])
    batch = ds[idx]
    for k, i in enumerate(idx):
        one = ds[int(i)]
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert one[key].dtype == np.int64 and one[key].shape == (64,)
            np.testing.assert_array_equal(one[key], batch[key][k])
            np.testing.assert_array_equal(one[key], rows[key][i])
    np.testing.assert_array_equal(ds[-1]["input_ids"], rows["input_ids"][-1])
    np.testing.assert_array_equal(ds[5:9]["token_type_ids"], rows["token_type_ids"][5:9])
    with pytest.raises(IndexError):
        ds[n]
    clone = pickle.loads(pickle.dumps(ds))  # e.g. into DataLoader workers: memmaps reopen lazily
    np.testing.assert_array_equal(clone[idx]["input_ids"], batch["input_ids"])
    ds.verify()


def test_reader_vocab_mismatch(mixed: tuple[Path, Path], tok_dir: Path, tokenizer: Tokenizer) -> None:
    ds = PretrainShards(mixed[1])
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert vocab_hash(tokens) == vocab_hash(tok_dir) == ds.manifest["tokenizer"]["vocab_hash"]
    ds.check_tokenizer(len(tokens), vocab_hash(tokens))
    other = vocab_hash(tokens[:-1] + ["zzz"])
    with pytest.raises(InputError, match=rf"manifest\.json.*{ds.manifest['tokenizer']['vocab_hash']}.*{other}"):
        ds.check_tokenizer(len(tokens), other)
    with pytest.raises(InputError, match=f"size {len(tokens)}.*size 30522"):
        ds.check_tokenizer(30522, vocab_hash(tokens))


def test_reader_detects_truncated_and_corrupt_shards(tmp_path: Path, mixed: tuple[Path, Path]) -> None:
    out = tmp_path / "copy"
    shutil.copytree(mixed[1], out)
    shard = out / PretrainShards(out).manifest["shards"][1]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[:-3])
    with pytest.raises(InputError, match=rf"{shard.name}: shard is .* truncated or corrupt"):
        PretrainShards(out)
    shard.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, different content
    with pytest.raises(InputError, match=rf"{shard.name}: sha256 does not match"):
        PretrainShards(out).verify()
    shard.unlink()
    with pytest.raises(InputError, match=rf"{shard.name}: shard file missing"):
        PretrainShards(out)


def test_cli_data_prepare(tmp_path: Path, tok_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_docs(tmp_path / "c.txt", random_docs(6, 30, 8, 12))
    parser = argparse.ArgumentParser(prog="convbert")
    register(parser.add_subparsers(dest="command", required=True))
    argv = ["data", "prepare", "--input", str(corpus), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "out"),
            "--max_seq_length", "32", "--seed", "3", "--workers", "2", "--errors", "replace"]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    ds = PretrainShards(tmp_path / "out")
    assert len(ds) > 0 and ds.manifest["seed"] == 3 and ds.manifest["max_seq_length"] == 32
    assert ds.manifest["tokenizer"]["path"] == str(tok_dir.resolve())
    assert f"{len(ds)} examples" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / RUN_CONFIG).read_text())["max_length"] == 32
    args = parser.parse_args(["data", "prepare", "--input", str(corpus)])
    with pytest.raises(InputError, match="--tokenizer and --out are required"):
        args.func(args)
