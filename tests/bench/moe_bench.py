#!/usr/bin/env python3
"""moe_bench.py — a mixture of experts under GPU budgets: lrun (auto and hand-picked placements) against
llama.cpp's CUDA backend with -ncmoe, and the host-link limit, in one run (#14, #15).

Usage: python3 tests/bench/moe_bench.py [--llama-bench PATH] [--lrun build/lrun] [--out FILE]
         [--preset qwen3-30b-a3b] [--dtype q4_k] [--routers uniform,skew] [--skew 2] [--budgets 8,4,16]
         [--prefill 512,4096] [--ngen 128] [--decode-stream forced] [--hand eoh,ncmoe] [--reserve-gib 1] [--timeout S]
         [--model PATH] [--keep] [--generate-only] [--device cuda:0] [--pcie-gbps X --dram-gbps Y]
The model: examples/genmodel.lua --preset P --dtype T, random weights, written
to $LRUN_BENCH_DIR (default /tmp) unless there already, deleted when its
rows are done (--keep keeps it). Since 2026-12 the generator's MoE models
route like trained ones (docs/moe.md, "Routing of generated models"): each
block sends teacher-forced random tokens to nearly independent expert sets,
so an expert cache of a fraction f of the experts hits about f of the time
(uniform), or more with the skew. Rows measured before that (docs/benchmarks.md
says which) ran on collapsed routing, where blocks past the first sent every
token to the same few experts and the cache hit ~0.99; --gen-args
--collapsed-routing writes such a model again, to compare. Routers:
"uniform" is the generator's random router (near-uniform popularity,
--router-skew 0); "skew" is --router-skew S (synthetic Zipf-like popularity;
S = 8 gives about what trained routers show, docs/moe.md). The cached file's
name says the router, S and the routing. --model uses a file instead.

Per router and budget B GiB (in the order given; rows print as they come):
  llama.cpp    llama-bench -ngl 99 -ncmoe N -p 512 -n 128 -r 2 -o json, then
               -p 4096 -n 0 (a second call, so a timeout costs only the long prompt),
               N the fewest blocks whose experts go to the host so that the
               device bytes (all non-expert tensors + the experts of the other
               blocks + reserve for KV cache and compute buffers) fit B; the
               sizes are lrun's reading of the GGUF (peer_lrun.lua --info)
  lrun auto    peer_lrun.lua --gpu-budget BG (lrun.load's own placement)
  lrun hand    the best of the hand-picked placements under the same budget:
               eoh = --policy experts_on_host --moe-host cache (every expert
               host-side, hot ones cached in device slots from the free
               budget), ncmoe = --n-cpu-moe N --moe-host cache (llama.cpp's N,
               or up to 4 more blocks when lrun's plan says it does not fit)
  limit        (pcie_h2d + dram_read) / bytes per token of the experts that
               do not fit B (uniform routing: k/E of them), PCIe and host DRAM
               used together; bandwidths from peer_bw.py, measured in the run
Decode at batch 1 (128 steps from depth 0), prefill of each --prefill length.
--decode-stream (lrun rows): "forced" (default) feeds teacher-forced random
token ids (a fixed seed) as the next token, so the experts a step routes to
vary as over real text; "greedy" feeds the argmax, which on a random model
repeats a few tokens and flatters the expert cache (hit rate 1.00 in session
5); "forced,greedy" runs the lrun rows in both. llama-bench's tg decodes its
own way (it feeds a fixed token). The stream column says which each row used.
lrun rows also show the planner's predictions (lrun.predict, of the plan or
the resident model) for decode and a 512-token prefill chunk, with their error.
Prints a markdown table; --out gets JSON lines.
"""
import argparse
import hashlib
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402

GiB = 1 << 30
HAND = {"eoh": ["--policy", "experts_on_host", "--moe-host", "cache"],
        "ncmoe": ["--moe-host", "cache"]}  # + --n-cpu-moe N


