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

gpt_oss is saved unquantized (GptOssExperts' gate_up_proj [E, hidden, 2 ff], gate and up interleaved on
the last axis, and down_proj [E, ff, hidden], with their biases), its expert biases and attention sinks
drawn with sd 3 and 1 (the init leaves them near 0) so they matter and swiglu's clamp at 7 is reached;
"gpt_oss-mxfp4" is the same model (same seed) with its experts quantized to MXFP4 here (mxfp4_quantize)
and written as the released checkpoints are (_blocks/_scales U8, quantization_config mxfp4): its golden
logits are transformers' with the dequantized experts, the values the file holds.

--only NAME[,NAME] writes just those models and keeps the other entries of hf_models.json as they are (a
torch of another version moves the others' logits by ~1e-7, so a full rerun rewrites every entry); the
entries it writes record their own transformers/torch versions when those differ from the file's.

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
# 4 experts of width 32, top-2, biased q/k/v/o, attention sinks, the window (4) on blocks 0 and 2, YaRN with
# transformers' truncate=false (the released config's), saved unquantized (experts.gate_up_proj [E, in, 2 ff]
# with gate and up interleaved, down_proj [E, ff, in])
MODELS["gpt_oss"] = dict(model_type="gpt_oss", hidden_size=64, intermediate_size=32, num_local_experts=4,
                         num_experts_per_tok=2, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, vocab_size=256, max_position_embeddings=2048, rms_norm_eps=1e-5,
                         sliding_window=4, attention_bias=True, swiglu_limit=7.0, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 8.0,
                                          "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                                          "original_max_position_embeddings": 256},
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, _attn_implementation="eager",
                         _qk_scale=6.0)
# the same model (same seed) with its experts quantized to MXFP4 by this script and written as the released
# checkpoints are (experts.{gate_up,down}_proj_{blocks,scales}, quantization_config mxfp4); transformers'
# logits are those of the dequantized experts, which is what the file holds
MODELS["gpt_oss-mxfp4"] = dict(MODELS["gpt_oss"], _mxfp4=True, _same_as="gpt_oss")

# transformers' integrations/mxfp4.py FP4_VALUES: the E2M1 code c means FP4[c]
FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def mxfp4_quantize(w):
    """w [E, in, out] (GptOssExperts' x @ W layout) -> (blocks [E, out, in/32, 16] u8, scales [E, out, in/32] u8,
    the dequantized w). Per block of 32 inputs of one output row: the E8M0 scale 2^(s - 127) with s =
    floor(log2(amax)) - 2 + 127 (the OCP rule, gguf-py's; 0 for an all-zero block), each value the nearest
    E2M1 code of value / scale (the first among equals); byte i holds element 2i in its low nibble and 2i + 1
    in its high one, as transformers' convert_moe_packed_tensors reads them."""
    E, n_in, n_out = w.shape
    x = w.transpose(1, 2).reshape(E, n_out, n_in // 32, 32).to(torch.float64)
    amax = x.abs().amax(-1)
    s = torch.where(amax > 0, torch.floor(torch.log2(amax.clamp_min(1e-300))) - 2 + 127, torch.zeros_like(amax))
    s = s.clamp(0, 255)
    scale = torch.pow(2.0, s - 127)
    lut = torch.tensor(FP4, dtype=torch.float64)
    codes = (x / scale[..., None])[..., None].sub(lut).abs().argmin(-1)  # first index among equals
    deq = lut[codes] * scale[..., None]
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
    w_deq = deq.reshape(E, n_out, n_in).transpose(1, 2).to(w.dtype).contiguous()
    return blocks.contiguous(), s.to(torch.uint8).contiguous(), w_deq


def quantize_experts(model):
    """The model's experts replaced by their MXFP4 values; returns {name: (blocks, scales)} for the file."""
    packed = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("mlp.experts.gate_up_proj") or n.endswith("mlp.experts.down_proj"):
                blocks, scales, deq = mxfp4_quantize(p.data)
                p.copy_(deq)
                packed[n] = (blocks, scales)
    return packed


def write_mxfp4(path, packed):
    """Rewrites path's safetensors with the experts as _blocks/_scales and marks config.json mxfp4."""
    from safetensors.torch import load_file, save_file
    files = glob.glob(os.path.join(path, "*.safetensors"))
    if len(files) != 1:
        raise ValueError(f"expected one safetensors file in {path}")
    tensors = load_file(files[0])
    for n, (blocks, scales) in packed.items():
        del tensors[n]
        tensors[n + "_blocks"], tensors[n + "_scales"] = blocks, scales
    save_file(tensors, files[0], metadata={"format": "pt"})
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def make(name, kw, out_dir, seed):
    torch.manual_seed(seed)
    kw = dict(kw)
    attn = kw.pop("_attn_implementation", None)
    original_format = kw.pop("_save_original_format", True)
    mxfp4 = kw.pop("_mxfp4", False)
    qk_scale = kw.pop("_qk_scale", None)
    kw.pop("_same_as", None)
    config = AutoConfig.for_model(kw.pop("model_type"), **kw)
    extra = {"attn_implementation": attn} if attn else {}
    model = AutoModelForCausalLM.from_config(config, **extra).eval().to(torch.float32)
    # the default init leaves norms at exactly 1: perturb them so a misplaced norm shows
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            if n.endswith(".gate.weight") or n.endswith(".router.weight"):  # a router (not gate_proj)
                p.mul_(ROUTER_SCALE)
            # gpt-oss: the init leaves the experts' biases at 0 and the sinks near 0; make them matter, and
            # some gate/up values pass swiglu's clamp at 7 (biases of sd 3)
            if n.endswith("experts.gate_up_proj_bias"):
                p.copy_(3.0 * torch.randn_like(p))
            if n.endswith("experts.down_proj_bias") or n.endswith("self_attn.sinks"):
                p.copy_(torch.randn_like(p))
            # q/k scaled up so attention scores are of order 1 (at init they are ~0 and every position weighs
            # alike): then RoPE (YaRN's ramp, truncate=false), the window and the sinks move the logits
            if qk_scale and (n.endswith("q_proj.weight") or n.endswith("k_proj.weight")):
                p.mul_(qk_scale)
    packed = quantize_experts(model) if mxfp4 else None
    path = os.path.join(out_dir, "hf", name)
    if original_format:
        model.save_pretrained(path, safe_serialization=True)
        if packed:
            write_mxfp4(path, packed)
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
    if packed:  # transformers' own MXFP4 reader must see in the file what the golden computed
        check = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra).eval()
        with torch.no_grad():
            for c in cases:
                got = check(torch.tensor([c["prompt"]]), use_cache=False).logits[0, -1]
                diff = float((got - torch.tensor(c["logits"])).abs().max())
                if diff > 1e-5:
                    raise RuntimeError(f"{name}: transformers reading {path} differs from the golden by {diff}")
    return {"name": name, "dir": os.path.relpath(path, out_dir), "cases": cases}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--only", default=None,
                    help="comma-separated names: write only these, keeping the other models' entries of the "
                         "existing hf_models.json (and their directories) as they are; the entries written get "
                         "their own transformers/torch versions")
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = []
    # seeds by this order: the first five are the sorted names the script had before gemma, so their
    # files and goldens stay what they were (and the older ones' when the mixtures of experts came)
    order = ["llama", "llama3-tied", "phi3", "qwen2", "qwen3", "gemma2", "gemma3", "qwen3moe", "mixtral",
             "qwen3moe-fused", "gpt_oss", "gpt_oss-mxfp4"]
    assert sorted(order) == sorted(MODELS)
    only = args.only.split(",") if args.only else None
    if only and not set(only) <= set(MODELS):
        ap.error(f"--only: unknown names {sorted(set(only) - set(MODELS))}")
    old = None
    if only:
        with open(os.path.join(args.out, "hf_models.json")) as f:
            old = json.load(f)
    for seed, name in enumerate(order):
        kw = MODELS[name]
        if only and name not in only:
            models.extend(m for m in old["models"] if m["name"] == name)
            continue
        if "_same_as" in kw:  # the same weights as that model (before quantization)
            seed = order.index(kw["_same_as"])
        try:
            made = make(name, kw, args.out, seed)
            if only and (transformers.__version__, torch.__version__) != (old["transformers"], old["torch"]):
                made["made_with"] = {"transformers": transformers.__version__, "torch": torch.__version__}
            models.append(made)
        except (ValueError, KeyError, ImportError) as e:  # a model_type this transformers lacks
            print(f"left out {name}: {e}")
    golden = {"transformers": old["transformers"] if old else transformers.__version__,
              "torch": old["torch"] if old else torch.__version__, "n_greedy": N_GREEDY, "models": models}
    with open(os.path.join(args.out, "hf_models.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print("wrote", os.path.join(args.out, "hf_models.json"))


if __name__ == "__main__":
    main()
