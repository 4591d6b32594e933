"""Test helpers: a tiny WordPiece tokenizer and a tiny GLUE directory with each task's real file layout.

Import from tests: `from glue_fixture import make_tiny_glue, tiny_tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

from convbert.tokenizer import ConvBertTokenizer

TINY_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . , ? ' \" - the a cat dog sat on mat is was play ##ing ##ed ##s un ##believ "
    "##able good bad movie it he she said hello what who where did paris in france capital of john went to city "
    "big red house river new york man woman and not quick brown fox jump over lazy how many people live there "
    "do you like why are so"
).split()

N_ROWS = 4  # data rows in every file written by make_tiny_glue

T = "\t"
_MNLI = (
    "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse "
    "sentence1 sentence2"
).split()
_STSB = "index genre filename year old_index source1 source2 sentence1 sentence2".split()
_NLI = ("entailment", "not_entailment", "entailment", "not_entailment")
_MNLI_LABELS = ("neutral", "entailment", "contradiction", "entailment")

# (sentence 1, sentence 2) of the data rows; the quote characters are literal text in GLUE files
PAIRS = (
    ("the cat sat on the mat .", "a cat is on the mat ."),
    ('he said " hello " to the dog .', 'she said " hello " .'),
    ("john went to the big red house .", "john did not go to paris ."),
    ("what is the capital of france ?", "paris is the capital of france ."),
)


def tiny_tokenizer(directory: Path) -> ConvBertTokenizer:
    """Write `directory/vocab.txt` (TINY_VOCAB) and load it, uncased."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in TINY_VOCAB), encoding="utf-8")
    return ConvBertTokenizer.from_pretrained(directory / "vocab.txt")


def _rows(header: list[str] | None, rows: list[list[str]]) -> str:
    return "".join(T.join(r) + "\n" for r in ([header] if header else []) + rows)


def _glue_files() -> dict[str, str]:
    """Relative path -> content of every file of the tiny GLUE download."""
    s1 = [a for a, _ in PAIRS]
    idx = [str(i) for i in range(N_ROWS)]
    binary = ["1", "0", "1", "0"]
    files: dict[str, str] = {}
    for split in ("train", "dev"):
        files[f"CoLA/{split}.tsv"] = _rows(None, [["gj04", y, "" if y == "1" else "*", s] for y, s in zip(binary, s1)])
        files[f"SST-2/{split}.tsv"] = _rows(["sentence", "label"], [[s + " ", y] for s, y in zip(s1, binary)])
        files[f"MRPC/{split}.tsv"] = _rows(
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            [[y, str(7000 + i), str(8000 + i), a, b] for i, (y, (a, b)) in enumerate(zip(binary, PAIRS))],
        )
        files[f"STS-B/{split}.tsv"] = _rows(
            [*_STSB, "score"],
            [[i, "main-captions", "MSRvid", "2012test", f"000{i}", "none", "none", a, b, score]
             for i, (a, b), score in zip(idx, PAIRS, ("4.750", "3.800", "0.000", "5.000"))],
        )  # fmt: skip
        files[f"QQP/{split}.tsv"] = _rows(
            ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            [[i, str(2 * k), str(2 * k + 1), a, b, y] for k, (i, (a, b), y) in enumerate(zip(idx, PAIRS, binary))],
        )
        files[f"QNLI/{split}.tsv"] = _rows(
            ["index", "question", "sentence", "label"], [[i, a, b, y] for i, (a, b), y in zip(idx, PAIRS, _NLI)]
        )
        files[f"RTE/{split}.tsv"] = _rows(
            ["index", "sentence1", "sentence2", "label"], [[i, a, b, y] for i, (a, b), y in zip(idx, PAIRS, _NLI)]
        )
        files[f"WNLI/{split}.tsv"] = _rows(
            ["index", "sentence1", "sentence2", "label"], [[i, a, b, y] for i, (a, b), y in zip(idx, PAIRS, binary)]
        )
    parse = ["( ( the cat ) sat )", "( ( a cat ) is )", "(ROOT (S (NP (DT the) (NN cat))))", "(ROOT (S (NP (DT a))))"]

    def mnli(i: str, a: str, b: str) -> list[str]:
        return [i, str(100 + int(i)), f"{100 + int(i)}n", "fiction", *parse, a, b]

    files["MNLI/train.tsv"] = _rows(
        [*_MNLI, "label1", "gold_label"], [[*mnli(i, a, b), y, y] for i, (a, b), y in zip(idx, PAIRS, _MNLI_LABELS)]
    )
    for split in ("dev_matched", "dev_mismatched"):
        files[f"MNLI/{split}.tsv"] = _rows(
            [*_MNLI, "label1", "label2", "label3", "label4", "label5", "gold_label"],
            [[*mnli(i, a, b), y, y, "neutral", y, y, y] for i, (a, b), y in zip(idx, PAIRS, _MNLI_LABELS)],
        )
    for split in ("test_matched", "test_mismatched"):
        files[f"MNLI/{split}.tsv"] = _rows(_MNLI, [mnli(i, a, b) for i, (a, b) in zip(idx, PAIRS)])
    files["CoLA/test.tsv"] = _rows(["index", "sentence"], [[i, s] for i, s in zip(idx, s1)])
    files["SST-2/test.tsv"] = _rows(["index", "sentence"], [[i, s] for i, s in zip(idx, s1)])
    files["MRPC/test.tsv"] = _rows(
        ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        [[i, str(7000 + k), str(8000 + k), a, b] for k, (i, (a, b)) in enumerate(zip(idx, PAIRS))],
    )
    files["STS-B/test.tsv"] = _rows(
        _STSB, [[i, "main-forums", "answers-forums", "2015", f"000{i}", "none", "none", a, b] for i, (a, b) in
                zip(idx, PAIRS)],
    )  # fmt: skip
    files["QQP/test.tsv"] = _rows(["id", "question1", "question2"], [[i, a, b] for i, (a, b) in zip(idx, PAIRS)])
    for task, columns in (("QNLI", ["index", "question", "sentence"]), ("RTE", ["index", "sentence1", "sentence2"]),
                          ("WNLI", ["index", "sentence1", "sentence2"])):  # fmt: skip
        files[f"{task}/test.tsv"] = _rows(columns, [[i, a, b] for i, (a, b) in zip(idx, PAIRS)])
    return files


def make_tiny_glue(root: Path) -> Path:
    """Write a tiny GLUE download under `root` (`root/CoLA/train.tsv`, ..., `root/MNLI/test_mismatched.tsv`):
    every task and split, N_ROWS data rows each, with the real columns and header conventions
    (CoLA train/dev have no header). Labels cover every class in train. Returns `root`."""
    for name, text in _glue_files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
