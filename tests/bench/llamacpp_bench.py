#!/usr/bin/env python3
"""One llama.cpp measurement for tests/bench/run.sh: prefill and decode tokens/s.

Loads the GGUF with llama.cpp (the xllamacpp package) on the CPU with a fixed
thread count, tokenizes tests/bench/prompt.txt, keeps its first --n-prompt ids
(writing them to --ids-out so lrun is fed exactly the same ids), runs one short
warm-up, then one greedy generation of --n-gen tokens with EOS ignored, and
prints one line of JSON with llama.cpp's own timings:
  prefill_tps = timings.prompt_per_second, decode_tps = timings.predicted_per_second.
llama.cpp runs with its defaults otherwise (f16 KV cache, flash attention
"auto"): the speed its users get. The server listens on loopback only.
"""
import argparse
import json
import sys
import urllib.request

import xllamacpp


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--prompt-file", required=True)
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--ids-out")
    args = ap.parse_args()

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.n_ctx = max(512, args.n_prompt + args.n_gen + 16)
    p.n_parallel = 1
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    server = xllamacpp.Server(p)
    base = server.listening_address
    if not base.startswith("http://127.0.0.1:"):
        sys.exit("llama.cpp server is not on loopback: " + base)

    with open(args.prompt_file, encoding="utf-8") as f:
        text = f.read()
    ids = post(base, "/tokenize", {"content": text, "add_special": True,
                                   "parse_special": False})["tokens"]
    if len(ids) < args.n_prompt:
        sys.exit("prompt has %d tokens, fewer than %d" % (len(ids), args.n_prompt))
    ids = ids[:args.n_prompt]
    if args.ids_out:
        with open(args.ids_out, "w") as f:
            f.write(" ".join(str(i) for i in ids) + "\n")

    body = {"temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0, "ignore_eos": True,
            "cache_prompt": False, "return_tokens": True}
    post(base, "/completion", dict(body, prompt=ids[:16], n_predict=8))  # warm-up
    r = post(base, "/completion", dict(body, prompt=ids, n_predict=args.n_gen))
    t = r["timings"]
    if t["prompt_n"] != args.n_prompt or t["predicted_n"] != args.n_gen:
        sys.exit("llama.cpp evaluated %d prompt tokens and generated %d" % (t["prompt_n"], t["predicted_n"]))
    print(json.dumps({"engine": "llama.cpp", "n_prompt": t["prompt_n"], "n_gen": t["predicted_n"],
                      "prefill_tps": t["prompt_per_second"], "decode_tps": t["predicted_per_second"],
                      "version": xllamacpp.__version__}))
    sys.stdout.flush()
    del server


if __name__ == "__main__":
    main()
