#!/usr/bin/env python3
"""The last position's logits of a prompt, as transformers computes them from an HF directory.

Usage: python3 tests/gpt_oss_transformers.py DIR '[id, id, ...]'
Prints one JSON object: "class", the model class transformers built, and "logits", the f32 logits
(model(ids).logits[0, -1]).
tests/gen_hf_gpt_oss_spec.lua runs it on the gpt-oss directories examples/genmodel.lua writes: the reference
nobody here wrote. The model runs in f32 with eager attention (the one that applies gpt-oss's sinks and
window as the released code does); MXFP4 experts are dequantized by transformers itself (on a CPU it has no
MXFP4 kernels). Needs torch and transformers (the spec is pending without them).
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    path, ids = sys.argv[1], json.loads(sys.argv[2])
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1]
    print(json.dumps({"class": type(model).__name__, "logits": [float(v) for v in logits]}))


if __name__ == "__main__":
    main()
