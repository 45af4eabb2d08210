#!/usr/bin/env python3
"""How far llama.cpp's golden log-probs are from exact arithmetic.

A float64 forward pass of the llama GGUF (weights dequantized by the gguf
package, activations never quantized), run on each prompt of
tests/golden/smollm2_greedy.json; prints, per prompt, its top-1 and the max
|log-prob difference| over llama.cpp's first-step top-20. With --lrun-logits
(a JSON object {case name: [n_vocab logits]}) it compares lrun's too. The
numbers justify the tolerances in tests/llamacpp_spec.lua; this is a
measuring tool, not a test (numpy, ~30 s on 2 cores).

Usage: python3 tests/golden/float_reference.py [--model PATH] [--lrun-logits FILE]
"""
import argparse
import json
import os

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path):
    r = GGUFReader(path)

    def kv(name):
        f = r.fields[name]
        return f.parts[f.data[0]].tolist()[0]

    hp = {k: kv("llama." + k) for k in (
        "embedding_length", "block_count", "attention.head_count", "attention.head_count_kv",
        "rope.freq_base", "attention.layer_norm_rms_epsilon")}
    w = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        # GGUF ne[0] is innermost: a {in, out} tensor is the (out, in) matrix.
        w[t.name] = a.reshape([int(x) for x in reversed(t.shape)])
    return hp, w


def forward(hp, w, ids, window=0):
    """Logits (n_vocab,) of the last position; x is (T, n_embd). window > 0:
    a sliding window, position t attends to s with t - s < window (Mistral)."""
    n_embd, n_layer = hp["embedding_length"], hp["block_count"]
    n_head, n_head_kv = hp["attention.head_count"], hp["attention.head_count_kv"]
    hd = n_embd // n_head
    base, eps = hp["rope.freq_base"], hp["attention.layer_norm_rms_epsilon"]
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    ang = pos[:, None] * base ** (-np.arange(0, hd, 2) / hd)  # (T, hd/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x):  # (T, heads, hd); GGUF llama rotates adjacent pairs (2i, 2i+1)
        out = np.empty_like(x)
        out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
        out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
        return out

    mask = np.triu(np.full((T, T), -np.inf), 1)
    if window > 0:
        mask += np.tril(np.full((T, T), -np.inf), -window)
    x = w["token_embd.weight"][ids]
    for l in range(n_layer):
        p = "blk.%d." % l
        h = rms(x, w[p + "attn_norm.weight"])
        q = rope((h @ w[p + "attn_q.weight"].T).reshape(T, n_head, hd))
        k = rope((h @ w[p + "attn_k.weight"].T).reshape(T, n_head_kv, hd))
        v = (h @ w[p + "attn_v.weight"].T).reshape(T, n_head_kv, hd)
        k = np.repeat(k, n_head // n_head_kv, axis=1)
        v = np.repeat(v, n_head // n_head_kv, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", att, v).reshape(T, n_embd) @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        g, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
    out = w.get("output.weight", w["token_embd.weight"])
    return out @ rms(x[-1], w["output_norm.weight"])


def log_softmax(v):
    v = np.asarray(v, dtype=np.float64)
    v = v - v.max()
    return v - np.log(np.exp(v).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("LRUN_MODEL", "/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--golden", default=os.path.join(HERE, "smollm2_greedy.json"))
    ap.add_argument("--lrun-logits")
    args = ap.parse_args()
    golden = json.load(open(args.golden))
    lrun = json.load(open(args.lrun_logits)) if args.lrun_logits else {}
    hp, w = load(args.model)
    for c in golden["cases"]:
        ref = log_softmax(forward(hp, w, c["prompt_ids"]))
        top = [i for i, _ in c["first_step_top20"]]
        lc = np.array([v for _, v in c["first_step_top20"]])
        line = "%-15s float64 top-1 %6d (llama.cpp %6d)  max|float64 - llama.cpp| %.4f" % (
            c["name"], int(ref.argmax()), top[0], np.abs(ref[top] - lc).max())
        if c["name"] in lrun:
            mine = log_softmax(lrun[c["name"]])
            line += "  max|float64 - lrun| %.4f  max|lrun - llama.cpp| %.4f" % (
                np.abs(ref[top] - mine[top]).max(), np.abs(mine[top] - lc).max())
        print(line, flush=True)


if __name__ == "__main__":
    main()
