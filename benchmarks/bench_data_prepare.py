"""Benchmark `convbert data prepare`: throughput (MB of input text per second) and peak RSS.

Corpus: the English Linux kernel docs (Debian `linux-doc-6.1`, `html/_sources/**/*.rst.txt` without
translations/), one document per source file, fetched once with `apt-get download` + `dpkg -x` into
~/.cache/convbert/linux-doc (run `apt-get update` first if apt-get cannot find the package). A WordPiece
tokenizer (30522 tokens) is trained on its first 4 MB. Each run is a fresh Python process; peak RSS is
reported for the main process, the largest worker (getrusage RUSAGE_SELF / RUSAGE_CHILDREN maxrss) and
the whole process tree (RSS and PSS summed over the tree, sampled every 20 ms).

    .venv/bin/python benchmarks/bench_data_prepare.py [--workers 1 2] [--max-seq-length 128]

Writes benchmarks/results/data_prepare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CACHE = Path.home() / ".cache" / "convbert" / "linux-doc"
SOURCES = "usr/share/doc/linux-doc-6.1/html/_sources"
RESULTS = Path(__file__).resolve().parent / "results" / "data_prepare.json"
TOKENIZER_TRAIN_BYTES = 4 << 20

# Runs in a fresh interpreter: prepare, then report wall time and maxrss (KiB) of itself and its workers.
CHILD = """
import json, resource, sys, time
from convbert.pretrain_data import prepare
corpus, tok, out, L, workers = sys.argv[1:6]
t = time.perf_counter()
m = prepare([corpus], tok, out, max_seq_length=int(L), num_workers=int(workers), progress=False)
seconds = time.perf_counter() - t
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "seconds": seconds,
    "counts": m["counts"],
    "shards": len(m["shards"]),
    "shard_sha256": [s["sha256"] for s in m["shards"]],
    "main_maxrss_kib": me.ru_maxrss,
    "worker_maxrss_kib": kids.ru_maxrss,
    "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
}))
"""


def build_corpus(cache: Path) -> Path:
    """Fetch and unpack linux-doc-6.1 (once) and write corpus.txt: a document per English source file."""
    corpus = cache / "corpus.txt"
    if corpus.exists():
        return corpus
    root = cache / "root"
    if not (root / SOURCES).is_dir():
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        debs.chmod(0o777)  # lets apt's sandbox user write here
        if not list(debs.glob("linux-doc-6.1_*.deb")):
            subprocess.run(["apt-get", "download", "linux-doc-6.1"], cwd=debs, check=True)
        subprocess.run(["dpkg", "-x", str(next(debs.glob("linux-doc-6.1_*.deb"))), str(root)], check=True)
    sources = root / SOURCES
    files = sorted(p for p in sources.rglob("*.rst.txt") if "translations" not in p.relative_to(sources).parts)
    tmp = corpus.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for path in files:
            lines = [line.rstrip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
            out.write("\n".join(line for line in lines if line.strip()) + "\n\n")
    os.replace(tmp, corpus)
    return corpus


def train_tokenizer(corpus: Path, cache: Path) -> Path:
    """A BERT-style uncased WordPiece tokenizer trained on the first 4 MB of the corpus."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok_dir = cache / "tokenizer"
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


def tree_memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over `pid` and its descendants, from /proc/*/smaps_rollup.

    Forked workers share the main process's pages: the RSS sum counts them once per process,
    PSS splits them between the processes that share them (the tree's real footprint).
    """
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def run_once(corpus: Path, tok_dir: Path, max_len: int, workers: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-prepare-")) / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(corpus), str(tok_dir), str(out), str(max_len), str(workers)],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak_rss = peak_pss = 0

    def sample() -> None:
        nonlocal peak_rss, peak_pss
        while proc.poll() is None:
            rss, pss = tree_memory_kib(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    shutil.rmtree(out.parent)
    if proc.returncode:
        raise SystemExit(f"prepare failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    mb = corpus.stat().st_size / 1e6
    return {
        "workers": workers,
        "seconds": round(result["seconds"], 3),
        "mb_per_s": round(mb / result["seconds"], 3),
        "cpu_seconds": round(result["cpu_seconds"], 2),  # main + workers, user + system (imports included)
        "mb_per_cpu_s": round(mb / result["cpu_seconds"], 3),
        "main_peak_rss_mb": round(result["main_maxrss_kib"] / 1024, 1),
        "worker_peak_rss_mb": round(result["worker_maxrss_kib"] / 1024, 1),
        "tree_peak_rss_sum_mb": round(peak_rss / 1024, 1),
        "tree_peak_pss_mb": round(peak_pss / 1024, 1),
        "examples": result["counts"]["examples"],
        "shards": result["shards"],
        "counts": result["counts"],
        "shard_sha256": result["shard_sha256"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()

    corpus = build_corpus(args.cache)
    tok_dir = train_tokenizer(corpus, args.cache)
    runs = [run_once(corpus, tok_dir, args.max_seq_length, n) for n in args.workers]
    identical = all(r["shard_sha256"] == runs[0]["shard_sha256"] for r in runs)
    for r in runs:
        del r["shard_sha256"]

    import tokenizers

    report = {
        "corpus": {"path": str(corpus), "bytes": corpus.stat().st_size, "source": "Debian linux-doc-6.1"},
        "max_seq_length": args.max_seq_length,
        "outputs_identical_across_workers": identical,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tokenizers": tokenizers.__version__,
            "platform": platform.platform(),
        },
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(f"corpus {corpus.stat().st_size / 1e6:.1f} MB, L={args.max_seq_length}, {os.cpu_count()} CPUs")
    print("peak memory in MB: RSS of the main process / of the largest worker / summed over the tree; tree PSS")
    header = ("workers", "seconds", "MB/s", "MB/CPU-s", "main RSS", "worker RSS", "tree RSS", "tree PSS", "examples")
    print(" ".join(f"{h:>10}" for h in header))
    for r in runs:
        print(
            f"{r['workers']:>10} {r['seconds']:>10.2f} {r['mb_per_s']:>10.2f} {r['mb_per_cpu_s']:>10.2f} "
            f"{r['main_peak_rss_mb']:>10.1f} "
            f"{r['worker_peak_rss_mb']:>10.1f} {r['tree_peak_rss_sum_mb']:>10.1f} {r['tree_peak_pss_mb']:>10.1f} "
            f"{r['examples']:>10}"
        )
    print(f"outputs identical across worker counts: {identical}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
