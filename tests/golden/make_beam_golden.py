#!/usr/bin/env python3
"""Writes tests/golden/beam_search.json: what HF transformers' generate does
with beams, on the tiny random-weight llama of tests/beam_model.lua.

The model file is made by lrun itself (build/lrun runs tests/beam_model.lua,
the same spec and seed the specs use), then read here with the `gguf`
package and copied into a transformers LlamaForCausalLM in f32 (eager
attention). GGUF llama stores the Q and K rows permuted for the adjacent
rotary pairs; they are permuted back to HF's half-split layout, as
transformers' own GGUF loader does. The logits of prompt "a" are stored too:
the spec checks lrun against them first (they agree to ~5e-7), so a
mismatch in the beams below is a beam-search difference, not the model.

For each case it records the options (lrun's names, which are HF's) and, per
returned sequence, the generated ids (eos excluded), the sequence score
(sequences_scores) and whether the sequence ended with an eos token. A batch
case runs HF on each prompt alone (padding-free batches: each prompt its own
sequence, which is what lrun does) and concatenates the results.

Needs torch and transformers 4.55.x (the last line with group beam search in
the library itself; 4.56 moved it to the Hub). CI does not run this script.

With --processors it writes tests/golden/beam_processors.json instead:
beams with no_repeat_ngram_size, bad_words_ids, suppress_tokens,
min_new_tokens, min_length and max_length (any transformers from 4.55 on;
made with 5.17 on the GPU machine). --model takes the model file that
tests/beam_model.lua writes, for a machine without build/lrun.

Usage: python3 tests/golden/make_beam_golden.py [--lrun build/lrun] [--model FILE]
       [--processors] [--out PATH]
"""
import argparse
import hashlib
import json
import os
import random
import subprocess
import tempfile

import gguf
import numpy as np
import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write_model(lrun, path):
    code = ('package.path = "./?.lua;" .. package.path; '
            'require("tests.beam_model").write("%s")' % path)
    subprocess.run([lrun, "-e", code], cwd=ROOT, check=True)


def load_hf(path):
    r = gguf.GGUFReader(path)

    def val(name):
        f = r.fields[name]
        return f.parts[f.data[0]][0].item()

    n_layer, n_head, n_kv = val("llama.block_count"), val("llama.attention.head_count"), val("llama.attention.head_count_kv")
    cfg = LlamaConfig(
        vocab_size=val("llama.vocab_size"), hidden_size=val("llama.embedding_length"),
        intermediate_size=val("llama.feed_forward_length"), num_hidden_layers=n_layer,
        num_attention_heads=n_head, num_key_value_heads=n_kv,
        max_position_embeddings=val("llama.context_length"),
        rms_norm_eps=val("llama.attention.layer_norm_rms_epsilon"), rope_theta=val("llama.rope.freq_base"),
        tie_word_embeddings="output.weight" not in [t.name for t in r.tensors],
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    cfg._attn_implementation = "eager"
    t = {x.name: torch.from_numpy(np.array(x.data).copy()) for x in r.tensors}

    def unpermute(w, heads):  # GGUF (adjacent pairs) -> HF (half split)
        dim = w.shape[0] // heads // 2
        return w.reshape(heads, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)

    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t.get("output.weight", t["token_embd.weight"])}
    for l in range(n_layer):
        p, q = f"blk.{l}.", f"model.layers.{l}."
        sd[q + "input_layernorm.weight"] = t[p + "attn_norm.weight"]
        sd[q + "post_attention_layernorm.weight"] = t[p + "ffn_norm.weight"]
        sd[q + "self_attn.q_proj.weight"] = unpermute(t[p + "attn_q.weight"], n_head)
        sd[q + "self_attn.k_proj.weight"] = unpermute(t[p + "attn_k.weight"], n_kv)
        sd[q + "self_attn.v_proj.weight"] = t[p + "attn_v.weight"]
        sd[q + "self_attn.o_proj.weight"] = t[p + "attn_output.weight"]
        sd[q + "mlp.gate_proj.weight"] = t[p + "ffn_gate.weight"]
        sd[q + "mlp.up_proj.weight"] = t[p + "ffn_up.weight"]
        sd[q + "mlp.down_proj.weight"] = t[p + "ffn_down.weight"]
    m = LlamaForCausalLM(cfg)
    m.load_state_dict(sd, strict=True)
    m.eval()
    return m


