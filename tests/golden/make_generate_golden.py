#!/usr/bin/env python3
"""Writes tests/golden/generate_processors.json: transformers' logits
processors and warpers applied to fixed logits, for
tests/logits_process_spec.lua (lrun.logits_process).

torch is not a dependency here, so each class below is transformers'
generation/logits_process.py, as read at huggingface/transformers commit
00857b6cf63a4fa05cbd9bdc8a4fd78b6168c5af (main; the same code as the 4.4x
releases for these classes apart from comments), rewritten line for line
in numpy on one float32 row: RepetitionPenaltyLogitsProcessor,
NoRepeatNGramLogitsProcessor (_get_ngrams, _get_generated_ngrams),
NoBadWordsLogitsProcessor (a SequenceBiasLogitsProcessor with -inf),
MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor,
SuppressTokensLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper, MinPLogitsWarper, TypicalLogitsWarper; and the chain in
GenerationMixin._get_logits_processor's order. With torch and
transformers installed, --check also runs the real classes on the same
inputs, and every case through the chain transformers' own generate()
builds (GenerationMixin._get_logits_processor on a tiny model), and asserts
they agree (transformers 5.17.0 on the GPU machine, 2026-12-04: 6 processors
and 18 chains agree).

Usage: python3 tests/golden/make_generate_golden.py [--out PATH] [--check]
"""
import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NEG_INF = -np.inf
VOCAB = 64
EOS = [2, 5]


def softmax(x):
    x = x.astype(np.float32)
    m = np.max(x)
    e = np.exp(x - m, dtype=np.float32)
    return (e / e.sum(dtype=np.float32)).astype(np.float32)


def repetition_penalty(ids, s, penalty):
    s = s.copy()
    score = s[ids]  # gather
    score = np.where(score < 0, score * np.float32(penalty), score / np.float32(penalty)).astype(np.float32)
    s[ids] = score  # scatter (duplicates write the same value)
    return s


def no_repeat_ngram(ids, s, n):
    s = s.copy()
    cur_len = len(ids)
    if cur_len + 1 < n:
        return s
    gen = {}
    for ngram in zip(*[ids[i:] for i in range(n)]):
        prev = tuple(ngram[:-1])
        gen[prev] = gen.get(prev, []) + [ngram[-1]]
    start_idx = cur_len + 1 - n
    banned = gen.get(tuple(ids[start_idx:cur_len]), [])
    s[banned] = NEG_INF
    return s


def bad_words(ids, s, bad, eos):
    s = s.copy()
    bad = [b for b in bad if not any(b == [i] for i in eos)]
    bias = np.zeros_like(s)
    for seq in bad:
        if len(seq) == 1:
            bias[seq[-1]] += NEG_INF
            continue
        prefix = seq[:-1]
        if len(prefix) > len(ids):
            continue
        if list(ids[-len(prefix):]) == list(prefix):
            bias[seq[-1]] += NEG_INF
    return (s + bias).astype(np.float32)


def min_length(ids, s, min_len, eos):
    s = s.copy()
    if len(ids) < min_len:
        s[eos] = NEG_INF
    return s


def min_new_tokens(ids, s, n_prompt, min_new, eos):
    s = s.copy()
    if len(ids) - n_prompt < min_new:
        s[eos] = NEG_INF
    return s


def suppress(s, tokens):
    s = s.copy()
    s[tokens] = NEG_INF
    return s


def temperature(s, t):
    return (s / np.float32(t)).astype(np.float32)


def top_k(s, k, keep=1):
    k = min(max(k, keep), s.shape[-1])
    kth = np.sort(s)[::-1][k - 1]
    return np.where(s < kth, NEG_INF, s).astype(np.float32)


def top_p(s, p, keep=1):
    order = np.argsort(s, kind="stable")  # ascending
    cum = np.cumsum(softmax(s[order]), dtype=np.float32)
    remove = cum <= (1 - np.float32(p))
    remove[-keep:] = False
    out = s.copy()
    out[order[remove]] = NEG_INF
    return out


