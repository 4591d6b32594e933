"""Shared fixtures: real data fetched once per session into the convbert cache (see convbert.tools.fetch).

A failed fetch fails the tests that need the data, unless CONVBERT_OFFLINE=1, which skips them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from convbert.tools import fetch


def _fetched(get: Callable[[], Path]) -> Path:
    try:
        return get()
    except fetch.FetchError as e:
        if os.environ.get("CONVBERT_OFFLINE") == "1":
            pytest.skip(f"CONVBERT_OFFLINE=1 and the data is not cached: {e}")
        pytest.fail(f"{e}\n(set CONVBERT_OFFLINE=1 to skip the tests that need fetched data)", pytrace=False)


@pytest.fixture(scope="session")
def bert_vocab_dir() -> Path:
    """bert-base-uncased vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    return _fetched(fetch.bert_uncased_vocab_dir)


@pytest.fixture(scope="session")
def vader_dir() -> Path:
    """The four VADER *_GroundTruth.txt files (fetch.VADER_FILES)."""
    return _fetched(fetch.vader_dir)


@pytest.fixture(scope="session")
def wnut16_file() -> Path:
    """WNUT-16 Twitter NER train split, `token<TAB>tag` lines."""
    return _fetched(fetch.wnut16_file)