# generate() options of the --processors cases that pass straight to
# GenerationConfig (lrun's names are HF's)
PROCESSOR_OPTIONS = ("no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                     "suppress_tokens", "max_length")


def run_case(model, prompt, o):
    eos = o.get("eos_token_id") or None
    gc = GenerationConfig(
        max_new_tokens=o.get("max_new_tokens"), do_sample=False, num_beams=o["num_beams"],
        num_beam_groups=o.get("num_beam_groups", 1), diversity_penalty=o.get("diversity_penalty", 0.0),
        length_penalty=o.get("length_penalty", 1.0), early_stopping=o.get("early_stopping", False),
        num_return_sequences=o.get("num_return_sequences", 1),
        repetition_penalty=o.get("repetition_penalty", 1.0),
        **{k: o[k] for k in PROCESSOR_OPTIONS if k in o},
        eos_token_id=eos, pad_token_id=o.get("pad_token_id", eos[0] if eos else None),
        return_dict_in_generate=True, output_scores=True, use_cache=True)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
    res = []
    for row, score in zip(out.sequences.tolist(), out.sequences_scores.tolist()):
        new = row[len(prompt):]
        ended = False
        if eos:
            for k, tok in enumerate(new):
                if tok in eos:
                    new, ended = new[:k], True
                    break
        res.append({"ids": new, "score": score, "eos": ended})
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrun", default=os.path.join(ROOT, "build", "lrun"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--model", help="the model file tests/beam_model.lua writes (else written with --lrun)")
    ap.add_argument("--processors", action="store_true",
                    help="the logits-processor cases (beam_processors.json; any transformers >= 4.55)")
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(HERE, "beam_processors.json" if args.processors else "beam_search.json")
    torch.manual_seed(0)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or os.path.join(tmp, "beam_tiny.gguf")
        if not args.model:
            write_model(args.lrun, path)
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        model = load_hf(path)

    rng = random.Random(5)
    prompts = {
        "a": [rng.randrange(259, 512) for _ in range(9)],
        "b": [rng.randrange(259, 512) for _ in range(14)],
        "seed": [rng.randrange(259, 512) for _ in range(1000)],
    }
    with torch.no_grad():
        logits_a = model(torch.tensor([prompts["a"]])).logits[0, -1].tolist()

    # eos ids the beams actually meet: tokens of the best beam without eos
    probe = run_case(model, prompts["a"], {"max_new_tokens": 6, "num_beams": 4})[0]["ids"]
    e1, e2 = probe[1], probe[3] if probe[3] != probe[1] else probe[0]

    B = {"max_new_tokens": 10, "num_beams": 4, "num_return_sequences": 4}
    if args.processors:
        cases = processor_cases(B, probe, e1)
    else:
        cases = base_cases(B, e1, e2)
    out_cases = []
    for name, names, opts in cases:
        expected = []
        for n in names:
            expected += run_case(model, prompts[n], opts)
        out_cases.append({"name": name, "prompts": names, "options": opts, "expected": expected})
        print(name, [len(e["ids"]) for e in expected])

    doc = {
        "about": "HF transformers generate() with beams on tests/beam_model.lua's model; "
                 "made by tests/golden/make_beam_golden.py" + (" --processors" if args.processors else ""),
        "transformers": transformers.__version__, "torch": torch.__version__,
        "model_sha256": sha, "prompts": prompts, "logits_a": logits_a, "cases": out_cases,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def processor_cases(B, probe, e1):
    """Beam search with transformers' logits processors on the log-probs."""
    return [
        ("ngram2", ["a"], dict(B, max_new_tokens=12, no_repeat_ngram_size=2)),
        ("ngram3_rep", ["b"], dict(B, max_new_tokens=12, no_repeat_ngram_size=3, repetition_penalty=1.2)),
        ("bad_words", ["a"], dict(B, bad_words_ids=[[probe[0]], [probe[1], probe[2]]])),
        ("suppress", ["a"], dict(B, suppress_tokens=[probe[0], probe[2]])),
        ("min_new_eos", ["a"], dict(B, eos_token_id=[e1], min_new_tokens=6)),
        ("min_length_eos", ["b"], dict(B, num_beams=3, num_return_sequences=2, eos_token_id=[e1],
                                       min_length=14 + 5)),
        ("max_length", ["a"], {"num_beams": 3, "num_return_sequences": 3, "max_length": 9 + 7}),
    ]


def base_cases(B, e1, e2):
    return [
        ("beam4", ["a"], dict(B, max_new_tokens=8)),
        ("beam4_eos", ["a"], dict(B, eos_token_id=[e1])),
        ("beam4_eos_early_true", ["a"], dict(B, eos_token_id=[e1], early_stopping=True)),
        ("beam4_eos_never_lp2", ["a"], dict(B, eos_token_id=[e1], early_stopping="never", length_penalty=2.0)),
        ("beam3_eos2_lp_neg", ["a"], dict(B, num_beams=3, num_return_sequences=2, eos_token_id=[e1, e2],
                                          length_penalty=-0.5)),
        ("beam4_eos_rep", ["b"], dict(B, eos_token_id=[e1], repetition_penalty=1.3)),
        ("batch_beam", ["a", "b"], dict(B, num_return_sequences=2, eos_token_id=[e1])),
        ("group6x3", ["a"], dict(B, num_beams=6, num_beam_groups=3, diversity_penalty=1.0, num_return_sequences=6,
                                 eos_token_id=[e1])),
        ("group6x3_never", ["b"], dict(B, num_beams=6, num_beam_groups=3, diversity_penalty=0.5,
                                       num_return_sequences=3, eos_token_id=[e1], early_stopping="never",
                                       length_penalty=1.5)),
        ("group4x4_true", ["a"], dict(B, num_beams=4, num_beam_groups=4, diversity_penalty=1.0, eos_token_id=[e1],
                                      early_stopping=True)),
        ("batch_group", ["a", "b"], dict(B, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2,
                                         eos_token_id=[e1, e2])),
        # the seed scenario's shape (issue 5): ~1000-token prompt, 40 beams in 40 groups
        ("seed", ["seed"], dict(max_new_tokens=23, num_beams=40, num_beam_groups=40, diversity_penalty=1.0,
                                num_return_sequences=40, eos_token_id=[256])),
    ]


if __name__ == "__main__":
    main()
