#!/usr/bin/env python3
"""Writes tests/golden/llama_samplers.json: llama.cpp's DRY, top-n-sigma,
XTC and mirostat (v1, v2) samplers and its penalty window
(penalty_last_n) applied to fixed logits, for tests/logits_process_spec.lua
(lrun.logits_process).

No Python binding runs llama.cpp's sampler chain on given logits
(xllamacpp drives whole completions through its server, and the random
draws of XTC and mirostat come from llama.cpp's own std::mt19937 stream),
so each sampler below is written from llama.cpp's src/llama-sampling.cpp
as its semantics read there, in numpy over a candidate array sorted the way
llama.cpp sorts it (llama_sampler_softmax_impl: descending logits), not in
the order lrun's Lua walks the vocabulary: the two are written apart and
must agree.

  * penalties (llama_sampler_penalties): the last penalty_last_n tokens;
    repeat: logit <= 0 -> * penalty, else / penalty; then
    - count * freq - (count > 0) * present.
  * DRY (llama_sampler_dry_apply): restart at the last sequence breaker,
    repeat counts from the end of the context, a token following a repeat of
    length L >= allowed gets - multiplier * base ** (L - allowed) (exponent
    clamped to 88.7228391 / ln base), single-token breakers never penalised.
  * top-n-sigma: logits < max - n * std (population std over the finite
    logits) -> -inf.
  * XTC: with draw u <= probability, every candidate with p >= threshold
    but the last of them removed (kept when fewer than min_keep remain).
  * mirostat v1 (m = 100) and v2: the kept candidates' probabilities and
    mu after a given token is drawn.

Usage: python3 tests/golden/make_llama_sampler_golden.py [--out PATH]

       python3 tests/golden/make_llama_sampler_golden.py --model PATH [--out PATH]
writes tests/golden/llama_samplers_greedy.json instead: llama.cpp itself
(through xllamacpp's server, on loopback, as make_generation_golden.py
starts it, with an f16 KV cache: lrun's default) continuing a few prompts
greedily (temperature 0, top_k 1) with the penalties over a window
(repeat_last_n) and with DRY, whose effect is deterministic there; the
end-of-generation tokens are biased away (ignore_eos), which lrun matches
with suppress_tokens.
"""
import argparse
import json
import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 32
NEG_INF = float("-inf")


def softmax(x):
    m = np.max(x[np.isfinite(x)])
    e = np.where(np.isfinite(x), np.exp(x - m), 0.0)
    return e / e.sum()


def candidates(logits):
    """llama.cpp's sorted candidate array: (id, logit), descending, finite only."""
    ids = [i for i in range(len(logits)) if np.isfinite(logits[i])]
    return sorted(ids, key=lambda i: (-logits[i], i))


def penalties(logits, ids, last_n, repeat, freq, present):
    out = logits.copy()
    window = ids if last_n < 0 else ids[len(ids) - last_n:] if last_n > 0 else []
    counts = {}
    for t in window:
        counts[t] = counts.get(t, 0) + 1
    for t, c in counts.items():
        if out[t] <= 0:
            out[t] *= repeat
        else:
            out[t] /= repeat
        out[t] -= c * freq + (1.0 if c > 0 else 0.0) * present
    return out


def dry(logits, ids, multiplier, base, allowed, last_n, breakers):
    out = logits.copy()
    n = len(ids) if last_n < 0 else min(len(ids), last_n)
    if multiplier == 0 or base < 1 or last_n == 0 or n <= allowed:
        return out
    ctx = ids[len(ids) - n:]

    def rat(i):  # i-th token from the end, 0 = the last
        return ctx[n - 1 - i]
    rep_limit = n
    for i in range(n):
        if rat(i) in breakers:
            rep_limit = i
            break
    if rep_limit < allowed:
        return out
    # repeat[i]: how many tokens ending i from the end match the tokens
    # ending at the last one (i = 0 is the last itself, left at 0)
    repeat = [0] * n
    for i in range(1, n):
        k = 0
        while k < rep_limit and i + k < n and rat(i + k) == rat(k):
            k += 1
        repeat[i] = k
    best = {}
    for i in range(1, n):
        if repeat[i] >= allowed:
            t = rat(i - 1)  # the token after the repeat
            best[t] = max(best.get(t, 0), repeat[i])
    max_exp = int(88.7228391 / math.log(base)) if base > 1.000001 else 0
    for t, length in best.items():
        if t in breakers:
            continue
        e = length - allowed
        if max_exp > 0 and e > max_exp:
            e = max_exp
        out[t] -= multiplier * base ** e
    return out


