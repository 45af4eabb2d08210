#!/usr/bin/env python3
"""dfloat11_model_bench.py — DFloat11 (PyPI dfloat11 0.5.0) at the engine level,
against lrun on the same HF directory in the same run (issue #12: "the dfloat11
package ... on the same shape: its ratio, its decode GB/s, its tokens/s"; the
decode GB/s per matrix is tests/bench/dfloat11_bench.py's).

  build/lrun examples/genmodel.lua -o /tmp/hf7b --hf --trained --dtype bf16 \\
      --layers 32 --embd 4096 --ff 11008 --heads 32 --kv-heads 32 --vocab 32000
  python3 tests/bench/dfloat11_model_bench.py /tmp/hf7b --out-dir /tmp/hf7b-df11 [--ngen 32] [--json OUT]

The weights are the generator's trained-like bf16 values (synthetic: normal with
per-tensor scales and a few large outliers per row; no checkpoint downloaded).
Steps, each printed with its time:
 1. transformers' bf16 model, resident on cuda:0: decode tokens/s (the plain
    reference, the same loop as DFloat11's).
 2. DFloat11's own compress_model (its Huffman code, lookup tables and
    check_correctness, which decodes every module with its kernel and compares
    it with the bf16 weights), its per-element Python bit packing replaced by
    tests/bench/dfloat11_fast.py's (byte for byte the same arrays, checked
    against its loop on 2M values first) and its exponent histogram taken on
    the device (the same counts), so that a 7B fits one call. Its ratio: every array it stores over the plain bf16 bytes.
 3. DFloat11Model.from_pretrained resident (device cuda:0) and with cpu_offload
    (every block in pinned host memory, one on the device at a time: DFloat11's
    analogue of lrun's mode 2): decode tokens/s and peak device memory.
 4. lrun on the same directory (build/lrun tests/bench/peer_lrun.lua): packed
    resident (--packed true), plain resident (--packed false), and under a GPU
    budget of DFloat11's offloaded peak.
Decode is measured as peer_lrun measures it (llama-bench's tg at depth 0): a
1-token prompt, then --ngen steps each feeding one token, the argmax taken on
the host every step; best of 2 after a warm-up. Needs torch, transformers,
accelerate, cupy, safetensors and the dfloat11 and dahuffman wheels (carried):
the GPU machine.
"""
import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dfloat11_fast  # noqa: E402

# DFloat11's pattern for Llama models (its README's example): the embedding and
# the head alone, each decoder layer's seven matrices as one block.
LLAMA_PATTERN = {
    r"lm_head": [],
    r"model\.embed_tokens": [],
    r"model\.layers\.\d+": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
}
STORED = ("luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps", "split_positions")
T0 = time.time()


def say(msg):
    print(f"### [{time.time() - T0:.0f}s] {msg}", flush=True)


def decode_tps(model, vocab, ngen, device="cuda:0"):
    """Tokens/s of ngen single-token steps after a 1-token prompt, argmax on the host
    each step; best of 2 after a warm-up of 4 steps."""
    from transformers import DynamicCache
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (ngen + 1,), generator=g).tolist()

    def run(steps):
        cache = DynamicCache()
        with torch.no_grad():
            out = model(torch.tensor([[ids[0]]], device=device), past_key_values=cache, use_cache=True)
            int(out.logits[0, -1].argmax())
            torch.cuda.synchronize()
            t = time.perf_counter()
            for k in range(steps):
                out = model(torch.tensor([[ids[k + 1]]], device=device), past_key_values=cache, use_cache=True)
                int(out.logits[0, -1].argmax())  # the host's argmax: a sync each step, as lrun's
            torch.cuda.synchronize()
            return steps / (time.perf_counter() - t)

    run(4)
    return max(run(ngen), run(ngen))


def stored_bytes(out_dir):
    """DFloat11's stored arrays and the plain bytes they stand for."""
    from safetensors import safe_open
    packed, plain = 0, 0
    for f in glob.glob(os.path.join(out_dir, "*.safetensors")):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                leaf = k.rsplit(".", 1)[-1]
                if leaf in STORED:
                    t = s.get_slice(k)
                    n = 1
                    for d in t.get_shape():
                        n *= d
                    size = n * {"U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4, "I64": 8, "BF16": 2}.get(
                        t.get_dtype(), 4)
                    packed += size
                    if leaf == "sign_mantissa":
                        plain += 2 * n
    return packed, plain


