"""SQuAD reading, doc-stride features, n-best decoding and the round trip through the official scoring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from glue_fixture import tiny_tokenizer

from convbert.errors import InputError
from convbert.finetuning.squad import SquadExample, postprocess, prepare_features, read_squad, write_predictions
from convbert.metrics import squad_evaluate

SHORT = "john went to the big red house . the cat sat on the mat ."
FILLER = "the cat sat on the mat . the dog was playing in the river . "
LONG = FILLER * 3 + "john went to the big red house . " + FILLER * 3


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("vocab"))


def _answer(context: str, text: str, occurrence: int = 0) -> dict:
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(text, start + 1)
    return {"text": text, "answer_start": start}


def _dataset(version_2: bool = True) -> dict:
    long_qas = [
        {"id": "house", "question": "where did john go ?", "answers": [_answer(LONG, "big red house")]},
        {"id": "river", "question": "where was the dog playing ?", "answers": [_answer(LONG, "the river", 2)]},
    ]
    short_qas = [
        {
            "id": "mat",
            "question": "what did the cat sat on ?",
            "answers": [_answer(SHORT, "the mat"), _answer(SHORT, "mat")],
        }
    ]
    if version_2:
        short_qas.append({"id": "paris", "question": "who went to paris ?", "answers": [], "is_impossible": True})
    paragraphs = [{"context": LONG, "qas": long_qas}, {"context": SHORT, "qas": short_qas}]
    return {"version": "v2.0" if version_2 else "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _token(features, f: int, context: str, text: str, last: bool = False) -> int:
    """Position in feature `f` of the token starting (or, with last=True, ending) the first `text` in context."""
    start = context.index(text)
    offsets = features.offset_mapping[f]
    return next(t for t, o in enumerate(offsets) if o and o[1 if last else 0] == start + (len(text) if last else 0))


# ---------------------------------------------------------------------------------------------- reading
def test_read_squad(tmp_path):
    examples = read_squad(_write(tmp_path / "dev.json", _dataset()))
    assert [(e.qid, e.is_impossible, len(e.answers)) for e in examples] == [
        ("house", False, 1),
        ("river", False, 1),
        ("mat", False, 2),
        ("paris", True, 0),
    ]
    assert examples[2].context == SHORT and examples[2].question == "what did the cat sat on ?"
    assert examples[1].answers[0] == _answer(LONG, "the river", 2) and examples[1].answers[0]["answer_start"] > 100


def test_read_squad_errors(tmp_path):
    data = _dataset()
    data["data"][0]["paragraphs"][1]["qas"][0]["answers"][1]["answer_start"] += 1
    path = _write(tmp_path / "shifted.json", data)
    with pytest.raises(
        InputError,
        match=re.escape(f"{path}: question 'mat' (data[0].paragraphs[1].qas[0])")
        + ".*'mat' does not match the context at answer_start",
    ):
        read_squad(path)
    (tmp_path / "bad.json").write_text('{"data": [')
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'bad.json'}: invalid JSON")):
        read_squad(tmp_path / "bad.json")
    data = _dataset()
    del data["data"][0]["paragraphs"][0]["qas"][1]["question"]
    with pytest.raises(InputError, match="question 'river' .*missing field 'question'"):
        read_squad(_write(tmp_path / "missing.json", data))
    data = _dataset()
    data["data"][0]["paragraphs"][1]["qas"][1]["id"] = "mat"
    with pytest.raises(InputError, match="'mat'.*duplicate question id"):
        read_squad(_write(tmp_path / "dup.json", data))
    data = _dataset()
    data["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = True
    with pytest.raises(InputError, match="'house'.*is_impossible is true but answers are given"):
        read_squad(_write(tmp_path / "impossible.json", data))
    with pytest.raises(InputError, match="missing field 'data'"):
        read_squad(_write(tmp_path / "nodata.json", {"version": "1.1"}))


# --------------------------------------------------------------------------------------------- features
def test_doc_stride_windows_label_every_window_holding_the_answer(tmp_path, tok):
    examples = read_squad(_write(tmp_path / "train.json", _dataset()))[:2]
    stride = 14
    features = prepare_features(tok, examples, max_length=32, doc_stride=stride, max_query_length=8, train=True)
    offsets = prepare_features(
        tok, examples, max_length=32, doc_stride=stride, max_query_length=8, train=False
    ).offset_mapping
    t = features.tensors
    assert t["input_ids"].shape == (len(features.example_ids), 32)
    for example in examples:
        rows = [f for f, qid in enumerate(features.example_ids) if qid == example.qid]
        assert len(rows) >= 5
        answer = example.answers[0]
        lo, hi = answer["answer_start"], answer["answer_start"] + len(answer["text"])
        holding = 0
        for f in rows:
            context = [o for o in offsets[f] if o is not None]
            start, end = t["start_positions"][f].item(), t["end_positions"][f].item()
            if context[0][0] <= lo and context[-1][1] >= hi:
                holding += 1
                assert 0 < start <= end
                assert (offsets[f][start][0], offsets[f][end][1]) == (lo, hi)
                assert LONG[offsets[f][start][0] : offsets[f][end][1]] == answer["text"]
            else:
                assert (start, end) == (0, 0)
        assert holding >= 2  # the answer lies in the overlap of consecutive windows
        for f, g in zip(rows, rows[1:]):  # consecutive windows share `stride` context tokens
            assert [o for o in offsets[f] if o][-stride:] == [o for o in offsets[g] if o][:stride]


def test_question_is_cut_to_max_query_length(tok):
    example = SquadExample("q", "what did the cat playing on the big red mat ?", SHORT, [_answer(SHORT, "the mat")])
    features = prepare_features(tok, [example], max_length=32, doc_stride=4, max_query_length=5)
    ids = features.tensors["input_ids"][0].tolist()
    assert tok.convert_ids_to_tokens(ids[:8]) == ["[CLS]", "what", "did", "the", "cat", "play", "[SEP]", "john"]
    features = prepare_features(tok, [example], max_length=32, doc_stride=4, max_query_length=6)
    assert tok.convert_ids_to_tokens(features.tensors["input_ids"][0, :8].tolist())[5:] == ["play", "##ing", "[SEP]"]
    with pytest.raises(InputError, match="must exceed max_query_length"):
        prepare_features(tok, [example], max_length=16, doc_stride=8, max_query_length=6)


# --------------------------------------------------------------------------------------------- decoding
def _short(tok):
    example = SquadExample("q", "where did john go ?", SHORT, [_answer(SHORT, "big red house")])
    features = prepare_features(tok, [example], max_length=32, doc_stride=4, max_query_length=8, train=False)
    assert len(features.example_ids) == 1
    logits = np.array([[0.0 if o else -1.0 for o in features.offset_mapping[0]]])  # 0 in the context, else -1
    return example, features, logits, logits.copy()


def test_decode_known_span(tok):
    example, features, start, end = _short(tok)
    start[0, 1] = 10  # a question token: never an answer
    end[0, 31] = 8  # padding
    start[0, _token(features, 0, SHORT, "mat")], end[0, _token(features, 0, SHORT, "john", last=True)] = 4, 5
    start[0, _token(features, 0, SHORT, "big")], end[0, _token(features, 0, SHORT, "house", last=True)] = 3, 3
    out = postprocess([example], features, start, end, n_best=20)
    assert out.predictions == {"q": "big red house"} and out.null_odds == {}
    nbest = out.nbest["q"]
    assert nbest[0] == {
        "text": "big red house",
        "probability": pytest.approx(nbest[0]["probability"]),
        "start_logit": 3.0,
        "end_logit": 3.0,
    }
    assert len(nbest) == 20 and sum(e["probability"] for e in nbest) == pytest.approx(1.0)
    assert [e["probability"] for e in nbest] == sorted((e["probability"] for e in nbest), reverse=True)


def test_max_answer_length(tok):
    example, features, start, end = _short(tok)
    start[0, _token(features, 0, SHORT, "john")], end[0, _token(features, 0, SHORT, "house", last=True)] = 5, 5
    start[0, _token(features, 0, SHORT, "big")], end[0, _token(features, 0, SHORT, "john", last=True)] = 3, 1
    assert postprocess([example], features, start, end).predictions["q"] == "john went to the big red house"
    assert postprocess([example], features, start, end, max_answer_length=3).predictions["q"] == "big red house"
    assert postprocess([example], features, start, end, max_answer_length=1).predictions["q"] == "john"


def test_null_answer_with_threshold(tok):
    example, features, start, end = _short(tok)
    start[0, _token(features, 0, SHORT, "big")], end[0, _token(features, 0, SHORT, "house", last=True)] = 3, 3
    start[0, 0], end[0, 0] = 4, 4  # null score 8 vs best span 6
    out = postprocess([example], features, start, end, version_2=True)
    assert out.predictions == {"q": ""} and out.null_odds == {"q": pytest.approx(2.0)}
    assert out.nbest["q"][0]["text"] == "" and out.nbest["q"][1]["text"] == "big red house"
    out = postprocess([example], features, start, end, version_2=True, null_threshold=2.5)
    assert out.predictions == {"q": "big red house"}
    assert postprocess([example], features, start, end).predictions == {"q": "big red house"}  # v1: no null
    start[:] = -1
    start[0, 0] = 50  # every start outside the context: no span qualifies
    out = postprocess([example], features, start, end, version_2=True, n_best=1)
    assert out.predictions == {"q": ""} and out.null_odds == {"q": float("inf")}


@pytest.mark.parametrize("version_2", [False, True])
def test_gold_logits_score_100(tmp_path, tok, version_2):
    data = _dataset(version_2)
    examples = read_squad(_write(tmp_path / "dev.json", data))
    kwargs = {"max_length": 32, "doc_stride": 6, "max_query_length": 8}
    train = prepare_features(tok, examples, train=True, **kwargs).tensors
    features = prepare_features(tok, examples, train=False, **kwargs)
    assert len(features.example_ids) > len(examples)
    start, end = np.full((2, len(features.example_ids), 32), -5.0)
    for f, (s, e) in enumerate(zip(train["start_positions"].tolist(), train["end_positions"].tolist())):
        start[f, s], end[f, e] = (10, 10) if s else (5, 5)
    out = postprocess(examples, features, start, end, version_2=version_2)
    assert out.predictions["river"] == "the river" and out.predictions["mat"] == "the mat"
    scores = squad_evaluate(data["data"], out.predictions, out.null_odds if version_2 else None)
    assert scores["exact"] == scores["f1"] == 100.0 and scores["missing"] == 0
    written = write_predictions(tmp_path / "out", out.predictions, out.nbest, out.null_odds)
    assert [p.name for p in written] == ["predictions.json", "nbest_predictions.json"] + (
        ["null_odds.json"] if version_2 else []
    )
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == out.predictions
    assert json.loads((tmp_path / "out" / "nbest_predictions.json").read_text()) == out.nbest
