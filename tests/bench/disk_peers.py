#!/usr/bin/env python3
"""disk_peers.py — the disk tier's peers on the same shape (issue #13):
accelerate (transformers' device_map with offload_folder: weights that fit
neither the GPU budget nor the host budget are written to a folder of .dat
files and read back for every forward) and AirLLM (PyPI `airllm`: the model
split into one safetensors file per layer, each read from disk and moved to
the GPU for every forward). Batch-1 greedy decode, reporting tok/s, so the
figures sit next to

    build/lrun tests/bench/disk_bench.lua 7b:bf16 --gpu-budget 2 --host-budget 4

Usage (on the GPU machine; not part of make test):

    python3 tests/bench/disk_peers.py [--model HF_DIR | --make 7b|tiny]
        [--gpu-budget 2] [--host-budget 4] [--ngen 8] [--peers accelerate,airllm]
        [--work DIR] [--device cuda:0|cpu] [--memory-limit GiB]

--make writes the HF directory with `build/lrun examples/genmodel.lua --hf`
(7b: the Llama-2-7B shape in bf16, 13.5 GB; tiny: a few MiB, for a check on
a CPU) under --work (default $LRUN_BENCH_DIR or /tmp) and removes it after.
Budgets in GiB. Each peer runs in its own process (a crash or an OOM of one
does not lose the other), prints one JSON line, and a markdown table ends
the run. Token ids are fixed (no tokenizer needed): the weights are random,
so only speed is compared, not text.

On the GPU machine (no registry there), with the AirLLM wheel in .whl:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \\
        --upgrade --target /tmp/site .whl/airllm-*.whl && export PYTHONPATH=/tmp/site
"""
import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROMPT = [1, 450, 4996, 17354, 1701, 432, 17204, 975]  # 8 fixed token ids


def prompt_ids(model_dir):
    """PROMPT within the model's vocabulary (the tiny check's is a few hundred ids)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        vocab = int(json.load(f).get("vocab_size") or 32000)
    return [i % vocab for i in PROMPT]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_model(kind, work):
    """An HF directory of the shape asked, written by lrun's generator."""
    out = os.path.join(work, "disk_peers_%s_%d" % (kind, os.getpid()))
    preset = {"7b": "llama2-7b", "tiny": "tiny"}[kind]
    cmd = [os.path.join(ROOT, "build", "lrun"), os.path.join(ROOT, "examples", "genmodel.lua"),
           "-o", out, "--hf", "--shards", "3" if kind == "7b" else "1", "--preset", preset, "--dtype", "bf16"]
    log("# " + " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def drop_cache(path):
    """Drops the directory's files from the page cache (as disk_bench.lua does)."""
    for d, _, fs in os.walk(path):
        for f in fs:
            try:
                fd = os.open(os.path.join(d, f), os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
            except OSError:
                pass


def timed_decode(generate, ngen):
    """Seconds of ngen greedy tokens after the prompt's first: generate(n)
    runs the prompt and n new tokens; the difference of two runs leaves the
    prompt out. An untimed run first: the first one after loading also pays
    for CUDA's and the peer's warm-up (page cache, lazily built buffers),
    which would make the difference, and so the decode time, too small."""
    generate(1)
    t0 = time.perf_counter()
    generate(1)
    t1 = time.perf_counter()
    generate(ngen + 1)
    t2 = time.perf_counter()
    first = t1 - t0
    return first, max((t2 - t1) - first, 1e-9)


def run_accelerate(a):
    import torch
    from transformers import AutoModelForCausalLM
    cuda = a.device.startswith("cuda")
    offload = os.path.join(a.work, "disk_peers_offload_%d" % os.getpid())
    os.makedirs(offload, exist_ok=True)
    max_memory = {"cpu": "%dMiB" % int(a.host_budget * 1024)}
    if cuda:
        max_memory[int(a.device.split(":")[1]) if ":" in a.device else 0] = "%dMiB" % int(a.gpu_budget * 1024)
    try:
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            a.model, torch_dtype=torch.bfloat16, device_map="auto", max_memory=max_memory,
            offload_folder=offload, offload_state_dict=True, low_cpu_mem_usage=True)
        model.eval()
        load_s = time.perf_counter() - t0
        where = {}
        for v in getattr(model, "hf_device_map", {}).values():
            where[str(v)] = where.get(str(v), 0) + 1
        ids = torch.tensor([prompt_ids(a.model)], device=a.device if cuda else "cpu")

        def generate(n):
            with torch.no_grad():
                model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                               pad_token_id=0)
            if cuda:
                torch.cuda.synchronize()

        drop_cache(offload)
        first, decode = timed_decode(generate, a.ngen)
        return {"load_s": load_s, "first_token_s": first, "tok_s": a.ngen / decode, "device_map": where,
                "offload_bytes": dir_bytes(offload)}
    finally:
        shutil.rmtree(offload, ignore_errors=True)


