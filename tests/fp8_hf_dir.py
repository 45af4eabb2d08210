#!/usr/bin/env python3
"""fp8_hf_dir.py SRC DST: an FP8 checkpoint from an f32 HF directory.

A test fixture (tests/loader_budget_spec.lua), not a golden: DST gets SRC's
files, and its model.safetensors has every *_proj.weight as F8_E4M3 with a
per-row F32 `weight_scale` (row max / 448, as FP8 checkpoints scale), the
other tensors as they were. Written with numpy and the safetensors layout
itself (8-byte little-endian header size, JSON header, data), so it needs no
package beyond numpy.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

E4M3_MAX = 448.0


def e4m3_values():
    """The 128 non-negative E4M3 codes' values (0x7f, NaN, left out: 127)."""
    out = []
    for c in range(0x7F):
        e, m = (c >> 3) & 15, c & 7
        out.append((1 + m / 8.0) * 2.0 ** (e - 7) if e else (m / 8.0) * 2.0 ** -6)
    return np.array(out, dtype=np.float64)


def to_e4m3(x):
    """Nearest E4M3 code of each element of x (ties to the lower code)."""
    vals = e4m3_values()
    a = np.abs(x.astype(np.float64)).reshape(-1)
    idx = np.searchsorted(vals, a).clip(1, len(vals) - 1)
    lo, hi = vals[idx - 1], vals[idx]
    code = np.where(a - lo <= hi - a, idx - 1, idx).astype(np.uint8)
    code |= np.where(x.reshape(-1) < 0, 0x80, 0).astype(np.uint8)
    return code.reshape(x.shape)


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        assert t["dtype"] == "F32", (name, t["dtype"])
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(t["shape"])
    return out


def write_st(path, tensors):
    """tensors: a list of (name, dtype string, shape, bytes), in file order."""
    header, at = {}, 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(raw)]}
        at += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, raw in tensors:
            f.write(raw)


def main(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name != "model.safetensors" and os.path.isfile(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), dst)
    out = []
    for name, w in read_st(os.path.join(src, "model.safetensors")).items():
        if not name.endswith("_proj.weight"):
            out.append((name, "F32", w.shape, w.astype("<f4").tobytes()))
            continue
        scale = (np.abs(w).max(axis=1) / E4M3_MAX).astype(np.float32)
        scale[scale == 0] = 1.0
        q = to_e4m3(w / scale[:, None])
        out.append((name, "F8_E4M3", w.shape, q.tobytes()))
        out.append((name + "_scale", "F32", scale.shape, scale.astype("<f4").tobytes()))
    write_st(os.path.join(dst, "model.safetensors"), out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
