#!/usr/bin/env python3
"""cuda_peer.py — llama.cpp's CUDA backend (llama-bench) and lrun on the same files in the same run (#15).

Usage: python3 tests/bench/cuda_peer.py [--llama-bench PATH] [--lrun build/lrun] [--out FILE]
         [--device cuda:0] [--timeout S] [--keep] [--generate-only] [--read-gbps X] MODEL...
  MODEL  a GGUF path, or 7b:<type> (bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k):
         the random-weight Llama-2-7B shape of tests/bench/llama7b.lua,
         written by lrun's generator to $LRUN_BENCH_DIR (default /tmp) unless
         it is there already, and deleted once both sides ran (--keep keeps it;
         --generate-only writes the files and stops).

Per model, one after the other (the rows print as they come; a failed or timed
out step leaves its cells empty and the next model runs):
  llama.cpp  llama-bench -m FILE -ngl 99 -p 512 -n 128 -r 2 -o json (flash
             attention left at llama-bench's default, "auto": on where the
             CUDA backend supports it; the JSON says what it used)
  lrun       tests/bench/peer_lrun.lua FILE --device cuda:0 --prefill 512
             --ngen 128 (prompt of 512 tokens from an empty cache; 128 steps
             at batch 1 from depth 0, as llama-bench's tg128, fed random ids:
             peer_lrun's default --decode-stream forced; a dense model decodes
             at the same speed whatever the tokens), beside the planner's
             predictions (lrun.predict) and their errors
  limit      hbm_read / bytes one decode step reads (gpu_bench.lua's bytes,
             tests/bench/hf_bench.py's bandwidth through peer_bw.py)
Prints a markdown table; --out gets one JSON line per model (and one for the
bandwidth).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

TYPES = ("bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k")
HEADER = ("| model | type | GB read / token | llama.cpp pp512 | llama.cpp tg128 | lrun prefill 512 | lrun decode | "
          "prefill lrun/llama | decode lrun/llama | HBM limit tok/s | lrun % of limit | llama.cpp % of limit | "
          "lrun predicted pp512 (error) | lrun predicted decode (error) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def predicted(pred, got):
    """'12.3 (+4%)': lrun.predict's figure and its error against the measured one."""
    if not pred or not got:
        return "–"
    return f"{pred:.1f} ({100 * (pred - got) / got:+.0f}%)"


def row(r):
    lc, lr = r.get("llama", {}), r.get("lrun", {})
    pp, tg = lc.get("pp", {}).get("512"), lc.get("tg")
    lpp, ltg = lr.get("prefill_tps", {}).get("512"), lr.get("decode_tps")
    lim = r.get("hbm_limit_tps")
    pct = lambda v: pc.fmt(None if v is None or not lim else 100 * v / lim, ".0f") + "%"  # noqa: E731
    gb = lr.get("decode_bytes")
    return (f"| {r['model']} | {r['type']} | {pc.fmt(gb and gb / 1e9, '.3f')} | {pc.fmt(pp, '.0f')} | {pc.fmt(tg)} | "
            f"{pc.fmt(lpp, '.0f')} | {pc.fmt(ltg)} | {pc.fmt(pc.ratio(lpp, pp), '.2f')} | "
            f"{pc.fmt(pc.ratio(ltg, tg), '.2f')} | {pc.fmt(lim)} | {pct(ltg)} | {pct(tg)} | "
            f"{predicted(lr.get('predicted_prefill_tps'), lpp)} | {predicted(lr.get('predicted_decode_tps'), ltg)} |")


def bench_one(args, spec, bw, lines):
    dtype = spec[3:] if spec.startswith("7b:") else None
    r = {"model": "llama2-7b-shape" if dtype else os.path.basename(spec), "type": dtype or "?", "spec": spec}
    path = spec
    if dtype:
        path, r["gen_s"] = pc.generate_7b(args.lrun, dtype, args.timeout)
    try:
        if args.llama_bench:
            r["llama"] = pc.llama_bench(args.llama_bench, path, [512], 128, [], args.timeout)
        r["lrun"] = pc.lrun_side(args.lrun, path, ["--device", args.device, "--prefill", "512", "--ngen", "128"],
                                 args.timeout)
    finally:
        if dtype and not args.keep:
            os.remove(path)
    if r["type"] == "?":
        r["type"] = r["lrun"].get("dtype", "?")
    gb = r["lrun"].get("decode_bytes")
    if bw.get("hbm_read") and gb:
        r["hbm_limit_tps"] = bw["hbm_read"] * 1e9 / gb
    lines.write(r)
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--llama-bench")
    p.add_argument("--lrun", default=os.path.join(pc.ROOT, "build", "lrun"))
    p.add_argument("--out")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--timeout", type=float, default=180, help="seconds per step (generation, llama-bench, lrun)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--read-gbps", type=float, help="the device's read bandwidth, instead of measuring it")
    args = p.parse_args()
    for m in args.models:
        if m.startswith("7b:") and m[3:] not in TYPES:
            p.error(f"{m}: the 7B shapes are " + ", ".join("7b:" + t for t in TYPES))
    if args.generate_only:
        for m in args.models:
            if m.startswith("7b:"):
                try:
                    print(pc.generate_7b(args.lrun, m[3:], args.timeout)[0], flush=True)
                except RuntimeError as e:
                    pc.log(f"cuda_peer: {e}")
        return
    lines = pc.Lines(args.out)
    bw = {"hbm_read": args.read_gbps} if args.read_gbps else pc.bandwidths(120, "hbm")
    lines.write({"bandwidth": bw})
    print(f"device read bandwidth {pc.fmt(bw.get('hbm_read'))} GB/s; batch 1; llama-bench -ngl 99 -p 512 -n 128 -r 2",
          flush=True)
    print(HEADER, flush=True)
    rows = []
    for m in args.models:
        try:
            r = bench_one(args, m, bw, lines)
        except Exception as e:  # one model's failure leaves the others' rows
            pc.log(f"cuda_peer: {m}: {e}")
            continue
        rows.append(r)
        print(row(r), flush=True)
    names = {-1: "auto", 0: "off", 1: "on"}
    fa = {names.get(r["llama"]["flash_attn"], str(r["llama"]["flash_attn"])) for r in rows
          if "flash_attn" in r.get("llama", {})}
    if fa:
        print(f"\nllama-bench flash_attn: {', '.join(sorted(fa))}", flush=True)


if __name__ == "__main__":
    main()
