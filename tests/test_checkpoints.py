"""Checkpoints: the manifest (sizes, sha256), the checks of everything before anything is loaded (a failing
checkpoint leaves model and optimizer untouched), --resume auto falling back to the newest intact checkpoint,
cut log rows and the leftovers of killed saves."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_pretrain import base_args, cli, corpus, final_weights  # noqa: F401 (corpus is a fixture)
from torch import nn

from convbert.checkpoints import find_checkpoints, load_checkpoint, save_checkpoint, write_manifest
from convbert.errors import InputError
from convbert.finetuning import run_files
from convbert.pretraining import recipe
from convbert.pretraining.config import PretrainConfig
from convbert.pretraining.runlog import LOG_FIELDS, RunLog
from convbert.train_utils import Dist, grad_scaler, linear_schedule, make_optimizer

D = Dist()
FILES = ["manifest.json", "model.safetensors", "optimizer.safetensors", "rng-0.safetensors", "trainer_state.json"]


# ------------------------------------------------------------------------------------------ a small trainer
class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.lin = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.head = nn.Linear(3, 7)
        self.register_buffer("ids", torch.arange(5))

    def forward(self, x):
        return self.head(self.norm(self.lin(self.emb(x)))).sum()


def trainer(seed: int, steps: int = 0) -> SimpleNamespace:
    torch.manual_seed(seed)
    model = Small()
    optimizer = make_optimizer(model, 1e-2)
    scheduler = linear_schedule(optimizer, 2, 10)
    scaler = grad_scaler("fp32", torch.device("cpu"))
    for _ in range(steps):
        model(torch.randint(0, 7, (6,))).backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, step=steps)


def snapshot(t: SimpleNamespace) -> tuple:
    return (
        {k: v.clone() for k, v in t.model.state_dict().items()},
        {i: {k: v.clone() for k, v in s.items()} for i, s in t.optimizer.state_dict()["state"].items()},
        json.dumps(t.optimizer.state_dict()["param_groups"]),
        json.dumps(t.scheduler.state_dict()),
    )


def same(a: tuple, b: tuple) -> bool:
    weights = a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    moments = a[1].keys() == b[1].keys() and all(
        a[1][i].keys() == b[1][i].keys() and all(torch.equal(a[1][i][k], b[1][i][k]) for k in a[1][i]) for i in a[1]
    )
    return weights and moments and a[2:] == b[2:]


@pytest.fixture
def ckpt(tmp_path) -> Path:
    t = trainer(0, steps=2)
    return save_checkpoint(tmp_path, 2, t.model, t.optimizer, t.scheduler, t.scaler, D, {"extra": 1})


def load(path: Path, t: SimpleNamespace | None = None) -> dict:
    t = t or trainer(1)
    return load_checkpoint(path, t.model, t.optimizer, t.scheduler, t.scaler, D)


def refused(path: Path, match: str) -> InputError:
    """load_checkpoint raises an InputError matching `match` and leaves a fresh trainer as it was."""
    t = trainer(1)
    before = snapshot(t)
    with pytest.raises(InputError, match=match) as e:
        load(path, t)
    assert same(before, snapshot(t)), "a refused checkpoint changed the model, optimizer or schedule"
    assert not t.optimizer.state
    return e.value


def edit_state(path: Path, edit) -> None:
    """Change trainer_state.json in place with `edit` and re-seal the manifest, so that the check after the
    manifest's is tested."""
    f = path / "trainer_state.json"
    info = json.loads(f.read_text())
    edit(info)
    f.write_text(json.dumps(info))
    write_manifest(path)


def edit_tensors(path: Path, name: str, edit) -> None:
    tensors = load_file(path / name)
    edit(tensors)
    save_file(tensors, path / name)
    write_manifest(path)


