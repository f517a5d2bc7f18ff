"""Readers for hf_checkpoint_check.py: safetensors files and folders, GGUF files, E4M3 and BF16 values, LSB-first
bit streams in int32 words. Python 3 + numpy; no code copied from the projects named.

Facts relied on:
 [ST]   safetensors: u64 LE header length, a JSON header {name: {dtype, shape, data_offsets [begin, end)
        relative to the byte buffer after the header}, "__metadata__": {str: str}}; the buffer is entirely
        indexed, without holes or overlaps (huggingface/safetensors README). transformers writes
        __metadata__ {"format": "pt"}; shards list every tensor in model.safetensors.index.json "weight_map",
        "metadata.total_size" being the sum of the tensors' byte sizes (huggingface_hub split_*_into_shards).
 [E4M3] OCP FP8 E4M3 ("fn"): sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; S.1111.111 NaN.
 [GGUF] ggml docs/gguf.md (v3): magic "GGUF", u32 version, u64 tensor count, u64 KV count, KVs (string key,
        u32 type, value), tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset), data at
        the next multiple of general.alignment (default 32). calq docs/formats.md: calq-specific tensors are
        1-D I8 (type 24) byte tensors with calq.qtensor.<name>.format / .shape, rows in Hugging Face order.
"""
import json
import math
import os
import struct

import numpy as np

# safetensors dtype -> (bytes per element, numpy dtype used to read it raw)
ST_DTYPES = {"BOOL": (1, np.uint8), "U8": (1, np.uint8), "I8": (1, np.int8), "F8_E4M3": (1, np.uint8),
             "F8_E5M2": (1, np.uint8), "I16": (2, np.int16), "U16": (2, np.uint16), "F16": (2, np.float16),
             "BF16": (2, np.uint16), "I32": (4, np.int32), "U32": (4, np.uint32), "F32": (4, np.float32),
             "I64": (8, np.int64), "U64": (8, np.uint64), "F64": (8, np.float64)}
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def e4m3_table():
    """float32 value of every E4M3 ("fn") byte [E4M3]."""
    out = np.empty(256, np.float32)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        e, m = (b >> 3) & 0xF, b & 7
        if e == 15 and m == 7:
            out[b] = np.nan
        elif e == 0:
            out[b] = sign * m / 8.0 * 2.0 ** -6
        else:
            out[b] = sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return out


E4M3 = e4m3_table()


def to_f32(arr, dtype):
    """A tensor of a float safetensors/ggml dtype as float32 (exact: every such value is an f32)."""
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F8_E4M3":
        return E4M3[arr]
    return arr.astype(np.float32)


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, where, tensor, msg):
        self.lines.append(f"{where}: {tensor}: {msg}" if tensor else f"{where}: {msg}")


class SafetensorsFile:
    """One .safetensors file: header checked against [ST], tensors read on demand."""

    def __init__(self, path, probs):
        self.path, self.name, self.tensors, self.metadata = path, os.path.basename(path), {}, None
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                probs.add(self.name, None, "shorter than the 8-byte header length")
                return
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > MAX_HEADER:
                probs.add(self.name, None, f"header length {n} exceeds the file ({size} bytes) or 100 MiB")
                return
            try:
                header = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                probs.add(self.name, None, f"header is not JSON: {e}")
                return
        if not isinstance(header, dict):
            probs.add(self.name, None, "header is not a JSON object")
            return
        self.data_start, data_len = 8 + n, size - 8 - n
        self.metadata = header.pop("__metadata__", None)
        if not isinstance(self.metadata, dict) or self.metadata.get("format") != "pt":
            probs.add(self.name, "__metadata__", f'must be {{"format": "pt"}} (transformers), got {self.metadata!r}')
        spans, bad = [], False
        for name, info in header.items():
            ok = isinstance(info, dict) and info.get("dtype") in ST_DTYPES and isinstance(info.get("shape"), list) \
                and all(isinstance(d, int) and d >= 0 for d in info["shape"]) \
                and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2 \
                and all(isinstance(o, int) for o in info["data_offsets"])
            if not ok:
                probs.add(self.name, name, f"bad header entry {info!r}")
                bad = True
                continue
            b, e = info["data_offsets"]
            want = math.prod(info["shape"]) * ST_DTYPES[info["dtype"]][0]
            if not 0 <= b <= e <= data_len or e - b != want:
                probs.add(self.name, name, f"data_offsets {b}..{e} do not hold {want} bytes within {data_len}")
                bad = True
                continue
            self.tensors[name] = info
            spans.append((b, e, name))
        spans.sort()
        pos = 0
        for b, e, name in spans:
            if b != pos:
                probs.add(self.name, name, f"byte buffer {'overlaps' if b < pos else 'has a hole'} at {pos}..{b}")
            pos = max(pos, e)
        if pos != data_len and not bad:
            probs.add(self.name, None, f"byte buffer has {data_len - pos} unindexed trailing bytes")

    def read(self, name):
        info = self.tensors[name]
        b, e = info["data_offsets"]
        with open(self.path, "rb") as f:
            f.seek(self.data_start + b)
            raw = f.read(e - b)
        return np.frombuffer(raw, dtype=np.dtype(ST_DTYPES[info["dtype"]][1]).newbyteorder("<")).reshape(info["shape"])


