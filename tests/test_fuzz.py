"""The seeded fuzz suite (tests/fuzz.py): every input kind, mutated; bad input must end in the library's own error
naming the place, or be accepted, never in a traceback or a half-written output.

A failure prints its case ids; `.venv/bin/python tests/fuzz.py KIND:SEED:INDEX` runs one again.
"""

from __future__ import annotations

import fuzz
import pytest
from fuzz import KINDS, OUTCOMES, Case, Expect, make_case, run_case, run_kind

from convbert.errors import InputError

# cases per kind in CI: 9,250 in all, about 50 s on 2 cores (model, checkpoint, corpus and CLI cases are the slow
# ones: 5-60 ms each, against ~1-5 ms for a reader's); the slow test runs 10x each, with another seed
CI_CASES = {
    "glue": 2000,
    "custom": 1000,
    "conll": 800,
    "squad": 1000,
    "config": 700,
    "tokenizer": 1000,
    "weights": 600,
    "checkpoint": 250,
    "shards": 1000,
    "corpus": 100,
    "cli": 400,
    "plot": 400,
}
SLOW_SCALE = 10


def _check(kind: str, cases: int, seed: int, tmp_path, record_property) -> None:
    report = run_kind(kind, cases, seed, tmp_path)
    print(report.summary())
    record_property(f"fuzz_{kind}", {o: report.counts[o] for o in OUTCOMES})
    assert report.cases == cases
    if report.failures:
        pytest.fail(report.details(), pytrace=False)


@pytest.mark.parametrize("kind", sorted(CI_CASES))
def test_fuzz(kind, tmp_path, record_property):
    _check(kind, CI_CASES[kind], 0, tmp_path, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CI_CASES))
def test_fuzz_slow(kind, tmp_path, record_property):
    _check(kind, SLOW_SCALE * CI_CASES[kind], 1, tmp_path, record_property)


def test_every_kind_is_fuzzed():
    assert set(CI_CASES) == set(KINDS)
    assert sum(CI_CASES.values()) >= 5_000
    assert SLOW_SCALE * sum(CI_CASES.values()) >= 50_000


@pytest.mark.parametrize("kind", sorted(CI_CASES))
def test_case_ids_reproduce(kind, tmp_path):
    """A case id alone rebuilds its case: the same mutation, the same files."""
    for i in range(0, 40, 7):
        case_id = f"{kind}:5:{i}"
        a, b = make_case(case_id, tmp_path), make_case(case_id, tmp_path)
        assert a.mutation == b.mutation
        dirs = [tmp_path / "x" / case_id.replace(":", "-") / side for side in "ab"]
        for case, d in zip((a, b), dirs):
            d.mkdir(parents=True)
            case.setup(d)
        files = [
            {p.relative_to(d): p.read_bytes().replace(str(d).encode(), b"<dir>") for p in d.rglob("*") if p.is_file()}
            for d in dirs
        ]
        assert files[0] == files[1], case_id


def _case(target, **expect) -> Case:
    return Case("self-test", lambda d: (lambda: target(d), Expect(**expect)))


def _raise(error: BaseException):
    def target(d):
        raise error

    return target


def _leave(name: str, error: BaseException | None = None):
    def target(d):
        (d / name).write_text("half")
        if error is not None:
            raise error

    return target


@pytest.mark.parametrize(
    "target, expect, outcome",
    [
        (lambda d: None, {"names": ("f.tsv",)}, fuzz.ACCEPTED),
        (lambda d: None, {"names": ("f.tsv",), "must_fail": True}, fuzz.ACCEPTED_INVALID),
        (_raise(InputError("/x/f.tsv:3: bad")), {"names": ("f.tsv",), "line": 3}, fuzz.NAMED),
        (_raise(InputError("/x/f.tsv:4: bad")), {"names": ("f.tsv",), "line": 3}, fuzz.UNNAMED),
        (_raise(InputError("/x/f.tsv: bad")), {"names": ("f.tsv",), "locate": True}, fuzz.UNNAMED),
        (_raise(InputError("/x/f.tsv: 'label' bad")), {"names": ("f.tsv",), "locate": True, "fields": ("label",)},
         fuzz.NAMED),
        (_raise(InputError("/x/g.tsv:3: bad")), {"names": ("f.tsv",)}, fuzz.UNNAMED),
        (_raise(KeyError("x")), {"names": ("f.tsv",)}, fuzz.OTHER),
        (_raise(SystemExit(1)), {"names": ("f.tsv",)}, fuzz.OTHER),
        (_raise(fuzz.WronglyAccepted("ids")), {"names": ("f.tsv",)}, fuzz.ACCEPTED_INVALID),
        (_leave("out", InputError("f.tsv: bad")), {"names": ("f.tsv",), "outputs": "out"}, fuzz.PARTIAL),
        (_leave(".out.tmp-1234", InputError("f.tsv: bad")), {"names": ("f.tsv",), "outputs": "out"}, fuzz.PARTIAL),
        (_leave(".out.tmp-1234"), {"names": ("f.tsv",), "outputs": "out"}, fuzz.PARTIAL),
        (_leave("out"), {"names": ("f.tsv",), "outputs": "out"}, fuzz.ACCEPTED),
        (_leave("out"), {"names": ("f.tsv",), "untouched": "out"}, fuzz.PARTIAL),
    ],
)  # fmt: skip
def test_outcomes_are_classified(target, expect, outcome, tmp_path):
    for key in ("outputs", "untouched"):
        if key in expect:
            expect[key] = (tmp_path / "case" / expect[key],)
    assert run_case("self:0:0", _case(target, **expect), tmp_path / "case").outcome == outcome