def flip_byte(f: Path, at: int | None = None) -> None:
    data = bytearray(f.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x01
    f.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ unit cases
def test_round_trip_restores_everything_and_the_manifest_lists_every_file(ckpt):
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["format"] == "convbert-checkpoint" and manifest["version"] == 1
    assert sorted(manifest["files"]) == sorted(set(FILES) - {"manifest.json"})
    for name, entry in manifest["files"].items():
        assert entry["size"] == (ckpt / name).stat().st_size and len(entry["sha256"]) == 64
    saved = snapshot(trainer(0, steps=2))
    draws = torch.rand(3)  # what follows the RNG state that the checkpoint holds
    t = trainer(1)
    info = load(ckpt, t)
    assert info["step"] == 2 and info["extra"] == 1
    assert same(saved, snapshot(t)) and torch.equal(torch.rand(3), draws)


@pytest.mark.parametrize("key", ["optimizer", "rng", "scheduler", "scaler", "step"])
def test_missing_keys(ckpt, key):
    edit_state(ckpt, lambda info: info.pop(key))
    e = refused(ckpt, f"missing {key}")
    assert "trainer_state.json" in str(e) and str(ckpt) in str(e)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda i: i.update(step="abc"), "step must be an integer >= 0, not a string"),
        (lambda i: i.update(step=-1), "step must be an integer >= 0"),
        (lambda i: i.update(step=2.0), "step must be an integer"),
        (lambda i: i.update(step=4), "step 4 in a checkpoint named step-00000002"),
        (lambda i: i.update(optimizer=[]), "optimizer must be an object"),
        (lambda i: i["optimizer"].update(param_groups={}), "param_groups must be a list of 2"),
        (lambda i: i["optimizer"]["param_groups"][0].update(lr="x"), r"param_groups\[0\].lr must be a number"),
        (lambda i: i["optimizer"]["param_groups"][0]["params"].pop(), r"param_groups\[0\].params must be a list"),
        (lambda i: i["optimizer"]["state"].update({"99": ["exp_avg"]}), "'99', not the index of a parameter"),
        (lambda i: i["scheduler"].update(last_epoch="x"), "scheduler.last_epoch must be an integer"),
        (lambda i: i["scheduler"].pop("base_lrs"), "scheduler: missing base_lrs"),
        (lambda i: i.update(scaler=None), "scaler must be an object"),
        (lambda i: i.update(rng={}), "rng must be a list"),
        (lambda i: i["rng"][0].update(python="x"), r"rng\[0\].python must be"),
        (lambda i: i["rng"][0]["python"][1].__setitem__(3, "x"), r"rng\[0\].python: the state must be integers"),
        (lambda i: i["rng"].append(i["rng"][0]), "rng-1.safetensors is missing"),
    ],
)
def test_wrong_types(ckpt, edit, match):
    edit_state(ckpt, edit)
    e = refused(ckpt, match)
    assert f"{ckpt / 'trainer_state.json'}:" in str(e)


def test_json_list_instead_of_an_object(ckpt):
    f = ckpt / "trainer_state.json"
    f.write_text(json.dumps([json.loads(f.read_text())]))
    write_manifest(ckpt)
    refused(ckpt, "trainer_state.json: must be a JSON object, not a list")


def test_python_rng_state_that_random_refuses_leaves_everything_untouched(ckpt):
    edit_state(ckpt, lambda i: i["rng"][0]["python"][1].pop())  # 624 words: random.setstate refuses them
    t = trainer(1)
    state = torch.get_rng_state()
    with pytest.raises(InputError, match="rng-0.safetensors with trainer_state.json rng"):
        load(ckpt, t)
    assert torch.equal(state, torch.get_rng_state()), "the torch RNG state is put back"
    assert not t.optimizer.state


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.update({"lin.weight": torch.zeros(4, 3)}), r"model.safetensors: lin.weight is float32 \(4, 3\)"),
        (lambda t: t.update({"lin.weight": t["lin.weight"].double()}), "lin.weight is float64"),
        (lambda t: t.update({"ids": t["ids"].float()}), "ids is float32"),
        (lambda t: t.pop("norm.bias"), r"missing \['norm.bias'\]"),
        (lambda t: t.update({"other": torch.zeros(1)}), r"unknown \['other'\]"),
    ],
)
def test_model_tensors_are_checked_against_the_model(ckpt, edit, match):
    edit_tensors(ckpt, "model.safetensors", edit)
    refused(ckpt, match)