def top_n_sigma(logits, n):
    out = logits.copy()
    fin = logits[np.isfinite(logits)]
    cut = fin.max() - n * fin.std()  # numpy's std: the population one (ddof 0)
    out[logits < cut] = NEG_INF
    return out


def xtc(logits, probability, threshold, u, min_keep=1):
    out = logits.copy()
    if probability <= 0 or threshold > 0.5 or u > probability:
        return out
    cand = candidates(logits)
    p = softmax(logits)
    pos_last = 0
    for r, t in enumerate(cand):
        if p[t] >= threshold:
            pos_last = r
        else:
            break
    if len(cand) - pos_last >= min_keep and pos_last > 0:
        for t in cand[:pos_last]:
            out[t] = NEG_INF
    return out


def mirostat_v1(logits, mu, tau, eta, pick, m=100):
    cand = candidates(logits)
    p = softmax(logits)
    sum_tb = sum_tt = 0.0
    for i in range(min(m - 1, len(cand) - 1)):
        t_i = math.log((i + 2) / (i + 1))
        b_i = math.log(p[cand[i]] / p[cand[i + 1]])
        sum_tb += t_i * b_i
        sum_tt += t_i * t_i
    s_hat = sum_tb / sum_tt
    eps = s_hat - 1
    k = ((eps * 2 ** mu) / (1 - len(logits) ** (-eps))) ** (1 / s_hat)
    k = max(int(min(k, len(cand))), 1)
    kept = logits.copy()
    for t in cand[k:]:
        kept[t] = NEG_INF
    q = softmax(kept)
    tok = cand[min(pick, k - 1)]
    return kept, q, tok, mu - eta * (-math.log2(q[tok]) - tau)


def mirostat_v2(logits, mu, tau, eta, pick):
    cand = candidates(logits)
    p = softmax(logits)
    size = len(cand)
    for r, t in enumerate(cand):
        if -math.log2(p[t]) > mu:
            size = r
            break
    size = max(size, 1)
    kept = logits.copy()
    for t in cand[size:]:
        kept[t] = NEG_INF
    q = softmax(kept)
    tok = cand[min(pick, size - 1)]
    return kept, q, tok, mu - eta * (-math.log2(q[tok]) - tau)


def row(x):
    return [None if not np.isfinite(v) else float(v) for v in x]


GREEDY_PROMPTS = [
    ("repeats", "The the the the the the the the"),
    ("counting", "1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3,"),
    ("story", "Once upon a time, there was a little dog who"),
]
GREEDY_OPTIONS = [
    ("repeat_last_n 8", {"repeat_penalty": 1.5, "repeat_last_n": 8}),
    ("repeat_last_n 64 with presence and frequency",
     {"repeat_penalty": 1.2, "repeat_last_n": 64, "presence_penalty": 0.5, "frequency_penalty": 0.3}),
    ("dry", {"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": 1024}),
    ("dry strong, allowed 1", {"dry_multiplier": 3.0, "dry_base": 2.0, "dry_allowed_length": 1,
                               "dry_penalty_last_n": 32}),
]
GREEDY_N = 24


