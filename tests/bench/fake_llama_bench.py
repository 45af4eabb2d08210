#!/usr/bin/env python3
"""fake_llama_bench.py — a stand-in for llama-bench in tests of the peer drivers'
parsing (tests/bench/cuda_peer.py, moe_bench.py): it checks the model file is
there and prints llama-bench's -o json array (the fields the drivers read,
with made-up timings) for each -p and -n value. Not a benchmark.
"""
import json
import os
import sys


def main():
    a = sys.argv[1:]
    opt = {a[i]: a[i + 1] for i in range(0, len(a) - 1) if a[i].startswith("-")}
    model = opt.get("-m", "")
    if not os.path.isfile(model):
        print(f"error: failed to load model '{model}'", file=sys.stderr)
        return 1
    ncmoe = int(opt.get("-ncmoe", opt.get("--n-cpu-moe", "0")))
    size = os.path.getsize(model)
    tests = [(int(p), 0) for p in opt.get("-p", "512").split(",") if int(p) > 0]  # 0: no such test
    tests += [(0, int(n)) for n in opt.get("-n", "128").split(",") if int(n) > 0]
    out = []
    for n_prompt, n_gen in tests:
        ts = 1000.0 + n_prompt if n_prompt else 100.0 - ncmoe
        out.append({"build_commit": "fake", "model_filename": model, "model_type": "fake", "model_size": size,
                    "n_gpu_layers": int(opt.get("-ngl", "99")), "n_cpu_moe": ncmoe, "flash_attn": -1,
                    "n_ubatch": 512, "n_prompt": n_prompt, "n_gen": n_gen, "avg_ns": int(1e9 / ts), "stddev_ns": 0,
                    "avg_ts": ts, "stddev_ts": 0.0, "samples_ns": [int(1e9 / ts)], "samples_ts": [ts]})
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
