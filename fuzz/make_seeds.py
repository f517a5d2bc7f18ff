#!/usr/bin/env python3
"""Writes the seed corpora for calq's fuzz targets.

Usage: fuzz/make_seeds.py --shared ../shared --out build-fuzz/seeds

The real files in ../shared are megabytes (token arrays, weights); a fuzzer spends its time on
the first few kilobytes. So the seeds are small files that keep the real files' structure:
  gguf/         each shared GGUF with arrays cut to a few elements and tensors shrunk to one block
                row (same keys, value types, tensor names and types), the first bytes of the real
                files, and synthetic files with every value type, nested arrays, a custom
                alignment and one tensor of every ggml type;
  safetensors/  the reference checkpoint's header with tiny shapes, and synthetic files;
  tokenizer/    each shared tokenizer.json with its vocabulary cut to a few hundred tokens, and
                small hand-made tokenizers using each normalizer, pre-tokenizer and decoder.
"""
import argparse
import json
import os
import struct
import sys

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "B",
              U64: "Q", I64: "q", F64: "d"}
# ggml type id -> (block size, bytes per block), from llama.cpp's ggml-common.h
GGML = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
        9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
        14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
        19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
        25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
        34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18), 42: (64, 18)}


# ---- GGUF ----

class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        size = struct.calcsize("<" + fmt)
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def string(self):
        n = self.take("Q")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s

    def value(self, vtype, keep):
        if vtype == STR:
            return self.string()
        if vtype == ARR:
            etype, n = self.take("I"), self.take("Q")
            items = [self.value(etype, keep) for _ in range(n)]
            return (etype, items[:keep])
        return self.take(SCALAR_FMT[vtype])


def read_gguf(path, keep):
    with open(path, "rb") as f:
        r = Reader(f.read())
    assert r.take("4s") == b"GGUF"
    version, n_tensors, n_kv = r.take("I"), r.take("Q"), r.take("Q")
    kvs = []
    for _ in range(n_kv):
        key, vtype = r.string(), r.take("I")
        kvs.append((key, vtype, r.value(vtype, keep)))
    tensors = []
    for _ in range(n_tensors):
        name, n_dims = r.string(), r.take("I")
        ne = [r.take("Q") for _ in range(n_dims)]
        gtype, _offset = r.take("I"), r.take("Q")
        tensors.append((name, ne, gtype))
    return version, kvs, tensors


def enc_value(vtype, v):
    if vtype == STR:
        return struct.pack("<Q", len(v)) + v
    if vtype == ARR:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(enc_value(etype, x) for x in items)
    return struct.pack("<" + SCALAR_FMT[vtype], v)


