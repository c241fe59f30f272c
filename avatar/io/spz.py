"""Niantic's ``.spz``: 3D Gaussians with quantised attributes, gzip-compressed (version 3).

The file is one gzip stream of a 16-byte little-endian header (magic ``NGSP`` =
``0x5053474e``, version, number of Gaussians ``N``, SH degree, fractional bits, flags,
reserved) followed by the attributes, each for all Gaussians before the next:

==========  ==========  =============================================================================
attribute   bytes       encoding (what :func:`decode_spz` undoes; its step is the quantisation error x2)
==========  ==========  =============================================================================
positions   9 N         x, y, z as 24-bit signed fixed point with ``fractional_bits`` (step 2^-bits m)
alphas      N           opacity (0..1) x 255
colours     3 N         SH degree-0 coefficient x 0.15 x 255 + 127.5 (step 0.026: colour steps of 1/136)
scales      3 N         (ln scale + 10) x 16 (step 1/16 in ln: 6.4 % of the size)
rotations   4 N         "smallest three": the index of the quaternion's largest component (2 bits)
                        and the other three as sign + 9 bits over [0, 1/sqrt 2] (step 0.0014)
SH          3 N (K-1)   the higher-order coefficients, coefficient-major, colour inner, each
                        x 128 + 128 (step 1/128; clipped to [-1, 1))
==========  ==========  =============================================================================

Quaternions are stored ``(x, y, z, w)``; this module's arrays use ``(w, x, y, z)`` like the
rest of the toolkit. The format's axes are x right, y up, z back (OpenGL, three.js): the
toolkit's model world (+y up, +z out of the face), so nothing is converted on the way.
Readers that honour the format's axes (Niantic's library, gsply) need no other setting.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np

from .atomic import atomic_write

SPZ_MAGIC = 0x5053474E
SPZ_VERSION = 3
COLOR_SCALE = 0.15  # the format's scale of the degree-0 coefficient: stores colours a little out of 0..1
FRACTIONAL_BITS = 16  # 15 um position step, coordinates within +-128 m
_HEADER = struct.Struct("<IIIBBBB")
_INV_SQRT2 = 1 / math.sqrt(2)
_MAG = 511  # 9 bits per stored quaternion component


class SpzError(ValueError):
    """A file is not an SPZ file this reader takes."""


def quantisation_steps(fractional_bits: int = FRACTIONAL_BITS) -> dict[str, float]:
    """The step of each attribute's quantisation (decoding errs by at most half of it):
    ``position`` metres, ``log_scale`` (natural log), ``opacity``, ``sh0`` and ``sh`` (SH
    coefficient units), ``quaternion`` (each of the three stored components)."""
    return {"position": 2.0 ** -fractional_bits, "log_scale": 1 / 16, "opacity": 1 / 255,
            "sh0": 1 / (COLOR_SCALE * 255), "sh": 1 / 128, "quaternion": _INV_SQRT2 / _MAG}


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _pack_quaternions(quats: np.ndarray) -> np.ndarray:
    """``[N, 4]`` (w, x, y, z) -> ``[N, 4]`` bytes: smallest three of (x, y, z, w), little-endian."""
    q = quats[:, [1, 2, 3, 0]].astype(np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    largest = np.abs(q).argmax(axis=1)
    q *= np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]  # q and -q: the same rotation
    word = largest.astype(np.uint32)
    for i in range(4):
        mag = np.clip(np.floor(_MAG * np.abs(q[:, i]) / _INV_SQRT2 + 0.5), 0, _MAG).astype(np.uint32)
        field = ((q[:, i] < 0).astype(np.uint32) << 9) | mag
        word = np.where(largest == i, word, (word << 10) | field)
    return word.astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_quaternions(raw: np.ndarray) -> np.ndarray:
    word = raw.reshape(-1, 4).copy().view("<u4")[:, 0].astype(np.uint32)
    largest = word >> 30
    q = np.zeros((len(word), 4), np.float64)
    for i in (3, 2, 1, 0):  # the last stored component sits in the lowest bits
        stored = largest != i
        value = _INV_SQRT2 * (word & _MAG) / _MAG * np.where((word >> 9) & 1, -1.0, 1.0)
        q[:, i] = np.where(stored, value, 0.0)
        word = np.where(stored, word >> 10, word)
    rows = np.arange(len(q))
    q[rows, largest] = np.sqrt(np.clip(1 - (q ** 2).sum(axis=1), 0, None))
    return q[:, [3, 0, 1, 2]].astype(np.float32)


def encode_spz(means, quats, scales, opacities, sh, fractional_bits: int | None = None) -> bytes:
    """The ``.spz`` bytes of ``N`` Gaussians.

    Args:
        means: ``[N, 3]`` positions, metres. quats: ``[N, 4]`` (w, x, y, z), any norm.
        scales: ``[N, 3]`` standard deviations, metres (linear). opacities: ``[N]`` in 0..1.
        sh: ``[N, K, 3]`` SH coefficients, ``K = (degree + 1)^2`` with degree 0..3, degree-0 first.
        fractional_bits: of the positions' fixed point; None: :data:`FRACTIONAL_BITS`, fewer
            when a coordinate would not fit in 24 bits.
    """
    means, quats, scales = (np.asarray(a, np.float64) for a in (means, quats, scales))
    opacities, sh = np.asarray(opacities, np.float64).reshape(-1), np.asarray(sh, np.float64)
    n = means.shape[0]
    degree = round(math.sqrt(sh.shape[1])) - 1 if sh.ndim == 3 else -1
    if means.shape != (n, 3) or quats.shape != (n, 4) or scales.shape != (n, 3) or opacities.shape != (n,) \
            or sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3 or (degree + 1) ** 2 != sh.shape[1] \
            or not 0 <= degree <= 3:
        raise ValueError(f"encode_spz: expected means [N,3], quats [N,4], scales [N,3], opacities [N], sh [N,K,3] "
                         f"with K in 1, 4, 9, 16; got {means.shape}, {quats.shape}, {scales.shape}, "
                         f"{opacities.shape}, {sh.shape}")
    if fractional_bits is None:
        reach = float(np.abs(means).max()) if n else 0.0
        fractional_bits = FRACTIONAL_BITS if reach == 0 else int(np.clip(np.floor(22 - np.log2(reach)), 0,
                                                                         FRACTIONAL_BITS))
    fixed = np.round(means * 2.0 ** fractional_bits).astype(np.int64)
    if np.abs(fixed).max(initial=0) >= 1 << 23:
        raise ValueError(f"encode_spz: positions up to {np.abs(means).max():g} m do not fit 24 bits with "
                         f"{fractional_bits} fractional bits")
    positions = (fixed.astype("<i4").view(np.uint8).reshape(n, 3, 4)[:, :, :3]).reshape(-1)
    sections = [
        positions,
        _u8(np.clip(opacities, 0, 1) * 255),
        _u8(sh[:, 0, :] * (COLOR_SCALE * 255) + 127.5).reshape(-1),
        _u8((np.log(np.maximum(scales, 1e-30)) + 10) * 16).reshape(-1),
        _pack_quaternions(quats).reshape(-1),
        _u8(sh[:, 1:, :] * 128 + 128).reshape(-1),
    ]
    header = _HEADER.pack(SPZ_MAGIC, SPZ_VERSION, n, degree, fractional_bits, 0, 0)
    return gzip.compress(header + b"".join(s.tobytes() for s in sections), compresslevel=9, mtime=0)


def decode_spz(data: bytes, source: str = "<bytes>") -> dict:
    """Gaussians from ``.spz`` bytes (versions 2 and 3): ``means [N,3]``, ``quats [N,4]`` (w, x, y, z,
    unit), ``scales [N,3]`` (linear), ``opacities [N]`` (0..1), ``sh [N,K,3]`` (float32 arrays), and
    ``fractional_bits``. ``source`` names the file in errors."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SpzError(f"{source} is not an SPZ file (not gzip: {exc})") from None
    if len(raw) < _HEADER.size:
        raise SpzError(f"{source} is not an SPZ file (no header)")
    magic, version, n, degree, bits, flags, _ = _HEADER.unpack_from(raw)
    if magic != SPZ_MAGIC:
        raise SpzError(f"{source} is not an SPZ file (magic {magic:#x})")
    if version not in (2, 3) or degree > 3 or flags & 0x2:
        raise SpzError(f"{source}: SPZ version {version}, SH degree {degree}, flags {flags:#x} are not supported "
                       "(this reader takes versions 2 and 3 without extensions, degree <= 3)")
    k = (degree + 1) ** 2
    rot_bytes = 4 if version >= 3 else 3
    sizes = (9 * n, n, 3 * n, 3 * n, rot_bytes * n, 3 * n * (k - 1))
    if len(raw) != _HEADER.size + sum(sizes):
        raise SpzError(f"{source}: {len(raw) - _HEADER.size} bytes of data, expected {sum(sizes)} for {n} Gaussians")
    buf = np.frombuffer(raw, np.uint8, offset=_HEADER.size)
    pos, alpha, colour, scale, rot, rest = np.split(buf, np.cumsum(sizes)[:-1])
    fixed = np.zeros((n * 3, 4), np.uint8)
    fixed[:, :3] = pos.reshape(-1, 3)
    fixed[:, 3] = np.where(fixed[:, 2] & 0x80, 0xFF, 0)  # sign extension
    means = fixed.view("<i4").reshape(n, 3).astype(np.float64) / 2.0 ** bits
    if version >= 3:
        quats = _unpack_quaternions(rot)
    else:  # version 2: x, y, z as bytes, w >= 0 from the norm
        xyz = rot.reshape(n, 3).astype(np.float64) / 127.5 - 1
        quats = np.concatenate((np.sqrt(np.clip(1 - (xyz ** 2).sum(1, keepdims=True), 0, None)), xyz), 1)
    sh = np.empty((n, k, 3), np.float64)
    sh[:, 0] = (colour.reshape(n, 3) / 255 - 0.5) / COLOR_SCALE
    sh[:, 1:] = (rest.reshape(n, k - 1, 3).astype(np.float64) - 128) / 128
    f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
    return {"means": f32(means), "quats": f32(quats), "scales": f32(np.exp(scale.reshape(n, 3) / 16 - 10)),
            "opacities": f32(alpha / 255), "sh": f32(sh), "fractional_bits": int(bits)}


def write_spz(path: str | os.PathLike, means, quats, scales, opacities, sh, fractional_bits: int | None = None) -> Path:
    """:func:`encode_spz` written atomically to ``path``."""
    return atomic_write(path, encode_spz(means, quats, scales, opacities, sh, fractional_bits))


def read_spz(path: str | os.PathLike) -> dict:
    """:func:`decode_spz` of the file ``path``."""
    path = Path(path)
    return decode_spz(path.read_bytes(), str(path))
