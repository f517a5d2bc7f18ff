#!/usr/bin/env python3
"""Writes a mixture-of-experts model made from the reference Llama ("sparse upcycling") for the
expert-calibration experiment of docs/RESULTS.md: a Mixtral (MixtralForCausalLM) Hugging Face
folder whose attention, norms, embedding and tokenizer are the reference model's, and whose every
MLP becomes `--experts` experts, each the dense MLP with multiplicative noise
(w * (1 + noise * N(0, 1))), top-`--top-k` routing renormalised as Mixtral does. The router rows are
w_e = c_e * d + spread * n_e with one shared random direction d and independent directions n_e,
c_e spaced from +skew to -skew with the middle experts near 0: tokens whose projection on d is
large go to the ends, the middle experts only win where the noise decides — a skewed router with
rarely used experts. Deterministic for a --seed. Needs numpy (Debian: python3-numpy).

Usage: bench/moe_upcycle.py --ref ../shared/models/calq-ref-llama --out /tmp/moe [--experts 8]
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = np.frombuffer(data[a:b], dtype=np.uint16 if info["dtype"] in ("BF16", "F16") else np.float32)
        if info["dtype"] == "BF16":
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            arr = raw.view(np.float16).astype(np.float32)
        else:
            arr = raw
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def to_bf16(a):
    # Round to nearest even, as torch does.
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        b = to_bf16(tensors[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--skew", type=float, default=3.0)
    p.add_argument("--spread", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    cfg = json.load(open(os.path.join(a.ref, "config.json")))
    w = read_safetensors(os.path.join(a.ref, "model.safetensors"))
    hidden, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    out = {}
    d = rng.standard_normal(hidden)
    d /= np.linalg.norm(d)
    coef = np.linspace(a.skew, -a.skew, a.experts) * np.abs(np.linspace(1.0, -1.0, a.experts)) ** 2
    for name, t in w.items():
        if ".mlp." not in name:
            out[name] = t
    for l in range(layers):
        pre = f"model.layers.{l}"
        dense = {k: w[f"{pre}.mlp.{k}_proj.weight"] for k in ("gate", "up", "down")}
        n = rng.standard_normal((a.experts, hidden))
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        # Scaled so that a logit is O(1) for the RMS-normed input (|x| ~ sqrt(hidden)).
        router = (coef[:, None] * d[None, :] + a.spread * n) / np.sqrt(hidden) * 4.0
        out[f"{pre}.block_sparse_moe.gate.weight"] = router.astype(np.float32)
        for e in range(a.experts):
            for k, hf in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
                t = dense[k]
                out[f"{pre}.block_sparse_moe.experts.{e}.{hf}.weight"] = (
                    t * (1.0 + a.noise * rng.standard_normal(t.shape))).astype(np.float32)
    os.makedirs(a.out, exist_ok=True)
    moe_cfg = dict(cfg)
    moe_cfg.update({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
                    "num_local_experts": a.experts, "num_experts_per_tok": a.top_k, "sliding_window": None,
                    "router_aux_loss_coef": 0.0, "output_router_logits": False})
    for k in ("mlp_bias", "attention_bias", "pretraining_tp"):
        moe_cfg.pop(k, None)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(moe_cfg, f, indent=2)
    write_safetensors(os.path.join(a.out, "model.safetensors"), out)
    for extra in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        src = os.path.join(a.ref, extra)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(a.out, extra))
    print(f"wrote {a.out}: {a.experts} experts, top-{a.top_k}, router coefficients {np.round(coef, 2).tolist()}")


if __name__ == "__main__":
    main()
