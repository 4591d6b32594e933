"""GLUE registry and readers, custom files, CoNLL token classification and example encoding."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from glue_fixture import N_ROWS, PAIRS, make_tiny_glue, tiny_tokenizer

from convbert import metrics
from convbert.errors import InputError
from convbert.finetuning.conll import (
    IGNORE_INDEX,
    Sentence,
    align_predictions,
    conll_labels,
    read_conll,
    token_classification_features,
)
from convbert.finetuning.glue import GLUE, double_unordered, glue_task, read_glue, write_glue_submission
from convbert.finetuning.tasks import Example, encode_examples, read_custom


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory) -> Path:
    return make_tiny_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


def _raises(path: Path, line: int, match: str):
    """pytest.raises(InputError) whose message names `path:line` and matches `match`."""
    return pytest.raises(InputError, match=f"{re.escape(f'{path}:{line}')}.*{match}")


# ----------------------------------------------------------------------------------------------- GLUE
@pytest.mark.parametrize("task", list(GLUE))
def test_every_glue_task_reads_every_split(glue_root, task):
    spec = glue_task(task)
    expected_splits = ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
    assert spec.splits == (expected_splits if task == "mnli" else ("train", "dev", "test"))
    pair = task not in ("cola", "sst2")
    for split in spec.splits:
        examples = read_glue(task, glue_root, split)
        assert len(examples) == N_ROWS
        assert [e.text_a.strip() for e in examples] == [a for a, _ in PAIRS]
        assert [e.text_b for e in examples] == ([b for _, b in PAIRS] if pair else [None] * N_ROWS)
        if split.startswith("test"):
            assert all(e.label is None for e in examples)
            assert [e.guid for e in examples] == ["0", "1", "2", "3"]  # the index column
        elif task == "stsb":
            assert [e.label for e in examples] == [4.75, 3.8, 0.0, 5.0]
        else:
            assert all(e.label in spec.labels for e in examples)
    train = read_glue(task, glue_root / spec.dir_name, "train")  # the task directory works too
    if not spec.regression:
        assert {e.label for e in train} == set(spec.labels)


def test_glue_label_values_and_quotes(glue_root):
    assert [e.label for e in read_glue("cola", glue_root, "dev")] == ["1", "0", "1", "0"]
    assert [e.label for e in read_glue("mnli", glue_root, "dev_mismatched")][:3] == [
        "neutral",
        "entailment",
        "contradiction",
    ]
    mrpc = read_glue("mrpc", glue_root, "train")
    assert mrpc[1].text_a == 'he said " hello " to the dog .' and mrpc[1].label == "0"  # quotes kept literally
    assert read_glue("qqp", glue_root, "dev")[2].guid == "2"


def test_glue_registry():
    assert set(GLUE) == {t for t in metrics.GLUE_TASKS if not t.startswith("mnli_")}
    for task, spec in GLUE.items():
        refs = np.array([0.5, 1.0, 2.5, 4.0]) if spec.regression else np.array([0, 1, 1, 0])
        assert tuple(metrics.glue_metrics(task, refs, refs)) == spec.metrics
        assert spec.num_labels == (1 if task == "stsb" else metrics.GLUE_NUM_LABELS[task])
        assert spec.epochs == (10 if task in ("rte", "stsb") else 3)
        assert spec.double_unordered == (task in ("mrpc", "stsb"))
        assert spec.eval_splits == (("dev_matched", "dev_mismatched") if task == "mnli" else ("dev",))
        assert set(spec.submissions) <= set(spec.splits)
    assert GLUE["mnli"].labels == ("contradiction", "entailment", "neutral")
    assert GLUE["qnli"].labels == GLUE["rte"].labels == ("entailment", "not_entailment")
    assert GLUE["mnli"].submissions == {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}
    assert [s for t in GLUE.values() for s in t.submissions.values()] == [
        "CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
        "RTE.tsv", "WNLI.tsv",
    ]  # fmt: skip


def test_glue_submission_files(glue_root, tmp_path):
    test = read_glue("mnli", glue_root, "test_mismatched")
    path = write_glue_submission(tmp_path, "mnli", "test_mismatched", test, np.array([2, 0, 1, 1]))
    assert path == tmp_path / "MNLI-mm.tsv"
    assert path.read_text() == "index\tprediction\n0\tneutral\n1\tcontradiction\n2\tentailment\n3\tentailment\n"
    test = read_glue("stsb", glue_root, "test")
    path = write_glue_submission(tmp_path, "stsb", "test", test, [5.4, -0.2, 2.0, 3.14159])
    assert path.read_text().splitlines()[1:] == ["0\t5.000", "1\t0.000", "2\t2.000", "3\t3.142"]
    with pytest.raises(InputError, match="label ids"):
        write_glue_submission(tmp_path, "cola", "test", read_glue("cola", glue_root, "test"), [0, 1, 2, 0])
    with pytest.raises(InputError, match="not a test split"):
        write_glue_submission(tmp_path, "cola", "dev", test, [0, 1, 1, 0])


def _broken_copy(glue_root: Path, tmp_path: Path, name: str, line: int, edit) -> Path:
    """A copy of glue_root/<name>'s task directory with line `line` (1-based) replaced by edit(fields)."""
    task_dir = tmp_path / Path(name).parent
    shutil.copytree(glue_root / Path(name).parent, task_dir)
    lines = (task_dir / Path(name).name).read_text().splitlines()
    lines[line - 1] = "\t".join(edit(lines[line - 1].split("\t")))
    (task_dir / Path(name).name).write_text("\n".join(lines) + "\n")
    return task_dir


