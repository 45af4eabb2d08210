#!/usr/bin/env python3
"""Converts the default model's GGUF into a Hugging Face directory and an f32 GGUF of the same weights.

From models/SmolLM2-135M-Instruct.Q4_1.gguf (read with the `gguf` package):
  - every tensor dequantized to f32 (gguf.quants.dequantize);
  - models/SmolLM2-135M-Instruct.f32.gguf: the same metadata (tokenizer
    included) and those f32 tensors, as llama.cpp would write them;
  - models/SmolLM2-135M-Instruct-hf/: the HF layout of the same values:
    model.safetensors (f32, HF names, [out, in] rows), config.json,
    generation_config.json, tokenizer_config.json (chat_template). q_proj and
    k_proj rows are un-permuted: llama.cpp's converter permutes HF rows for
    RoPE on adjacent pairs (GGUF row h*hd + 2i + j holds HF row
    h*hd + j*hd/2 + i), and this undoes it, so the directory needs the
    half-split RoPE that HF Llama uses.

tests/smollm2_hf_spec.lua then checks that lrun's greedy output from the
directory equals its output from the f32 GGUF. The tokenizer.json of the
directory is written by write_tokenizer_json (the tokenizer.json work of
issue #11 fills it in, with the `tokenizers` package).

Needs numpy and gguf; no network. About 1.1 GB written.
Usage: python3 tests/golden/make_smollm2_hf.py [--model PATH] [--out-dir DIR] [--out-gguf PATH]
"""
import argparse
import json
import os
import struct

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# GGUF name -> HF name ("{}" is the block index)
NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
}


def hf_name(name):
    if name.startswith("blk."):
        _, idx, rest = name.split(".", 2)
        return NAMES["blk.{}." + rest].format(idx)
    return NAMES[name]


def unpermute(w, n_head):
    """The inverse of convert_hf_to_gguf.py's permute: GGUF rows back to HF order."""
    rows, cols = w.shape
    hd = rows // n_head
    return w.reshape(n_head, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_safetensors(path, tensors):
    """tensors: {name: float32 array}, written in name order, header padded to 8 bytes."""
    header, offset = {}, 0
    for name in sorted(tensors):
        a = tensors[name]
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())


def write_tokenizer_json(out_dir, meta):
    """The directory's tokenizer.json: left to the tokenizer.json work (issue #11, helper tokjson)."""
    del out_dir, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct-hf"))
    ap.add_argument("--out-gguf", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.f32.gguf"))
    args = ap.parse_args()

    r = GGUFReader(args.model)
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert meta["general.architecture"] == "llama", meta["general.architecture"]
    n_head, n_head_kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    f32 = {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32) for t in r.tensors}

    # the f32 GGUF: every key but the file type, every tensor in file order
    w = GGUFWriter(args.out_gguf, "llama")
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k in ("general.architecture", "general.file_type"):
            continue
        sub = f.types[1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(k, f.contents(), f.types[0], sub_type=sub)
    w.add_file_type(0)
    for t in r.tensors:
        w.add_tensor(t.name, f32[t.name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # the HF directory
    os.makedirs(args.out_dir, exist_ok=True)
    hf = {}
    for name, a in f32.items():
        if ".attn_q." in name:
            a = unpermute(a, n_head)
        elif ".attn_k." in name:
            a = unpermute(a, n_head_kv)
        hf[hf_name(name)] = a
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"), hf)
    embd = meta["llama.embedding_length"]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": embd, "intermediate_size": meta["llama.feed_forward_length"],
        "num_hidden_layers": meta["llama.block_count"], "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv, "head_dim": embd // n_head,
        "max_position_embeddings": meta["llama.context_length"],
        "rms_norm_eps": meta["llama.attention.layer_norm_rms_epsilon"],
        "rope_theta": meta["llama.rope.freq_base"], "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": "output.weight" not in f32, "hidden_act": "silu",
        "bos_token_id": meta["tokenizer.ggml.bos_token_id"], "eos_token_id": meta["tokenizer.ggml.eos_token_id"],
        "torch_dtype": "float32",
    }
    gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    tcfg = {"chat_template": meta.get("tokenizer.chat_template"), "add_bos_token": meta.get("tokenizer.ggml.add_bos_token")}
    for name, doc in (("config.json", config), ("generation_config.json", gen), ("tokenizer_config.json", tcfg)):
        with open(os.path.join(args.out_dir, name), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    write_tokenizer_json(args.out_dir, meta)
    print("wrote", args.out_gguf, "and", args.out_dir)


if __name__ == "__main__":
    main()
