#!/usr/bin/env python3
"""Writes tiny random models with transformers, and what transformers computes with them.

For each model below (seeded, so a rerun gives the same files):
  - tests/golden/hf/<name>/: LlamaForCausalLM(config) with torch.manual_seed,
    saved with save_pretrained (f32 safetensors, config.json,
    generation_config.json): a few hundred KB, committed;
  - its entry in tests/golden/hf_models.json: for each prompt of token ids, the
    last position's f32 logits (model(ids).logits[0, -1]) and the greedy
    continuation of N_GREEDY tokens (argmax step by step, no EOS stop, so
    transformers' generation config cannot shorten it).

tests/hf_golden_spec.lua loads each directory with lrun and compares: logits
within a stated tolerance, greedy ids identical. The models cover untied and
tied heads, grouped-query attention, an explicit head_dim, Llama 3's
rope_scaling (which lrun turns into RoPE factors), and the other families
lrun runs from HF directories (qwen2, qwen3, phi3, gemma2, gemma3 — the text
model, Gemma3ForCausalLM of a Gemma3TextConfig), each with the config class
of its own model_type. The gemma models run transformers' eager attention
(the one that applies gemma2's attention soft-cap), a window of 4 so the
longest prompt crosses it, and a query_pre_attn_scalar other than head_dim
for gemma2 (llama.cpp's GGUF rule would take head_dim). A family this transformers does not know is
left out with a message; the others are still written.

The mixtures of experts (qwen3_moe, mixtral) have their routers scaled by
ROUTER_SCALE after the default init (std 0.02 would make every token's
expert probabilities nearly equal, so a rounding difference could swap the
k-th and (k+1)-th expert; a scaled router picks decisively, as trained
ones do). transformers saves their experts one tensor each (transformers 5
by default reverts its fused runtime layout to the checkpoint's);
"qwen3moe-fused" is saved with save_pretrained(save_original_format=False),
transformers 5's fused gate_up_proj/down_proj, and is left out with a
message by a transformers whose save_pretrained has no such option (or
that writes no fused tensor).

Needs torch and transformers (the GPU machine has both; the CPU is enough).
Usage: python3 tests/golden/make_hf_golden.py [--out tests/golden]
Then commit tests/golden/hf_models.json and the directories under tests/golden/hf/.
"""
import argparse
import glob
import inspect
import json
import os
import shutil

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
N_GREEDY = 8
ROUTER_SCALE = 8.0
PROMPTS = [[1, 17, 42, 99, 200, 3], [5], [250, 251, 7, 7, 7, 80, 81, 82, 83, 9, 10, 11]]

MODELS = {
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "llama3-tied": dict(model_type="llama", hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=1, head_dim=16, vocab_size=256, max_position_embeddings=256,
                        rms_norm_eps=1e-6, rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=1,
                        eos_token_id=[2, 3],
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=256, max_position_embeddings=128,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                  bos_token_id=1, eos_token_id=2),
    "qwen3": dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=256,
                  max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                  bos_token_id=1, eos_token_id=2),
    "phi3": dict(model_type="phi3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=256, max_position_embeddings=128,
                 original_max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    # GeGLU (gelu_pytorch_tanh), the four (1 + w) norms, embedding times sqrt(hidden), soft-caps 50/30, the
    # window on blocks 0 and 2 of 4
    "gemma2": dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256,
                   max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=24,
                   sliding_window=4, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                   pad_token_id=0, _attn_implementation="eager"),
    # q/k head norms, no soft-caps, 7 blocks: 0-4 local (window 4, RoPE base 10000), 5 global (base 1e6), 6 local
    "gemma3": dict(model_type="gemma3_text", hidden_size=64, intermediate_size=128, num_hidden_layers=7,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256,
                   max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                   query_pre_attn_scalar=16, sliding_window=4, hidden_activation="gelu_pytorch_tanh",
                   tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                   _attn_implementation="eager"),
    # 8 experts of width 32, top-2, normalised top-k (the released models' setting), every block sparse
    "qwen3moe": dict(model_type="qwen3_moe", hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                     num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                     mlp_only_layers=[], num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=16, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # 4 experts of width 48, top-2 (Mixtral always renormalises), no sliding window
    "mixtral": dict(model_type="mixtral", hidden_size=64, intermediate_size=48, num_local_experts=4,
                    num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=1000000.0,
                    sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
}
# the same config, saved in transformers 5's fused expert layout
MODELS["qwen3moe-fused"] = dict(MODELS["qwen3moe"], _save_original_format=False)


def make(name, kw, out_dir, seed):
    torch.manual_seed(seed)
    kw = dict(kw)
    attn = kw.pop("_attn_implementation", None)
    original_format = kw.pop("_save_original_format", True)
    config = AutoConfig.for_model(kw.pop("model_type"), **kw)
    extra = {"attn_implementation": attn} if attn else {}
    model = AutoModelForCausalLM.from_config(config, **extra).eval().to(torch.float32)
    # the default init leaves norms at exactly 1: perturb them so a misplaced norm shows
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            if n.endswith(".gate.weight"):  # a mixture of experts' router (not gate_proj)
                p.mul_(ROUTER_SCALE)
    path = os.path.join(out_dir, "hf", name)
    if original_format:
        model.save_pretrained(path, safe_serialization=True)
    else:
        if "save_original_format" not in inspect.signature(model.save_pretrained).parameters:
            raise ValueError("this transformers' save_pretrained has no save_original_format (transformers 5 has)")
        model.save_pretrained(path, safe_serialization=True, save_original_format=False)
        if not any(b"gate_up_proj" in open(f, "rb").read(1 << 20) for f in glob.glob(os.path.join(path, "*.safetensors"))):
            shutil.rmtree(path)
            raise ValueError("save_original_format=False wrote no fused gate_up_proj")
    cases = []
    with torch.no_grad():
        for ids in PROMPTS:
            x = torch.tensor([ids])
            # no cache: each call is one full causal forward (gemma's hybrid cache of older transformers
            # versions handled a prompt longer than the window differently); the same logits for the others
            logits = model(x, use_cache=False).logits[0, -1].tolist()
            seq, greedy = list(ids), []
            for _ in range(N_GREEDY):
                nxt = int(model(torch.tensor([seq]), use_cache=False).logits[0, -1].argmax())
                greedy.append(nxt)
                seq.append(nxt)
            cases.append({"prompt": ids, "logits": [float(f"{v:.7g}") for v in logits], "greedy": greedy})
    return {"name": name, "dir": os.path.relpath(path, out_dir), "cases": cases}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = []
    # seeds by this order: the first five are the sorted names the script had before gemma, so their
    # files and goldens stay what they were (and the older ones' when the mixtures of experts came)
    order = ["llama", "llama3-tied", "phi3", "qwen2", "qwen3", "gemma2", "gemma3", "qwen3moe", "mixtral",
             "qwen3moe-fused"]
    assert sorted(order) == sorted(MODELS)
    for seed, name in enumerate(order):
        kw = MODELS[name]
        try:
            models.append(make(name, kw, args.out, seed))
        except (ValueError, KeyError, ImportError) as e:  # a model_type this transformers lacks
            print(f"left out {name}: {e}")
    golden = {"transformers": transformers.__version__, "torch": torch.__version__, "n_greedy": N_GREEDY,
              "models": models}
    with open(os.path.join(args.out, "hf_models.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("wrote", os.path.join(args.out, "hf_models.json"))


if __name__ == "__main__":
    main()
