#!/usr/bin/env python3
"""tokenizer.json files and HF `tokenizers` goldens, for tests/tokjson_spec.lua.

Builds from scratch, with the `tokenizers` library (no hub downloads), one
tokenizer.json per pre-tokenizer family, each trained on the committed
corpus tests/golden/tokenizer_corpus.txt (a few hundred merges, so the files
stay small):

  gpt2      byte-level BPE, ByteLevel pre-tokenizer (GPT-2 regex), ByteLevel decoder
            ("gpt2-prefix": with add_prefix_space)
  llama3    Split(Llama-3 regex) + ByteLevel(use_regex=false), ignore_merges,
            TemplateProcessing "<|begin_of_text|> $A"
  qwen2     NFC, Split(Qwen2 regex: single digits) + ByteLevel(use_regex=false)
            ("nfkc", "nfkd": the NFKC or NFKD normalizer instead; "nfd-lower":
            NFD then Lowercase)
  llama2    SentencePiece-style BPE: Prepend("▁") + Replace(" ", "▁") normalizers,
            no pre-tokenizer, byte_fallback <0xNN>, unk, decoders Replace,
            ByteFallback, Fuse, Strip; TemplateProcessing "<s> $A"
  metaspace SentencePiece-style BPE with the Metaspace pre-tokenizer
            (prepend_scheme first) and decoder, byte_fallback
            ("metaspace-split": prepend_scheme always, split on ▁)
  words     WhitespaceSplit, Punctuation, Digits(individual) pre-tokenizers
            (and Whitespace + Digits contiguous + Splits of every behaviour in
            "words2"; Replace(regex) + Lowercase + Punctuation contiguous in
            "words3"), unk, Strip normalizer

Every family also gets 32 added tokens, one per combination of the flags
special, lstrip, rstrip, normalized and single_word.

For every family it records, for each string of STRINGS (REFERENCE.md's
tricky strings, specials alone and inside text): HF's ids with
add_special_tokens on and off, with special tokens not parsed
(encode_special_tokens), and decode() with and without skip_special_tokens.
Byte-level families also record decode() of id lists whose bytes are not
valid UTF-8 (HF gives U+FFFD for each maximal invalid subpart).

    python3 tests/golden/make_tokenizer_json_golden.py [OUT_DIR]

OUT_DIR defaults to tests/golden/tokjson; the spec also runs this script
into a temporary directory when `tokenizers` is importable.
"""
import json
import os
import sys

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))

GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
             r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
            r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

# Tricky strings (llama.cpp's test-tokenizer-0 set, as tests/golden/make_tokenizer_golden.py).
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
    "I'M HERE, YOU'RE THERE, it'S 'Ll 'vE",
    "a\u00a0b \u3000x y\u0085z \u2028 \u2003end  ",
    "\r\n", "a\r\nb\r\n\r\nc", "tabs\t\tand\t spaces \t",
    "½ ² ³ Ⅻ ٣٤٥ १२३ 12.5% $100 +1 <=> ^~|",
    "e\u0301 café naïve Æsir ǅemal",
    "नमस्ते दुनिया", "مرحبا بالعالم", "こんにちは世界", "안녕하세요 세계",
    "Mixed: English, русский, 中文, العربية, 123abc456def.",
    "zero\u200bwidth joiner\u200d! \u0001\u007f control", "mongolian\u180evowel separator",
    "bom\ufeffx \u2029para\u000bvt\u000cff \u1680ogham \u205fmath", "ΑΒΓ Σίσυφος ÀÉÎ ÕÜ Straße İstanbul",
    "  leading and trailing spaces  ",
    "\ufb01ne \u2460 \u3300 \u2126 \u212b A\u030a \u1e9b\u0323 \u0345\u0301a\u0300\u0316 \u1100\u1161\u11a8 \uac00\u11a8",
    "\u0130stanbul I\u0307 \u0130 \u1e9e \u01c4\u01c5\u01c6 \u03a3\u0391\u03a3 \u2c6f \ua7ad \U00010400 \u1f88 \u2160",
    "o\u0308\u0301 \u00f6\u0301 \u0ddc \u0dd9\u0dcf\u0dca \u304b\u3099 \u30cf\u309a \ufe30 \uff21\uff42 \u00bd\u2044", " " * 40 + "x" + "\n" * 20 + "9" * 30,
]

