#!/usr/bin/env python3
"""hf_bench.py — the GPU reference figures tests/bench/gpu_bench.lua compares with.

Prints one line of JSON:
  device            the GPU's name (torch)
  read_gbps         device memory bandwidth, reading: the best of several
                    sums over a 4 GiB tensor (bytes read / time)
  copy_gbps         device-to-device copy of 4 GiB, bytes read + written / time
  hf                HF transformers on a random-weight LlamaForCausalLM of the
                    given shape in bf16, eager attention, no torch.compile:
                    prefill_tps (one forward of n_prompt tokens) and decode_tps
                    (n_gen greedy steps, each one forward of one token with the
                    DynamicCache, argmax on the GPU; no host sync inside the loop)

Usage: python3 tests/bench/hf_bench.py [--no-hf] [--layers 32 --embd 4096 --ff 11008
        --heads 32 --vocab 32000] [--n-prompt 512] [--n-decode-prompt 128] [--n-gen 128]
"""
import argparse
import json
import sys
import time

import torch


def bandwidth(gib=4, runs=10):
    n = gib * (1 << 30) // 2
    x = torch.ones(n, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    torch.cuda.synchronize()
    best_read = best_copy = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        x.sum(dtype=torch.float32)
        torch.cuda.synchronize()
        best_read = min(best_read, time.perf_counter() - t0)
        t0 = time.perf_counter()
        y.copy_(x)
        torch.cuda.synchronize()
        best_copy = min(best_copy, time.perf_counter() - t0)
    b = x.numel() * 2
    del x, y
    torch.cuda.empty_cache()
    return b / best_read / 1e9, 2 * b / best_copy / 1e9


def hf(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.embd, intermediate_size=args.ff,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.heads, max_position_embeddings=4096, rms_norm_eps=1e-5,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    g = torch.Generator(device="cuda").manual_seed(1)
    prompt = torch.randint(0, args.vocab, (1, args.n_prompt), device="cuda", generator=g)
    with torch.no_grad():
        # prefill: best of 3 after a warm-up
        model(prompt[:, :16])
        best = float("inf")
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(prompt, use_cache=True)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        prefill_tps = args.n_prompt / best

        def decode(n):
            out = model(prompt[:, : args.n_decode_prompt], use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(n):
                out = model(tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        decode(8)
        decode_tps = args.n_gen / min(decode(args.n_gen) for _ in range(2))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"engine": "hf-transformers-eager-bf16", "transformers": __import__("transformers").__version__,
            "torch": torch.__version__, "weight_bytes": weight_bytes, "n_prompt": args.n_prompt,
            "n_decode_prompt": args.n_decode_prompt, "n_gen": args.n_gen, "prefill_tps": prefill_tps,
            "decode_tps": decode_tps}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-hf", action="store_true", help="only measure the bandwidth")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--embd", type=int, default=4096)
    p.add_argument("--ff", type=int, default=11008)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--n-decode-prompt", type=int, default=128)
    p.add_argument("--n-gen", type=int, default=128)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("hf_bench: no CUDA device visible to torch", file=sys.stderr)
        return 1
    read, copy = bandwidth()
    out = {"device": torch.cuda.get_device_name(0), "read_gbps": read, "copy_gbps": copy}
    if not args.no_hf:
        out["hf"] = hf(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
