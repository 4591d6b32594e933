"""Counter-based random numbers: a pure function of (key, counter) in integer tensor ops on the device.

Nothing is drawn from a generator, so a number is the same whichever process, batch split or resumed run
computes it, and under torch.compile the hash fuses into the kernel that uses it. Used for what must not depend on
the process or the batch split (masks, samples); dropout draws from torch's generator (`model.dropout`).
All arithmetic stays below 2^63 in int64 (no overflow, which integer tensors do not define).
"""

from __future__ import annotations

import torch
from torch import Tensor

M32 = 0xFFFFFFFF


def mul32(x: Tensor, c: int) -> Tensor:
    """The low 32 bits of x * c for x in [0, 2^32) and a 32-bit constant c."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & M32


def fmix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection of [0, 2^32) with full avalanche."""
    h = h ^ (h >> 16)
    h = mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def to_unit(h: Tensor) -> Tensor:
    """32-bit hashes -> float32 in [0, 1) on their top 24 bits (exactly representable)."""
    return (h >> 8).float() * 2.0**-24


def uniform(keys: Tensor, stream: int, counter: Tensor) -> Tensor:
    """Uniform [0, 1) floats, (B, N), from keys (B,) int64 (63-bit) and counters (N,) or (B, N) in [0, 2^32)."""
    base = fmix32((keys & M32) ^ fmix32((keys >> 32) ^ fmix32(torch.full_like(keys, stream))))  # (B,)
    return to_unit(fmix32(base[:, None] ^ fmix32(mul32(counter, 0x9E3779B1))))
