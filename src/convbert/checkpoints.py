"""Checkpoints: a run's whole training state in one directory (step-XXXXXXXX/), sealed by a manifest of sizes
and sha256 and checked in full before anything is loaded; no pickles (safetensors for tensors, JSON for the rest).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import InputError
from .fileio import atomic_dir, parse_json
from .train_utils import Dist, rng_state, set_rng_state

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ optimizer state
def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = []
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.contiguous()
                meta["state"][str(idx)].append(key)
    return tensors, meta


# ------------------------------------------------------------------------------------------ checkpoints
CKPT_RE = re.compile(r"^step-(\d{8})$")
TMP_RE = re.compile(r"^\.step-\d{8}\.tmp-[A-Za-z0-9_]+$")  # atomic_dir's temporary dir of a step-XXXXXXXX save
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "convbert-checkpoint"
REQUIRED_FILES = ("trainer_state.json", "model.safetensors", "optimizer.safetensors", "rng-0.safetensors")


def save_checkpoint(
    out_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    d: Dist,
    state: dict[str, Any],
    keep: int = 3,
    rng_per_rank: list[tuple[dict, dict]] | None = None,
    files: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write OUT/step-XXXXXXXX/ atomically (model, optimizer, scheduler, scaler, RNG of every rank, state, and
    `files`: more safetensors files by name), and last in it manifest.json: the size and sha256 of every file."""
    path = out_dir / f"step-{step:08d}"
    model_state = {k: v.detach().contiguous().cpu() for k, v in _unique_state(model).items()}
    opt_tensors, opt_meta = optimizer_state(optimizer)
    with atomic_dir(path) as tmp:
        save_file(model_state, str(tmp / "model.safetensors"))
        save_file({k: v.cpu() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
        rng_meta = []
        for r, (tensors, meta) in enumerate(rng_per_rank or [rng_state(d)]):
            save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp / f"rng-{r}.safetensors"))
            rng_meta.append(meta)
        info = {
            "step": step,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_meta,
            **state,
        }
        for name, group in (files or {}).items():
            if name == MANIFEST or name != Path(name).name:
                raise ValueError(f"{name!r} cannot be the name of a checkpoint file")
            save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(tmp / name))
        (tmp / "trainer_state.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        write_manifest(tmp)
    old = sorted(p for p in out_dir.iterdir() if CKPT_RE.match(p.name))[:-keep] if keep > 0 else []
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return path


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without tied duplicates (safetensors refuses shared storage)."""
    seen, out = set(), {}
    for k, v in model.state_dict(keep_vars=True).items():
        if isinstance(v, nn.Parameter) and id(v) in seen:
            continue
        seen.add(id(v))
        out[k] = v.detach()
    return out


def write_manifest(ckpt: Path) -> None:
    """ckpt/manifest.json: the size and sha256 of every other file of the checkpoint (written after them all)."""
    files = {}
    for p in sorted(ckpt.iterdir()):
        if p.name == MANIFEST:
            continue
        if not p.is_file() or p.is_symlink():
            raise ValueError(f"{p}: a checkpoint holds plain files only")
        files[p.name] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    manifest = {"format": MANIFEST_FORMAT, "version": 1, "files": files, "files_sha256": _digest(files)}
    text = json.dumps(manifest, indent=1) + "\n"
    (ckpt / MANIFEST).write_text(text, encoding="utf-8")


def _digest(files: Any) -> str:
    """The sha256 of the manifest's own entries (canonical JSON), so that a corrupt manifest is told apart from the
    files it describes."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_manifest(ckpt: Path) -> set[str]:
    """The names of the files of checkpoint `ckpt`, each checked against its manifest.json; InputError naming the
    checkpoint and the file when the manifest is missing or unreadable, a file is missing or not listed, or a
    file's size or sha256 is not the manifest's."""
    # A checkpoint without a manifest (written before convbert had them, or not a checkpoint) cannot be told from a
    # corrupt one: it is reported and skipped, never loaded unchecked.
    if not (ckpt / MANIFEST).is_file():
        raise InputError(
            f"{ckpt}: no {MANIFEST}, so its files cannot be verified (a checkpoint of an older convbert, or not a "
            "checkpoint)"
        )
    where = ckpt / MANIFEST
    try:
        manifest = _read_json(where)
        present = {p.name for p in ckpt.iterdir()} - {MANIFEST}
    except OSError as e:
        raise InputError(f"{where}: cannot read the checkpoint manifest: {e}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != 1:
        raise InputError(
            f'{where}: not a checkpoint manifest ({{"format": "{MANIFEST_FORMAT}", "version": 1, "files"}})'
        )
    if manifest.get("files_sha256") != _digest(files):
        raise InputError(f"{where}: corrupt (its entries do not match its files_sha256)")
    for name in sorted(present - set(files)):
        raise InputError(f"{ckpt}: {name} is not listed in {MANIFEST} (added after the save?)")
    for name in REQUIRED_FILES:
        if name not in files:
            raise InputError(f"{where}: lists no {name}")
    for name, entry in files.items():
        size, digest = (entry.get("size"), entry.get("sha256")) if isinstance(entry, dict) else (None, None)
        if (
            name != Path(name).name
            or not _is_int(size)
            or not isinstance(digest, str)
            or not re.fullmatch(r"[0-9a-f]{64}", digest)
        ):
            raise InputError(f'{where}: bad entry for {name!r} (want {{"size": bytes, "sha256": 64 hex digits}})')
        if name not in present:
            raise InputError(f"{ckpt}: {name} is missing (listed in {MANIFEST})")
        p = ckpt / name
        if not p.is_file() or p.is_symlink():
            raise InputError(f"{ckpt}: {name} is not a plain file")
        try:
            actual = p.stat().st_size
            if actual != size:
                raise InputError(
                    f"{ckpt}: {name} has {actual} bytes, {MANIFEST} says {size} (truncated or overwritten)"
                )
            if _sha256(p) != digest:
                raise InputError(f"{ckpt}: {name} does not match its sha256 in {MANIFEST} (corrupt)")
        except OSError as e:
            raise InputError(f"{ckpt}: {name}: cannot read: {e}") from None
    return set(files)


def _read_json(path: Path) -> Any:
    """A JSON file's content; InputError naming the file and the line when it is not UTF-8 JSON (nesting too deep
    and numbers too long for Python included), or the key an object has twice."""
    data = path.read_bytes()

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise InputError(f"{path}: key {next(k for k in keys if keys.count(k) > 1)!r} is given twice in an object")
        return dict(pairs)

    try:
        return parse_json(data.decode("utf-8"), object_pairs_hook=unique)
    except InputError:
        raise
    except UnicodeDecodeError as e:
        raise InputError(f"{path}:{data[: e.start].count(10) + 1}: not valid UTF-8: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not JSON: {e.msg} (column {e.colno})") from None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _kind(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), f"the number {x!r}" if _is_number(x) else type(x).__name__
    )


def _like(value: Any, template: Any, where: str, required: tuple[str, ...] | None = None) -> None:
    """InputError unless JSON `value` has the structure and types of `template` (part of a state_dict): objects
    hold the `required` keys (all the template's when None) and like values under the keys both have, lists as
    many items, numbers numbers (integers where the template's are), booleans booleans, strings strings, a null
    in the template any JSON scalar; tensors are not compared."""
    if isinstance(template, dict):
        if not isinstance(value, dict):
            raise InputError(f"{where} must be an object, not {_kind(value)}")
        missing = [k for k in (template if required is None else required) if k not in value]
        if missing:
            raise InputError(f"{where}: missing {', '.join(map(str, missing))}")
        for k in template:
            if k in value:
                _like(value[k], template[k], f"{where}.{k}")
        return
    if isinstance(template, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(template):
            raise InputError(f"{where} must be a list of {len(template)}, not {_kind(value)}")
        for i, (v, t) in enumerate(zip(value, template)):
            _like(v, t, f"{where}[{i}]")
        return
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: _is_int,
        float: _is_number,
        str: lambda v: isinstance(v, str),
        type(None): lambda v: v is None or isinstance(v, (bool, int, float, str)),
    }.get(type(template), lambda v: True)
    if not ok(value):
        want = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
            type(template), "a scalar"
        )
        raise InputError(f"{where} must be {want}, not {_kind(value)}")


