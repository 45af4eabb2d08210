#!/usr/bin/env python3
"""hf_kv_bench.py — HF transformers decode speed and peak device memory per KV cache
implementation at long contexts (the HF side of issue #5; lrun's side is
tests/bench/kv_cache_bench.lua).

What: for each context L and each cache implementation (dynamic, static,
offloaded, offloaded_static, quantized), greedy decode tok/s and the peak
device memory of a random-weight LlamaForCausalLM (default: the Llama-2-7B
shape) in bf16, sdpa attention, no torch.compile.

How (the same method as lrun's, so the two compare fairly): a real prefill of
32k tokens costs more GPU time than we have, and decode speed depends on how
many positions the cache holds, not on what they hold. So per (L, impl):
  1. the cache object of that implementation is built with room for
     L + n_warm + n_gen positions where it needs a size;
  2. it is filled with L positions of random K and V (bf16, uniform [-1, 1))
     through its own update(), layer by layer in the order a prefill runs, so
     its memory placement is the real one (offloaded moves layers to the host,
     quantized quantizes, static writes into its preallocated buffers);
  3. n_warm then n_gen greedy steps of one token each run through
     model(input_ids, past_key_values=cache, position_ids, use_cache=True),
     argmax on the device, no host sync inside the loop;
     decode_tps = n_gen / seconds (torch.cuda.synchronize around the loop);
  4. peak_bytes = torch.cuda.max_memory_allocated() after the decode, the peak
     counter reset just before building the cache (so it includes the weights,
     weight_bytes, and the fill's transients); decode_peak_bytes is the same
     with the counter reset after the fill, i.e. the decode alone.
A row that fails (out of memory, an implementation this transformers lacks,
a missing quantization backend) prints {"error": ...} and the run goes on.

The quantized row uses QuantizedCache with the optimum-quanto backend, 4 bits,
group 64, residual 128 (transformers' defaults). With n_warm + n_gen < 128
steps the decode never reaches a re-quantization of the residual; each step
does dequantize the whole cache, which is what this row measures. quanto
compiles its unpack kernel at first use; that build runs (and is timed,
quanto_build_s) before the rows, and if it fails the rows use quanto's
pure-torch unpack and say so (quanto_unpack).

--check runs every implementation on the same filled contents and compares
the last decode step's logits with the dynamic cache's (they must agree, up to
quantization for "quantized"), and with a dynamic cache holding different
contents (which must differ): proof the filled caches are attended to.

Usage: python3 tests/bench/hf_kv_bench.py [--contexts 4096,16384,32768]
        [--impls dynamic,static,offloaded,offloaded_static,quantized] [--n-gen 16]
        [--n-warm 2] [--layers 32 --embd 4096 --ff 11008 --heads 32 --kv-heads 32
        --vocab 32000] [--device cuda|cpu] [--out FILE] [--quanto-unpack auto|python] [--check]
Tiny CPU test: python3 tests/bench/hf_kv_bench.py --device cpu --layers 2 --embd 64
        --ff 128 --heads 4 --kv-heads 4 --vocab 256 --contexts 64,128 --n-gen 4 [--check]
"""
import argparse
import gc
import inspect
import json
import sys
import time
import types

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

IMPLS = ("dynamic", "static", "offloaded", "offloaded_static", "quantized")
DTYPE = torch.bfloat16


# ---- model --------------------------------------------------------------------------------

def build_model(args, device):
    """Random-weight LlamaForCausalLM built directly on `device` in bf16 (no host copy of 13 GB)."""
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.embd, intermediate_size=args.ff,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, max_position_embeddings=max(args.contexts) + 1024,
                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    # Explicit noise, whatever this transformers' own init does; norms keep their ones so the
    # activations stay O(1) through 32 layers.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
    model.eval()
    return model, cfg


def head_dim(cfg):
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


# ---- caches -------------------------------------------------------------------------------

def layered_api():
    """transformers >= 4.56 (and 5.x): one Cache of layers with an `offloading` flag;
    OffloadedCache/OffloadedStaticCache/QuantizedCacheConfig are gone there."""
    return "offloading" in inspect.signature(transformers.DynamicCache.__init__).parameters