def run_airllm(a):
    import torch
    from airllm import AutoModel
    shards = os.path.join(a.work, "disk_peers_airllm_%d" % os.getpid())
    try:
        t0 = time.perf_counter()
        model = AutoModel.from_pretrained(a.model, device=a.device, dtype=torch.bfloat16,
                                          layer_shards_saving_path=shards, max_seq_len=64)
        load_s = time.perf_counter() - t0
        ids = torch.tensor([prompt_ids(a.model)], device=a.device)

        def generate(n):
            with torch.no_grad():
                model.generate(ids, max_new_tokens=n, use_cache=True, return_dict_in_generate=True)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()

        drop_cache(shards)
        first, decode = timed_decode(generate, a.ngen)
        return {"load_s": load_s, "first_token_s": first, "tok_s": a.ngen / decode,
                "layer_shard_bytes": dir_bytes(shards)}
    finally:
        shutil.rmtree(shards, ignore_errors=True)


PEERS = {"accelerate": run_accelerate, "airllm": run_airllm}


def enable_memory(parent):
    """Turns on the v2 memory controller for parent's children. A cgroup
    with processes of its own cannot (EBUSY: v2's "no internal processes"
    rule), which is where a container's processes sit, so on EBUSY they
    move to a leaf child first (the usual way in a container; the device
    machine's call runs there) and the write is tried again."""
    try:
        with open(parent + "/cgroup.subtree_control", "w") as w:
            w.write("+memory")
        return
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
    leaf = parent + "/lrun_disk_peers_leaf"
    os.makedirs(leaf, exist_ok=True)
    with open(parent + "/cgroup.procs") as fh:
        pids = fh.read().split()
    for pid in pids:
        try:
            with open(leaf + "/cgroup.procs", "w") as w:
                w.write(pid)
        except OSError:
            pass  # gone meanwhile, or a kernel thread: not ours to move
    with open(parent + "/cgroup.subtree_control", "w") as w:
        w.write("+memory")


def memory_cgroup(limit_bytes, tag):
    """A memory cgroup of our own limited to limit_bytes (v1
    memory.limit_in_bytes or v2 memory.max, as tests/disk/cgroup_test.sh
    makes it): its path and version, or (None, why). The page cache a
    process fills is charged to its cgroup, so a peer inside one re-reads
    from the disk what does not fit, as on a host with that much memory."""
    if os.geteuid() != 0:
        return None, "not root"
    v1 = v2 = None
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            hid, ctrl, rel = line.rstrip("\n").split(":", 2)
            if "memory" in ctrl.split(","):
                v1 = rel
            elif hid == "0" and ctrl == "":
                v2 = rel
    try:
        if v1 is not None and os.path.isdir("/sys/fs/cgroup/memory" + v1):
            cg = "/sys/fs/cgroup/memory%s/%s" % (v1.rstrip("/"), tag)
            os.makedirs(cg, exist_ok=True)
            with open(cg + "/memory.limit_in_bytes", "w") as fh:
                fh.write(str(limit_bytes))
            return (cg, 1), None
        if v2 is not None:
            parent = "/sys/fs/cgroup" + v2.rstrip("/")
            with open(parent + "/cgroup.subtree_control") as fh:
                if "memory" not in fh.read().split():
                    enable_memory(parent)
            cg = parent + "/" + tag
            os.makedirs(cg, exist_ok=True)
            with open(cg + "/memory.max", "w") as fh:
                fh.write(str(limit_bytes))
            return (cg, 2), None
    except OSError as e:
        return None, "cannot make a memory cgroup: %s" % e
    return None, "no memory controller"


def cgroup_peak(cg):
    """The cgroup's peak charged bytes (page cache included), or None."""
    path, v = cg
    for name in (["memory.max_usage_in_bytes"] if v == 1 else ["memory.peak"]):
        try:
            with open(os.path.join(path, name)) as fh:
                return int(fh.read().split()[0])
        except (OSError, ValueError):
            pass
    return None