def write_gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key bytes, type, value)], tensors: [(name bytes, ne, ggml type, data bytes)].
    llama.cpp's layout: header padded to the alignment, each tensor padded to it."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for key, vtype, v in kvs:
        out += struct.pack("<Q", len(key)) + key + struct.pack("<I", vtype) + enc_value(vtype, v)
    offset = 0
    for name, ne, gtype, data in tensors:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(ne))
        out += b"".join(struct.pack("<Q", d) for d in ne) + struct.pack("<IQ", gtype, offset)
        offset += -(-len(data) // alignment) * alignment
    if tensors:
        out += bytes(-len(out) % alignment)
        for _, _, _, data in tensors:
            out += data + bytes(-len(data) % alignment)
    return bytes(out)


def tensor_bytes(ne, gtype, seed):
    block, size = GGML[gtype]
    n = 1
    for d in ne:
        n *= d
    count = n // block * size
    return bytes((seed * 131 + k * 17) & 0xFF for k in range(count))


def shrink(ne, gtype):
    block = GGML[gtype][0]
    return [block] if len(ne) == 1 else [block, 2] + [1] * (len(ne) - 2)


def gguf_seeds(shared, out):
    files = [os.path.join(shared, "models", "calq-ref-llama-f16.gguf")]
    for sub in ("peer-tests/llama.cpp-vocab", "peer-tests/llama.cpp-quants"):
        d = os.path.join(shared, sub)
        if os.path.isdir(d):
            files += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".gguf")]
    seeds = {}
    for path in files:
        if not os.path.exists(path):
            continue
        base = os.path.basename(path)[:-5]
        version, kvs, tensors = read_gguf(path, keep=6)
        small = [(n, shrink(ne, t), t) for n, ne, t in tensors[:6]]
        small = [(n, ne, t, tensor_bytes(ne, t, i)) for i, (n, ne, t) in enumerate(small)]
        seeds[f"mini-{base}"] = write_gguf(kvs, small, version)
        with open(path, "rb") as f:
            head = f.read(4096)
        for n in (64, 512, 4096):
            seeds[f"head{n}-{base}"] = head[:n]

    every = [(b"u8", U8, 255), (b"i8", I8, -128), (b"u16", U16, 65535), (b"i16", I16, -32768),
             (b"u32", U32, 7), (b"i32", I32, -7), (b"f32", F32, 0.5), (b"bool", BOOL, 1),
             (b"str", STR, b"hello"), (b"u64", U64, 2**64 - 1), (b"i64", I64, -(2**63)),
             (b"f64", F64, 1 / 3), (b"arr.str", ARR, (STR, [b"a", b"", b"<s>"])),
             (b"arr.f32", ARR, (F32, [0.0, -1.5])), (b"arr.i32", ARR, (I32, [1, 2, 3])),
             (b"arr.bool", ARR, (BOOL, [0, 1])), (b"arr.empty", ARR, (U8, [])),
             (b"arr.nested", ARR, (ARR, [(I32, [1]), (STR, [b"x"])]))]
    seeds["synthetic-every-value-type"] = write_gguf(every, [])
    seeds["synthetic-v2"] = write_gguf(every[:3], [(b"t", [4, 2], 0, bytes(32))], version=2)
    seeds["synthetic-align64"] = write_gguf(
        [(b"general.alignment", U32, 64)],
        [(b"a", [3], 0, bytes(12)), (b"b", [32, 1], 8, bytes(34))], alignment=64)
    all_types = [(f"t{t}".encode(), shrink([1, 1], t), t, tensor_bytes(shrink([1, 1], t), t, t))
                 for t in sorted(GGML)]
    seeds["synthetic-every-ggml-type"] = write_gguf([(b"general.architecture", STR, b"llama")],
                                                    all_types)
    seeds["synthetic-4d"] = write_gguf([], [(b"x", [2, 1, 2, 2], 1, bytes(16))])
    write_all(os.path.join(out, "gguf"), seeds)


# ---- safetensors ----

def safetensors(tensors, metadata=None):
    header, data = {}, bytearray()
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data)


def safetensors_seeds(shared, out):
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I64": 8, "F64": 8}
    seeds = {}
    path = os.path.join(shared, "models", "calq-ref-llama", "model.safetensors")
    if os.path.exists(path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        metadata = header.pop("__metadata__", None)
        tensors = []
        for i, (name, entry) in enumerate(sorted(header.items())[:8]):
            shape = [min(d, 3 + i % 2) for d in entry["shape"]]
            count = 1
            for d in shape:
                count *= d
            nbytes = count * sizes[entry["dtype"]]
            tensors.append((name, entry["dtype"], shape,
                            bytes((k * 7 + i) & 0x3F for k in range(nbytes))))
        seeds["mini-calq-ref-llama"] = safetensors(tensors, metadata)
    seeds["synthetic-dtypes"] = safetensors(
        [("a", "F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3)),
         ("b", "F16", [3], bytes(6)), ("c", "BF16", [1, 2], b"\x80\x3f\x00\x40"),
         ("d", "F32", [0], b""), ("e", "F32", [], struct.pack("<f", 7))],
        {"format": "pt"})
    seeds["synthetic-int8"] = safetensors([("q", "I8", [4], bytes(4))])
    seeds["synthetic-empty"] = safetensors([])
    seeds["synthetic-metadata-only"] = safetensors([], {"a": "b"})
    write_all(os.path.join(out, "safetensors"), seeds)


# ---- tokenizer.json ----

def shrink_tokenizer(tok, n_vocab=300, n_merges=150, n_added=8):
    model = tok.get("model", {})
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        # The first tokens, plus the first merges with the tokens they join and make.
        keep = {t: i for t, i in vocab.items() if i < n_vocab}
        merges = model.get("merges", [])[:n_merges]
        for m in merges:
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            for t in (a, b, a + b):
                if t in vocab:
                    keep[t] = vocab[t]
        model["vocab"] = dict(sorted(keep.items(), key=lambda kv: kv[1]))
        model["merges"] = merges
    added = [t for t in tok.get("added_tokens", []) if t.get("id", 0) < n_vocab]
    tok["added_tokens"] = sorted(added, key=lambda t: t.get("id", 0))[:n_added]
    return tok


def tiny_tokenizer(normalizer, pre_tokenizer, decoder, byte_fallback=False):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789 ,.!?\u2581\u0120":
        vocab.setdefault(c, len(vocab))
    for w in ("he", "ll", "hell", "hello", "wo", "or", "ld", "\u2581h", "\u0120w"):
        vocab.setdefault(w, len(vocab))
    if byte_fallback:
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = ["h e", "l l", "he ll", "hell o", "w o", "o r", "l d", "\u2581 h", "\u0120 w"]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for c, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))],
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": decoder,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": byte_fallback, "ignore_merges": False, "vocab": vocab,
                  "merges": merges},
    }