def _check_state(
    where: Path, info: Any, optimizer: torch.optim.Optimizer, scheduler, scaler
) -> dict[int, nn.Parameter]:
    """trainer_state.json's structure and types against the optimizer, schedule and scaler it is for; the
    parameter of each saved optimizer index."""
    if not isinstance(info, dict):
        raise InputError(f"{where}: must be a JSON object, not {_kind(info)}")
    missing = [k for k in ("step", "optimizer", "scheduler", "scaler", "rng") if k not in info]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    step = info["step"]
    if not _is_int(step) or step < 0:
        raise InputError(f"{where}: step must be an integer >= 0, not {_kind(step)}")
    named = CKPT_RE.match(where.parent.name)
    if named and int(named.group(1)) != step:
        raise InputError(f"{where}: step {step} in a checkpoint named {where.parent.name}")
    opt = info["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict):
        raise InputError(f"{where}: optimizer must be an object with param_groups and state")
    groups, current = opt.get("param_groups"), optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current):
        raise InputError(f"{where}: optimizer.param_groups must be a list of {len(current)}, not {_kind(groups)}")
    for i, (saved, now) in enumerate(zip(groups, current)):  # keys a newer torch adds may be absent
        _like(saved, now, f"{where}: optimizer.param_groups[{i}]", ("params", "lr"))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    by_index = dict(zip((i for g in opt["param_groups"] for i in g["params"]), params))
    for idx, keys in opt["state"].items():
        if not idx.isdigit() or int(idx) not in by_index:
            raise InputError(f"{where}: optimizer.state has {idx!r}, not the index of a parameter of param_groups")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InputError(f"{where}: optimizer.state.{idx} must be a list of tensor names")
    _like(info["scheduler"], scheduler.state_dict(), f"{where}: scheduler", ("base_lrs", "last_epoch", "_step_count"))
    _like(info["scaler"], scaler.state_dict(), f"{where}: scaler")  # {} when disabled: any object
    rng = info["rng"]
    if not isinstance(rng, list) or not rng:
        raise InputError(f"{where}: rng must be a list of every rank's RNG state, not {_kind(rng)}")
    for r, meta in enumerate(rng):
        w = f"{where}: rng[{r}]"
        if not isinstance(meta, dict) or "python" not in meta or "numpy" not in meta:
            raise InputError(f"{w} must be an object with python and numpy")
        py, npy = meta["python"], meta["numpy"]
        if not (isinstance(py, list) and len(py) == 3 and _is_int(py[0]) and isinstance(py[1], list)):
            raise InputError(f"{w}.python must be [version, [state], gauss]")
        if not all(_is_int(x) and 0 <= x < 2**32 for x in py[1]) or not (py[2] is None or _is_number(py[2])):
            raise InputError(f"{w}.python: the state must be integers in [0, 2**32) and gauss a number or null")
        if not (isinstance(npy, list) and len(npy) == 4 and isinstance(npy[0], str) and all(map(_is_number, npy[1:]))):
            raise InputError(f"{w}.numpy must be [name, pos, has_gauss, cached]")
    return by_index