def test_glue_bad_lines_name_file_and_line(glue_root, tmp_path):
    d = _broken_copy(glue_root, tmp_path / "a", "RTE/train.tsv", 3, lambda f: f[:-1])
    with _raises(d / "train.tsv", 3, "expected 4 tab-separated columns, got 3"):
        read_glue("rte", d, "train")
    d = _broken_copy(glue_root, tmp_path / "b", "MNLI/dev_matched.tsv", 4, lambda f: [*f[:-1], "maybe"])
    with _raises(d / "dev_matched.tsv", 4, "unknown label 'maybe'"):
        read_glue("mnli", d, "dev_matched")
    d = _broken_copy(glue_root, tmp_path / "c", "CoLA/dev.tsv", 2, lambda f: [*f[:3], "  "])  # no header: line 2
    with _raises(d / "dev.tsv", 2, "empty text in 'sentence'"):
        read_glue("cola", d, "dev")
    d = _broken_copy(glue_root, tmp_path / "d", "QQP/test.tsv", 5, lambda f: [f[0], "", f[2]])
    with _raises(d / "test.tsv", 5, "empty text in 'question1'"):
        read_glue("qqp", d, "test")
    d = _broken_copy(glue_root, tmp_path / "e", "STS-B/dev.tsv", 2, lambda f: [*f[:-1], "high"])
    with _raises(d / "dev.tsv", 2, "'score' must be a finite number"):
        read_glue("stsb", d, "dev")
    d = _broken_copy(glue_root, tmp_path / "f", "QNLI/train.tsv", 1, lambda f: [*f[:-1], "gold"])
    with _raises(d / "train.tsv", 1, "header lacks the column.*'label'"):
        read_glue("qnli", d, "train")
    with pytest.raises(InputError, match="unknown GLUE task 'sst'"):
        read_glue("sst", glue_root, "train")
    with pytest.raises(InputError, match="mnli has no split 'dev'"):
        read_glue("mnli", glue_root, "dev")
    with pytest.raises(InputError, match="neither train.tsv nor CoLA/train.tsv"):
        read_glue("cola", tmp_path / "nowhere", "train")