def n_cpu_moe(info, budget_gib, reserve_gib):
    """llama.cpp's -ncmoe for the budget: the fewest blocks (from block 0, as
    llama.cpp counts) whose experts leave the device. Returns (N, device bytes)."""
    L, per = info["n_layer"], info["expert_layer_bytes"]
    dense = info["weight_bytes"] - info["expert_bytes"]
    room = budget_gib * GiB - reserve_gib * GiB - dense
    keep = max(0, min(L, math.floor(room / per))) if per else L
    return L - keep, dense + keep * per


def limit_tps(info, budget_gib, reserve_gib, bw):
    """Tokens/s if only the experts off the device limit decode: their bytes per
    token (uniform routing: k/E of them) over PCIe and host DRAM together."""
    dense = info["weight_bytes"] - info["expert_bytes"]
    off = max(0, info["expert_bytes"] - max(0, budget_gib * GiB - reserve_gib * GiB - dense))
    per_tok = off * info["n_expert_used"] / max(1, info["n_expert"])
    link = (bw.get("pcie_h2d") or 0) + (bw.get("dram_read") or 0)
    return per_tok, (link * 1e9 / per_tok if per_tok and link else None)


def model_path(args, router):
    if args.model:
        return args.model
    d = os.environ.get("LRUN_BENCH_DIR", "/tmp")
    # the name carries what changes the weights, so an older file (collapsed routing, another skew) is not reused
    extra = args.gen_args.split()
    routing = "collapsed" if "--collapsed-routing" in extra else "routed"
    skew = f"{args.skew:g}" if router == "skew" else ""
    # any other generator argument (a shape, a seed) changes the weights too: a digest of them in the name
    rest = [a for a in extra if a != "--collapsed-routing"]
    tag = "-" + hashlib.sha1(" ".join(rest).encode()).hexdigest()[:8] if rest else ""
    return os.path.join(d, f"lrun-bench-{args.preset}-{args.dtype}-{router}{skew}-{routing}{tag}.gguf")


def generate(args, router):
    path = model_path(args, router)
    if os.path.exists(path):
        return path
    part = path + ".part"  # moved when whole: a killed run leaves no half file under the name
    cmd = [args.lrun, os.path.join(pc.ROOT, "examples", "genmodel.lua"), "-o", part, "--preset", args.preset,
           "--dtype", args.dtype] + (["--router-skew", str(args.skew)] if router == "skew" else []) + args.gen_args.split()
    rc, out, err = pc.run(cmd, args.timeout)
    pc.log((out or "").strip())
    if rc != 0:
        if os.path.exists(part):
            os.remove(part)
        raise RuntimeError(f"generating {path}: " + ("timed out" if rc is None else pc.last_line(err)))
    os.replace(part, path)
    return path


def lrun_args(args, budget, extra, stream="forced"):
    return ["--device", args.device, "--gpu-budget", f"{budget}G", "--prefill",
            ",".join(str(p) for p in args.prefill), "--ngen", str(args.ngen), "--decode-stream", stream] + extra