# Added tokens: one per combination of (special, lstrip, rstrip, normalized, single_word).
# Even ones look like words (so single_word matters), odd ones like markup.
FLAGS = [(bool(i & 16), bool(i & 8), bool(i & 4), bool(i & 2), bool(i & 1)) for i in range(32)]


def flag_content(i):
    return "zq%02d" % i if i % 2 == 0 else "<t%02d>" % i


def flag_strings():
    out = []
    for i in range(32):
        c = flag_content(i)
        out += [c, "a" + c + "b", " " + c + " ", "x  " + c + "  y", "hello " + c + " world", "Hi" + c]
    out += ["zq00zq02<t01><t03>", "<t05> zq06\n<t07>\tzq08 ", "<t1" + "zq1"]
    return out


def corpus_lines():
    with open(os.path.join(HERE, "tokenizer_corpus.txt"), encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line]


def train(pre, vocab_size, alphabet=None):
    """Vocabulary and merges trained on the corpus with a given pre-tokenizer."""
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre
    tr = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, initial_alphabet=alphabet or [])
    t.train_from_iterator(corpus_lines(), tr)
    m = json.loads(t.to_str())["model"]
    vocab = sorted(m["vocab"].items(), key=lambda kv: kv[1])
    merges = [tuple(x) if isinstance(x, list) else tuple(x.split(" ")) for x in m["merges"]]
    return [k for k, _ in vocab], merges


def bpe(tokens, merges, **kw):
    return models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, **kw)


def byte_level_family(name, specials):
    tokens, merges = train(pre_tokenizers.ByteLevel(add_prefix_space=False), 1200, pre_tokenizers.ByteLevel.alphabet())
    t = Tokenizer(bpe(tokens, merges, ignore_merges=(name == "llama3")))
    if name in ("gpt2", "gpt2-prefix"):
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=(name == "gpt2-prefix"), use_regex=True)
        t.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        regex = LLAMA3_RE if name == "llama3" else QWEN2_RE  # qwen2 and the normalizer families
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if name == "qwen2":
        t.normalizer = normalizers.NFC()
    elif name == "nfkc":
        t.normalizer = normalizers.NFKC()
    elif name == "nfkd":
        t.normalizer = normalizers.NFKD()
    elif name == "nfd-lower":
        t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if name == "llama3":
        t.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                          special_tokens=[("<|begin_of_text|>", t.token_to_id("<|begin_of_text|>"))])])
    return t


def spm_family(name):
    tokens, merges = train(pre_tokenizers.Metaspace(prepend_scheme="first"), 900)
    vocab = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + tokens
    t = Tokenizer(bpe(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if name == "llama2":
        t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
    else:
        scheme = "first" if name == "metaspace" else "always"
        t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=(scheme == "always"))
        t.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme=scheme),
                                       decoders.ByteFallback(), decoders.Fuse()])
    t.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ["<unk>", "<s>", "</s>"]])
    return t


def words_family(name):
    if name == "words":
        pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                       pre_tokenizers.Digits(individual_digits=True)])
    elif name == "words3":
        pre = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(behavior="contiguous"),
                                       pre_tokenizers.Split(Regex(r"\s+"), behavior="merged_with_next"),
                                       pre_tokenizers.Split(Regex(r"[lr]"), behavior="isolated", invert=True)])
    else:
        pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=False),
                                       pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="merged_with_previous"),
                                       pre_tokenizers.Split("q", behavior="merged_with_next"),
                                       pre_tokenizers.Split(Regex(r"x+"), behavior="contiguous"),
                                       pre_tokenizers.Split(Regex(r"z"), behavior="removed", invert=True)])
    tokens, merges = train(pre, 700)
    t = Tokenizer(bpe(["[UNK]"] + tokens, merges, unk_token="[UNK]"))
    if name == "words3":
        t.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"e{2,}|!+"), "#"), normalizers.Lowercase(),
                                             normalizers.Strip(left=False, right=True)])
    else:
        t.normalizer = normalizers.Sequence([normalizers.Strip(left=True, right=False)])
    t.pre_tokenizer = pre
    t.decoder = decoders.Fuse() if name == "words" else None
    t.add_special_tokens([AddedToken("[UNK]", special=True, normalized=False)])
    return t


