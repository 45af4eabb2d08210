#!/usr/bin/env python3
"""Golden tokenizations from llama.cpp, for tests/c/test_tokenizer.c.

Writes tests/golden/tokenizer.json: for every vocabulary below and every
string in STRINGS, the ids llama.cpp (through the xllamacpp package, its
/tokenize endpoint on a loopback server) gives with parse_special on and off,
with add_special on, the bytes of each token (/tokenize with_pieces) and the
end-of-generation ids (the tokens /completion bans under ignore_eos).

Vocabularies:
  - "smollm": the default model itself (SmolLM2, byte-level BPE, pre "smollm");
  - byte-level BPE variants: the same tokens and merges with another
    tokenizer.ggml.pre (or none), written to tiny GGUF files (one layer of
    random weights, just enough for llama.cpp to load them);
  - "spm", "spm-noprefix": a small SentencePiece vocabulary built here
    (<unk> <s> </s>, the 256 byte tokens <0xNN>, control and user-defined
    tokens, and pieces taken from SmolLM2's first tokens with decreasing
    scores), stored in the JSON so the C test can rebuild the same file.

The C test rebuilds each variant file from the default model (or from the
JSON) with lrun_gguf_writer, so no model copies are committed.

Regenerate (needs the default model, xllamacpp, gguf, numpy):
    python3 tests/golden/make_tokenizer_golden.py [--model PATH]
"""
import argparse
import json
import os
import sys
import tempfile
import urllib.request

import numpy as np
import gguf
import xllamacpp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Tricky strings: llama.cpp's tests/test-tokenizer-0 set (whitespace runs,
# "\n =", "' era", emoji, Khmer, digit runs, "Cửa Việt"), plus code, other
# scripts, Unicode whitespace and numbers, and special-token texts.
STRINGS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\t\n",
    "Hello world", " Hello world", "Hello World", " Hello World", " Hello World!",
    "Hello, world!", " Hello, world!", " this is 🦙.cpp", "w048 7tuijk dsdfhu",
    "нещо на Български", "កាន់តែពិសេសអាចខលចេញ",
    "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own token)",
    "Hello", " Hello", "  Hello", "   Hello", "    Hello", "    Hello\n    Hello", " (", "\n =", "' era",
    "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～", "!!!!!!",
    "3", "33", "333", "3333", "33333", "333333", "3333333", "33333333", "333333333",
    "Cửa Việt", " discards",
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 "
    "3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= "
    "нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "def foo(x):\n    return x * 2  # comment\n\nif __name__ == '__main__':\n\tprint(foo(21))\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\r\n",
    "I'M HERE, YOU'RE THERE, it'S 'Ll 'vE",
    "a\u00a0b \u3000x y\u0085z \u2028 \u2003end  ",
    "\r\n", "a\r\nb\r\n\r\nc", "tabs\t\tand\t spaces \t",
    "½ ² ³ Ⅻ ٣٤٥ १२३ 12.5% $100 +1 <=> ^~|",
    "e\u0301 café naïve Æsir ǅemal",
    "नमस्ते दुनिया", "مرحبا بالعالم", "שלום עולם", "สวัสดีชาวโลก", "こんにちは世界", "안녕하세요 세계",
    "zero\u200bwidth joiner\u200d! \u0001\u007f control",
    "Mixed: English, русский, 中文, العربية, 123abc456def.",
    "mongolian\u180evowel separator", " " * 300 + "x" + "\n" * 100 + "9" * 120,
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|endoftext|>", "a<|im_start|>", "<|im_start|<|im_end|>", " <|im_end|> x",
    "<s>hi</s>", "<s> hi </s>", "<unk>", "<tool>call</tool><tool>", "x<tool>y",
]

# tokenizer.ggml.pre values given to copies of the default model's vocabulary
# (None: the key removed). Each is a set of regexes in llama.cpp. Unknown
# names ("gpt2" among them: the converter writes "gpt-2") are refused by the
# llama.cpp inside xllamacpp and get the "default" regexes in newer
# llama.cpp and in lrun; the C test checks them against "default".
BPE_VARIANTS = ["default", "gpt-2", "llama-bpe", "qwen2", "starcoder", "falcon", "deepseek-coder", "tekken",
                "gpt-4o", "chatglm-bpe", None]

N_SPM_PIECES = 3000

TOKENIZER_KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix"]


# ---------------------------------------------------------------- vocabularies

def read_tokenizer(path):
    r = gguf.GGUFReader(path)
    kv = {}
    for k in TOKENIZER_KEYS:
        f = r.fields.get(k)
        if f is not None:
            kv[k] = f.contents()
    return kv


def byte_decoder():
    """GPT-2's byte↔unicode table, inverted: character → byte."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table


def build_spm_vocab(kv):
    """A SentencePiece vocabulary: specials, byte tokens, then pieces made of
    SmolLM2's first normal tokens (spaces as ▁), scored in that order."""
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["<|im_start|>", "<|im_end|>", "<tool>"]
    types = [2, 3, 3] + [6] * 256 + [3, 3, 4]
    scores = [0.0] * len(tokens)
    seen = set(tokens)
    dec = byte_decoder()
    for text, typ in zip(kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]):
        if len(tokens) >= N_SPM_PIECES + 262:
            break
        if typ != 1:
            continue
        try:
            piece = bytes(dec[c] for c in text).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue
        piece = piece.replace(" ", "\u2581")
        if not piece or piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(1)
        scores.append(-float(len(tokens)))  # earlier BPE tokens are more frequent: higher scores
    return {"tokens": tokens, "types": types, "scores": scores, "bos": 1, "eos": 2, "unk": 0}


