"""peer_common.py — what tests/bench/cuda_peer.py and moe_bench.py share:
running a step under a timeout, llama-bench's JSON, lrun's side
(tests/bench/peer_lrun.lua), the bandwidths the limits divide by, JSON lines.

Standard library only; torch and numpy are imported by the bandwidth step
(tests/bench/peer_bw.py) in a child process, so a missing one costs a column,
not the run.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


_child = None  # the step running now: a SIGTERM to the driver (timeout(1)) ends it too


def _on_term(signum, _frame):
    if _child is not None and _child.poll() is None:
        os.killpg(_child.pid, signal.SIGKILL)
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def run(cmd, timeout, env=None):
    """Runs cmd (a list) in its own process group; on timeout the whole
    group is killed. Returns (rc, stdout, stderr); rc is None on timeout."""
    global _child
    t0 = time.time()
    log("+ " + " ".join(cmd) + f"  (timeout {timeout:.0f} s)")
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    except OSError as e:
        return 127, "", str(e)
    _child = p
    try:
        out, err = p.communicate(timeout=max(1, timeout))
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = None
    finally:
        _child = None
    log(f"  rc={rc} in {time.time() - t0:.1f} s")
    if rc != 0 and err:
        log("  " + err.strip().replace("\n", "\n  ")[-2000:])
    return rc, out, err


def json_objects(text):
    """Every top-level JSON object in text, in order (llama-bench's array may
    be cut off by a timeout; lrun prints one object per line)."""
    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return out
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        out.append(obj)
        i = end


def llama_bench(binary, model, prompts, n_gen, extra, timeout, reps=2, ngl=99):
    """llama-bench -m model -ngl ngl -p prompts -n n_gen -r reps -o json + extra.
    Returns {pp: {n: tok/s}, tg: tok/s, flash_attn, n_cpu_moe, model_size,
    version} or {error: text}."""
    cmd = [binary, "-m", model, "-ngl", str(ngl), "-p", ",".join(str(p) for p in prompts), "-n", str(n_gen),
           "-r", str(reps), "-o", "json"] + list(extra)
    rc, out, err = run(cmd, timeout)
    r = {"pp": {}, "cmd": " ".join(cmd[1:])}
    for t in json_objects(out):
        if t.get("n_gen", 0) == 0 and t.get("n_prompt", 0) > 0:
            r["pp"][str(t["n_prompt"])] = t.get("avg_ts")
        elif t.get("n_gen", 0) > 0:
            r["tg"] = t.get("avg_ts")
        for k in ("flash_attn", "n_cpu_moe", "model_size", "build_commit", "gpu_info", "n_ubatch"):
            if k in t:
                r[k] = t[k]
    if rc != 0:
        r["error"] = "timed out" if rc is None else f"rc {rc}: " + last_line(err)
    return r


def last_line(text):
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][-300:] if lines else ""


def lrun_side(lrun, model, args, timeout):
    """build/lrun tests/bench/peer_lrun.lua model args: its JSON object, or {error: text}."""
    rc, out, err = run([lrun, os.path.join(HERE, "peer_lrun.lua"), model] + list(args), timeout)
    objs = json_objects(out)
    if rc == 0 and objs:
        return objs[-1]
    r = dict(objs[-1]) if objs else {}  # the phases that finished (peer_lrun prints after each)
    r["error"] = "timed out" if rc is None else f"rc {rc}: " + last_line(err)
    return r


def path_7b(dtype):
    """Where generate_7b keeps the 7b:<dtype> model: $LRUN_BENCH_DIR (default /tmp)."""
    return os.path.join(os.environ.get("LRUN_BENCH_DIR", "/tmp"), f"lrun-bench-llama2-7b-{dtype}.gguf")


def generate_7b(lrun, dtype, timeout):
    """The 7b:<dtype> model's path in $LRUN_BENCH_DIR, written unless it is there already."""
    d = os.environ.get("LRUN_BENCH_DIR", "/tmp")
    path = path_7b(dtype)
    if os.path.exists(path):
        return path, 0.0
    # written in a folder of its own and moved: a killed run leaves no half file under the name
    part = os.path.join(d, f".part-7b-{dtype}")
    os.makedirs(part, exist_ok=True)
    env = dict(os.environ, LRUN_BENCH_DIR=part)
    try:
        rc, out, err = run([lrun, os.path.join(HERE, "peer_lrun.lua"), "7b:" + dtype, "--generate"], timeout, env)
        objs = json_objects(out)
        if rc != 0 or not objs:
            raise RuntimeError(f"generating 7b:{dtype}: " + ("timed out" if rc is None else last_line(err)))
        os.replace(objs[-1]["path"], path)
    finally:
        for f in os.listdir(part):
            os.remove(os.path.join(part, f))
        os.rmdir(part)
    return path, objs[-1]["gen_s"]


def bandwidths(timeout, what="hbm,pcie,dram"):
    """tests/bench/peer_bw.py's figures in GB/s (keys hbm_read, pcie_h2d, dram_read; a missing one absent)."""
    rc, out, _ = run([sys.executable, os.path.join(HERE, "peer_bw.py"), "--what", what], timeout)
    objs = json_objects(out)
    return objs[-1] if objs else {}


class Lines:
    """JSON lines appended to a file (and flushed) as results come."""

    def __init__(self, path):
        self.f = open(path, "a") if path else None

    def write(self, obj):
        if self.f:
            self.f.write(json.dumps(obj, sort_keys=True) + "\n")
            self.f.flush()


def fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def ratio(a, b):
    return None if a is None or not b else a / b