def bench_budget(args, router, path, info, budget, bw, lines, emit):
    n, dev_bytes = n_cpu_moe(info, budget, args.reserve_gib)
    off_tok, lim = limit_tps(info, budget, args.reserve_gib, bw)
    base = {"router": router, "budget_gib": budget, "n_cpu_moe": n, "llama_device_bytes": dev_bytes,
            "off_expert_bytes_per_token": off_tok, "limit_tps": lim, "model": os.path.basename(path)}
    if args.llama_bench:
        # two calls: tg and the short prompts first, so a long prompt cut off by the timeout loses only itself
        short, long_ = [p for p in args.prefill if p <= 512], [p for p in args.prefill if p > 512]
        r = pc.llama_bench(args.llama_bench, path, short or [0], args.ngen, ["-ncmoe", str(n)], args.timeout)
        if long_:
            r2 = pc.llama_bench(args.llama_bench, path, long_, 0, ["-ncmoe", str(n)], args.timeout)
            r["pp"].update(r2["pp"])
            if "error" in r2:
                r["error"] = r2["error"]
        emit(dict(base, engine="llama.cpp", config=f"-ncmoe {n}", stream="llama-bench", prefill_tps=r.get("pp", {}),
                  decode_tps=r.get("tg"), raw=r))
    for stream in args.decode_stream:
        auto = pc.lrun_side(args.lrun, path, lrun_args(args, budget, [], stream), args.timeout)
        emit(dict(base, engine="lrun", config="auto", stream=stream, prefill_tps=auto.get("prefill_tps", {}),
                  decode_tps=auto.get("decode_tps"), raw=auto))
        for h in args.hand:
            # ncmoe: llama.cpp's N, or a few more blocks when lrun's reserve for
            # KV cache and scratch leaves less room than --reserve-gib (the plan
            # fails before anything is uploaded, so a retry is cheap)
            for k in range(n, min(info["n_layer"], n + 4) + 1) if h == "ncmoe" else [None]:
                extra = HAND[h] + (["--n-cpu-moe", str(k)] if k is not None else [])
                r = pc.lrun_side(args.lrun, path, lrun_args(args, budget, extra, stream), args.timeout)
                if "oom" not in r.get("error", ""):
                    break
            emit(dict(base, engine="lrun", config=h if k is None else f"{h} {k}", stream=stream,
                      prefill_tps=r.get("prefill_tps", {}), decode_tps=r.get("decode_tps"), raw=r))


def predicted(pred, got):
    """'12.3 (+4%)': a prediction and its error against the measured figure; '–' without either."""
    if not pred or not got:
        return "–"
    return f"{pred:.1f} ({100 * (pred - got) / got:+.0f}%)"


