"""Bad input to the readers: each error is an InputError naming the file and line (or field); through the CLI, exit
2 with `convbert: error: FILE:LINE: ...` and nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from glue_fixture import make_tiny_glue, tiny_tokenizer
from test_finetune import root, run  # noqa: F401

from convbert.errors import InputError
from convbert.finetuning.conll import read_conll
from convbert.finetuning.glue import read_glue
from convbert.finetuning.squad import prepare_features, read_squad
from convbert.finetuning.tasks import read_custom, text_lines
from convbert.tokenizer import ConvBertTokenizer
from convbert.tools.plots import read_log

BAD_LINE = 2500  # far past the first buffer (8 KiB) a text-mode reader decodes ahead of the line it hands out
N_LINES = 2600


def _raises(path: Path, line: int, match: str):
    return pytest.raises(InputError, match=re.escape(f"{path}:{line}: ") + match)


def _lines_with_bad_byte(path: Path, header: str, row: str, bad_row: bytes) -> Path:
    """A file of N_LINES lines: `header`, then `row` (formatted with the line number), `bad_row` at BAD_LINE."""
    lines = [header.encode()] + [row.format(n=n).encode() for n in range(2, N_LINES + 1)]
    lines[BAD_LINE - 1] = bad_row
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# ------------------------------------------------------------------------------------ invalid UTF-8
def _custom_tsv(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "train.tsv", "text\tlabel", "line {n} is fine\t1", b"caf\xe9 au lait\t0")
    return path, lambda: read_custom(path)


def _custom_csv(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "train.csv", "text,label", '"line {n}, fine",1', b'"caf\xe9",0')
    return path, lambda: read_custom(path)


def _custom_jsonl(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "train.jsonl", '{"text": "a", "label": "1"}', '{{"text": "{n}", '
                                '"label": "1"}}', b'{"text": "caf\xe9", "label": "0"}')  # fmt: skip
    return path, lambda: read_custom(path)


def _custom_json_array(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "train.json", '[{"text": "a", "label": "1"}', ', {{"text": "{n}", '
                                '"label": "1"}}', b', {"text": "caf\xe9", "label": "0"}')  # fmt: skip
    with path.open("a") as f:
        f.write("]\n")
    return path, lambda: read_custom(path)


def _text_lines(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "any.txt", "first", "line {n}", b"\xff")
    return path, lambda: list(text_lines(path))


def _glue(tmp_path: Path) -> tuple[Path, object]:
    glue = make_tiny_glue(tmp_path / "glue")
    path = _lines_with_bad_byte(glue / "SST-2" / "train.tsv", "sentence\tlabel", "sentence {n}\t1", b"caf\xe9\t0")
    return path, lambda: read_glue("sst2", glue, "train")


def _conll(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "train.txt", "word\tO", "w{n}\tB-PER", b"caf\xe9\tO")
    return path, lambda: read_conll(path)


def _squad(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "squad.json", "{", "", b'"data": "caf\xe9"}')
    return path, lambda: read_squad(path)


def _tokenizer_training_file(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "corpus.txt", "the cat sat", "on the mat {n}", b"caf\xe9")
    return path, lambda: ConvBertTokenizer.train([path], vocab_size=100)


def _plot_log(tmp_path: Path) -> tuple[Path, object]:
    path = _lines_with_bad_byte(tmp_path / "log.csv", "step,disc_loss", "{n},0.5", b"2500,0.5\xff")
    return path, lambda: read_log(tmp_path)


@pytest.mark.parametrize(
    "case",
    [_custom_tsv, _custom_csv, _custom_jsonl, _custom_json_array, _text_lines, _glue, _conll, _squad,
     _tokenizer_training_file, _plot_log],
)  # fmt: skip
def test_invalid_utf8_names_the_line_holding_the_bad_byte(tmp_path, case):
    path, read = case(tmp_path)
    with _raises(path, BAD_LINE, "not valid UTF-8"):
        read()


def test_invalid_utf8_at_the_very_end_is_named_too(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"text\tlabel\n" + b"fine\t1\n" * 3000 + b"cut \xe2\x82")  # a sequence cut short
    with _raises(path, 3002, "not valid UTF-8"):
        read_custom(path)


# ------------------------------------------------------------------------------------------- CoNLL tags
@pytest.mark.parametrize("tag", ["B", "X-PER", "B-", "I", "b-PER", "PER"])
def test_conll_tags_are_checked_when_read(tmp_path, tag):
    path = tmp_path / "train.txt"
    path.write_text(f"John\tB-PER\nwent\t{tag}\n")
    with _raises(path, 2, re.escape(f"invalid tag {tag!r} (expected O, B-TYPE or I-TYPE)")):
        read_conll(path)


def test_conll_accepts_iob_and_iobes_tags(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("John\tB-PER\nSmith\tI-PER\nwent\tO\nto\tO\nNew\tB-LOC\nYork\tE-LOC\nnow\tS-TIME\n")
    assert read_conll(path)[0].tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "E-LOC", "S-TIME"]


def test_conll_bad_tag_through_the_cli(root, tmp_path, capsys):  # noqa: F811
    train = tmp_path / "train.txt"
    train.write_text("John\tB-PER\nwent\tO\n\nto\tX-LOC\n")
    out = tmp_path / "out"
    args = ("--task", "ner", "--train", train, "--dev", train, "--out", out, "--max-steps", "1")
    assert run("finetune", "--model", root / "model", *args) == 2
    assert f"convbert: error: {train}:4: invalid tag 'X-LOC'" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------ regression labels
def _stsb(tmp_path: Path, score: str) -> tuple[Path, Path]:
    glue = make_tiny_glue(tmp_path / "glue")
    path = glue / "STS-B" / "train.tsv"
    lines = path.read_text().splitlines()
    fields = lines[2].split("\t")
    lines[2] = "\t".join([*fields[:-1], score])
    path.write_text("\n".join(lines) + "\n")
    return glue, path


@pytest.mark.parametrize("score", ["1e308", "inf", "nan", "5.01", "-0.5", "", "high"])
def test_stsb_scores_are_finite_and_within_0_to_5(tmp_path, score):
    glue, path = _stsb(tmp_path, score)
    with _raises(path, 3, "'score' must be "):
        read_glue("stsb", glue, "train")


def test_stsb_score_edges_are_accepted(tmp_path):
    glue, _ = _stsb(tmp_path, "5")
    assert 5.0 in [e.label for e in read_glue("stsb", glue, "train")]


def test_stsb_huge_score_through_the_cli(root, tmp_path, capsys):  # noqa: F811
    glue, path = _stsb(tmp_path, "1e308")
    out = tmp_path / "out"
    args = ("--task", "stsb", "--data", glue, "--out", out, "--max-steps", "1")
    assert run("finetune", "--model", root / "model", *args) == 2
    assert f"convbert: error: {path}:3: 'score' must be " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("score", ["1e308", "-1e39", "inf", "nan"])
def test_custom_regression_labels_are_finite(tmp_path, score):
    path = tmp_path / "train.tsv"
    path.write_text(f"text\tlabel\nthe cat\t0.5\nthe dog\t{score}\n")
    with _raises(path, 3, "'label' must be a finite number"):
        read_custom(path, regression=True)
    path.write_text("text\tlabel\nthe cat\t0.5\nthe dog\t-1e30\n")  # custom scales are not bounded
    assert [e.label for e in read_custom(path, regression=True)[0]] == [0.5, -1e30]


def test_custom_regression_label_too_big_for_a_float_in_json(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "a", "label": 0.5}) + "\n" + json.dumps({"text": "b", "label": 10**400}) + "\n")
    with _raises(path, 2, "'label' must be a finite number"):
        read_custom(path, regression=True)


# ---------------------------------------------------------------------------------------- empty labels
@pytest.mark.parametrize("cell", ["", " "])
def test_empty_label_cell_is_refused_for_classification(tmp_path, cell):
    path = tmp_path / "train.tsv"
    path.write_text(f"text\tlabel\nthe cat\t1\nthe dog\t{cell}\n")
    with _raises(path, 3, "empty label in 'label'"):
        read_custom(path)
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(f"text,label\nthe cat,1\nthe dog,{cell}\n")
    with _raises(csv_path, 3, "empty label in 'label'"):
        read_custom(csv_path)


def test_empty_label_cell_is_no_label_for_multi_label(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\nthe cat\ta,b\nthe dog\t\n")
    examples, labels = read_custom(path, multi_label=True)
    assert [e.label for e in examples] == [("a", "b"), ()] and labels == ["a", "b"]


def test_empty_label_through_the_cli(root, tmp_path, capsys):  # noqa: F811
    train = tmp_path / "train.tsv"
    train.write_text("text\tlabel\nthe cat\t1\nthe dog\t\n")
    out = tmp_path / "out"
    args = ("--task", "custom", "--train", train, "--dev", train, "--out", out, "--max-steps", "1")
    assert run("finetune", "--model", root / "model", *args) == 2
    assert f"convbert: error: {train}:3: empty label in 'label'" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------------------- plot log.csv
def test_plot_log_with_a_non_numeric_cell_names_line_and_column(tmp_path):
    (tmp_path / "log.csv").write_text("step,disc_loss,lr\n1,0.7,1e-4\n2,oops,1e-4\n3,,1e-4\n")
    with _raises(tmp_path / "log.csv", 3, re.escape("column 'disc_loss': 'oops' is not a number")):
        read_log(tmp_path)
    (tmp_path / "log.csv").write_text("step,disc_loss,lr\n1,0.7,1e-4\n3,,1e-4\n")
    log = read_log(tmp_path)
    assert log["step"] == [1.0, 3.0] and log["disc_loss"][0] == 0.7  # "" is NaN: not logged at that step


@pytest.mark.parametrize("content", [b"step,disc_loss\n1,0.7\n2,x\n", b"step,disc_loss\n1,0.7\n2,\xff\n"])
def test_plot_bad_log_through_the_cli(tmp_path, capsys, content):
    (tmp_path / "log.csv").write_bytes(content)
    assert run("plot", "--run", tmp_path) == 2
    assert f"convbert: error: {tmp_path / 'log.csv'}:3: " in capsys.readouterr().err
    assert not (tmp_path / "curves.png").exists()


# -------------------------------------------------------------------------------------------- SQuAD
def _unanswered_squad(path: Path) -> Path:
    qas = [{"id": "q1", "question": "where ?", "answers": []}]  # v1.1 style, no is_impossible
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "the cat sat on the mat .", "qas": qas}]}]}))
    return path


def test_squad_no_answer_to_train_on_names_the_file(tmp_path):
    path = _unanswered_squad(tmp_path / "train.json")
    examples = read_squad(path)  # fine to read: prediction input has no answers
    tok = tiny_tokenizer(tmp_path / "vocab")
    with pytest.raises(InputError, match=re.escape(f"{path}: question 'q1'") + ".*no answer to train on"):
        prepare_features(tok, examples, max_length=64, doc_stride=16, max_query_length=16, train=True)
    prepare_features(tok, examples, max_length=64, doc_stride=16, max_query_length=16, train=False)


def test_squad_no_answer_through_the_cli(root, tmp_path, capsys):  # noqa: F811
    path = _unanswered_squad(tmp_path / "train.json")
    out = tmp_path / "out"
    args = ("--task", "squad", "--train", path, "--dev", path, "--out", out, "--max-steps", "1")
    assert run("finetune", "--model", root / "model", *args) == 2
    assert f"convbert: error: {path}: question 'q1'" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------------------- settings
def test_tokenizer_train_min_frequency_must_be_positive(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n")
    out = tmp_path / "tok"
    args = ("tokenizer", "train", "--input", corpus, "--vocab-size", "100", "--out", out, "--min-frequency", "-1")
    assert run(*args) == 2
    assert "convbert: error: " in (err := capsys.readouterr().err) and "min_frequency" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "0"])
def test_flops_sequence_length_must_be_positive(capsys, value):
    assert run("flops", "--preset", "tiny", "--max-length", value) == 2
    assert "convbert: error: " in (err := capsys.readouterr().err) and "max_length" in err