# ------------------------------------------------------------------------------------------ custom files
def test_custom_tsv_csv_jsonl(tmp_path):
    (tmp_path / "train.tsv").write_text('text\tlabel\n"quoted" cat\tpos\nthe dog\tneg\n\nbad movie\tneg\n')
    examples, labels = read_custom(tmp_path / "train.tsv")
    assert labels == ["neg", "pos"]
    assert [(e.text_a, e.label, e.guid) for e in examples] == [
        ('"quoted" cat', "pos", "2"),
        ("the dog", "neg", "3"),
        ("bad movie", "neg", "5"),
    ]
    (tmp_path / "dev.csv").write_text('a,b,y\n"the cat, it sat","so\nlong",10\nhe,she,2\n')
    examples, labels = read_custom(tmp_path / "dev.csv", text_column="a", text_pair_column="b", label_column="y")
    assert labels == ["2", "10"]  # integer labels sort numerically
    assert (examples[0].text_a, examples[0].text_b, examples[1].guid) == ("the cat, it sat", "so\nlong", "4")
    (tmp_path / "reg.jsonl").write_text(
        '{"s": "a cat", "t": "a dog", "score": 0.5}\n\n{"s": "x", "t": "y", "score": "3"}\n'
    )
    examples, labels = read_custom(
        tmp_path / "reg.jsonl", text_column="s", text_pair_column="t", label_column="score", regression=True
    )
    assert labels is None and [e.label for e in examples] == [0.5, 3.0] and examples[1].guid == "3"
    (tmp_path / "test.jsonl").write_text('{"text": "a cat", "label": 1}\n{"text": "a dog"}\n')
    examples, labels = read_custom(tmp_path / "test.jsonl", label_column=None, labels=["0", "1"])
    assert [e.label for e in examples] == [None, None] and labels == ["0", "1"]


def test_custom_errors_name_file_and_line(tmp_path):
    cases = {
        "dev.tsv": ("text\tlabel\ngood\tpos\nfine\tmaybe\n", 3, "unknown label 'maybe'"),
        "cols.tsv": ("text\tlabel\ngood\tpos\nfine\n", 3, "expected 2 columns"),
        "empty.csv": ('text,label\n"  ",pos\n', 2, "empty text in 'text'"),
        "bad.jsonl": ('{"text": "a", "label": "pos"}\n{"text": "b", "label": \n', 2, "invalid JSON"),
        "missing.jsonl": ('{"text": "a", "label": "pos"}\n{"label": "neg"}\n', 2, "missing field 'text'"),
        "type.jsonl": ('{"text": ["a"], "label": "pos"}\n', 1, "'text' must be a string"),
        "header.csv": ("sentence,label\na,pos\n", 2, "missing field 'text'"),
    }
    for name, (content, line, match) in cases.items():
        (tmp_path / name).write_text(content)
        with _raises(tmp_path / name, line, match):
            read_custom(tmp_path / name, labels=["neg", "pos"])
    (tmp_path / "x.txt").write_text("text\n")
    with pytest.raises(InputError, match="unknown file type"):
        read_custom(tmp_path / "x.txt")
    (tmp_path / "reg.tsv").write_text("text\tlabel\na\tnan\n")
    with _raises(tmp_path / "reg.tsv", 2, "finite number"):
        read_custom(tmp_path / "reg.tsv", regression=True)