class Table:
    """The markdown rows, printed as results come; ratios against the
    llama.cpp row of the same router and budget."""

    def __init__(self, prefill, lines):
        self.prefill, self.lines, self.peer = prefill, lines, {}
        pp = " | ".join(f"prefill {p}" for p in self.prefill)
        print(f"| router | budget GiB | engine | placement | decode stream | decode tok/s | {pp} | decode / llama.cpp | "
              + " | ".join(f"pp{p} / llama.cpp" for p in self.prefill)
              + " | limit tok/s | % of limit | hit rate | predicted decode (error) | predicted pp512 (error) |",
              flush=True)
        print("|" + "---|" * (12 + 2 * len(self.prefill)), flush=True)

    def __call__(self, r):
        self.lines.write(r)
        key = (r["router"], r["budget_gib"])
        if r["engine"] == "llama.cpp":
            self.peer[key] = r
        peer = self.peer.get(key, {})
        pp = [r["prefill_tps"].get(str(p)) for p in self.prefill]
        ppr = [pc.ratio(v, peer.get("prefill_tps", {}).get(str(p))) for v, p in zip(pp, self.prefill)]
        lim, d = r["limit_tps"], r["decode_tps"]
        hit = r["raw"].get("cache_hit_rate")
        err = r["raw"].get("error")
        raw = r["raw"]
        pd, pp512 = raw.get("predicted_decode_tps"), raw.get("predicted_prefill_tps")
        print(f"| {r['router']} | {r['budget_gib']} | {r['engine']} | {r['config']} | {r.get('stream', '–')} | "
              f"{pc.fmt(d)} | "
              + " | ".join(pc.fmt(v, ".0f") for v in pp) + f" | {pc.fmt(pc.ratio(d, peer.get('decode_tps')), '.2f')} | "
              + " | ".join(pc.fmt(v, ".2f") for v in ppr)
              + f" | {pc.fmt(lim)} | {pc.fmt(d and lim and 100 * d / lim, '.0f')}% | {pc.fmt(hit, '.2f')} | "
              + f"{predicted(pd, d)} | {predicted(pp512, r['prefill_tps'].get('512'))} |"
              + (f" error: …{err[-100:]}" if err else ""), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llama-bench")
    p.add_argument("--lrun", default=os.path.join(pc.ROOT, "build", "lrun"))
    p.add_argument("--out")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--preset", default="qwen3-30b-a3b")
    p.add_argument("--dtype", default="q4_k")
    p.add_argument("--gen-args", default="", help="more genmodel.lua arguments, one string (tests: a small shape)")
    p.add_argument("--model", help="an existing MoE GGUF instead of generating one (one router: 'file')")
    p.add_argument("--routers", default="uniform,skew")
    p.add_argument("--skew", type=float, default=2.0)
    p.add_argument("--budgets", default="8,4,16", help="GiB")
    p.add_argument("--prefill", default="512,4096")
    p.add_argument("--ngen", type=int, default=128)
    p.add_argument("--decode-stream", default="forced",
                   help="lrun rows' decode input: forced (random ids, a fixed seed), greedy, or both: forced,greedy")
    p.add_argument("--hand", default="eoh,ncmoe")
    p.add_argument("--reserve-gib", type=float, default=1.0, help="device bytes llama.cpp needs beside weights")
    p.add_argument("--timeout", type=float, default=240)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--pcie-gbps", type=float)
    p.add_argument("--dram-gbps", type=float)
    args = p.parse_args()
    args.prefill = [int(x) for x in args.prefill.split(",")]
    args.hand = [h for h in args.hand.split(",") if h]
    args.decode_stream = [x for x in args.decode_stream.split(",") if x]
    if not args.decode_stream or any(x not in ("forced", "greedy") for x in args.decode_stream):
        p.error("--decode-stream: forced, greedy or forced,greedy")
    if any(h not in HAND for h in args.hand):
        p.error("--hand: eoh, ncmoe")
    routers = ["file"] if args.model else args.routers.split(",")
    budgets = [float(b) if "." in b else int(b) for b in args.budgets.split(",")]

    if args.generate_only:
        for router in routers:
            try:
                print(generate(args, router), flush=True)
            except RuntimeError as e:
                pc.log(f"moe_bench: {e}")
        return
    lines = pc.Lines(args.out)
    bw = {}
    if args.pcie_gbps is None or args.dram_gbps is None:
        bw = pc.bandwidths(120, "pcie,dram")
    if args.pcie_gbps is not None:
        bw["pcie_h2d"] = args.pcie_gbps
    if args.dram_gbps is not None:
        bw["dram_read"] = args.dram_gbps
    lines.write({"bandwidth": bw})
    print(f"PCIe H2D (pinned) {pc.fmt(bw.get('pcie_h2d'))} GB/s, host DRAM read {pc.fmt(bw.get('dram_read'))} GB/s; "
          f"{args.preset} {args.dtype}; batch 1; reserve {args.reserve_gib} GiB for llama.cpp's KV and buffers",
          flush=True)
    table = Table(args.prefill, lines)
    for router in routers:
        try:
            path = generate(args, router)
        except RuntimeError as e:
            pc.log(f"moe_bench: {e}")
            continue
        try:
            info = pc.lrun_side(args.lrun, path, ["--info"], args.timeout)
            if "error" in info or not info.get("n_expert"):
                pc.log(f"moe_bench: {path}: no MoE sizes ({info.get('error', 'no experts')})")
                continue
            lines.write({"router": router, "info": info})
            for b in budgets:
                n, dev = n_cpu_moe(info, b, args.reserve_gib)
                print(f"<!-- {router}, {b} GiB: llama.cpp -ncmoe {n} (device bytes {dev / GiB:.2f} GiB of "
                      f"{info['n_layer']} blocks; experts {info['expert_bytes'] / GiB:.2f} GiB) -->", flush=True)
                try:
                    bench_budget(args, router, path, info, b, bw, lines, table)
                except Exception as e:  # one budget's failure leaves the others
                    pc.log(f"moe_bench: {router} {b} GiB: {e}")
        finally:
            if not args.keep and not args.model:
                os.remove(path)


if __name__ == "__main__":
    main()
