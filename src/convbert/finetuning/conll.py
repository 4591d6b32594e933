"""CoNLL token classification: reading word/tag files, wordpiece features with first-piece labels, and
mapping token predictions back to per-word tags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import InputError
from ..tokenizer import ConvBertTokenizer
from .tasks import text_lines

IGNORE_INDEX = -100  # label of the positions the token-classification loss skips


@dataclass
class Sentence:
    """Pre-split words and their tags (e.g. BIO), from `source` ("file:line" of its first word)."""

    tokens: list[str]
    tags: list[str]
    source: str = ""


def read_conll(path: str | Path) -> list[Sentence]:
    """CoNLL-style file: a word and its tag per line (tab- or else whitespace-separated; the first and
    last columns are used), a blank line between sentences, `-DOCSTART-` lines skipped.

    Tags are "O" or B-/I-/E-/S- and an entity type (IOB1, IOB2/BIO, IOBES); any other is an InputError (file:line).
    """
    path = Path(path)
    sentences: list[Sentence] = []
    current = Sentence([], [])
    for lineno, line in text_lines(path):
        if not line.strip():
            if current.tokens:
                sentences.append(current)
            current = Sentence([], [])
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or not fields[0] or not fields[-1].strip():
            raise InputError(f"{path}:{lineno}: expected a word and its tag, got {line!r}")
        tag = fields[-1].strip()
        if not _valid_tag(tag):
            raise InputError(f"{path}:{lineno}: invalid tag {tag!r} (expected O, B-TYPE or I-TYPE)")
        if not current.tokens:
            current.source = f"{path}:{lineno}"
        current.tokens.append(fields[0])
        current.tags.append(tag)
    if current.tokens:
        sentences.append(current)
    if not sentences:
        raise InputError(f"{path}: no sentences")
    return sentences


def _valid_tag(tag: str) -> bool:
    """Whether `tag` is O, or B-/I- (IOB1/IOB2; also E-/S-: IOBES) and a non-empty type, as the metrics chunk."""
    return tag == "O" or (len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-")


def conll_labels(sentences: Sequence[Sentence]) -> list[str]:
    """The sorted tag set (infer it from the training sentences)."""
    return sorted({tag for s in sentences for tag in s.tags})


@dataclass
class TokenFeatures:
    """Token-classification inputs: `tensors` holds input_ids, token_type_ids, attention_mask and
    (with label2id) labels, all (N, T); a word's label sits on its first wordpiece, IGNORE_INDEX elsewhere."""

    tensors: dict[str, torch.Tensor]
    word_ids: list[list[int | None]]  # per row, the word index of each (unpadded) token; None for [CLS]/[SEP]
    num_words: list[int]  # words per sentence (truncated ones included)
    num_truncated: int  # sentences cut at max_length: their last words get no prediction


def token_classification_features(
    tokenizer: ConvBertTokenizer,
    sentences: Sequence[Sentence],
    label2id: dict[str, int] | None,
    max_length: int,
) -> TokenFeatures:
    """Wordpieces of each word (a word the normaliser deletes entirely becomes [UNK], so every word
    keeps a position), `[CLS] ... [SEP]`, cut to `max_length`, padded to the longest row."""
    if not sentences:
        raise InputError("no sentences to encode")
    if max_length < 3:
        raise InputError(f"max_length {max_length} leaves no room for a word")
    words = [w for s in sentences for w in s.tokens]
    pieces = iter(tokenizer(words, padding=False, truncation=False, return_tensors=None)["input_ids"])
    rows, labels, word_ids, truncated = [], [], [], 0
    for s in sentences:
        ids, row_labels, row_words = [tokenizer.cls_token_id], [IGNORE_INDEX], [None]
        for w, tag in enumerate(s.tags):
            wordpieces = next(pieces)[1:-1] or [tokenizer.unk_token_id]  # drop the [CLS]/[SEP] of the word
            if label2id is not None and tag not in label2id:
                raise InputError(f"{s.source or 'sentence'}: tag {tag!r} is not in the label list")
            first = IGNORE_INDEX if label2id is None else label2id[tag]
            ids += wordpieces
            row_labels += [first] + [IGNORE_INDEX] * (len(wordpieces) - 1)
            row_words += [w] * len(wordpieces)
        if len(ids) + 1 > max_length:
            truncated += 1
            keep = max_length - 1  # room for the closing [SEP]
            ids, row_labels, row_words = ids[:keep], row_labels[:keep], row_words[:keep]
        rows.append(ids + [tokenizer.sep_token_id])
        labels.append(row_labels + [IGNORE_INDEX])
        word_ids.append(row_words + [None])
    width = max(map(len, rows))

    def padded(values: list[list[int]], fill: int) -> torch.Tensor:
        return torch.tensor([v + [fill] * (width - len(v)) for v in values], dtype=torch.long)

    tensors = {
        "input_ids": padded(rows, tokenizer.pad_token_id),
        "token_type_ids": torch.zeros(len(rows), width, dtype=torch.long),
        "attention_mask": padded([[1] * len(r) for r in rows], 0),
    }
    if label2id is not None:
        tensors["labels"] = padded(labels, IGNORE_INDEX)
    return TokenFeatures(tensors, word_ids, [len(s.tokens) for s in sentences], truncated)


def align_predictions(
    predictions: ArrayLike, features: TokenFeatures, labels: Sequence[str], fill: str = "O"
) -> list[list[str]]:
    """Per-word tags from token-level label ids (N, T) or logits (N, T, C): each word takes the
    prediction at its first wordpiece; words cut off by truncation get `fill`."""
    preds = np.asarray(predictions)
    if preds.ndim == 3:
        preds = preds.argmax(-1)
    if preds.ndim != 2 or len(preds) != len(features.word_ids):
        raise InputError(f"expected predictions of shape ({len(features.word_ids)}, T), got {preds.shape}")
    out = []
    for row, word_ids, n_words in zip(preds, features.word_ids, features.num_words):
        if len(row) < len(word_ids):
            raise InputError(f"predictions have {len(row)} positions but a row has {len(word_ids)} tokens")
        tags = [fill] * n_words
        previous = None
        for position, w in enumerate(word_ids):
            if w is not None and w != previous:
                label_id = int(row[position])
                if not 0 <= label_id < len(labels):
                    raise InputError(f"predicted label id {label_id} is outside 0..{len(labels) - 1}")
                tags[w] = labels[label_id]
            previous = w
        out.append(tags)
    return out