def tokenizer_seeds(shared, out):
    seeds = {}
    for name, rel in (("calq-ref-llama", "models/calq-ref-llama/tokenizer.json"),
                      ("bytelevel-16k", "tokenizers/bytelevel-16k/tokenizer.json"),
                      ("smollm2-49k", "tokenizers/smollm2-49k/tokenizer.json")):
        path = os.path.join(shared, rel)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                seeds[f"mini-{name}"] = json.dumps(shrink_tokenizer(json.load(f)),
                                                   ensure_ascii=False).encode()
    metaspace = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                 "split": False}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    split = {"type": "Split", "pattern": {"Regex": "\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+|\\s+"},
             "behavior": "Isolated", "invert": False}
    variants = {
        "spm": ({"type": "Sequence", "normalizers": [
                    {"type": "Prepend", "prepend": "\u2581"},
                    {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
                None,
                {"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"},
                    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}, True),
        "metaspace": ({"type": "NFKC"}, metaspace, {"type": "Metaspace", "replacement": "\u2581",
                                                   "prepend_scheme": "first", "split": False},
                      True),
        "bytelevel": ({"type": "NFC"}, {"type": "Sequence", "pretokenizers": [split, byte_level]},
                      {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                       "use_regex": True}, False),
        "digits": (None, {"type": "Sequence", "pretokenizers": [
                       {"type": "Digits", "individual_digits": True}, byte_level]},
                   byte_level, False),
        "lowercase": ({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"},
                                                           {"type": "StripAccents"}]},
                      {"type": "Whitespace"}, None, False),
    }
    for name, (norm, pre, dec, fallback) in variants.items():
        seeds[f"tiny-{name}"] = json.dumps(tiny_tokenizer(norm, pre, dec, fallback),
                                           ensure_ascii=False).encode()
    write_all(os.path.join(out, "tokenizer"), seeds)


# ---- pre-tokenizer texts: a selector byte (which tokenizer.ggml.pre entry) + a text ----

def pretokenize_seeds(shared, out):
    seeds = {}
    inp = os.path.join(shared, "peer-tests/llama.cpp-vocab/ggml-vocab-qwen2.gguf.inp")
    texts = []
    if os.path.exists(inp):
        with open(inp, "rb") as f:
            texts = [t for t in f.read().split(b"\n__ggml_vocab_test__\n") if t]
    with open(os.path.join(shared, "data/heldout.txt"), "rb") as f:
        texts.append(f.read(2048))
    for i, text in enumerate(texts):
        seeds[f"text-{i:02d}"] = bytes([i * 7 % 256]) + text
    write_all(os.path.join(out, "pretokenize"), seeds)


def write_all(folder, seeds):
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    print(f"make_seeds: {len(seeds)} seeds in {folder}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    gguf_seeds(args.shared, args.out)
    safetensors_seeds(args.shared, args.out)
    tokenizer_seeds(args.shared, args.out)
    pretokenize_seeds(args.shared, args.out)


if __name__ == "__main__":
    main()
