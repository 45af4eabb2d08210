#!/usr/bin/env python3
"""Writes tests/golden/quant_llamacpp.json: what llama.cpp computes on lrun's
generated models of the GGUF quant types Q5_0, Q5_1, Q2_K, Q3_K, Q5_K,
IQ4_NL, IQ4_XS and a Q4_K_M-like mix (Q4_K with Q6_K attn_v/ffn_down/output).

The models come from tests/quant_models.lua (lrun's generator and quantizers,
run through build/lrun); llama.cpp (the xllamacpp package, CPU) loads the same
files. For each model and prompt (token ids, so no tokenizer is involved) it
records the greedy continuation of N_PREDICT tokens and, at every step, the
top log-probabilities (20 at the first step, N_TOP_STEP later; log_softmax of
the raw logits, as the server reports them with post_sampling_probs false),
so a reader can tell a near-tie from a bug. It
also records each file's size and Adler-32: the spec checks that it runs the
same bytes llama.cpp ran.

llama.cpp runs on the CPU with a fixed thread count, so running this twice
gives the same file. It talks to llama.cpp's server on loopback only.

Usage: python3 tests/golden/make_quant_llamacpp_golden.py [--lrun build/lrun] [--out PATH]
Regenerate after any change to the generator or the quantizers (never hand-edit).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import zlib

import xllamacpp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

N_PREDICT = 16
N_PROBS = 20
N_THREADS = 2
N_CTX = 512

# Token ids of the generated vocabulary (0..255 bytes, then specials and
# merges): a short prompt, three longer ones, one with repeats.
PROMPTS = [
    ("short", [72, 101, 108, 108, 111]),
    ("letters", [(7 * i + 3) % 26 + 97 for i in range(48)]),
    ("merges", [(29 * i + 1) % 240 + 262 for i in range(40)]),
    ("mixed", [(37 * i + 11) % 500 for i in range(48)]),
    ("repeats", [300, 301, 302, 300, 301, 302, 300, 301, 302, 40, 41]),
]

# The greedy runs never pick the bytes 0x80..0xff: the server withholds the
# text of an incomplete UTF-8 sequence and its probabilities with it, so a
# -inf bias keeps them out (the reported log-probs stay those of the raw
# logits, bytes included). With ignore_eos, the end-of-generation ids are
# out too; "banned" lists every id the server biased away, and the spec
# takes lrun's greedy pick among the others.
BANNED_BYTES = list(range(0x80, 0x100))
N_TOP_STEP = 8  # log-probs kept per later step (the first keeps N_PROBS)

GEN_BODY = {
    "n_predict": N_PREDICT, "temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0,
    "typical_p": 1.0, "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
    "dry_multiplier": 0.0, "ignore_eos": True, "n_probs": N_PROBS, "post_sampling_probs": False,
    "return_tokens": True, "cache_prompt": False, "seed": 0,
}


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)


def start_server(model):
    p = xllamacpp.CommonParams()
    p.model.path = model
    p.n_ctx = N_CTX
    p.n_parallel = 1
    p.cpuparams.n_threads = N_THREADS
    p.cpuparams_batch.n_threads = N_THREADS
    # f32 K/V, no flash attention: the fewest roundings outside the matmuls
    p.cache_type_k = xllamacpp.ggml_type.GGML_TYPE_F32
    p.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
    p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.hostnames = ["127.0.0.1"]  # loopback only
    p.port = 0
    server = xllamacpp.Server(p)
    base = server.listening_address
    if not base.startswith("http://127.0.0.1:"):
        raise RuntimeError("llama.cpp server is not on loopback: " + base)
    return server, base


def run_model(path):
    server, base = start_server(path)
    cases = []
    banned = None
    for name, ids in PROMPTS:
        r = post(base, "/completion", dict(GEN_BODY, prompt=ids, logit_bias=[[i, False] for i in BANNED_BYTES]))
        if banned is None:
            banned = sorted(b["token"] for b in r["generation_settings"]["logit_bias"] if b["bias"] is None)
        probs, out_ids = r.get("completion_probabilities") or [], r["tokens"]
        if len(out_ids) != N_PREDICT or len(probs) != N_PREDICT:
            sys.exit("%s/%s: expected %d tokens and probabilities, got %d and %d"
                     % (path, name, N_PREDICT, len(out_ids), len(probs)))
        steps = []
        for k, st in enumerate(probs):
            if st["id"] != out_ids[k]:
                sys.exit("%s/%s: step %d: probs id %d != token %d" % (path, name, k, st["id"], out_ids[k]))
            top = st["top_logprobs"][:N_PROBS if k == 0 else N_TOP_STEP]
            steps.append({"id": st["id"], "logprob": st["logprob"], "top": [[t["id"], t["logprob"]] for t in top]})
        cases.append({"name": name, "prompt_ids": ids, "continuation_ids": out_ids, "steps": steps})
    del server
    return cases, banned


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrun", default=os.path.join(ROOT, "build", "lrun"))
    ap.add_argument("--out", default=os.path.join(HERE, "quant_llamacpp.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([args.lrun, os.path.join(ROOT, "tests", "quant_models.lua"), tmp], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        models = []
        for path in out.split():
            with open(path, "rb") as f:
                data = f.read()
            cases, banned = run_model(path)
            models.append({"name": os.path.basename(path)[:-5], "bytes": len(data), "adler32": zlib.adler32(data),
                           "banned": banned, "cases": cases})
            print("%s: %d prompts" % (path, len(cases)))
    doc = {
        "generator": "tests/golden/make_quant_llamacpp_golden.py (regenerate, never hand-edit)",
        "reference": {"package": "xllamacpp", "package_version": xllamacpp.__version__,
                      "build": xllamacpp.BUILD_INFO, "system_info": xllamacpp.get_system_info().strip()},
        "settings": {"n_ctx": N_CTX, "n_threads": N_THREADS, "cache_type_k": "f32", "cache_type_v": "f32",
                     "flash_attn": "disabled", "n_predict": N_PREDICT, "n_probs": N_PROBS,
                     "banned_bytes": "0x80..0xff (and the end-of-generation ids): never picked"},
        "models": models,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d models)" % (args.out, len(models)))


if __name__ == "__main__":
    main()