def test_wrong_shaped_optimizer_tensor(ckpt):
    edit_tensors(ckpt, "optimizer.safetensors", lambda t: t.update({"0.exp_avg": torch.zeros(3, 3)}))
    refused(ckpt, r"optimizer.safetensors: 0.exp_avg is float32 \(3, 3\), want float32 \(7, 4\)")


def test_fp16_optimizer_tensor(ckpt):
    edit_tensors(ckpt, "optimizer.safetensors", lambda t: t.update({"1.exp_avg_sq": t["1.exp_avg_sq"].half()}))
    refused(ckpt, r"optimizer.safetensors: 1.exp_avg_sq is float16 \(3, 4\), want float32 \(3, 4\)")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.update({"0.step": torch.zeros(2)}), r"0.step is float32 \(2,\)"),
        (lambda t: t.pop("2.exp_avg"), "has no 2.exp_avg"),
        (lambda t: t.update({"9.exp_avg": torch.zeros(1)}), "tensors trainer_state.json does not list"),
    ],
)
def test_optimizer_tensors_match_the_state(ckpt, edit, match):
    edit_tensors(ckpt, "optimizer.safetensors", edit)
    refused(ckpt, match)


def test_rng_tensors_are_checked(ckpt):
    edit_tensors(ckpt, "rng-0.safetensors", lambda t: t.update(torch=t["torch"][:-1]))
    refused(ckpt, r"rng-0.safetensors: torch is uint8 \(5055,\)")


@pytest.mark.parametrize("name", sorted(set(FILES) - {"manifest.json"}))
def test_a_flipped_byte_is_found_by_the_sha256(ckpt, name):
    flip_byte(ckpt / name, at=(ckpt / name).stat().st_size - 1)  # the tensor data (or JSON) at the end
    refused(ckpt, f"{ckpt}: {name} does not match its sha256 in manifest.json")


def test_manifest_problems(ckpt):
    (ckpt / "notes.txt").write_text("x")
    refused(ckpt, "notes.txt is not listed in manifest.json")
    (ckpt / "notes.txt").unlink()
    with (ckpt / "model.safetensors").open("ab") as f:
        f.write(b"\0")
    refused(ckpt, r"model.safetensors has \d+ bytes, manifest.json says \d+")
    write_manifest(ckpt)
    (ckpt / "rng-0.safetensors").unlink()
    refused(ckpt, "rng-0.safetensors is missing")
    write_manifest(ckpt)
    refused(ckpt, "manifest.json: lists no rng-0.safetensors")
    f = ckpt / "manifest.json"
    m = json.loads(f.read_text())
    m["files"]["model.safetensors"]["size"] += 1
    f.write_text(json.dumps(m))
    refused(ckpt, "manifest.json: corrupt")  # told apart from a change to model.safetensors
    (ckpt / "manifest.json").write_text("[]")
    refused(ckpt, "manifest.json: not a checkpoint manifest")
    (ckpt / "manifest.json").write_text('{\n "format": "convbert-checkpoint",\n "version": 1,\n')
    refused(ckpt, "manifest.json:4: not JSON")
    (ckpt / "manifest.json").write_bytes(b'{\n "format": "\xff"}')
    refused(ckpt, "manifest.json:2: not valid UTF-8")
    (ckpt / "manifest.json").write_text('{"version": 1, "version": 1}')
    refused(ckpt, "manifest.json: key 'version' is given twice")
    (ckpt / "manifest.json").write_text("[" * 5000 + "]" * 5000)
    refused(ckpt, "manifest.json:1: not JSON: nested too deep")


def test_a_checkpoint_without_manifest_is_refused(ckpt):
    (ckpt / "manifest.json").unlink()  # as written before manifests: reported and skipped, never loaded unchecked
    refused(ckpt, "no manifest.json")