def check_encoder(model):
    """The fast bit packing against DFloat11's own loop on 2M values of the first
    layer's gate_proj: the same arrays or stop."""
    from dfloat11.dfloat11_utils import get_codec, get_32bit_codec, encode_weights
    w = model.model.layers[0].mlp.gate_proj.weight.data.detach().cpu().flatten()[:2_000_000]
    _, counter = get_codec(w)
    codec, _, _ = get_32bit_codec(counter)
    with contextlib.redirect_stdout(open(os.devnull, "w")), contextlib.redirect_stderr(open(os.devnull, "w")):
        theirs = encode_weights([w], codec, 8, 512)
        ours = dfloat11_fast.encode_weights([w], codec, 8, 512)
    if not all(torch.equal(a, b) for a, b in zip(theirs, ours)):
        sys.exit("dfloat11_fast.encode_weights differs from DFloat11's encode_weights")


def transformers_shim():
    """DFloat11 0.5.0 imports no_init_weights from transformers.modeling_utils,
    which transformers 5 moved to transformers.initialization."""
    import transformers.modeling_utils as mu
    if not hasattr(mu, "no_init_weights"):
        from transformers.initialization import no_init_weights
        mu.no_init_weights = no_init_weights


def compress(model, out_dir, log):
    import dfloat11.dfloat11 as df
    df.encode_weights = dfloat11_fast.encode_weights  # the one replaced step
    own_get_codec = df.get_codec
    # its exponent histogram (torch.unique) taken on the device: the same counts
    df.get_codec = lambda w: own_get_codec(w.to("cuda:0"))
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    with contextlib.redirect_stdout(log):
        df.compress_model(model, LLAMA_PATTERN, out_dir, save_single_file=False, check_correctness=True)


def lrun_run(lrun, model_dir, ngen, extra, log):
    cmd = [lrun, "tests/bench/peer_lrun.lua", model_dir, "--prefill", "0", "--ngen", str(ngen)] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    log.write(" ".join(cmd) + "\n" + p.stderr[-4000:] + "\n")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": f"rc {p.returncode}: {p.stderr.strip().splitlines()[-1:] }"}
    d = json.loads(lines[-1])
    return {k: d.get(k) for k in ("decode_tps", "predicted_decode_tps", "packed_ratio", "weight_device_bytes")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--out-dir", required=True, help="where DFloat11's compressed model is written")
    ap.add_argument("--ngen", type=int, default=32)
    ap.add_argument("--lrun", default="build/lrun")
    ap.add_argument("--no-lrun", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--log", default="/tmp/dfloat11_model_bench.log", help="DFloat11's and lrun's own output")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM
    from dfloat11 import DFloat11Model
    log = open(a.log, "w")
    transformers_shim()
    r = {"model_dir": a.model_dir, "ngen": a.ngen, "device": torch.cuda.get_device_name(0)}

    say("transformers bf16, resident")
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True)
    vocab = model.config.vocab_size
    check_encoder(model)
    model.to("cuda:0").eval()
    r["hf_bf16_resident_tps"] = decode_tps(model, vocab, a.ngen)
    say(f"transformers bf16 resident: {r['hf_bf16_resident_tps']:.1f} tok/s")

    say("DFloat11 compress_model")
    t = time.time()
    compress(model, a.out_dir, log)
    r["df11_compress_s"] = time.time() - t
    del model
    torch.cuda.empty_cache()
    packed, plain = stored_bytes(a.out_dir)
    r["df11_ratio"] = packed / plain
    say(f"DFloat11: {plain / 2**30:.2f} GiB -> {packed / 2**30:.2f} GiB (ratio {r['df11_ratio']:.4f}), "
        f"{r['df11_compress_s']:.0f} s (check_correctness passed)")

    for name, kw in (("resident", {"device": "cuda:0"}), ("cpu_offload", {"device": "cuda:0", "cpu_offload": True})):
        torch.cuda.reset_peak_memory_stats()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            m = DFloat11Model.from_pretrained(a.out_dir, **kw)
        m.eval()
        r[f"df11_{name}_tps"] = decode_tps(m, vocab, a.ngen)
        r[f"df11_{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        say(f"DFloat11 {name}: {r[f'df11_{name}_tps']:.2f} tok/s, peak {r[f'df11_{name}_peak_gib']:.2f} GiB on the device")
        del m
        torch.cuda.empty_cache()

    if not a.no_lrun:
        budget = f"{max(1.0, r['df11_cpu_offload_peak_gib']):.2f}G"
        for name, extra in (("packed_resident", ["--packed", "true"]), ("plain_resident", ["--packed", "false"]),
                            ("budget", ["--gpu-budget", budget])):
            r[f"lrun_{name}"] = lrun_run(a.lrun, a.model_dir, a.ngen, extra, log)
            say(f"lrun {name} {' '.join(extra)}: {r[f'lrun_{name}']}")
        r["lrun_budget"]["gpu_budget"] = budget

    print(json.dumps(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
