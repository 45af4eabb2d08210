#!/usr/bin/env python3
"""Writes tests/golden/swa_float64.json: a float64 forward of each model of
tests/arch_models.lua's M.float_models (llama with a sliding window, as
Mistral: position t attends to s with t - s < window; llama.cpp's llama
architecture ignores the window, so it cannot be the reference here).

For each prompt (token ids longer than the window) it records the
log-probabilities of the top 20 after the prompt and the greedy
continuation of N_PREDICT ids, each step a full float64 forward (numpy,
weights from the gguf package). The models come from lrun's generator
(same seed, same file), written into a temporary folder by
`lrun tests/arch_models.lua DIR float`.

Usage: python3 tests/golden/make_swa_golden.py [--lrun build/lrun] [--out PATH]
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
from gguf import GGUFReader

from float_reference import forward, load, log_softmax

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
N_PREDICT = 8
PROMPTS = [
    ("long", [(i * 37 + 11) % 500 for i in range(40)]),
    ("medium", [(i * 53 + 7) % 480 + 3 for i in range(20)]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrun", default=os.path.join(ROOT, "build", "lrun"))
    ap.add_argument("--out", default=os.path.join(HERE, "swa_float64.json"))
    args = ap.parse_args()
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        names = subprocess.run([args.lrun, os.path.join(ROOT, "tests", "arch_models.lua"), tmp, "float"],
                               check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
        for name in names:
            path = os.path.join(tmp, name + ".gguf")
            hp, w = load(path)
            f = GGUFReader(path).fields["llama.attention.sliding_window"]
            window = int(f.parts[f.data[0]][0])
            cases = []
            for pname, ids in PROMPTS:
                lp = log_softmax(forward(hp, w, ids, window))
                top = np.argsort(-lp)[:20]
                ctx, out = list(ids), []
                for _ in range(N_PREDICT):
                    nxt = int(np.argmax(forward(hp, w, ctx, window)))
                    out.append(nxt)
                    ctx.append(nxt)
                cases.append({"name": pname, "prompt_ids": ids, "continuation_ids": out,
                              "first_step_top20": [[int(i), float(lp[i])] for i in top]})
            models.append({"name": name, "sliding_window": window, "cases": cases})
            print(name, window, [c["continuation_ids"] for c in cases])
    doc = {"generator": "tests/golden/make_swa_golden.py (regenerate, never hand-edit)",
           "reference": "float64 numpy forward (tests/golden/float_reference.py) with the sliding window",
           "n_predict": N_PREDICT, "models": models}
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    print("wrote %s (%d models)" % (args.out, len(models)))


if __name__ == "__main__":
    main()