def test_find_checkpoints_removes_leftovers_of_killed_saves(tmp_path, ckpt):
    out = ckpt.parent
    leftover = out / ".step-00000004.tmp-k1ll_3d"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    kept = [out / ".step-4.tmp-abc", out / ".result.tmp-abc", out / "step-00000003.tmp-abc"]
    for p in kept:
        p.mkdir()
    (out / ".step-00000005.tmp-file").write_text("not a dir")
    assert find_checkpoints(out) == [ckpt]
    assert not leftover.exists()
    assert all(p.exists() for p in kept) and (out / ".step-00000005.tmp-file").exists()


def test_resume_auto_falls_back_and_refuses_when_none_passes(tmp_path, caplog):
    out = tmp_path / "run"
    t = trainer(0, steps=2)
    old = save_checkpoint(out, 2, t.model, t.optimizer, t.scheduler, t.scaler, D, {})
    t = trainer(0, steps=4)
    new = save_checkpoint(out, 4, t.model, t.optimizer, t.scheduler, t.scaler, D, {})
    flip_byte(new / "optimizer.safetensors")
    fresh = trainer(1)
    cfg = SimpleNamespace(resume="auto")
    with caplog.at_level(logging.WARNING):
        start = recipe.resume(cfg, out, fresh.model, fresh.optimizer, fresh.scheduler, fresh.scaler, D)
    assert start == 2
    assert f"skipping checkpoint {new}" in caplog.text and "optimizer.safetensors" in caplog.text
    assert same(snapshot(fresh), snapshot(trainer(0, steps=2)))
    (old / "manifest.json").unlink()
    t = trainer(1)
    with pytest.raises(InputError, match="none of its 2 checkpoints passes its checks"):
        recipe.resume(cfg, out, t.model, t.optimizer, t.scheduler, t.scaler, D)
    assert "no manifest.json" in caplog.text


def test_finetuning_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    seed_dir = tmp_path / "seed-0"
    runs = []
    for steps in (2, 4):
        t = trainer(0, steps=steps)
        run = run_files.RunState("dev", "accuracy", step=steps, history=[{"step": steps}])
        run.best_state = {k: v.clone() for k, v in t.model.state_dict().items()}
        run.best_outputs = {"dev": {"logits": torch.randn(3, 2).numpy()}}
        run_files.checkpoint(seed_dir, t, run, D)
        runs.append(run)
    newest = seed_dir / "step-00000004"
    edit_state(newest, lambda info: info["run"].update(epoch="one"))
    fresh = trainer(1)
    with caplog.at_level(logging.WARNING):
        run = run_files.resume(seed_dir, fresh, D)
    assert run.step == 2 and run.history == [{"step": 2}]
    assert "run.epoch must be an integer" in caplog.text and str(newest) in caplog.text
    assert (run.best_outputs["dev"]["logits"] == runs[0].best_outputs["dev"]["logits"]).all()
    assert same(snapshot(fresh), snapshot(trainer(0, steps=2)))
    edit_state(seed_dir / "step-00000002", lambda info: info["run"].pop("best"))
    with pytest.raises(InputError, match="none of its 2 checkpoints"):
        run_files.resume(seed_dir, trainer(1), D)


@pytest.mark.parametrize("kind", ["log.csv", "eval.csv"])
def test_a_log_row_cut_mid_write_is_dropped_with_a_warning(tmp_path, caplog, kind):
    header = ",".join(LOG_FIELDS)
    rows = [",".join([str(s), *["0.5"] * (len(LOG_FIELDS) - 1)]) for s in (20, 40)]
    (tmp_path / kind).write_text("\r\n".join([header, *rows, "60,"]), newline="")
    with caplog.at_level(logging.WARNING):
        log = RunLog(tmp_path, True, 60)
    assert f"{tmp_path / kind}: dropping its last line '60,'" in caplog.text
    lines = (tmp_path / kind).read_text().splitlines()
    assert [r.split(",")[0] for r in lines[1:]] == ["20", "40"]
    if kind == "log.csv":
        assert log.elapsed == 0.5