def min_p(s, mp, keep=1):
    probs = softmax(s)
    remove = probs < np.float32(mp) * probs.max()
    order = np.argsort(-s, kind="stable")  # descending, stable
    sremove = remove[order]
    sremove[:keep] = False
    out = s.copy()
    out[order[sremove]] = NEG_INF
    return out


def typical(s, mass, keep=1):
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.max(s)
        normalized = (s - m) - np.log(np.sum(np.exp(s - m, dtype=np.float32), dtype=np.float32))
        normalized = normalized.astype(np.float32)
        p = np.exp(normalized).astype(np.float32)
        ent = -np.nansum(normalized * p, dtype=np.float32)
        shifted = np.abs(-normalized - ent).astype(np.float32)
    order = np.argsort(shifted, kind="stable")
    sorted_scores = shifted[order]
    cum = np.cumsum(softmax(s[order]), dtype=np.float32)
    last = int(np.sum(cum < np.float32(mass)))
    last = min(last, len(s) - 1)
    remove = sorted_scores > sorted_scores[last]
    remove[:keep] = False
    out = s.copy()
    out[order[remove]] = NEG_INF
    return out


def chain(ids, s, o, n_prompt):
    """GenerationMixin._get_logits_processor's order, then the warpers."""
    if o.get("repetition_penalty", 1.0) != 1.0:
        s = repetition_penalty(ids, s, o["repetition_penalty"])
    if o.get("no_repeat_ngram_size", 0) > 0:
        s = no_repeat_ngram(ids, s, o["no_repeat_ngram_size"])
    if o.get("bad_words_ids"):
        s = bad_words(ids, s, o["bad_words_ids"], EOS)
    if o.get("min_length", 0) > 0:
        s = min_length(ids, s, o["min_length"], EOS)
    if o.get("min_new_tokens", 0) > 0:
        s = min_new_tokens(ids, s, n_prompt, o["min_new_tokens"], EOS)
    if o.get("suppress_tokens"):
        s = suppress(s, o["suppress_tokens"])
    if o.get("do_sample"):
        if o.get("temperature", 1.0) != 1.0:
            s = temperature(s, o["temperature"])
        if o.get("top_k", 50) != 0:
            s = top_k(s, o.get("top_k", 50))
        if o.get("top_p", 1.0) < 1.0:
            s = top_p(s, o["top_p"])
        if o.get("min_p", 0.0) > 0:
            s = min_p(s, o["min_p"])
        if o.get("typical_p", 1.0) < 1.0:
            s = typical(s, o["typical_p"])
    return s


CASES = [
    ("repetition_penalty", {"repetition_penalty": 1.3}),
    ("repetition_penalty_reward", {"repetition_penalty": 0.7}),
    ("no_repeat_ngram_2", {"no_repeat_ngram_size": 2}),
    ("no_repeat_ngram_3", {"no_repeat_ngram_size": 3}),
    ("bad_words", {"bad_words_ids": [[9], [7, 3], [4, 11], [1, 2, 6], [2]]}),
    ("min_length_on", {"min_length": 20}),
    ("min_length_off", {"min_length": 5}),
    ("min_new_tokens_on", {"min_new_tokens": 5}),
    ("min_new_tokens_off", {"min_new_tokens": 3}),
    ("suppress_tokens", {"suppress_tokens": [0, 13, 63]}),
    ("temperature", {"do_sample": True, "temperature": 0.7, "top_k": 0}),
    ("top_k", {"do_sample": True, "top_k": 10}),
    ("top_p", {"do_sample": True, "top_k": 0, "top_p": 0.8}),
    ("min_p", {"do_sample": True, "top_k": 0, "min_p": 0.1}),
    ("typical_p", {"do_sample": True, "top_k": 0, "typical_p": 0.6}),
    ("typical_p_small", {"do_sample": True, "top_k": 0, "typical_p": 0.05}),
    ("chain", {"do_sample": True, "repetition_penalty": 1.2, "no_repeat_ngram_size": 2,
               "bad_words_ids": [[9], [7, 3]], "min_new_tokens": 5, "suppress_tokens": [13],
               "temperature": 0.8, "top_k": 30, "top_p": 0.9, "min_p": 0.02, "typical_p": 0.9}),
    ("greedy_chain", {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2, "suppress_tokens": [1, 2]}),
]