def main_greedy(args):
    """llama.cpp's greedy continuations under penalties and DRY (xllamacpp)."""
    import sys
    sys.path.insert(0, HERE)
    import make_generation_golden as gen  # start_server, Client, GEN_BODY
    import xllamacpp
    server, settings = gen.start_server(args.model, "f16")
    cli = gen.Client(server.listening_address)
    props = cli.get("/props")
    cases = []
    eog = None
    for pname, text in GREEDY_PROMPTS:
        for oname, extra in GREEDY_OPTIONS:
            body = dict(gen.GEN_BODY, prompt=text, n_predict=GREEDY_N, n_probs=0)
            body.update(extra)
            r = cli.post("/completion", body)
            eog = sorted(b["token"] for b in r["generation_settings"]["logit_bias"] if b["bias"] is None)
            cases.append({"name": pname + ", " + oname, "prompt": text, "options": extra,
                          "ids": r["tokens"], "text": r["content"]})
    doc = {
        "generator": "tests/golden/make_llama_sampler_golden.py --model (regenerate, never hand-edit)",
        "reference": {"package": "xllamacpp", "package_version": xllamacpp.__version__,
                      "llama_cpp_build_info": props.get("build_info")},
        "model": os.path.basename(args.model),
        "settings": dict(settings, temperature=0.0, top_k=1, ignore_eos=True),
        "eog_ids": eog,
        "n_predict": GREEDY_N,
        "cases": cases,
    }
    del server
    with open(args.out or os.path.join(HERE, "llama_samplers_greedy.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--model", help="with a GGUF file: llama.cpp's greedy continuations (xllamacpp)")
    args = ap.parse_args()
    if args.model:
        main_greedy(args)
        return
    args.out = args.out or os.path.join(HERE, "llama_samplers.json")
    rng = np.random.default_rng(17)
    logits = (rng.standard_normal(VOCAB) * 2.0).astype(np.float64)
    logits = np.round(logits, 4)
    # a context with repeats: "a b c d" twice, then "a b c" (d would extend
    # a repeat of 3), a breaker id 9 early on, and 7 repeated
    ids = [7, 9, 1, 2, 3, 4, 7, 1, 2, 3, 4, 11, 7, 1, 2, 3]
    cases = []

    def add(name, options, expect, **extra):
        c = {"name": name, "options": options, "expect": row(expect)}
        c.update(extra)
        cases.append(c)

    for last_n in (-1, 0, 4, 8):
        add("penalties last_n %d" % last_n,
            {"repetition_penalty": 1.3, "presence_penalty": 0.4, "frequency_penalty": 0.2,
             "repeat_last_n": last_n},
            penalties(logits, ids, last_n, 1.3, 0.2, 0.4))
    for mult, base, allowed, last_n, breakers in ((0.8, 1.75, 2, -1, []), (0.8, 1.75, 2, -1, [3]),
                                                  (1.0, 2.0, 1, 8, []), (0.5, 1.75, 3, -1, [9]),
                                                  (2.0, 1.5, 0, -1, [4])):
        add("dry x%g base %g allowed %d last_n %d breakers %s" % (mult, base, allowed, last_n, breakers),
            {"dry_multiplier": mult, "dry_base": base, "dry_allowed_length": allowed,
             "dry_penalty_last_n": last_n},
            dry(logits, ids, mult, base, allowed, last_n, set(breakers)), breakers=breakers)
    for n in (0.5, 1.0, 2.0):
        add("top_n_sigma %g" % n, {"do_sample": True, "top_n_sigma": n}, top_n_sigma(logits, n))
    for prob, thr, u in ((0.5, 0.1, 0.3), (0.5, 0.1, 0.7), (1.0, 0.05, 0.0), (1.0, 0.6, 0.0), (1.0, 0.3, 0.5)):
        add("xtc p %g threshold %g u %g" % (prob, thr, u),
            {"do_sample": True, "xtc_probability": prob, "xtc_threshold": thr},
            xtc(logits, prob, thr, u), u=u)
    for version, fn in ((1, mirostat_v1), (2, mirostat_v2)):
        for tau, mu, pick in ((5.0, 10.0, 0), (3.0, 6.0, 1), (2.0, 1.0, 0), (5.0, 3.0, 2)):
            kept, _, tok, mu2 = fn(logits, mu, tau, 0.1, pick)
            add("mirostat v%d tau %g mu %g" % (version, tau, mu),
                {"do_sample": True, "mirostat": version, "mirostat_tau": tau, "mirostat_eta": 0.1},
                kept, mu=mu, token=tok, mu_after=mu2)
    doc = {"vocab": VOCAB, "logits": [float(v) for v in logits], "ids": ids, "cases": cases}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
