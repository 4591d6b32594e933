"""Where the time goes: an op-level torch.profiler breakdown of our ConvBERT, transformers' and the same-size
ELECTRA/BERT, built exactly as `convbert bench` builds them.

    python benchmarks/profile_model.py --preset small --mode fwd --seq-len 128 --batch 8
    python benchmarks/profile_model.py --preset small --mode train --out benchmarks/results/profile-small-train.md

Ops are pooled into classes (GEMM: linear/addmm/mm/bmm/baddbmm and their backward; attention: SDPA kernels;
convolution; softmax; normalisation; activation; copies and layout; elementwise, AdamW's updates included) by their
self CPU time, so the table says what bounds each model: GEMM time is compute-bound, the rest memory-bound (and,
with glibc's allocator, partly page faults: the first op to touch a fresh multi-MB buffer pays for mapping it).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from convbert import ConvBertConfig
from convbert.fileio import atomic_write_text
from convbert.flops import model_flops
from convbert.tools.bench_models import Case, build_contender, make_inputs, make_step

CLASSES = [  # first match wins; patterns are matched against aten op names
    ("GEMM (linear, matmul)", r"addmm|^aten::mm$|bmm|matmul|linear"),
    ("attention kernel (SDPA)", r"scaled_dot_product|flash_attention|_efficient_attention"),
    ("convolution", r"conv|im2col|col2im|unfold"),
    ("softmax", r"softmax"),
    ("normalisation", r"layer_norm"),
    ("activation (GELU)", r"gelu"),
    (
        "copies and layout",
        r"copy_|contiguous|clone|cat|stack|transpose|permute|_to_copy|narrow|index|pad|"
        r"embedding|fill_|zero_|zeros|empty|as_strided|view|reshape|expand",
    ),
    (
        "elementwise (and AdamW's updates)",
        r"_foreach|adam|mul|add|sub|div|where|masked_fill|neg|sum|mean|pow|"
        r"tanh|dropout|bernoulli|vecdot|sqrt|lerp",
    ),
]


def op_class(name: str) -> str:
    for label, pattern in CLASSES:
        if re.search(pattern, name):
            return label
    return "other"


def profile_role(role: str, case: Case, steps: int, threads: int) -> tuple[dict[str, float], list, float]:
    torch.set_num_threads(threads)
    c = build_contender(role, case.preset, 0)
    inputs = make_inputs(ConvBertConfig.preset(case.preset), case.batch, case.seq_len, "cpu", 0)
    step = make_step(c, case, inputs, "cpu")
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    by_class: dict[str, float] = defaultdict(float)
    for e in events:
        by_class[op_class(e.key)] += e.self_cpu_time_total / steps / 1e3  # ms per step
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    gflop = model_flops(c.flops_config, case.batch, case.seq_len, case.mode == "train") / 1e9
    return dict(by_class), [(e.key, e.self_cpu_time_total / steps / 1e3, e.count // steps) for e in top], gflop


def report(case: Case, steps: int, threads: int) -> str:
    roles = ("ours", "hf-convbert", "reference")
    results = {r: profile_role(r, case, steps, threads) for r in roles}
    classes = [label for label, _ in CLASSES] + ["other"]
    totals = {r: sum(results[r][0].values()) for r in roles}
    lines = [
        f"# Profile: {case.preset}, {case.mode}, length {case.seq_len}, batch {case.batch}, fp32, {threads} "
        f"threads, torch {torch.__version__}",
        "",
        f"`{' '.join(['python', *sys.argv])}` ({steps} profiled steps; self CPU ms per step by op class; the "
        "profiler's own overhead inflates small ops)",
        "",
        "| op class | " + " | ".join(roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for label in classes:
        ms = {r: results[r][0].get(label, 0.0) for r in roles}
        cells = [f"{ms[r]:.1f} ({ms[r] / totals[r]:.0%})" if ms[r] else "" for r in roles]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"{totals[r]:.1f}" for r in roles) + " |")
    lines.append("| model GFLOP | " + " | ".join(f"{results[r][2]:.1f}" for r in roles) + " |")
    for r in roles:
        lines += ["", f"Top ops, {r} (self ms per step, calls per step):", ""]
        lines += [f"- `{name}` {ms:.2f} ms x{n}" for name, ms, n in results[r][1]]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--mode", choices=("fwd", "train"), default="fwd")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, help="also write the markdown here")
    a = p.parse_args()
    text = report(Case(a.preset, a.mode, "fp32", a.seq_len, a.batch), a.steps, a.threads)
    print(text)
    if a.out:
        atomic_write_text(a.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