def make_cache(impl, cfg, capacity, device):
    """The cache object transformers itself builds for `impl`, sized for `capacity` positions."""
    tf = transformers
    quant = dict(nbits=4, q_group_size=64, residual_length=128)
    if layered_api():
        if impl == "dynamic":
            return tf.DynamicCache(config=cfg)
        if impl == "static":
            return tf.StaticCache(config=cfg, max_cache_len=capacity)
        if impl == "offloaded":
            return tf.DynamicCache(config=cfg, offloading=True)
        if impl == "offloaded_static":
            return tf.StaticCache(config=cfg, max_cache_len=capacity, offloading=True)
        if impl == "quantized":
            return tf.QuantizedCache(backend="quanto", config=cfg, **quant)
    else:
        # 4.4x-4.55: one class per kind; static kinds allocate on `device` at construction.
        static_kw = dict(config=cfg, max_batch_size=1, max_cache_len=capacity, device=device, dtype=DTYPE)
        if impl == "dynamic":
            return tf.DynamicCache()
        if impl == "static":
            return tf.StaticCache(**static_kw)
        if impl == "offloaded":
            return tf.OffloadedCache()
        if impl == "offloaded_static":
            return tf.OffloadedStaticCache(**static_kw)
        if impl == "quantized":
            quant.update(compute_dtype=DTYPE, device=device)
            if hasattr(tf.cache_utils, "QuantoQuantizedCacheProcessor"):  # 4.54-4.55
                return tf.QuantoQuantizedCache(**quant)
            return tf.QuantoQuantizedCache(cache_config=tf.QuantizedCacheConfig(backend="quanto", **quant))
    raise ValueError(f"unknown cache implementation {impl!r} (known: {', '.join(IMPLS)})")


def fill_cache(cache, cfg, n_pos, device, seed):
    """Put n_pos positions of random K/V into every layer through cache.update(), in prefill order.

    The same seed gives the same contents on every implementation (--check relies on it)."""
    shape = (1, cfg.num_key_value_heads, n_pos, head_dim(cfg))
    kwargs = {"cache_position": torch.arange(n_pos, device=device)}  # where the static kinds write (<= 4.55)
    gen = torch.Generator(device=device)
    for layer in range(cfg.num_hidden_layers):
        gen.manual_seed(seed * 1000 + layer)
        k = torch.rand(shape, generator=gen, device=device, dtype=DTYPE) * 2 - 1
        v = torch.rand(shape, generator=gen, device=device, dtype=DTYPE) * 2 - 1
        cache.update(k, v, layer, kwargs)
        del k, v


