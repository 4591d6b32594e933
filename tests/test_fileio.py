"""Atomic writes honour the umask, as open() and mkdir() do (mkstemp/mkdtemp alone would give 0600/0700)."""

from __future__ import annotations

import os
import stat

import pytest

from convbert import ConvBertConfig, ConvBertModel
from convbert.fileio import atomic_dir, atomic_write_text


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    "umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]
)
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            atomic_write_text(tmp / "b.txt", "y")
        ConvBertModel(ConvBertConfig.preset("tiny")).save_pretrained(tmp_path / "model")
        with open(tmp_path / "plain.txt", "w") as f:  # what open() makes under this umask
            f.write("z")
    finally:
        os.umask(old)
    assert mode(tmp_path / "plain.txt") == file_mode
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "d" / "b.txt") == file_mode
    assert mode(tmp_path / "d") == mode(tmp_path / "model") == dir_mode
    assert {mode(p) for p in (tmp_path / "model").iterdir()} == {file_mode}
