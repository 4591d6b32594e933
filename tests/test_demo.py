"""Smoke test of the main job: `convbert demo --budget tiny --ablation` writes every artefact with finite numbers."""

import math
import re

import torch

from convbert.cli import main


def test_demo_tiny_budget(tmp_path, vader_dir, capsys):
    torch.set_num_threads(1)
    args = ["demo", "--budget", "tiny", "--ablation", "--jobs", "2", "--out", str(tmp_path),
            "--data-dir", str(vader_dir.parent)]
    assert main(args) == 0  # two worker processes: the default's parallel path
    printed = capsys.readouterr().out
    out = tmp_path / "tiny"
    table = (out / "results.md").read_text()
    assert table.strip() in printed
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split("|")[1].strip() for r in rows] == [
        "ConvBERT (sdconv)", "ELECTRA (noconv, head_ratio 1)", "ConvBERT (dconv)", "ConvBERT (lconv)",
        "ConvBERT, random init"]
    for row in rows:
        numbers = [float(x) for x in re.findall(r"-?\d+\.?\d*(?:e[+-]\d+)?", row.split("|", 2)[2])]
        assert numbers and all(math.isfinite(x) for x in numbers), row
        dev, test = re.findall(r"(\d+\.\d) ± (\d+\.\d)", row)
        assert all(0 <= float(v) <= 100 for v in (*dev, *test))
    for png in ("pretraining_curves.png", "accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in ("convbert-sdconv", "electra-noconv-head-ratio-1", "convbert-dconv", "convbert-lconv"):
        assert (out / "pretrain" / run / "discriminator" / "model.safetensors").exists()