FAMILIES = {
    "gpt2": lambda: byte_level_family("gpt2", ["<|endoftext|>"]),
    "gpt2-prefix": lambda: byte_level_family("gpt2-prefix", ["<|endoftext|>"]),
    "llama3": lambda: byte_level_family("llama3", ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]),
    "qwen2": lambda: byte_level_family("qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "nfkc": lambda: byte_level_family("nfkc", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "nfkd": lambda: byte_level_family("nfkd", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "nfd-lower": lambda: byte_level_family("nfd-lower", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "llama2": lambda: spm_family("llama2"),
    "metaspace": lambda: spm_family("metaspace"),
    "metaspace-split": lambda: spm_family("metaspace-split"),
    "words": lambda: words_family("words"),
    "words2": lambda: words_family("words2"),
    "words3": lambda: words_family("words3"),
}


def add_flag_tokens(t):
    for i, (special, lstrip, rstrip, normalized, single_word) in enumerate(FLAGS):
        tok = AddedToken(flag_content(i), single_word=single_word, lstrip=lstrip, rstrip=rstrip,
                         normalized=normalized, special=special)
        if special:
            t.add_special_tokens([tok])
        else:
            t.add_tokens([tok])


def bytes_to_unicode():
    """GPT-2's byte → char map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def invalid_decodes(t):
    """decode() of id lists whose bytes are not valid UTF-8 (byte-level families)."""
    chars = bytes_to_unicode()
    seqs = [b"\xf0\x9f", b"ab\xe2\x82A", b"\xff", b"\xc3", b"\xed\xa0\x80x", b"\xf4\x90\x80\x80", b"\xe0\x80",
            b"\xf0\x9f\xa6\x99\xf0\x9f\xa6", b"\xc0\xaf!", b"\x80\x80\xe4\xb8"]
    out = []
    for bs in seqs:
        ids = [t.token_to_id(chars[b]) for b in bs]
        if None in ids:
            continue
        out.append({"ids": ids, "decoded": t.decode(ids, skip_special_tokens=False)})
    return out


def record(t, strings):
    cases = []
    for s in strings:
        t.encode_special_tokens = False
        ids = t.encode(s, add_special_tokens=True).ids
        plain = t.encode(s, add_special_tokens=False).ids
        t.encode_special_tokens = True
        nospecial = t.encode(s, add_special_tokens=True).ids
        t.encode_special_tokens = False
        cases.append({
            "text": s, "ids": ids, "ids_plain": plain, "ids_nospecial": nospecial,
            "decoded": t.decode(ids, skip_special_tokens=False),
            "decoded_skip": t.decode(ids, skip_special_tokens=True),
        })
    return cases


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "tokjson")
    os.makedirs(out_dir, exist_ok=True)
    for name, build in FAMILIES.items():
        t = build()
        add_flag_tokens(t)
        specials = [a.content for a in t.get_added_tokens_decoder().values()]
        strings = STRINGS + flag_strings() + specials + ["x" + s + " y " + s + s for s in specials]
        t.save(os.path.join(out_dir, name + ".tokenizer.json"))
        golden = {
            "generator": "tests/golden/make_tokenizer_json_golden.py",
            "reference": "tokenizers %s" % tokenizers.__version__,
            "family": name, "tokenizer": name + ".tokenizer.json",
            "cases": record(t, strings),
        }
        if isinstance(t.decoder, decoders.ByteLevel):
            golden["invalid_decodes"] = invalid_decodes(t)
        with open(os.path.join(out_dir, name + ".golden.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")


if __name__ == "__main__":
    main()