def test_a_log_row_with_a_bad_elapsed_time_is_an_input_error(tmp_path):
    row = ",".join(["8", *["0.5"] * (len(LOG_FIELDS) - 3), "soon", "0"])
    (tmp_path / "log.csv").write_text(",".join(LOG_FIELDS) + "\n" + row + "\n")
    with pytest.raises(InputError, match="log.csv: elapsed_s of the row of step 8 is 'soon'"):
        RunLog(tmp_path, True, 8)


# ------------------------------------------------------------------------------------------ end to end
def config(corpus, out: Path, steps: int) -> PretrainConfig:  # noqa: F811
    return PretrainConfig(
        data=str(corpus / "shards"),
        out=str(out),
        preset="tiny",
        batch_size=8,
        max_steps=steps,
        save_every=4,
        log_every=2,
        eval_every=0,
        seed=1,
        resume="auto",
    )


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> Path:  # noqa: F811
    """An uninterrupted 12-step run, checkpoints at steps 4, 8 and 12."""
    out = tmp_path_factory.mktemp("checkpoints") / "straight"
    recipe.pretrain(config(corpus, out, 12))
    return out


def killed_after_step_8(straight: Path, dest: Path) -> Path:
    """A copy of the run as a kill after step 10 leaves it: checkpoints 4 and 8, a log row cut mid-write, the
    temporary dir of a save."""
    shutil.copytree(straight, dest, ignore=shutil.ignore_patterns("step-00000012", "discriminator", "generator"))
    lines = (dest / "log.csv").read_text().splitlines()[:5]  # header and steps 2, 4, 6, 8
    (dest / "log.csv").write_text("\r\n".join([*lines, "10,"]), newline="")
    (dest / ".step-00000012.tmp-abcd1234").mkdir()
    return dest


@pytest.mark.parametrize("name", FILES)
def test_resume_auto_detects_a_flipped_byte_and_resumes_bit_identically(corpus, straight, tmp_path, caplog, name):  # noqa: F811
    newest = straight / "step-00000008"
    assert sorted(p.name for p in newest.iterdir()) == FILES
    run = killed_after_step_8(straight, tmp_path / "run")
    flip_byte(run / "step-00000008" / name)
    with caplog.at_level(logging.INFO):
        recipe.pretrain(config(corpus, run, 12))
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping checkpoint")]
    assert len(skipped) == 1, skipped
    assert f"step-00000008: {name}" in skipped[0] or f"step-00000008/{name}:" in skipped[0], skipped
    assert f"resumed from {run / 'step-00000004'} (step 4)" in caplog.text
    for a, b in zip(final_weights(straight), final_weights(run)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert [r.split(",")[0] for r in (run / "log.csv").read_text().splitlines()[1:]] == ["2", "4", "6", "8", "10", "12"]
    assert "dropping its last line '10,'" in caplog.text
    assert not (run / ".step-00000012.tmp-abcd1234").exists()
    again, first = (load_file(r / "step-00000008" / "model.safetensors") for r in (run, straight))
    assert all(torch.equal(again[k], first[k]) for k in first), "the corrupt checkpoint is written again"


def test_cli_names_the_file_of_a_corrupt_checkpoint_given_to_resume(corpus, straight, tmp_path):  # noqa: F811
    run = killed_after_step_8(straight, tmp_path / "run")
    flip_byte(run / "step-00000008" / "model.safetensors")
    args = [*base_args(corpus, tmp_path / "other", 12), "--resume", str(run / "step-00000008")]
    p = cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err
    assert "convbert: error:" in err and "step-00000008: model.safetensors does not match its sha256" in err


def test_pretrain_refuses_when_no_checkpoint_passes(corpus, straight, tmp_path):  # noqa: F811
    run = killed_after_step_8(straight, tmp_path / "run")
    for step in ("00000004", "00000008"):
        flip_byte(run / f"step-{step}" / "trainer_state.json")
    with pytest.raises(InputError, match="none of its 2 checkpoints passes its checks"):
        recipe.pretrain(config(corpus, run, 12))
    assert not (run / "step-00000012").exists()