class Checkpoint:
    """All tensors of a folder: name -> (file, header entry)."""

    def __init__(self, folder, probs):
        self.folder, self.where, self.files = folder, {}, {}
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                idx = json.load(f)
            weight_map = idx.get("weight_map", {})
            for fname in sorted(set(weight_map.values())):
                if not os.path.exists(os.path.join(folder, fname)):
                    probs.add("model.safetensors.index.json", None, f"names missing shard {fname}")
                    continue
                self.files[fname] = SafetensorsFile(os.path.join(folder, fname), probs)
            total = 0
            for fname, st in self.files.items():
                for name, info in st.tensors.items():
                    total += info["data_offsets"][1] - info["data_offsets"][0]
                    if weight_map.get(name) != fname:
                        probs.add(fname, name, f"index.json maps it to {weight_map.get(name)!r}")
                    self.where[name] = (st, info)
            for name, fname in weight_map.items():
                if fname in self.files and name not in self.files[fname].tensors:
                    probs.add(fname, name, "listed in model.safetensors.index.json but not in the shard")
            size = idx.get("metadata", {}).get("total_size")
            if size is not None and size != total:
                probs.add("model.safetensors.index.json", None, f"metadata.total_size {size} != tensor bytes {total}")
        elif os.path.exists(os.path.join(folder, "model.safetensors")):
            st = SafetensorsFile(os.path.join(folder, "model.safetensors"), probs)
            self.files["model.safetensors"] = st
            for name, info in st.tensors.items():
                self.where[name] = (st, info)
        else:
            probs.add(os.path.basename(folder.rstrip("/")), None, "no model.safetensors or model.safetensors.index.json")

    def file_of(self, name):
        return self.where[name][0].name if name in self.where else "model.safetensors"

    def read(self, name):
        st, _ = self.where[name]
        return st.read(name)


def unpack_bits(words, bits, count):
    """Elements of `bits` bits from the little-endian bit stream of int32 `words` along the last axis
    (element i at stream bits [i*bits, i*bits + bits); stream bit j = bit j % 32 of word j // 32)."""
    w = words.astype(np.int64) & 0xFFFFFFFF
    nxt = np.concatenate([w[..., 1:], np.zeros_like(w[..., :1])], axis=-1)
    pair = w | (nxt << 32)  # word i and the bits that spill into word i + 1
    start = np.arange(count, dtype=np.int64) * bits
    return (pair[..., start // 32] >> (start % 32)) & ((1 << bits) - 1)




# -- GGUF ---------------------------------------------------------------------------------------------------
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGML_FLOAT = {0: ("F32", 4), 1: ("F16", 2), 30: ("BF16", 2)}
GGML_I8 = 24


def read_gguf(path):
    """(metadata dict, {name: (ggml type, ne list, absolute offset)}, raw bytes) of a GGUF v2/v3 file [GGUF]."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return vals[0]

    def string():
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, count = take("<I"), take("<Q")
            return [value(et) for _ in range(count)]
        return take(GGUF_SCALARS[t])

    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    pos = 4
    version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version}")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        ne = [take("<Q") for _ in range(take("<I"))]
        infos.append((name, take("<I"), ne, take("<Q")))
    align = meta.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    return meta, {name: (t, ne, base + off) for name, t, ne, off in infos}, data
