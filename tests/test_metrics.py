"""Tests for convbert.metrics: GLUE vs scikit-learn/scipy, SQuAD and entity F1 against hand-computed values."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from convbert.errors import InputError
from convbert.metrics import (
    classification_metrics,
    entity_f1,
    exact_match_score,
    f1_score,
    get_entities,
    glue_metrics,
    normalize_answer,
    regression_metrics,
    roc_auc,
    squad_evaluate,
)

# ---------------------------------------------------------------------------------------------- GLUE

SEEDS = [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", SEEDS)
def test_cola_mcc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 2, size=200)
    preds = np.where(rng.random(200) < 0.7, refs, 1 - refs)
    got = glue_metrics("cola", preds, refs)
    assert got == {"matthews_correlation": pytest.approx(skm.matthews_corrcoef(refs, preds), abs=1e-12)}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_acc_and_f1_match_sklearn(seed, task):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 2, size=150).tolist()
    preds = rng.integers(0, 2, size=150).tolist()
    acc, f1 = skm.accuracy_score(refs, preds), skm.f1_score(refs, preds, pos_label=1)
    got = glue_metrics(task, preds, refs)
    assert got == pytest.approx({"accuracy": acc, "f1": f1, "combined": (acc + f1) / 2}, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("task", ["sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli"])
def test_accuracy_tasks(seed, task):
    rng = np.random.default_rng(seed)
    n_classes = 3 if task.startswith("mnli") else 2
    refs = rng.integers(0, n_classes, size=100)
    preds = rng.integers(0, n_classes, size=100)
    assert glue_metrics(task, preds, refs) == {"accuracy": pytest.approx(skm.accuracy_score(refs, preds))}


@pytest.mark.parametrize("seed", SEEDS)
def test_stsb_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    refs = rng.uniform(0, 5, size=120).round(1)  # rounding creates ties, exercising Spearman's mean ranks
    preds = (refs + rng.normal(0, 1.0, size=120)).round(1)
    pearson, spearman = stats.pearsonr(preds, refs)[0], stats.spearmanr(preds, refs)[0]
    got = glue_metrics("stsb", preds, refs)
    assert got == pytest.approx(
        {"pearson": pearson, "spearmanr": spearman, "combined": (pearson + spearman) / 2}, abs=1e-12
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 4, size=80)
    preds = rng.integers(0, 5, size=80)  # class 4 occurs only in predictions
    got = classification_metrics(preds, refs, num_labels=5)
    assert got == pytest.approx(
        {"accuracy": skm.accuracy_score(refs, preds), "macro_f1": skm.f1_score(refs, preds, average="macro")},
        abs=1e-12,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_metrics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=50)
    preds = refs + rng.normal(size=50)
    got = regression_metrics(preds, refs)
    assert got == pytest.approx(
        {
            "pearson": stats.pearsonr(preds, refs)[0],
            "spearman": stats.spearmanr(preds, refs)[0],
            "mse": skm.mean_squared_error(refs, preds),
        },
        abs=1e-12,
    )


@pytest.mark.parametrize(
    ("preds", "refs"),
    [
        ([1, 1, 1, 1], [0, 1, 0, 1]),  # one predicted class: MCC denominator 0
        ([0, 1, 0, 1], [1, 1, 1, 1]),  # one true class
        ([0, 0, 0], [0, 0, 0]),  # everything negative: no positives anywhere
        ([0, 0, 0, 0], [1, 0, 1, 0]),  # no positive predictions
        ([1, 0], [1, 0]),  # perfect
        ([1, 0], [0, 1]),  # perfectly wrong
    ],
)
def test_degenerate_binary_cases_match_sklearn(preds, refs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about ill-defined F1
        mcc, f1 = skm.matthews_corrcoef(refs, preds), skm.f1_score(refs, preds)
    assert glue_metrics("cola", preds, refs)["matthews_correlation"] == pytest.approx(mcc)
    assert glue_metrics("mrpc", preds, refs)["f1"] == pytest.approx(f1)


def test_degenerate_hand_values():
    assert glue_metrics("cola", [1, 1, 1], [0, 1, 0]) == {"matthews_correlation": 0.0}
    # No positive predictions and no positive references: F1 is 0 (sklearn's zero_division default).
    assert glue_metrics("qqp", [0, 0], [0, 0]) == {"accuracy": 1.0, "f1": 0.0, "combined": 0.5}
    # Constant predictions make correlations undefined (NaN, as scipy).
    assert math.isnan(regression_metrics([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["pearson"])
    assert math.isnan(glue_metrics("stsb", [2.0, 2.0], [1.0, 3.0])["combined"])


def test_glue_accepts_integral_floats_and_bools():
    assert glue_metrics("sst2", np.array([1.0, 0.0]), [True, False]) == {"accuracy": 1.0}


@pytest.mark.parametrize(
    ("task", "preds", "refs", "message"),
    [
        ("squad", [0], [0], "unknown GLUE task 'squad'"),
        ("sst2", [0, 1], [0], "predictions has 2 items but references has 1"),
        ("sst2", [], [], "predictions is empty"),
        ("sst2", [0, 2], [0, 1], r"predictions\[1\] = 2 is not a class id in 0..1"),
        ("mnli", [0, 1], [0, -1], r"references\[1\] = -1 is not a class id in 0..2"),  # GLUE test labels
        ("rte", [0.5, 1], [0, 1], r"predictions\[0\] = 0.5"),
        ("cola", [[0, 1]], [[0, 1]], "must be 1-D"),
        ("cola", ["0", "1"], [0, 1], "must be numeric"),
        ("stsb", [1.0, float("nan")], [1.0, 2.0], r"predictions\[1\] is not finite"),
        ("stsb", [1.0], [1.0], "at least 2"),
    ],
)
def test_glue_bad_input(task, preds, refs, message):
    with pytest.raises(InputError, match=message):
        glue_metrics(task, preds, refs)


def test_classification_metrics_bad_input():
    with pytest.raises(InputError, match="num_labels must be at least 2"):
        classification_metrics([0], [0], num_labels=1)
    with pytest.raises(InputError, match=r"references\[0\] = 3 is not a class id in 0..2"):
        classification_metrics([0], [3], num_labels=3)


# --------------------------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Quick, brown-fox!", "quick brownfox"),  # case, punctuation removed (not split), article
        ("An apple a day", "apple day"),
        ("theater anthem Anna", "theater anthem anna"),  # articles only as whole words
        ("A.B.C.", "abc"),  # punctuation goes first, so "a" is never a word of its own here
        ("  foo\t\nbar  ", "foo bar"),
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_and_f1_scores():
    assert exact_match_score("The Eiffel  Tower.", "eiffel tower") == 1.0
    assert exact_match_score("4 August 1961", "August 4, 1961") == 0.0
    assert f1_score("4 August 1961", "August 4, 1961") == 1.0  # bag of tokens
    # pred tokens [cat, cat, sat], gold [cat, sat, on, mat]: common = cat x1 + sat x1 = 2,
    # precision 2/3, recall 2/4 -> F1 = 2 * (2/3)(1/2) / (2/3 + 1/2) = 4/7.
    assert f1_score("the cat the cat sat", "cat sat on mat") == pytest.approx(4 / 7)
    assert f1_score("", "") == 1.0  # v2: both empty
    assert f1_score("the", "") == 1.0  # empty after normalisation counts as empty
    assert f1_score("Paris", "") == 0.0
    assert f1_score("", "Paris") == 0.0
    assert f1_score("London", "Paris") == 0.0


def _squad(qas):
    """A two-article dataset; qas: (id, answer texts or None for unanswerable)."""

    def qa(qid, answers):
        if answers is None:
            return {"id": qid, "question": "?", "answers": [], "is_impossible": True}
        return {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in answers]}

    half = len(qas) // 2
    return [
        {"title": "A", "paragraphs": [{"context": "...", "qas": [qa(*q) for q in qas[:half]]}]},
        {"title": "B", "paragraphs": [{"context": "...", "qas": [qa(*q) for q in qas[half:]]}]},
    ]


# Seven questions; the per-question raw scores (exact, F1) are worked out by hand:
DATASET = _squad(
    [
        ("q1", ["the Eiffel Tower", "Eiffel Tower in Paris"]),
        ("q2", ["1961", "August 4, 1961"]),
        ("q3", ["a red apple"]),
        ("q4", None),
        ("q5", None),
        ("q6", ["Paris"]),
        ("q7", None),
    ]
)
PREDICTIONS = {
    "q1": "Eiffel  tower!",  # -> "eiffel tower" == gold 1: EM 1, F1 1
    "q2": "4 August 1961",  # EM 0 for both; F1 vs "1961" = 2*(1/3)*1/(4/3) = 0.5, vs gold 2 = 1 -> max 1
    "q3": "an apple",  # "apple" vs "red apple": EM 0, F1 = 2*1*(1/2)/(3/2) = 2/3
    "q4": "",  # unanswerable, abstained: EM 1, F1 1
    "q5": "London",  # unanswerable, answered: EM 0, F1 0
    "q6": "",  # answerable, abstained: EM 0, F1 0
    "q7": "Berlin",  # unanswerable, answered: EM 0, F1 0
    "extra": "ignored",  # not in the dataset
}
NA_PROBS = {"q1": 0.1, "q2": 0.3, "q3": 0.4, "q4": 0.6, "q5": 0.2, "q6": 0.9, "q7": 0.7, "extra": 0.5}


def test_squad_v2_scores_and_breakdown():
    got = squad_evaluate(DATASET, PREDICTIONS)
    assert got == pytest.approx(
        {
            "exact": 100 * 2 / 7,  # q1 + q4
            "f1": 100 * (1 + 1 + 2 / 3 + 1) / 7,  # q1 + q2 + q3 + q4 = 11/3 -> 52.38
            "total": 7,
            "HasAns_exact": 100 * 1 / 4,  # q1 of q1 q2 q3 q6
            "HasAns_f1": 100 * (1 + 1 + 2 / 3 + 0) / 4,  # 66.67
            "HasAns_total": 4,
            "NoAns_exact": 100 * 1 / 3,  # q4 of q4 q5 q7
            "NoAns_f1": 100 * 1 / 3,
            "NoAns_total": 3,
            "missing": 0,
        }
    )


def test_squad_best_threshold():
    got = squad_evaluate(DATASET, PREDICTIONS, na_probs=NA_PROBS)
    # Abstaining everywhere scores the 3 unanswerable questions. Then answer in order of na_prob:
    #   q1 (.1) has-ans, q5 (.2) no-ans "London", q2 (.3), q3 (.4), q4 (.6) no-ans "", q7 (.7) no-ans "Berlin",
    #   q6 (.9) has-ans. Has-ans questions add their raw score, no-ans ones with a non-empty prediction -1.
    # exact: 3 -> q1 +1 = 4 (best, .1) -> q5 -1 = 3 -> q2 +0 -> q3 +0 -> q4 +0 -> q7 -1 = 2 -> q6 +0
    # F1:    3 -> q1 +1 = 4 (best, .1) -> q5 -1 = 3 -> q2 +1 = 4 (not better) -> q3 +2/3 = 4.67 (best, .4)
    #        -> q4 +0 -> q7 -1 = 3.67 -> q6 +0 = 3.67
    assert got["best_exact"] == pytest.approx(100 * 4 / 7)
    assert got["best_exact_thresh"] == 0.1
    assert got["best_f1"] == pytest.approx(100 * (14 / 3) / 7)
    assert got["best_f1_thresh"] == 0.4
    # na_prob_thresh is 1.0, so no question is turned into an abstention: same scores as without na_probs.
    assert got["exact"] == pytest.approx(100 * 2 / 7)
    assert got["f1"] == pytest.approx(100 * (11 / 3) / 7)


def test_squad_na_prob_thresh():
    got = squad_evaluate(DATASET, PREDICTIONS, na_probs=NA_PROBS, na_prob_thresh=0.5)
    # na_prob > 0.5 -> scored as an abstention: q4 (no-ans, 1 -> 1), q7 (no-ans, 0 -> 1), q6 (has-ans, 0 -> 0).
    assert got["exact"] == pytest.approx(100 * 3 / 7)  # q1 q4 q7
    assert got["f1"] == pytest.approx(100 * (1 + 1 + 2 / 3 + 1 + 1) / 7)
    assert got["NoAns_exact"] == pytest.approx(100 * 2 / 3)
    assert got["HasAns_f1"] == pytest.approx(100 * (8 / 3) / 4)  # unchanged
    # The best-threshold search uses the raw scores, so it does not depend on na_prob_thresh.
    assert got["best_f1"] == pytest.approx(100 * (14 / 3) / 7)


def test_squad_missing_predictions_score_zero():
    preds = {k: v for k, v in PREDICTIONS.items() if k not in ("q3", "q4")}
    probs = {k: v for k, v in NA_PROBS.items() if k not in ("q3", "q4")}
    got = squad_evaluate(DATASET, preds, na_probs=probs)
    assert got["missing"] == 2
    assert got["total"] == 7
    assert got["exact"] == pytest.approx(100 * 1 / 7)  # only q1; q4 (right if abstained) is missing
    assert got["f1"] == pytest.approx(100 * 2 / 7)  # q1 + q2
    assert got["NoAns_exact"] == 0.0
    # Walk without q3 and q4: start 2 (q5, q7) -> q1 3 (best, .1) -> q5 2 -> q2 3 -> q7 2 -> q6 2.
    assert got["best_f1"] == pytest.approx(100 * 3 / 7)
    assert got["best_f1_thresh"] == 0.1


def test_squad_v1_has_no_noans_keys():
    dataset = _squad([("a", ["Denver Broncos", "The Broncos"]), ("b", ["Santa Clara, California"])])
    got = squad_evaluate(dataset, {"a": "broncos", "b": "Santa Clara"})
    # a: EM 1 ("the broncos" -> "broncos"); b: pred [santa, clara] vs [santa, clara, california]:
    # precision 1, recall 2/3 -> F1 0.8.
    assert got == pytest.approx(
        {
            "exact": 50.0,
            "f1": 100 * (1 + 0.8) / 2,
            "total": 2,
            "HasAns_exact": 50.0,
            "HasAns_f1": 90.0,
            "HasAns_total": 2,
            "missing": 0,
        }
    )


def test_squad_gold_that_normalises_to_empty_is_dropped():
    # As the official script: a gold "The" is dropped, leaving "Paris"; the question still has an answer.
    got = squad_evaluate(_squad([("a", ["The", "Paris"])]), {"a": "paris"})
    assert got["exact"] == 100.0 and got["HasAns_total"] == 1


def test_squad_bad_input():
    with pytest.raises(InputError, match="list of articles"):
        squad_evaluate({"data": DATASET}, PREDICTIONS)
    with pytest.raises(InputError, match=r"data\[0\].paragraphs\[0\].qas\[0\]: missing 'answers'"):
        squad_evaluate([{"paragraphs": [{"qas": [{"id": "x"}]}]}], {})
    with pytest.raises(InputError, match="duplicate question id 'q1'"):
        squad_evaluate(_squad([("q1", ["a"]), ("q1", ["b"])]), {})
    with pytest.raises(InputError, match="is_impossible is true but answers are given"):
        squad_evaluate(
            [{"paragraphs": [{"qas": [{"id": "x", "answers": [{"text": "y"}], "is_impossible": True}]}]}], {}
        )
    with pytest.raises(InputError, match="prediction for 'q1' must be a string"):
        squad_evaluate(DATASET, {**PREDICTIONS, "q1": None})
    with pytest.raises(InputError, match="na_probs has no probability for 1 question"):
        squad_evaluate(DATASET, PREDICTIONS, na_probs={k: v for k, v in NA_PROBS.items() if k != "q2"})
    with pytest.raises(InputError, match="has no questions"):
        squad_evaluate([], {})


# ---------------------------------------------------------------------------------- token classification


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),  # entity at the end
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 2)]),  # I- after O starts a chunk (IOB1)
        (["I-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),  # I- at the start; B- splits
        (["B-PER", "I-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 2, 3)]),  # type change in I- run
        (["B-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),
        (["B-ORG", "B-ORG", "I-ORG"], [("ORG", 0, 0), ("ORG", 1, 2)]),
        (["O", "O"], []),
        ([], []),
        # IOBES: S- is a single-token chunk; E- closes a chunk; an E- or I- after E- starts a new one.
        (["S-PER", "B-LOC", "I-LOC", "E-LOC", "E-LOC"], [("PER", 0, 0), ("LOC", 1, 3), ("LOC", 4, 4)]),
        (["B-X", "E-X", "I-X", "S-X"], [("X", 0, 1), ("X", 2, 2), ("X", 3, 3)]),
        (["B-MISC-2", "I-MISC-2"], [("MISC-2", 0, 1)]),  # the type is everything after the prefix
    ],
)
def test_get_entities(tags, expected):
    assert get_entities(tags) == expected


@pytest.mark.parametrize("tag", ["PER", "B-", "X-PER", "b-PER", "", None])
def test_get_entities_rejects_bad_tags(tag):
    with pytest.raises(InputError, match="tag 1"):
        get_entities(["O", tag])


TRUE = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
PRED = [["B-PER", "I-PER", "O", "I-LOC"], ["O", "B-ORG", "O", "B-PER"]]


def test_entity_f1_hand_computed():
    got = entity_f1(TRUE, PRED)
    # true: PER(s0 0-1) LOC(s0 3-3) ORG(s1 1-2); pred: PER(s0 0-1) LOC(s0 3-3, from a lone I-) ORG(s1 1-1)
    # PER(s1 3-3). Correct: PER(s0) and LOC -> precision 2/4, recall 2/3, F1 = 2*(1/2)(2/3)/(7/6) = 4/7.
    # Tags: sentence 0 has 3 of 4 equal (B-LOC vs I-LOC), sentence 1 has 2 of 4 -> accuracy 5/8.
    per_type = got.pop("per_type")
    assert got == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3, "accuracy": 5 / 8})
    assert per_type == {
        "LOC": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # predicted end is wrong
        "PER": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
    }


def test_entity_f1_entities_do_not_cross_sentences():
    # Each sentence's I-PER is its own entity, so they match one-for-one.
    got = entity_f1([["B-PER"], ["I-PER"]], [["I-PER"], ["I-PER"]])
    assert (got["precision"], got["recall"], got["f1"], got["support"]) == (1.0, 1.0, 1.0, 2)
    assert got["accuracy"] == 0.5


def test_entity_f1_no_entities():
    got = entity_f1([["O", "O"]], [["O", "O"]])
    assert got == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "accuracy": 1.0, "per_type": {}}
    got = entity_f1([["B-PER", "O"]], [["O", "O"]])  # nothing predicted
    assert (got["precision"], got["recall"], got["f1"]) == (0.0, 0.0, 0.0)
    assert got["per_type"] == {"PER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}}


def test_entity_f1_bad_input():
    with pytest.raises(InputError, match="sentence 1: 2 true tags but 3 predicted tags"):
        entity_f1([["O"], ["O", "O"]], [["O"], ["O", "O", "O"]])
    with pytest.raises(InputError, match="true_seqs has 2 sentences but pred_seqs has 1"):
        entity_f1([["O"], ["O"]], [["O"]])
    with pytest.raises(InputError, match="predicted sentence 0, tag 0"):
        entity_f1([["O"]], [["PER"]])
    with pytest.raises(InputError, match="no tags"):
        entity_f1([[]], [[]])


def _random_tags(rng, n):
    vocab = ["O", "O", "O"] + [f"{p}-{t}" for p in "BIES" for t in ("PER", "LOC", "ORG")]
    return [str(t) for t in rng.choice(vocab, size=n)]


@pytest.mark.parametrize("seed", SEEDS)
def test_entity_f1_matches_seqeval(seed):
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, size=40)
    true = [_random_tags(rng, n) for n in lengths]
    # Predictions: the truth with about a third of the tags resampled, so that many entities match.
    pred = [[p if rng.random() < 0.35 else t for t, p in zip(s, _random_tags(rng, len(s)))] for s in true]
    for seq in true:
        assert get_entities(seq) == seqeval_entities(seq)
    got = entity_f1(true, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = seqeval.classification_report(true, pred, output_dict=True)
        assert got["precision"] == pytest.approx(seqeval.precision_score(true, pred))
        assert got["recall"] == pytest.approx(seqeval.recall_score(true, pred))
        assert got["f1"] == pytest.approx(seqeval.f1_score(true, pred))
        assert got["accuracy"] == pytest.approx(seqeval.accuracy_score(true, pred))
    for name, scores in got["per_type"].items():
        expected = report[name]
        assert scores == pytest.approx(
            {
                "precision": expected["precision"],
                "recall": expected["recall"],
                "f1": expected["f1-score"],
                "support": expected["support"],
            }
        )
    assert set(got["per_type"]) == set(report) - {"micro avg", "macro avg", "weighted avg"}


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.15
    for scores in (rng.normal(size=2000) + y, np.round(rng.normal(size=2000) + y, 1), np.zeros(2000)):
        assert roc_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)
    assert math.isnan(roc_auc(np.zeros(5), np.arange(5)))