def quanto_python_unpack(packed, bits):
    """quanto's pure-torch unpack (optimum/quanto/library/unpack.py, the op's "default" kernel),
    copied: torch.library.impl returns None as a decorator, so the module holds no function to import."""
    parts = [(packed & (2 ** (bits * (i + 1)) - 1)) >> (bits * i) for i in range(8 // bits)]
    return torch.cat(parts).to(torch.uint8)


def prepare_quanto(device, mode):
    """Make quanto's unpack usable on `device` before any quantized row; returns what it runs.

    quanto compiles its C++/CUDA unpack kernel (ninja + nvcc) at the first call, which can take
    minutes or fail (no nvcc, nvcc/torch CUDA mismatch). That happens here, timed, not inside a
    row's decode. If it fails, or mode is "python", quanto's own pure-torch unpack (the op's
    "default" implementation: shifts, masks, cat) replaces the kernel."""
    from optimum.quanto.library import extensions

    kind = torch.device(device).type
    backend = getattr(extensions, "cuda" if kind == "cuda" else "cpp", None)
    if backend is None or not hasattr(backend, "ext"):
        return {"quanto_unpack": "python (quanto registers no kernel here)"}

    def use_python():
        # The registered kernel looks `ext` up at each call, so this swaps what it runs.
        backend.ext = types.SimpleNamespace(lib=types.SimpleNamespace(unpack=quanto_python_unpack))

    if mode == "python":
        use_python()
        return {"quanto_unpack": "python (--quanto-unpack python)"}
    t0 = time.perf_counter()
    try:
        torch.ops.quanto.unpack(torch.zeros(64, dtype=torch.uint8, device=device), 4)
        sync(device)
    except Exception as exc:  # noqa: BLE001 - any build failure: fall back, and say so
        use_python()
        return {"quanto_unpack": f"python (kernel build failed: {error_text(exc)})"}
    return {"quanto_unpack": "kernel", "quanto_build_s": round(time.perf_counter() - t0, 1)}


def seq_length(cache):
    n = cache.get_seq_length()
    return int(n.item()) if torch.is_tensor(n) else int(n)


# ---- decode -------------------------------------------------------------------------------

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def decode(model, cache, context, n_warm, n_gen, device, forced=None):
    """n_warm untimed then n_gen timed greedy steps after `context` cached positions.

    forced: (1, n_warm + n_gen) token ids to feed instead of the argmax (--check: one step's
    rounding must not change the next input). Returns (seconds of the timed steps, last logits)."""
    pos = torch.arange(context, context + n_warm + n_gen, device=device)
    # <= 4.55 takes cache_position (the static kinds write there); 5.x dropped it.
    takes_cache_position = "cache_position" in inspect.signature(model.model.forward).parameters
    tok = torch.randint(0, model.config.vocab_size, (1, 1), device=device,
                        generator=torch.Generator(device=device).manual_seed(2))
    if forced is not None:
        tok = forced[:, :1]
    logits = None
    t0 = None
    for i in range(n_warm + n_gen):
        if i == n_warm:
            sync(device)
            t0 = time.perf_counter()
        step = {"cache_position": pos[i:i + 1]} if takes_cache_position else {}
        out = model(input_ids=tok, past_key_values=cache, position_ids=pos[i:i + 1].unsqueeze(0),
                    use_cache=True, **step)
        logits = out.logits[:, -1]
        tok = logits.argmax(-1, keepdim=True) if forced is None else forced[:, i + 1:i + 2]
    sync(device)
    return time.perf_counter() - t0, logits


def run_row(model, cfg, impl, context, args):
    """One (impl, context) measurement; raises on failure (the caller turns it into an error row)."""
    device = args.device
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    cache = make_cache(impl, cfg, context + args.n_warm + args.n_gen, device)
    fill_cache(cache, cfg, context, device, seed=1)
    if seq_length(cache) != context:
        raise RuntimeError(f"cache holds {seq_length(cache)} positions after the fill, expected {context}")
    sync(device)
    fill_peak = torch.cuda.max_memory_allocated() if is_cuda else None
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        seconds, _ = decode(model, cache, context, args.n_warm, args.n_gen, device)
    steps = args.n_warm + args.n_gen
    if seq_length(cache) != context + steps:  # the steps really appended to the L filled positions
        raise RuntimeError(f"cache holds {seq_length(cache)} positions after decoding, expected {context + steps}")
    decode_peak = torch.cuda.max_memory_allocated() if is_cuda else None
    return {"decode_tps": args.n_gen / seconds,
            "peak_bytes": max(fill_peak, decode_peak) if is_cuda else None,
            "decode_peak_bytes": decode_peak,
            "cache_class": type(cache).__name__}


def free_device(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def error_text(exc):
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


# ---- --check: the filled caches are attended to, the same way by every kind ------------------

def last_logits(model, cfg, impl, context, args, seed):
    cache = make_cache(impl, cfg, context + args.n_warm + args.n_gen, args.device)
    fill_cache(cache, cfg, context, args.device, seed)
    forced = torch.randint(0, cfg.vocab_size, (1, args.n_warm + args.n_gen),
                           generator=torch.Generator().manual_seed(3)).to(args.device)
    with torch.no_grad():
        _, logits = decode(model, cache, context, args.n_warm, args.n_gen, args.device, forced)
    return logits.float().cpu()


def check(model, cfg, args):
    """Compare each impl's last-step logits with dynamic's on the same contents and the same
    (forced) input tokens. Returns 0 if all agree."""
    context = args.contexts[0]
    ref = last_logits(model, cfg, "dynamic", context, args, seed=1)
    other = last_logits(model, cfg, "dynamic", context, args, seed=7)
    scale = ref.abs().max().item()
    control = (other - ref).abs().max().item()
    failed = 0
    print(json.dumps({"check": "dynamic, other contents", "context": context,
                      "max_abs_diff": control, "max_abs_logit": scale, "ok": control > 0.05 * scale}))
    failed += control <= 0.05 * scale
    for impl in args.impls:
        if impl == "dynamic":
            continue
        try:
            diff = (last_logits(model, cfg, impl, context, args, seed=1) - ref).abs().max().item()
        except Exception as exc:  # noqa: BLE001 - a missing kind is reported, not fatal
            print(json.dumps({"check": impl, "context": context, "error": error_text(exc)}))
            free_device(args.device)
            continue
        # bf16 through a few layers: exact kinds agree to ~1%; 4-bit K/V move logits more, yet stay
        # much closer to the same contents than the control is.
        tol = 0.5 * control if impl == "quantized" else 0.02 * scale
        ok = diff <= tol
        failed += not ok
        print(json.dumps({"check": impl, "context": context, "max_abs_diff": diff, "tolerance": tol, "ok": ok}))
        free_device(args.device)
    return 1 if failed else 0


# ---- main ---------------------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", default="4096,16384,32768", help="comma-separated cached positions")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated, from: " + ", ".join(IMPLS))
    p.add_argument("--n-gen", type=int, default=16, help="timed decode steps")
    p.add_argument("--n-warm", type=int, default=2, help="untimed decode steps first")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--embd", type=int, default=4096)
    p.add_argument("--ff", type=int, default=11008)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu only to test this script")
    p.add_argument("--out", help="also write the rows as one JSON list to this file")
    p.add_argument("--quanto-unpack", default="auto", choices=("auto", "python"),
                   help="auto: quanto's compiled unpack kernel, its pure-torch one if the build fails")
    p.add_argument("--check", action="store_true", help="compare the kinds' logits on the first context")
    args = p.parse_args()
    try:
        args.contexts = [int(c) for c in args.contexts.split(",") if c]
    except ValueError:
        p.error(f"--contexts: expected comma-separated integers, got {args.contexts!r}")
    args.impls = [i for i in args.impls.split(",") if i]
    unknown = [i for i in args.impls if i not in IMPLS]
    if unknown or not args.impls or not args.contexts or min(args.contexts) < 1:
        p.error(f"--impls: unknown {unknown} (known: {', '.join(IMPLS)}); --contexts must be positive")
    if args.n_gen < 1 or args.n_warm < 0:
        p.error("--n-gen must be >= 1 and --n-warm >= 0")
    return args


def main():
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("hf_kv_bench: no CUDA device visible to torch (use --device cpu to test the script)", file=sys.stderr)
        return 1
    model, cfg = build_model(args, args.device)
    quanto = {}
    if "quantized" in args.impls:
        try:
            quanto = prepare_quanto(args.device, args.quanto_unpack)
        except ImportError as exc:  # no optimum-quanto: the quantized rows will say so
            quanto = {"quanto_unpack": error_text(exc)}
        print(json.dumps(quanto), file=sys.stderr)
    if args.check:
        return check(model, cfg, args)
    common = {"n_gen": args.n_gen, "n_warm": args.n_warm, "torch": torch.__version__,
              "transformers": transformers.__version__,
              "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "attn": model.config._attn_implementation, "compile": False,
              "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
    rows = []
    for context in args.contexts:
        for impl in args.impls:
            row = {"impl": impl, "context": context}
            try:
                row.update(run_row(model, cfg, impl, context, args))
            except Exception as exc:  # noqa: BLE001 - OOM, missing class or backend: one row, not the run
                row["error"] = error_text(exc)
            # Outside the except block, so the traceback (which holds the cache) is gone.
            free_device(args.device)
            row.update(common)
            if impl == "quantized":
                row.update(quanto)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