# ------------------------------------------------------------------------------------------- encoding
def test_encode_examples_pairs_labels_and_truncation(tok):
    examples = [Example("the cat sat", "a dog", "1", "0"), Example("playing", "the big red house on the mat", "0", "1")]
    features = encode_examples(tok, examples, {"0": 0, "1": 1}, max_length=8)
    t = features.tensors
    assert tok.convert_ids_to_tokens(t["input_ids"][0].tolist()) == [
        "[CLS]",
        "the",
        "cat",
        "sat",
        "[SEP]",
        "a",
        "dog",
        "[SEP]",
    ]
    # 2 + 7 tokens + 3 specials = 12 > 8: longest first cuts the second text to 3
    assert tok.convert_ids_to_tokens(t["input_ids"][1].tolist()) == [
        "[CLS]",
        "play",
        "##ing",
        "[SEP]",
        "the",
        "big",
        "red",
        "[SEP]",
    ]
    assert t["token_type_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert t["labels"].tolist() == [1, 0] and t["labels"].dtype == torch.long
    assert features.num_truncated == 1
    reg = encode_examples(
        tok,
        [Example("a cat", None, 2.5, "0"), Example("the dog sat on the mat", None, 1.0, "1")],
        None,
        max_length=16,
        regression=True,
    )
    assert reg.tensors["labels"].dtype == torch.float and reg.num_truncated == 0
    assert reg.tensors["attention_mask"].tolist()[0] == [1, 1, 1, 1, 0, 0, 0, 0]
    unlabelled = encode_examples(tok, [Example("a cat", None, None, "0")], None, max_length=16)
    assert "labels" not in unlabelled.tensors
    with pytest.raises(InputError, match="mix single sentences and sentence pairs"):
        encode_examples(tok, [examples[0], Example("a", None, "1", "2")], {"0": 0, "1": 1}, 8)
    with pytest.raises(InputError, match="example 7: label '2' is not in label2id"):
        encode_examples(tok, [Example("a", None, "2", "7")], {"0": 0, "1": 1}, 8)


def test_double_unordered():
    examples = [Example("a", "b", "1", "0"), Example("c", "d", "0", "1")]
    doubled = double_unordered(examples)
    assert [(e.text_a, e.text_b, e.label, e.guid) for e in doubled] == [
        ("a", "b", "1", "0"),
        ("c", "d", "0", "1"),
        ("b", "a", "1", "0-swapped"),
        ("d", "c", "0", "1-swapped"),
    ]
    with pytest.raises(InputError, match="needs sentence pairs"):
        double_unordered([Example("a", None, "1", "0")])


# -------------------------------------------------------------------------------- token classification
CONLL = """-DOCSTART- -X- -X- O

Jon NNP B-NP B-PER
went VBD B-VP O
to TO B-PP O
New NNP B-NP B-LOC
York NNP I-NP I-LOC
.\t.\tO\tO


unbelievable\tO
playing\tB-MISC
cats\tI-MISC
\u200b\tB-PER
"""


def test_read_conll(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL)
    sentences = read_conll(tmp_path / "train.txt")
    assert [s.tokens for s in sentences] == [
        ["Jon", "went", "to", "New", "York", "."],
        ["unbelievable", "playing", "cats", "\u200b"],
    ]
    assert sentences[0].tags == ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]
    assert sentences[1].source == f"{tmp_path / 'train.txt'}:11"
    assert conll_labels(sentences) == ["B-LOC", "B-MISC", "B-PER", "I-LOC", "I-MISC", "O"]
    (tmp_path / "bad.txt").write_text("John B-PER\nwent O\nto\n")
    with _raises(tmp_path / "bad.txt", 3, "expected a word and its tag"):
        read_conll(tmp_path / "bad.txt")