def _read_tensors(path: Path, name: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / name), device=device)
    except Exception as e:  # safetensors raises its own error types
        raise InputError(f"{path}: {name}: cannot read its tensors: {e}") from None


def _check_tensor(where: str, t: torch.Tensor, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...]) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype not in dtypes:
        want = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        got = str(t.dtype).removeprefix("torch.")
        raise InputError(f"{where} is {got} {tuple(t.shape)}, want {want} {tuple(shape)}")


def _checked_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """model.safetensors, its names, shapes and dtypes equal to the model's."""
    weights = _read_tensors(path, "model.safetensors")
    expected = _unique_state(model)
    if set(weights) != set(expected):
        extra, absent = sorted(set(weights) - set(expected)), sorted(set(expected) - set(weights))
        raise InputError(
            f"{path}: model.safetensors does not match the model: "
            + "; ".join(f"{what} {names[:5]}" for what, names in (("unknown", extra), ("missing", absent)) if names)
        )
    for k, v in expected.items():
        _check_tensor(f"{path}: model.safetensors: {k}", weights[k], tuple(v.shape), (v.dtype,))
    return weights


def _checked_optimizer_state(
    path: Path, info: dict[str, Any], by_index: dict[int, torch.Tensor], d: Dist
) -> dict[int, dict[str, torch.Tensor]]:
    """optimizer.safetensors as the optimizer's state: every listed tensor, shaped as its parameter."""
    opt_tensors = _read_tensors(path, "optimizer.safetensors", str(d.device))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for idx, keys in info["optimizer"]["state"].items():
        p = by_index[int(idx)]
        state[int(idx)] = {}
        for key in keys:
            name = f"{idx}.{key}"
            if name not in opt_tensors:
                raise InputError(f"{path}: optimizer.safetensors has no {name} (listed in trainer_state.json)")
            t = opt_tensors[name]
            if key == "step":  # the step count: a float scalar
                _check_tensor(f"{path}: optimizer.safetensors: {name}", t, (), (torch.float32, torch.float64))
            else:  # moments and buffers: as the parameter
                _check_tensor(f"{path}: optimizer.safetensors: {name}", t, tuple(p.shape), (p.dtype,))
            state[int(idx)][key] = t
    extra = sorted(set(opt_tensors) - {f"{i}.{k}" for i, keys in info["optimizer"]["state"].items() for k in keys})
    if extra:
        raise InputError(f"{path}: optimizer.safetensors holds tensors trainer_state.json does not list: {extra[:5]}")
    return state


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    d: Dist,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Restore everything save_checkpoint wrote; returns trainer_state.json's content.

    Everything is checked before anything is loaded: the files against manifest.json (sizes, sha256), then
    trainer_state.json's structure and types, the model tensors' names, shapes and dtypes against the model, the
    optimizer tensors' against their parameters, the RNG tensors, and last `check(info)` (the caller's own; it may
    raise InputError). A failure is an InputError naming the checkpoint and the file, with the model, optimizer,
    schedule, scaler and RNG untouched, so that the caller can try an older checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a checkpoint directory")
    files = verify_manifest(path)
    where = path / "trainer_state.json"
    try:
        info = _read_json(where)
    except OSError as e:
        raise InputError(f"{where}: cannot read: {e}") from None
    by_index = _check_state(where, info, optimizer, scheduler, scaler)
    rng_name = f"rng-{d.rank}.safetensors" if f"rng-{d.rank}.safetensors" in files else "rng-0.safetensors"
    missing = [f"rng-{r}.safetensors" for r in range(len(info["rng"])) if f"rng-{r}.safetensors" not in files]
    if missing:
        raise InputError(f"{where}: holds the RNG state of {len(info['rng'])} ranks, but {missing[0]} is missing")

    weights = _checked_weights(path, model)
    state = _checked_optimizer_state(path, info, by_index, d)
    rng = _read_tensors(path, rng_name)
    for key, shape, dtype in (
        ("torch", tuple(torch.get_rng_state().shape), torch.uint8),
        ("numpy_keys", (624,), torch.int64),
    ):
        if key not in rng:
            raise InputError(f"{path}: {rng_name} has no {key}")
        _check_tensor(f"{path}: {rng_name}: {key}", rng[key], shape, (dtype,))
    if "cuda" in rng and (rng["cuda"].dtype != torch.uint8 or rng["cuda"].ndim != 1):
        raise InputError(f"{path}: {rng_name}: cuda must be a uint8 vector")
    metas = info["rng"]
    r = d.rank if d.rank < len(metas) else 0  # a run resumed on more ranks than saved it
    meta = metas[r]
    if check is not None:
        check(info)

    # everything checked: load (the RNG first, as its setters are the only ones that can still refuse)
    before = rng_state(d)
    try:
        set_rng_state(rng, meta, d)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        set_rng_state(*before, d)
        raise InputError(f"{path}: {rng_name} with trainer_state.json rng[{r}]: not an RNG state: {e}") from None
    optimizer.load_state_dict({"state": state, "param_groups": info["optimizer"]["param_groups"]})
    scheduler.load_state_dict(info["scheduler"])
    scaler.load_state_dict(info["scaler"])
    model.load_state_dict(weights, strict=False)  # the tied duplicates that _unique_state leaves out are missing
    return info


def find_checkpoints(out_dir: Path) -> list[Path]:
    """step-* dirs, newest first. The temporary dirs of saves that were killed (atomic_dir's
    `.step-XXXXXXXX.tmp-*`) are removed: no save runs while a run looks for its checkpoints."""
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        if TMP_RE.match(p.name) and p.is_dir() and not p.is_symlink():
            log.info("removing %s, left by a save that was killed", p)
            shutil.rmtree(p, ignore_errors=True)
        elif CKPT_RE.match(p.name) and p.is_dir():
            found.append(p)
    return sorted(found, reverse=True)
