"""How much sentiment a frozen encoder's features hold: linear probes on every layer, pretrained against random.

Fine-tuning changes every weight, so a pretrained model that fine-tunes no better than random initialisation
could hold useful features and lose them, or hold none. A linear probe on frozen features tells the two apart.
For each model dir (`NAME=DIR`, ours or converted, e.g. `convert from-bert`), each layer's output (0: the
embeddings) is mean-pooled over the real tokens of the demo's movie-review sentences (and the top layer's [CLS]
vector, which the classification head reads); a logistic regression on standardised features, its L2 strength
picked on dev, is scored on test, with 1,000 labels (3 draws, mean ± 95% interval) and with all of them.

    .venv/bin/python benchmarks/feature_probe.py --data runs/demo/default/data --out benchmarks/results/probe \\
        "random init=runs/demo/default/random-init/seed0" "ConvBERT=runs/demo/default/pretrain/...-seed0/discriminator"

Writes OUT/probe.json and OUT/probe.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from convbert.demo_report import interval
from convbert.fileio import atomic_write_json, atomic_write_text
from convbert.model import ConvBertModel
from convbert.tokenizer import ConvBertTokenizer

STRENGTHS = (0.01, 0.1, 1.0)  # sklearn's C: inverse L2 strength, picked on dev
DRAWS = 3  # label subsets of the 1,000-label budget


def read_split(data: Path, name: str) -> tuple[list[str], np.ndarray]:
    path = data / f"sentiment-{name}.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (--data is the demo's data dir, OUT/default/data)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SystemExit(f"{path}:{n}: not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or row.get("label") not in ("pos", "neg"):
            raise SystemExit(f"{path}:{n}: expected an object with a string text and a label pos or neg")
        rows.append(row)
    return [r["text"] for r in rows], np.array([r["label"] == "pos" for r in rows])


@torch.no_grad()
def features(model_dir: str, texts: list[str], max_length: int = 64) -> np.ndarray:
    """(N, layers + 2, d): each layer's mean over real tokens (embeddings first), then the top layer's [CLS]."""
    tok, model = ConvBertTokenizer.from_pretrained(model_dir), ConvBertModel.from_pretrained(model_dir).eval()
    out = []
    for i in range(0, len(texts), 256):
        enc = tok(texts[i : i + 256], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(enc["input_ids"], enc["attention_mask"], output_hidden_states=True).hidden_states
        keep = enc["attention_mask"][..., None].float()  # (B, T, 1)
        means = [(h * keep).sum(1) / keep.sum(1) for h in hidden]  # each (B, d)
        out.append(torch.stack([*means, hidden[-1][:, 0]], 1))  # (B, layers + 2, d)
    return torch.cat(out).numpy()


def probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray], rows: np.ndarray) -> float:
    """Test accuracy of the logistic regression fitted on train[rows], its strength picked on dev."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x["train"][rows].mean(0), x["train"][rows].std(0) + 1e-6
    z = {k: (v - mu) / sd for k, v in x.items()}
    fits = [LogisticRegression(C=c, max_iter=2000).fit(z["train"][rows], y["train"][rows]) for c in STRENGTHS]
    best = max(fits, key=lambda f: f.score(z["dev"], y["dev"]))
    return float(best.score(z["test"], y["test"]))


def probe_model(model_dir: str, texts: dict[str, list[str]], y: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per feature (L0 .. Ln mean-pooled, top [CLS]): test accuracies with 1,000 labels (DRAWS) and all labels."""
    f = {k: features(model_dir, v) for k, v in texts.items()}
    n_layers = f["train"].shape[1] - 2
    draws = [np.random.default_rng([draw, 1000]).permutation(len(y["train"]))[:1000] for draw in range(DRAWS)]
    out = {}
    for j, name in enumerate([f"L{i} mean" for i in range(n_layers + 1)] + ["top [CLS]"]):
        x = {k: v[:, j] for k, v in f.items()}
        out[name] = {
            "1000": [probe(x, y, rows) for rows in draws],
            "all": [probe(x, y, np.arange(len(y["train"])))],
        }
    return out


def _cell(feature: dict[str, list[float]], budget: str) -> str:
    m, h = interval([v * 100 for v in feature[budget]])
    return f"{m:.1f}" if budget == "all" else f"{m:.1f} ± {h:.1f}"


def report(results: dict[str, dict]) -> str:
    lines = [
        "# Linear probes on frozen features (sentiment, the demo's split)",
        "",
        "Test accuracy (%) of a logistic regression on standardised, mean-pooled layer outputs (L0: the",
        f"embeddings), its strength picked on dev; 1,000 labels: mean ± 95% interval over {DRAWS} draws.",
        "",
        "| model | L0 (embeddings), 1,000 | top layer, 1,000 | top [CLS], 1,000 | best layer on test, 1,000 "
        "| L0, all | top layer, all |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        layers = [k for k in r if k.endswith("mean")]
        top, best = layers[-1], max(layers, key=lambda k: np.mean(r[k]["1000"]))
        lines.append(
            f"| {name} | {_cell(r['L0 mean'], '1000')} | {_cell(r[top], '1000')} | {_cell(r['top [CLS]'], '1000')} "
            f"| {_cell(r[best], '1000')} ({best.split()[0]}) | {_cell(r['L0 mean'], 'all')} | {_cell(r[top], 'all')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=DIR")
    ap.add_argument("--data", type=Path, required=True, help="dir of sentiment-{train,dev,test}.jsonl")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts, y = {}, {}
    for split in ("train", "dev", "test"):
        texts[split], y[split] = read_split(args.data, split)
    for spec in args.models:
        if "=" not in spec or not Path(spec.partition("=")[2], "config.json").is_file():
            raise SystemExit(f"{spec}: expected NAME=DIR, DIR a model dir with config.json")
    results = {}
    for spec in args.models:
        name, _, model_dir = spec.partition("=")
        results[name] = probe_model(model_dir, texts, y)
        print(f"{name}: done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "probe.json", {"models": dict(m.partition("=")[::2] for m in args.models),
                                                "results": results})  # fmt: skip
    table = report(results)
    atomic_write_text(args.out / "probe.md", table)
    print(table)


if __name__ == "__main__":
    main()
