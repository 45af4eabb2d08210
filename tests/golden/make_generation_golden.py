#!/usr/bin/env python3
"""Writes tests/golden/smollm2_greedy.json: what llama.cpp does with the default model.

For each prompt below it records, as llama.cpp (through the xllamacpp package)
produces them:
  - the prompt's token ids (llama.cpp's own tokenizer, BOS added exactly as
    llama.cpp adds it: SmolLM2's GGUF says add_bos_token = false, so none);
  - the greedy continuation of 32 tokens, ids and text (temperature 0, top_k 1,
    no repetition/presence/frequency/DRY penalties);
  - the top-20 next-token log-probabilities after the prompt (first step), and
    the top-2 log-probabilities of every later step, taken from the raw logits
    (llama.cpp's server reports log-softmax of the unbiased logits when
    post_sampling_probs is false), so a reader can tell a near-tie from a bug.

EOS: the server's ignore_eos puts a -inf bias on every end-of-generation token,
so the 32 tokens always come, but from the step where the raw argmax is an EOG
token on, an engine that does not bias EOG (lrun with eos_token_id = {})
follows a different path. That step is recorded as "eog_at" (0-based index into
the continuation, null when it never happens); comparisons stop there.

llama.cpp runs on the CPU with a fixed thread count, so running this twice
gives the same file. It talks to llama.cpp's server on loopback only.

Usage: python3 tests/golden/make_generation_golden.py [--model PATH] [--kv f32|f16] [--out PATH]
(both golden files: run it once with --kv f32 and once with --kv f16)

       python3 tests/golden/make_generation_golden.py --archs [--lrun build/lrun]
writes tests/golden/arch_greedy.json instead: for every random-weight model of
tests/arch_models.lua (one per architecture, written by lrun's generator into a
temporary folder; the same seed writes the same file), llama.cpp's greedy
continuation of ARCH_N_PREDICT tokens and its top-20 first-step log-probs
after each of ARCH_PROMPTS (token ids), with an f32 KV cache.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

import xllamacpp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

N_PREDICT = 32
N_PROBS = 20
N_THREADS = 2
N_CTX = 1024

CHAT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

LONG_TEXT = (
    "The history of the printing press begins in the fifteenth century, when "
    "Johannes Gutenberg combined a screw press, oil-based ink and movable metal "
    "type into a system that could produce books quickly and cheaply. Before "
    "that, most books in Europe were copied by hand, usually by monks working in "
    "monasteries, and a single Bible could take years to finish. Within fifty "
    "years of Gutenberg's first Bible, printing shops had opened in more than two "
    "hundred cities, and millions of books were in circulation. The effects were "
    "enormous: ideas spread faster, scholars could compare identical copies of a "
    "text, and literacy began to grow. Historians often say that"
)

# name, text, parse_special. Chosen to cover: a short plain prompt, a long one
# (several hundred characters, >100 tokens), the chat template with its special
# tokens parsed, the same chat text with specials NOT parsed (so "<|im_start|>"
# becomes ordinary pieces), code with indentation, digits/punctuation/Unicode,
# and whitespace runs.
PROMPTS = [
    ("short", "The capital of France is", False),
    ("long", LONG_TEXT, False),
    ("chat",
     "<|im_start|>system\n" + CHAT_SYSTEM + "<|im_end|>\n"
     "<|im_start|>user\nExplain in a few sentences why the sky is blue.<|im_end|>\n"
     "<|im_start|>assistant\n", True),
    ("chat_unparsed",
     "<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n", False),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    ", False),
    ("unicode_digits",
     "In 1969, 3 astronauts flew 384,400 km to the Moon. Caf\u00e9 na C\u1eeda Vi\u1ec7t "
     "co\u00fbte 12\u20ac \u2014 \u00a1incre\u00edble! \U0001F680 Next,", False),
    ("whitespace", "List:\n\n  - apples\n  - pears\n\n\tTotal:   ", False),
]


# ---------------------------------------------------------------- llama.cpp

def start_server(model, kv="f32"):
    p = xllamacpp.CommonParams()
    p.model.path = model
    p.n_ctx = N_CTX
    p.n_parallel = 1
    p.cpuparams.n_threads = N_THREADS
    p.cpuparams_batch.n_threads = N_THREADS
    # f32 K/V and no flash attention: the fewest roundings in attention, so the
    # reference is as close to exact math as llama.cpp gets; the weights'
    # Q4_1 x Q8_1 dot products (8-bit activations) remain. f16 K/V is
    # llama.cpp's default (and lrun's), recorded in a second file.
    kv_type = {"f32": xllamacpp.ggml_type.GGML_TYPE_F32, "f16": xllamacpp.ggml_type.GGML_TYPE_F16}[kv]
    p.cache_type_k = kv_type
    p.cache_type_v = kv_type
    p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.hostnames = ["127.0.0.1"]  # loopback only
    p.port = 0
    server = xllamacpp.Server(p)
    settings = {
        "n_ctx": N_CTX, "n_threads": N_THREADS, "n_threads_batch": N_THREADS,
        "n_batch": p.n_batch, "n_ubatch": p.n_ubatch,
        "cache_type_k": kv, "cache_type_v": kv, "flash_attn": "disabled",
        "n_gpu_layers": 0,
    }
    return server, settings


class Client:
    def __init__(self, base):
        if not base.startswith("http://127.0.0.1:"):
            raise RuntimeError("llama.cpp server is not on loopback: " + base)
        self.base = base

    def post(self, path, body):
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.load(r)

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=60) as r:
            return json.load(r)


GEN_BODY = {
    "n_predict": N_PREDICT,
    "temperature": 0.0,
    "top_k": 1,
    "top_p": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "dry_multiplier": 0.0,
    "ignore_eos": True,
    "n_probs": N_PROBS,
    "post_sampling_probs": False,
    "return_tokens": True,
    "cache_prompt": False,
    "seed": 0,
}


# ---------------------------------------------------------------- architectures

ARCH_N_PREDICT = 16
# Token ids (the generated vocabulary: 256 bytes, 3 specials, then letters):
# a short prompt, a longer one past the first few positions, one with specials.
ARCH_PROMPTS = [
    ("short", [84, 104, 101, 32, 99, 97, 112]),
    ("long", [(i * 37 + 11) % 500 for i in range(40)]),
    ("specials", [257, 117, 115, 101, 114, 10, 72, 105, 258, 10, 257, 97]),
]


def arch_case(cli, name, ids, model=""):
    """One prompt; eog_at as in the SmolLM2 golden: the first step whose raw
    argmax is an end-of-generation token (ignore_eos biased it away)."""
    r = cli.post("/completion", dict(GEN_BODY, prompt=ids, n_predict=ARCH_N_PREDICT))
    probs = r["completion_probabilities"]
    out_ids = r["tokens"]
    if len(out_ids) != ARCH_N_PREDICT:
        sys.exit("%s: expected %d tokens, got %d" % (name, ARCH_N_PREDICT, len(out_ids)))
    if not probs or probs[0]["id"] != out_ids[0]:
        # the server holds back the probabilities of a token that ends inside a UTF-8 sequence, so the
        # first entry would be a later step's: choose another seed for the model (tests/arch_models.lua)
        sys.exit("%s/%s: the first step's probabilities are not the first token's (%s vs %d): a continuation "
                 "starting inside a UTF-8 sequence; give the model another seed" %
                 (model, name, probs[0]["id"] if probs else None, out_ids[0]))
    eog = sorted(b["token"] for b in r["generation_settings"]["logit_bias"] if b["bias"] is None)
    eog_at = next((k for k, st in enumerate(probs) if st["top_logprobs"][0]["id"] in eog), None)
    return {
        "name": name,
        "prompt_ids": ids,
        "eog_ids": eog,
        "eog_at": eog_at,
        "continuation_ids": out_ids,
        "first_step_top20": [[t["id"], t["logprob"]] for t in probs[0]["top_logprobs"]],
        "steps": [{"id": st["id"], "top2": [[t["id"], t["logprob"]] for t in st["top_logprobs"][:2]]}
                  for st in probs],
    }


def main_archs(args):
    lrun = args.lrun or os.path.join(ROOT, "build", "lrun")
    out = args.out or os.path.join(HERE, "arch_greedy.json")
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        names = subprocess.run([lrun, os.path.join(ROOT, "tests", "arch_models.lua"), tmp], check=True,
                               capture_output=True, text=True, cwd=ROOT).stdout.split()
        for name in names:
            path = os.path.join(tmp, name + ".gguf")
            server, settings = start_server(path, "f32")
            cli = Client(server.listening_address)
            props = cli.get("/props")
            cases = [arch_case(cli, n, ids, name) for n, ids in ARCH_PROMPTS]
            models.append({"name": name, "ftype": props.get("model_ftype"), "cases": cases})
            del server
            print("%s: %s" % (name, " ".join(str(i) for i in cases[0]["continuation_ids"])))
    doc = {
        "generator": "tests/golden/make_generation_golden.py --archs (regenerate, never hand-edit)",
        "models_from": "tests/arch_models.lua (lrun's generator; same seed, same file)",
        "reference": {
            "package": "xllamacpp",
            "package_version": xllamacpp.__version__,
            "build": xllamacpp.BUILD_INFO,
        },
        "settings": dict(settings, **{k: v for k, v in GEN_BODY.items() if k not in ("seed", "n_predict")}),
        "n_predict": ARCH_N_PREDICT,
        "n_probs": N_PROBS,
        "models": models,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote %s (%d models)" % (out, len(models)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", action="store_true",
                    help="write arch_greedy.json: llama.cpp on the random model of each architecture")
    ap.add_argument("--lrun", help="the launcher that runs tests/arch_models.lua (default build/lrun)")
    ap.add_argument("--model", default=os.environ.get("LRUN_MODEL") or
                    (os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
                     if os.path.exists(os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
                     else "/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--kv", choices=["f32", "f16"], default="f32",
                    help="KV cache type: f32 (the fewest roundings) or f16 (llama.cpp's default)")
    ap.add_argument("--out", help="default: tests/golden/smollm2_greedy.json for f32, "
                                  "smollm2_greedy_f16.json for f16")
    args = ap.parse_args()
    if args.archs:
        return main_archs(args)
    if args.out is None:
        args.out = os.path.join(HERE, "smollm2_greedy.json" if args.kv == "f32" else "smollm2_greedy_f16.json")

    server, settings = start_server(args.model, args.kv)
    cli = Client(server.listening_address)
    props = cli.get("/props")

    cases = []
    eog = None
    for name, text, parse_special in PROMPTS:
        # add_special=True is what llama.cpp does for a completion prompt; for
        # this model it adds nothing (add_bos_token false), and the file says so.
        ids = cli.post("/tokenize", {"content": text, "add_special": True,
                                     "parse_special": parse_special})["tokens"]
        ids_nospecial = cli.post("/tokenize", {"content": text, "add_special": False,
                                               "parse_special": parse_special})["tokens"]
        # Ids, not text, go to the completion: the prompt is exactly the ids above.
        r = cli.post("/completion", dict(GEN_BODY, prompt=ids))
        gs = r["generation_settings"]
        these_eog = sorted(b["token"] for b in gs["logit_bias"] if b["bias"] is None)
        if eog is None:
            eog = these_eog
        probs = r["completion_probabilities"]
        out_ids = r["tokens"]
        if len(out_ids) != N_PREDICT or len(probs) != N_PREDICT:
            sys.exit("%s: expected %d tokens, got %d" % (name, N_PREDICT, len(out_ids)))
        eog_at = None
        steps = []
        for k, st in enumerate(probs):
            if st["id"] != out_ids[k]:
                sys.exit("%s: step %d: probs id %d != token %d" % (name, k, st["id"], out_ids[k]))
            top = st["top_logprobs"]
            if eog_at is None and top[0]["id"] in eog:
                eog_at = k
            steps.append({"id": st["id"], "logprob": st["logprob"],
                          "top2": [[t["id"], t["logprob"]] for t in top[:2]]})
        cases.append({
            "name": name,
            "text": text,
            "parse_special": parse_special,
            "prompt_ids": ids,
            "prompt_ids_add_special_false": ids_nospecial,
            "n_prompt": len(ids),
            "continuation_ids": out_ids,
            "continuation_text": r["content"],
            "eog_at": eog_at,
            "first_step_top20": [[t["id"], t["logprob"]] for t in probs[0]["top_logprobs"]],
            "steps": steps,
        })

    doc = {
        "generator": "tests/golden/make_generation_golden.py (regenerate, never hand-edit)",
        "reference": {
            "package": "xllamacpp",
            "package_version": xllamacpp.__version__,
            "llama_cpp_build_info": props.get("build_info"),
            "build": xllamacpp.BUILD_INFO,
            "system_info": xllamacpp.get_system_info().strip(),
        },
        "model": {
            "file": os.path.basename(args.model),
            "ftype": props.get("model_ftype"),
            "bos_token": props.get("bos_token"),
            "eos_token": props.get("eos_token"),
            "add_bos_token": False,
            "eog_ids": eog,
        },
        "settings": dict(settings, **{k: v for k, v in GEN_BODY.items() if k != "seed"},
                         samplers_note="temperature 0 and top_k 1: argmax; "
                                       "log-probs are log_softmax of the raw logits"),
        "n_predict": N_PREDICT,
        "n_probs": N_PROBS,
        "cases": cases,
    }
    del server
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote %s (%d prompts)" % (args.out, len(cases)))


if __name__ == "__main__":
    main()