def one_peer(a):
    """In the child: runs a.peer, prints its JSON line."""
    row = {"peer": a.peer, "model": a.model, "model_bytes": dir_bytes(a.model), "gpu_budget_gib": a.gpu_budget,
           "host_budget_gib": a.host_budget, "ngen": a.ngen, "device": a.device}
    try:
        drop_cache(a.model)
        row.update(PEERS[a.peer](a))
        row["ok"] = True
    except Exception as e:  # the row says why; the other peer still runs
        row["ok"] = False
        row["error"] = "%s: %s" % (type(e).__name__, str(e)[:400])
    print(json.dumps(row), flush=True)
    return 0 if row["ok"] else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="an HF directory (config.json, safetensors)")
    p.add_argument("--make", choices=["7b", "tiny"], help="write the HF directory with genmodel.lua --hf")
    p.add_argument("--gpu-budget", type=float, default=2.0, help="GiB (accelerate's max_memory for the GPU)")
    p.add_argument("--host-budget", type=float, default=4.0, help="GiB (accelerate's max_memory for the CPU)")
    p.add_argument("--ngen", type=int, default=8)
    p.add_argument("--peers", default="accelerate,airllm")
    p.add_argument("--device", default=None, help="cuda:0 when a GPU is visible, else cpu")
    p.add_argument("--work", default=os.environ.get("LRUN_BENCH_DIR", tempfile.gettempdir()))
    p.add_argument("--memory-limit", type=float, help="GiB: each peer runs in a memory cgroup of this size "
                   "(page cache included), as on a host with that much memory; refused where none can be made")
    p.add_argument("--peer", help=argparse.SUPPRESS)  # the child's one peer
    a = p.parse_args()
    if a.device is None:
        try:
            import torch
            a.device = "cuda:0" if torch.cuda.is_available() else "cpu"
        except ImportError:
            a.device = "cpu"
    if a.peer:
        return one_peer(a)
    made = None
    if a.make:
        made = a.model = make_model(a.make, a.work)
    if not a.model:
        p.error("--model or --make is required")
    rows = []
    try:
        for peer in [x for x in a.peers.split(",") if x]:
            if peer not in PEERS:
                p.error("unknown peer %s (accelerate, airllm)" % peer)
            cmd = [sys.executable, os.path.abspath(__file__), "--peer", peer, "--model", a.model,
                   "--gpu-budget", str(a.gpu_budget), "--host-budget", str(a.host_budget), "--ngen", str(a.ngen),
                   "--device", a.device, "--work", a.work]
            cg, join = None, None
            if a.memory_limit:
                cg, why = memory_cgroup(int(a.memory_limit * 2 ** 30), "lrun_disk_peers_%d_%s" % (os.getpid(), peer))
                if not cg:
                    p.error("--memory-limit: %s" % why)

                def join():  # in the child, before exec: it and what it starts are charged to the cgroup
                    with open(os.path.join(cg[0], "cgroup.procs"), "w") as fh:
                        fh.write(str(os.getpid()))
            r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=join)
            line = (r.stdout.strip().splitlines() or [""])[-1]
            try:
                row = json.loads(line)
            except ValueError:
                row = {"peer": peer, "ok": False, "error": "exit %d, no result (killed? out of memory?)" % r.returncode}
            if cg:
                row["memory_limit_gib"], row["cgroup_peak_bytes"] = a.memory_limit, cgroup_peak(cg)
                try:
                    os.rmdir(cg[0])
                except OSError:
                    pass
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    print("\n| peer | device | GPU / host budget GiB | load s | first token s | tok/s | note |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("ok"):
            note = ("memory cgroup %g GiB, peak %.2f GiB" % (r["memory_limit_gib"], (r["cgroup_peak_bytes"] or 0) / 2 ** 30)
                    if r.get("memory_limit_gib") else "page cache unlimited")
            print("| %s | %s | %g / %g | %.1f | %.2f | %.3f | %s |" % (r["peer"], r["device"], r["gpu_budget_gib"],
                  r["host_budget_gib"], r["load_s"], r["first_token_s"], r["tok_s"], note))
        else:
            print("| %s | | | | | | %s |" % (r["peer"], r.get("error", "failed")))
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