def test_first_subword_labels_by_hand_and_round_trip(tmp_path, tok):
    (tmp_path / "train.txt").write_text(CONLL)
    sentences = read_conll(tmp_path / "train.txt")
    labels = conll_labels(sentences)
    label2id = {t: i for i, t in enumerate(labels)}
    features = token_classification_features(tok, sentences, label2id, max_length=16)
    ids, tags = features.tensors["input_ids"][1].tolist(), features.tensors["labels"][1].tolist()
    # "unbelievable" = un ##believ ##able, "playing" = play ##ing, "cats" = cat ##s; the zero-width space
    # is deleted by the normaliser and stands as [UNK]
    assert tok.convert_ids_to_tokens(ids) == [
        "[CLS]",
        "un",
        "##believ",
        "##able",
        "play",
        "##ing",
        "cat",
        "##s",
        "[UNK]",
        "[SEP]",
    ]
    o, b_misc, i_misc, b_per = (label2id[t] for t in ("O", "B-MISC", "I-MISC", "B-PER"))
    x = IGNORE_INDEX
    assert tags == [x, o, x, x, b_misc, x, i_misc, x, b_per, x]
    assert features.word_ids[1] == [None, 0, 0, 0, 1, 1, 2, 2, 3, None]
    assert features.tensors["attention_mask"][0].tolist() == [1] * 8 + [0] * 2  # 6 words, padded to 10
    assert features.num_truncated == 0
    # "Jon" is not in the vocab: one [UNK] piece still carries the word's label
    assert features.tensors["labels"][0].tolist()[:2] == [x, label2id["B-PER"]]
    assert features.tensors["input_ids"][0, 1] == tok.unk_token_id
    assert align_predictions(features.tensors["labels"], features, labels) == [s.tags for s in sentences]
    logits = torch.nn.functional.one_hot(features.tensors["labels"].clamp(min=0), len(labels)).float()
    assert align_predictions(logits, features, labels) == [s.tags for s in sentences]


def test_truncated_sentences_are_counted_and_filled(tok):
    sentences = [
        Sentence(["the", "cat", "sat", "on", "the", "mat"], ["O", "B-X", "O", "O", "O", "B-Y"]),
        Sentence(["playing"], ["B-X"]),
    ]
    label2id = {"O": 0, "B-X": 1, "B-Y": 2}
    features = token_classification_features(tok, sentences, label2id, max_length=5)
    assert features.num_truncated == 1
    assert tok.convert_ids_to_tokens(features.tensors["input_ids"][0].tolist()) == [
        "[CLS]",
        "the",
        "cat",
        "sat",
        "[SEP]",
    ]
    assert align_predictions(features.tensors["labels"], features, ["O", "B-X", "B-Y"]) == [
        ["O", "B-X", "O", "O", "O", "O"],
        ["B-X"],  # the last three words were cut: filled with "O"
    ]
    unlabelled = token_classification_features(tok, sentences, None, max_length=5)
    assert "labels" not in unlabelled.tensors
    with pytest.raises(InputError, match="tag 'B-Z' is not in the label list"):
        token_classification_features(tok, [Sentence(["a"], ["B-Z"], "f:3")], label2id, 8)


def test_round_trip_on_real_wnut16(wnut16_file, bert_vocab_dir):
    from convbert.tokenizer import ConvBertTokenizer

    sentences = read_conll(wnut16_file)
    assert len(sentences) > 2000
    labels = conll_labels(sentences)
    bert = ConvBertTokenizer.from_pretrained(bert_vocab_dir)
    features = token_classification_features(bert, sentences, {t: i for i, t in enumerate(labels)}, 128)
    kept = [i for i in range(len(sentences)) if len(features.word_ids[i]) < 128]  # not truncated
    assert len(kept) > 2000
    aligned = align_predictions(features.tensors["labels"], features, labels)
    true = [sentences[i].tags for i in kept]
    assert [aligned[i] for i in kept] == true
    assert metrics.entity_f1(true, [aligned[i] for i in kept])["f1"] == 1.0
    # the same word pieces as tokenizing the words joined by spaces
    sample = sentences[:200]
    joined = bert([" ".join(s.tokens) for s in sample], padding=False, truncation=False, return_tensors=None)
    for i, ids in enumerate(joined["input_ids"]):
        row = features.tensors["input_ids"][i][: len(features.word_ids[i])].tolist()
        if len(ids) <= 128 and bert.unk_token_id not in row:
            assert row == ids


def test_json_labels_are_not_booleans(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "a", "label": True}) + "\n")
    with _raises(tmp_path / "t.jsonl", 1, "must be a string or an integer"):
        read_custom(tmp_path / "t.jsonl")
