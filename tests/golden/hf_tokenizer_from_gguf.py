#!/usr/bin/env python3
"""A Hugging Face tokenizer.json built with `tokenizers` from a GGUF file's
byte-level BPE vocabulary (tokenizer.ggml.model = "gpt2"), read with `gguf`.

Used to turn the default model (SmolLM2, pre "smollm") into an HF directory
(the safetensors conversion imports write_hf_tokenizer), and by
tests/tokjson_spec.lua, which checks that lrun's ids from the tokenizer.json
equal lrun's ids from the GGUF and HF tokenizers' ids.

    python3 tests/golden/hf_tokenizer_from_gguf.py MODEL.gguf OUT_DIR
writes OUT_DIR/tokenizer.json, OUT_DIR/tokenizer_config.json and
OUT_DIR/hf_ids.json (HF's ids and decoded text for the strings of
make_tokenizer_json_golden.STRINGS plus each control token and chat text).

The pre-tokenizers are those HF's own files use for the GGUF converter's
tokenizer.ggml.pre values: "smollm" = Digits(individual) + ByteLevel,
"gpt-2" = ByteLevel, "llama-bpe" / "qwen2" = Split(regex) + ByteLevel
without its regex. Control tokens (type 3) become special added tokens,
user-defined ones (type 4) plain added tokens, both normalized=false.
"""
import json
import os
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer_json_golden import LLAMA3_RE, QWEN2_RE, STRINGS  # noqa: E402

TYPE_CONTROL, TYPE_USER_DEFINED = 3, 4


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _pre_tokenizer(pre):
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in ("gpt-2", "gpt2"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("llama-bpe", "llama3", "qwen2"):
        regex = QWEN2_RE if pre == "qwen2" else LLAMA3_RE
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ValueError("tokenizer.ggml.pre = %r: no HF pre-tokenizer known for it" % pre)


def tokenizer_from_gguf(gguf_path):
    """(tokenizers.Tokenizer, tokenizer_config dict) for a byte-level BPE GGUF."""
    r = GGUFReader(gguf_path)
    if _field(r, "tokenizer.ggml.model") != "gpt2":
        raise ValueError("%s: tokenizer.ggml.model is not gpt2 (byte-level BPE)" % gguf_path)
    tokens = _field(r, "tokenizer.ggml.tokens")
    types = _field(r, "tokenizer.ggml.token_type", [1] * len(tokens))
    merges = [tuple(m.split(" ")) for m in _field(r, "tokenizer.ggml.merges", [])]
    t = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(tokens)}, merges=merges))
    t.pre_tokenizer = _pre_tokenizer(_field(r, "tokenizer.ggml.pre", "gpt-2"))
    t.decoder = decoders.ByteLevel()
    bos, eos = _field(r, "tokenizer.ggml.bos_token_id"), _field(r, "tokenizer.ggml.eos_token_id")
    add_bos = bool(_field(r, "tokenizer.ggml.add_bos_token", False))
    t.add_special_tokens([AddedToken(tok, special=True, normalized=False)
                          for tok, ty in zip(tokens, types) if ty == TYPE_CONTROL])
    t.add_tokens([AddedToken(tok, special=False, normalized=False)
                  for tok, ty in zip(tokens, types) if ty == TYPE_USER_DEFINED])
    post = [processors.ByteLevel(trim_offsets=False)]
    if add_bos and bos is not None:
        post.append(processors.TemplateProcessing(single=tokens[bos] + " $A", pair=tokens[bos] + " $A $B",
                                                  special_tokens=[(tokens[bos], bos)]))
    t.post_processor = processors.Sequence(post) if len(post) > 1 else post[0]
    config = {"add_bos_token": add_bos, "add_eos_token": False, "clean_up_tokenization_spaces": False,
              "model_max_length": 8192, "tokenizer_class": "GPT2Tokenizer"}
    if bos is not None:
        config["bos_token"] = tokens[bos]
    if eos is not None:
        config["eos_token"] = tokens[eos]
    template = _field(r, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return t, config


def write_hf_tokenizer(gguf_path, out_dir):
    """Writes out_dir/tokenizer.json and out_dir/tokenizer_config.json; returns the Tokenizer."""
    t, config = tokenizer_from_gguf(gguf_path)
    os.makedirs(out_dir, exist_ok=True)
    t.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
    return t


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: hf_tokenizer_from_gguf.py MODEL.gguf OUT_DIR")
    t = write_hf_tokenizer(sys.argv[1], sys.argv[2])
    specials = [a.content for a in t.get_added_tokens_decoder().values()]
    strings = STRINGS + specials + ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "x<|im_end|>y z"]
    cases = []
    for s in strings:
        ids = t.encode(s, add_special_tokens=True).ids
        cases.append({"text": s, "ids": ids, "decoded": t.decode(ids, skip_special_tokens=False)})
    with open(os.path.join(sys.argv[2], "hf_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