def write_tiny_model(path, tokenizer_kv):
    """A llama GGUF with one small layer of random f32 weights and the given tokenizer keys."""
    n_vocab = len(tokenizer_kv["tokenizer.ggml.tokens"])
    n_embd, n_ff, n_head = 16, 32, 2
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(n_embd // n_head)
    for k, v in tokenizer_kv.items():
        if v is None:
            continue
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif k == "tokenizer.ggml.scores":
            w.add_array(k, [float(x) for x in v])
        elif k == "tokenizer.ggml.token_type":
            w.add_array(k, [int(x) for x in v])
        else:
            w.add_array(k, list(v))
    rng = np.random.default_rng(0)

    def t(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        t("blk.0.%s.weight" % name, n_embd, n_embd)
    t("blk.0.ffn_gate.weight", n_ff, n_embd)
    t("blk.0.ffn_up.weight", n_ff, n_embd)
    t("blk.0.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- llama.cpp

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


def piece_hex(p):
    return (p.encode("utf-8") if isinstance(p, str) else bytes(p)).hex()


def tokenize_all(model_path, with_pieces=True):
    p = xllamacpp.CommonParams()
    p.model.path = model_path
    p.n_ctx = 256
    p.n_parallel = 1
    p.cpuparams.n_threads = 2
    p.warmup = False
    p.hostnames = ["127.0.0.1"]  # loopback only
    p.port = 0
    server = xllamacpp.Server(p)
    cli = Client(server.listening_address)
    cases = []
    for s in STRINGS:
        r = cli.post("/tokenize", {"content": s, "add_special": False, "parse_special": True, "with_pieces": True})
        case = {
            "ids": [t["id"] for t in r["tokens"]],
            "ids_nospecial": cli.post("/tokenize", {"content": s, "add_special": False,
                                                    "parse_special": False})["tokens"],
            "ids_add_special": cli.post("/tokenize", {"content": s, "add_special": True,
                                                      "parse_special": True})["tokens"],
        }
        if with_pieces:  # the bytes of each token, hex
            case["pieces"] = [piece_hex(t["piece"]) for t in r["tokens"]]
        cases.append(case)
    # Under ignore_eos, llama.cpp bans every end-of-generation token with a -inf bias.
    r = cli.post("/completion", {"prompt": "x", "n_predict": 1, "ignore_eos": True, "temperature": 0.0,
                                 "cache_prompt": False})
    eog = sorted(b["token"] for b in r["generation_settings"]["logit_bias"] if b["bias"] is None)
    del cli
    del server
    return cases, eog


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = os.environ.get("LRUN_MODEL") or os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(default_model):
        default_model = "/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf"
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--out", default=os.path.join(HERE, "tokenizer.json"))
    args = ap.parse_args()

    kv = read_tokenizer(args.model)
    spm = build_spm_vocab(kv)
    vocabs = []
    with tempfile.TemporaryDirectory() as tmp:
        cases, eog = tokenize_all(args.model)
        vocabs.append({"name": "smollm", "source": "model", "pre": kv["tokenizer.ggml.pre"], "eog": eog,
                       "cases": cases})
        for pre in BPE_VARIANTS:
            v = dict(kv)
            v["tokenizer.ggml.pre"] = pre
            path = os.path.join(tmp, "bpe-%s.gguf" % pre)
            write_tiny_model(path, v)
            # Same tokens as "smollm": their bytes are checked there once.
            cases, eog = tokenize_all(path, with_pieces=False)
            vocabs.append({"name": "bpe-%s" % (pre or "missing"), "source": "model", "pre": pre, "eog": eog,
                           "cases": cases})
            print("bpe", pre, "done", file=sys.stderr)
        for name, prefix in (("spm", True), ("spm-noprefix", False)):
            v = {
                "tokenizer.ggml.model": "llama",
                "tokenizer.ggml.tokens": spm["tokens"],
                "tokenizer.ggml.scores": spm["scores"],
                "tokenizer.ggml.token_type": spm["types"],
                "tokenizer.ggml.bos_token_id": spm["bos"],
                "tokenizer.ggml.eos_token_id": spm["eos"],
                "tokenizer.ggml.unknown_token_id": spm["unk"],
                "tokenizer.ggml.add_space_prefix": prefix,
            }
            path = os.path.join(tmp, "%s.gguf" % name)
            write_tiny_model(path, v)
            cases, eog = tokenize_all(path)
            vocabs.append({"name": name, "source": "spm_vocab", "add_space_prefix": prefix, "eog": eog,
                           "cases": cases})
            print(name, "done", file=sys.stderr)

    out = {
        "generator": "tests/golden/make_tokenizer_golden.py",
        "reference": "llama.cpp via xllamacpp %s (/tokenize, add_special, parse_special, with_pieces)"
                     % getattr(xllamacpp, "__version__", "?"),
        "model": os.path.basename(args.model),
        "strings": STRINGS,
        "spm_vocab": spm,
        "vocabs": vocabs,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (args.out, os.path.getsize(args.out)), file=sys.stderr)


if __name__ == "__main__":
    main()