def check_with_transformers(ids, logits, n_prompt, out):
    import torch
    from transformers.generation import logits_process as lp
    t_ids = torch.tensor([ids])
    t_s = torch.tensor(logits).unsqueeze(0)
    real = {
        "repetition_penalty": lp.RepetitionPenaltyLogitsProcessor(1.3),
        "no_repeat_ngram_2": lp.NoRepeatNGramLogitsProcessor(2),
        "top_p": lp.TopPLogitsWarper(0.8),
        "min_p": lp.MinPLogitsWarper(0.1),
        "typical_p": lp.TypicalLogitsWarper(0.6),
        "top_k": lp.TopKLogitsWarper(10),
    }
    for name, proc in real.items():
        compare(name, proc(t_ids, t_s.clone())[0].numpy(), out[name])
    # Every case through the chain transformers builds itself in generate():
    # GenerationMixin._get_logits_processor on a tiny model, with the special
    # tokens prepared as generate() prepares them. This checks the order of
    # the chain and the options' defaults, not only each class.
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, eos_token_id=EOS))
    for name, o in CASES:
        gc = GenerationConfig(eos_token_id=EOS, pad_token_id=0, **o)
        model._prepare_special_tokens(gc, kwargs_has_attention_mask=True, device="cpu")
        procs = model._get_logits_processor(generation_config=gc, input_ids_seq_length=n_prompt,
                                            encoder_input_ids=t_ids[:, :n_prompt],
                                            prefix_allowed_tokens_fn=None, logits_processor=None,
                                            device="cpu")
        compare(name, procs(t_ids, t_s.clone())[0].numpy(), out[name])
    print("transformers agrees on", len(real), "processors and", len(CASES), "chains")


def compare(name, got, expect):
    want = np.array([NEG_INF if v is None else v for v in expect], dtype=np.float32)
    assert np.array_equal(np.isinf(got), np.isinf(want)), (name, got, want)
    fin = ~np.isinf(got)
    assert np.allclose(got[fin], want[fin], rtol=1e-6), (name, got, want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "generate_processors.json"))
    ap.add_argument("--check", action="store_true", help="also compare with torch + transformers")
    args = ap.parse_args()
    rng = np.random.RandomState(1234)
    logits = (rng.randn(VOCAB) * 1.0).astype(np.float32)
    n_prompt = 8
    ids = [int(x) for x in rng.randint(0, 16, size=12)]  # small ids: n-grams repeat
    ids[6:8] = [7, 4]
    ids[-2:] = [1, 2]
    ids[-3:-1] = [7, 4]  # ... 7 4 2
    ids = ids[:11] + [7]  # ends with 7: [7, 3] is banned, n-gram "7 4" ⇒ 4 (size 2)
    cases = []
    by_name = {}
    for name, o in CASES:
        got = chain(ids, logits.copy(), o, n_prompt)
        expect = [None if np.isinf(v) else float(v) for v in got]
        cases.append({"name": name, "options": o, "expect": expect})
        by_name[name] = expect
    doc = {
        "source": "tests/golden/make_generate_golden.py (numpy mirror of transformers' logits_process.py)",
        "vocab": VOCAB, "eos": EOS, "n_prompt": n_prompt, "ids": ids,
        "logits": [float(v) for v in logits], "cases": cases,
    }
    if args.check:
        check_with_transformers(ids, logits, n_prompt, by_name)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("wrote", args.out, len(cases), "cases")


if __name__ == "__main__":
    main()
