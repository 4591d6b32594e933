"""`convbert bench` on the tiny preset: files, fields, ratios, parameter parity and the memory subprocess."""

import argparse
import csv
import json
import math
import sys
from dataclasses import asdict, replace

import pytest

from convbert.errors import InputError
from convbert.settings import from_args
from convbert.tools import bench, bench_memory, bench_models, bench_results, timing

pytest.importorskip("transformers")


def parse(*argv: str) -> bench.BenchConfig:
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    return from_args(bench.BenchConfig, parser.parse_args(["bench", *argv]))


def test_tiny_run_then_resume_writes_json_and_csv(tmp_path, capsys):
    grid = (
        "--presets",
        "tiny",
        "--max-lengths",
        "16",
        "--batch-sizes",
        "2",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--no-memory",
        "--out",
        str(tmp_path),
    )
    args = parse(*grid, "--modes", "fwd")
    assert bench.run(args) == 0
    (json_path,) = tmp_path.glob("cpu-*.json")
    first = json.loads(json_path.read_text())
    args = parse(*grid, "--resume", str(json_path))  # adds the train rows to the same files
    assert bench.run(args) == 0
    table = capsys.readouterr().out
    assert "| tiny | fwd | fp32 | 16 | 2 |" in table and "| tiny | train |" in table and "ELECTRA-tiny" in table

    result = json.loads((tmp_path / "latest-cpu.json").read_text())
    assert result["complete"] and result == json.loads(json_path.read_text())

    def kept(rows):  # utilisation is rescaled to the peak GEMM rate of both runs
        return [{k: v for k, v in r.items() if k != "utilisation"} for r in rows]

    assert kept(result["rows"][:3]) == kept(first["rows"])
    assert result["meta"]["resumed_from"][0]["date"] == first["meta"]["date"]
    meta = result["meta"]
    for key in ("device_name", "threads", "torch", "transformers", "date", "gemm_gflops"):
        assert meta[key], key
    assert meta["device"] == "cpu" and meta["repeats"] == bench.MIN_REPEATS
    assert meta["gemm_gflops"]["fp32"]["median"] > 0
    check = result["checks"]["tiny"]
    assert check["params_equal_ours_hf"] and check["max_abs_diff_ours_vs_hf"] < 1e-4

    rows = result["rows"]
    assert {(r["mode"], r["role"]) for r in rows} == {
        (m, r) for m in ("fwd", "train") for r in ("ours", "hf-convbert", "reference")
    }
    for r in rows:
        assert set(bench_results.CSV_FIELDS) <= set(r)
        assert len(r["ms_repeats"]) == bench.MIN_REPEATS
        for key in ("ms_median", "tokens_per_s", "ratio_vs_hf_convbert", "ratio_vs_reference", "utilisation"):
            assert 0 < r[key] < math.inf, (key, r)
        assert r["mem_mb"] is None
    params = {(r["mode"], r["role"]): r["params"] for r in rows}
    assert params["fwd", "ours"] == params["fwd", "hf-convbert"]

    csv_path = json_path.with_suffix(".csv")
    with open(csv_path, newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and tuple(csv_rows[0]) == bench_results.CSV_FIELDS


def test_memory_probe_subprocess():
    case = bench_models.Case("tiny", "train", "fp32", 16, 2)
    mem = bench_memory.measure_memory("ours", case, "cpu", threads=1, seed=0)
    assert mem is not None and 0 < mem < 1000  # gradients + AdamW state of 1M parameters alone are ~12 MB


def test_bad_options_and_missing_transformers(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="repeats must be 5 <= repeats"):
        bench.run(parse("--repeats", "3", "--out", str(tmp_path)))
    with pytest.raises(InputError, match="unknown preset"):
        bench.run(parse("--presets", "huge", "--out", str(tmp_path)))
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(InputError, match=r"pip install convbert\[hf\]"):
        bench.run(parse("--presets", "tiny", "--out", str(tmp_path)))
    assert not any(tmp_path.iterdir())


def test_memory_shortfall_scales_a_smaller_batch():
    small = bench_models.Case("base", "train", "fp32", 512, 8)
    rows = [{**asdict(small), "mem_mb": 1.0}, {**asdict(small), "seq_len": 128, "mem_mb": 1e12}]
    assert bench_memory.memory_shortfall(replace(small, batch=32), rows, "cpu") is None  # 4 MB fits
    rows[0]["mem_mb"] = 1e9  # 1 PB at batch 8: batch 32 cannot fit; batch 8 itself is not estimated
    assert "GiB available" in bench_memory.memory_shortfall(replace(small, batch=32), rows, "cpu")
    assert bench_memory.memory_shortfall(small, rows, "cpu") is None


def test_utilisation_is_against_the_runs_peak_gemm_rate():
    result = {
        "meta": {"gemm_gflops": {"fp32": {"median": 100.0}}},
        "rows": [
            {"dtype": "fp32", "model_gflop": 20.0, "ms_median": 200.0, "gemm_gflops": 80.0},
            {"dtype": "fp32", "model_gflop": 30.0, "ms_median": 250.0, "gemm_gflops": 160.0},
        ],
    }
    timing.rescale_utilisation(result)
    assert result["meta"]["gemm_peak_gflops"] == {"fp32": 160.0}
    assert [r["utilisation"] for r in result["rows"]] == pytest.approx([20 / (0.2 * 160), 30 / (0.25 * 160)])


def test_quick_runs_one_small_configuration(tmp_path, capsys):
    args = parse("--quick", "--device", "cpu", "--no-memory", "--out", str(tmp_path))
    assert bench.run(args) == 0
    result = json.loads((tmp_path / "latest-cpu.json").read_text())
    assert result["complete"] and not result["skipped"]
    assert {(r["preset"], r["mode"], r["seq_len"], r["batch"], r["role"]) for r in result["rows"]} == {
        ("small", m, 128, 8, role) for m in ("fwd", "train") for role in ("ours", "hf-convbert", "reference")
    }
    assert all(
        len(r["ms_repeats"]) == bench.MIN_REPEATS and 0 < r["ratio_vs_hf_convbert"] < math.inf for r in result["rows"]
    )
    check = result["checks"]["small"]
    assert check["params_equal_ours_hf"] and check["max_abs_diff_ours_vs_hf"] < 1e-4
    assert "| small | fwd | fp32 | 128 | 8 |" in capsys.readouterr().out


def test_pretrain_step_against_the_reference_loop(tmp_path, capsys):
    args = parse(
        "--pretrain",
        "--presets",
        "tiny",
        "--max-lengths",
        "16",
        "--batch-sizes",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    )
    assert bench.run(args) == 0
    (json_path,) = tmp_path.glob("pretrain-cpu-*.json")
    result = json.loads(json_path.read_text())
    assert result["complete"] and json_path.with_suffix(".md").exists()
    rows = {r["role"]: r for r in result["rows"]}
    assert set(rows) == {"ours", "ours-noconv", "reference"}
    for r in rows.values():
        assert len(r["ms_repeats"]) == bench.MIN_REPEATS and r["vocab_size"] == 1000
        for key in ("ms_median", "tokens_per_s", "speedup_vs_reference", "utilisation"):
            assert 0 < r[key] < math.inf, (key, r)
    assert rows["reference"]["speedup_vs_reference"] == 1.0
    assert rows["ours-noconv"]["params"] != rows["ours"]["params"]  # a different architecture, same sizes
    assert "| tiny | fp32 | 16 | 2 | 1000 |" in capsys.readouterr().out


def test_pretrain_bench_needs_the_reference_file(tmp_path):
    args = parse("--pretrain", "--presets", "tiny", "--reference", str(tmp_path / "missing.py"), "--out", str(tmp_path))
    with pytest.raises(InputError, match="reference loop"):
        bench.run(args)


def test_compile_for_inference_freezes_the_weights_and_matches_eager():
    """Frozen inference graphs hold the weights as constants: the output matches eager, and a later in-place
    change of a weight reaches eager but not the compiled graph (proof that freezing applied)."""
    import torch

    from convbert import ConvBertConfig, ConvBertModel
    from convbert.train_utils import compile_for_inference

    torch.manual_seed(0)
    model = ConvBertModel(ConvBertConfig.preset("tiny")).eval()
    ids = torch.randint(1, model.config.vocab_size, (2, 16))
    forward = compile_for_inference(model)
    with torch.inference_mode():
        eager, compiled = model(ids).last_hidden_state, forward(ids).last_hidden_state
        assert (eager - compiled).abs().max() < 1e-5
        model.encoder.layer[0].intermediate["dense"].weight.mul_(2.0)
        changed, frozen = model(ids).last_hidden_state, forward(ids).last_hidden_state
    assert (changed - eager).abs().max() > 1e-3
    assert torch.equal(frozen, compiled)


def test_keep_freed_memory_removes_the_page_faults_of_repeated_allocations():
    """The bench's allocator setting: 8 MB blocks allocated and freed in turn fault on every round with glibc's
    defaults, in every process, and not at all once freed memory stays mapped, in most processes (in some,
    whole 4 MB runs of the reused pages still fault on this kernel, in a process-wide pattern whose cause was not
    found; the bench reports the count per row). Subprocesses: the setting is process-wide."""
    import platform
    import subprocess

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = (
        "import sys, torch\n"
        "from convbert.tools import timing\n"
        "setting = timing.keep_freed_memory() if sys.argv[1] == 'keep' else 'default'\n"
        "def cycle():\n"
        "    a = torch.ones(2 << 20); b = torch.ones(2 << 20); del a; c = torch.ones(3 << 20); del b, c\n"
        "for _ in range(3): cycle()\n"
        "before = timing.minor_faults()\n"
        "for _ in range(10): cycle()\n"
        "print(setting.split()[0], timing.minor_faults() - before)\n"
    )

    def faults(mode: str) -> tuple[str, int]:
        run = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        setting, count = run.stdout.split()
        return setting, int(count)

    default = [faults("default") for _ in range(3)]
    keep = [faults("keep") for _ in range(8)]
    assert {s for s, _ in keep} == {"glibc"}
    assert min(n for _, n in default) > 1000, default
    assert min(n for _, n in keep) < 50, keep
