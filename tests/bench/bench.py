#!/usr/bin/env python3
"""Prefill and decode tokens/s of lrun and llama.cpp on one GGUF, side by side.

Called by tests/bench/run.sh (make bench). Each measurement is a fresh process
(tests/bench/lrun_bench.lua under build/lrun, tests/bench/llamacpp_bench.py)
that loads the model, warms up and times one greedy generation; the two
engines alternate, round after round (the order flips every round so neither
always runs on a cooler or warmer machine), and the best of the rounds is kept
for each. Both get the same prompt ids (llama.cpp tokenizes
tests/bench/prompt.txt; its first N_PROMPT ids go to both), the same thread
count and the same number of generated tokens with EOS ignored.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_busy(seconds=1.0):
    """Fraction of all CPUs busy over the next `seconds` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return sum(v), idle
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def run_json(cmd, what):
    """Runs one measurement; returns (dict, None) or (None, error text)."""
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return None, what + ": timed out"
    for line in reversed(p.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line), None
            except ValueError:
                break
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-5:]
    return None, "%s: exit %d: %s" % (what, p.returncode, " | ".join(tail))


def fmt_ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--lrun", default=os.path.join(ROOT, "build", "lrun"))
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = ap.parse_args()

    ids_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), "lrun-bench-ids.%d.txt" % os.getpid())
    lc_cmd = [sys.executable, os.path.join(HERE, "llamacpp_bench.py"), "--model", args.model,
              "--threads", str(args.threads), "--prompt-file", os.path.join(HERE, "prompt.txt"),
              "--n-prompt", str(args.n_prompt), "--n-gen", str(args.n_gen), "--ids-out", ids_file]
    lr_cmd = [args.lrun, os.path.join(HERE, "lrun_bench.lua"), args.model, str(args.threads),
              ids_file, str(args.n_gen)]

    # Other work on the machine skews both engines (llama.cpp's OpenMP threads
    # suffer most): say so next to the numbers.
    busy_before = cpu_busy()
    results = {"llama.cpp": [], "lrun": []}
    errors = {}
    try:
        for r in range(args.runs):
            order = ["llama.cpp", "lrun"] if r % 2 == 0 else ["lrun", "llama.cpp"]
            if r == 0:
                order = ["llama.cpp", "lrun"]  # llama.cpp writes the prompt ids first
            for eng in order:
                if eng in errors:
                    continue
                if eng == "lrun" and not os.access(args.lrun, os.X_OK):
                    errors[eng] = "%s is missing (run make)" % args.lrun
                    continue
                res, err = run_json(lc_cmd if eng == "llama.cpp" else lr_cmd, eng)
                if err:
                    errors[eng] = err
                    continue
                results[eng].append(res)
                print("# round %d %-9s prefill %8.1f tok/s  decode %7.1f tok/s"
                      % (r + 1, eng, res["prefill_tps"], res["decode_tps"]), flush=True)
    finally:
        if os.path.exists(ids_file):
            os.unlink(ids_file)

    best = {}
    for eng, rs in results.items():
        if rs:
            best[eng] = (max(x["prefill_tps"] for x in rs), max(x["decode_tps"] for x in rs), len(rs))

    title = ("%s, %s, %d threads, prompt %d tokens, %d generated (EOS ignored), best of %d"
             % (os.path.basename(args.model), cpu_model(), args.threads, args.n_prompt, args.n_gen,
                args.runs))
    rows = []
    for eng in ("llama.cpp", "lrun"):
        if eng in best:
            rows.append((eng + " (CPU)", "%.1f" % best[eng][0], "%.1f" % best[eng][1]))
        else:
            rows.append((eng + " (CPU)", "-", "-"))
    lc, lr = best.get("llama.cpp"), best.get("lrun")
    rows.append(("lrun / llama.cpp", fmt_ratio(lr and lr[0], lc and lc[0]),
                 fmt_ratio(lr and lr[1], lc and lc[1])))

    print()
    print(title)
    print("%-18s %16s %16s" % ("engine", "prefill tok/s", "decode tok/s"))
    for row in rows:
        print("%-18s %16s %16s" % row)
    if args.markdown:
        print()
        print("| engine | prefill tok/s | decode tok/s |")
        print("|---|---:|---:|")
        for row in rows:
            print("| %s | %s | %s |" % row)
    busy_after = cpu_busy()
    print("CPUs busy with other work: %.0f%% before the runs, %.0f%% after%s" % (
        100 * busy_before, 100 * busy_after,
        "  ** the machine was not idle: numbers are unreliable **"
        if max(busy_before, busy_after) > 0.25 else ""))
    for eng, err in errors.items():
        print("%s: not measured: %s" % (eng, err))
    if "llama.cpp" in results and results["llama.cpp"]:
        print("llama.cpp: xllamacpp %s" % results["llama.cpp"][0].get("version"))

    has_gpu = subprocess.run("nvidia-smi -L", shell=True, capture_output=True).returncode == 0
    if has_gpu:
        print("GPU present: the GPU rows (lrun CUDA, llama.cpp CUDA) come with issue #3.")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
