#!/usr/bin/env python3
"""Independent checker of quantized Hugging Face checkpoints (GPTQ, AWQ, compressed-tensors, bitsandbytes NF4)
of llama-type models, written from the producing projects' published code, apart from calq's writers.

    python3 hf_checkpoint_check.py DIR [--against FILE.gguf] [--json]

Parses the safetensors files itself (shards through model.safetensors.index.json), reads config.json's
`quantization_config` (and quantize_config.json for GPTQ), checks every tensor of every linear
(model.layers.L.self_attn.{q,k,v,o}_proj, model.layers.L.mlp.{gate,up,down}_proj) and of the unquantized
rest for presence, name, dtype and shape, unpacks the weights to float32 [N, K] (N = out features, K = in
features) and reports each problem on one line naming the file and the tensor; exit status 1 when there
is any. With --against, every linear is compared bit for bit with calq's dequantization of the same
quantization in a calq GGUF file (which needs `import calq`, PYTHONPATH=<build>/python); the unquantized
tensors are compared with the GGUF's float tensors.

Layout facts relied on (source of each in brackets; no code copied):
 [AG]   AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py (QuantLinear.__init__/pack/forward):
        qweight I32 [K/32*b, N], element k of column n at bits [k*b, k*b+b) of the little-endian bit stream
        formed by words 32j/32*b..; 3-bit elements straddle words (element 10 of 32 = bits 30..32); qzeros
        I32 [ceil(K/G), N/32*b], the same stream along N; scales [ceil(K/G), N] in the weight's dtype (F16 in
        practice; vLLM's GPTQ kernels take half); g_idx I32 [K] = k // G without act-order; bits 2, 3, 4, 8;
        group_size -1 = one group of K. The v1 writer stores zero - 1 and every reader adds 1 back; w =
        scale[g_idx[k], n] * (q - zero[g_idx[k], n]). A zero of 0 stores -1, which a per-field reader sees as
        2^b - 1 and turns into 2^b: v1 cannot hold it.
 [GM]   GPTQModel gptqmodel/utils/model.py convert_gptq_v1_to_v2_format_module: checkpoint_format "gptq_v2"
        stores the zero itself (v1 -> v2 adds 1 to every field). auto_gptq/quantization/config.py: config
        keys bits, group_size, desc_act, sym, true_sequential, static_groups, damp_percent, quant_method,
        checkpoint_format (default "gptq"), quantize_config.json beside config.json.
 [AWQ]  AutoAWQ awq/modules/linear/gemm.py (WQLinear_GEMM), awq/utils/packing_utils.py (AWQ_ORDER): 4-bit,
        qweight I32 [K, N/8] and qzeros I32 [K/G, N/8] packed along N, nibble slot i (bits 4i..4i+3) of word
        c holding column 8c + [0,2,4,6,1,3,5,7][i]; zeros raw; scales F16 [K/G, N]; w = s * (q - z).
        awq/models/_config.py to_transformers_dict: quant_method "awq", zero_point, group_size, bits, version.
        vLLM awq_marlin.py reads bits, group_size and zero_point and always applies qzeros.
 [CT]   compressed-tensors (vllm-project/compressed-tensors): compressors/pack_quantized/{base,helpers}.py:
        "pack-quantized" = weight_packed I32 [N, ceil(K*b/32)] packed along K, element i at bits [i*b, i*b+b)
        (for b dividing 32 the same as older versions' 32/b values per word), value stored as q + 2^(b-1)
        with q in [-2^(b-1), 2^(b-1) - 1] (quantization/utils/helpers.py calculate_range); weight_shape I64
        [2] = [N, K]; weight_zero_point only when asymmetric (group/channel), packed the same way along N
        (packed_dim=0): I32 [ceil(N*b/32), n_groups], storing zp + 2^(b-1); weight_g_idx only with actorder
        "group". Dequantization (q - zp) * scale, so (stored q - stored zp) * scale.
        quantization/lifecycle/initialize.py: scale shape [N, ceil(K/G)] (group), [N, 1] (channel), [1]
        (tensor; a 0-d [] before mid 2024, which vLLM still reads); scale dtype = the weight's float dtype.
        naive_quantized/base.py: "float-quantized" keeps `weight` as F8_E4M3 [N, K]; w = fp8 * scale.
        quantization/quant_args.py: QuantizationArgs is a pydantic model with extra="forbid" (keys num_bits,
        type, symmetric, group_size, strategy, block_structure, dynamic, actorder, scale_dtype, zp_dtype,
        observer, observer_kwargs); quant_scheme.py: QuantizationScheme keys targets, weights,
        input_activations, output_activations, format, also extra="forbid"; quant_config.py: config keys.
        vLLM compressed_tensors_wNa16.py: 4 and 8 bits only (uint4b8/uint8b128, or uint4/uint8 with zeros).
 [VM]   vLLM quantization/utils/marlin_utils.py: Marlin takes group sizes -1, 32, 64, 128 and per shard
        N % 64 == 0 (GPTQ_MARLIN_MIN_THREAD_N) and K % 128 == 0 (MIN_THREAD_K); gptq_marlin symmetric
        uint4b8/uint8b128 (qzeros unread), awq_marlin uint4/uint8 with zero points. Reported as notes.
safetensors, GGUF and E4M3 facts: hf_readers.py; bitsandbytes NF4 (transformers' 4-bit serialization): hf_bnb.py.
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_readers import (E4M3, GGML_FLOAT, GGML_I8, Checkpoint, Problems,  # noqa: E402
                        read_gguf, to_f32, unpack_bits)
import hf_bnb  # noqa: E402

LINEARS = (("self_attn", "q_proj", "attn_q"), ("self_attn", "k_proj", "attn_k"), ("self_attn", "v_proj", "attn_v"),
           ("self_attn", "o_proj", "attn_output"), ("mlp", "gate_proj", "ffn_gate"), ("mlp", "up_proj", "ffn_up"),
           ("mlp", "down_proj", "ffn_down"))
FLOAT_DTYPES = ("F16", "BF16", "F32")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # [AWQ]


def dequant(codes, zeros, scales, g_idx):
    """float32 [N, K]: scales[n, g] * (codes[n, k] - zeros[n, g]), g = g_idx[k]; one f32 rounding."""
    diff = (codes - zeros[:, g_idx]).astype(np.float32)
    return scales[:, g_idx] * diff


class Model:
    """The llama-type shapes from config.json."""

    def __init__(self, cfg):
        self.hidden, self.inter = cfg["hidden_size"], cfg["intermediate_size"]
        self.heads = cfg["num_attention_heads"]
        self.kv = cfg.get("num_key_value_heads") or self.heads
        self.head_dim = cfg.get("head_dim") or self.hidden // self.heads
        self.layers, self.vocab = cfg["num_hidden_layers"], cfg["vocab_size"]
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        self.attn_bias, self.mlp_bias = bool(cfg.get("attention_bias")), bool(cfg.get("mlp_bias"))

    def linears(self):
        """(HF prefix, GGUF name, N, K, has_bias) of every linear."""
        q, kv, h = self.heads * self.head_dim, self.kv * self.head_dim, self.hidden
        nk = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
              "gate_proj": (self.inter, h), "up_proj": (self.inter, h), "down_proj": (h, self.inter)}
        for layer in range(self.layers):
            for block, proj, gguf in LINEARS:
                n, k = nk[proj]
                yield (f"model.layers.{layer}.{block}.{proj}", f"blk.{layer}.{gguf}.weight", n, k,
                       self.attn_bias if block == "self_attn" else self.mlp_bias)

    def dense(self):
        """(HF name, GGUF name, shape) of the unquantized tensors."""
        out = [("model.embed_tokens.weight", "token_embd.weight", [self.vocab, self.hidden]),
               ("model.norm.weight", "output_norm.weight", [self.hidden])]
        if not self.tied:
            out.append(("lm_head.weight", "output.weight", [self.vocab, self.hidden]))
        for layer in range(self.layers):
            out += [(f"model.layers.{layer}.input_layernorm.weight", f"blk.{layer}.attn_norm.weight", [self.hidden]),
                    (f"model.layers.{layer}.post_attention_layernorm.weight", f"blk.{layer}.ffn_norm.weight",
                     [self.hidden])]
        return out


class Checker:
    def __init__(self, folder):
        self.folder, self.probs, self.weights, self.family, self.expected = folder, Problems(), {}, None, set()
        self.quant = {}  # prefix -> (bits, elements per scale (K: per row, 0: per tensor), symmetric, K)
        with open(os.path.join(folder, "config.json")) as f:
            self.cfg = json.load(f)
        self.ckpt = Checkpoint(folder, self.probs)
        self.model = Model(self.cfg)

    # -- helpers ------------------------------------------------------------------------------------------
    def tensor(self, name, dtypes, shape):
        """The tensor if present with one of `dtypes` and `shape` (None: any shape), else None + a problem."""
        self.expected.add(name)
        if name not in self.ckpt.where:
            self.probs.add(self.ckpt.file_of(name), name, "missing")
            return None
        info = self.ckpt.where[name][1]
        ok = True
        if info["dtype"] not in dtypes:
            self.probs.add(self.ckpt.file_of(name), name, f"dtype {info['dtype']}, expected {'/'.join(dtypes)}")
            ok = False
        if shape is not None and list(info["shape"]) != list(shape):
            self.probs.add(self.ckpt.file_of(name), name, f"shape {info['shape']}, expected {list(shape)}")
            ok = False
        return self.ckpt.read(name) if ok else None

    def dtype_of(self, name):
        return self.ckpt.where[name][1]["dtype"]

    def problem(self, tensor, msg, name_for_file=None):
        self.probs.add(self.ckpt.file_of(name_for_file or tensor) if tensor else "config.json", tensor, msg)

    def bias(self, prefix, n, has_bias):
        if has_bias:
            self.tensor(prefix + ".bias", FLOAT_DTYPES, [n])

    # -- families -----------------------------------------------------------------------------------------
    def check_gptq(self, qc):
        self.family = "gptq"
        fmt = qc.get("checkpoint_format", qc.get("format", "gptq"))
        if "checkpoint_format" in qc and "format" in qc and qc["format"] != qc["checkpoint_format"]:
            self.problem(None, f"checkpoint_format {qc['checkpoint_format']!r} != format {qc['format']!r}")
        if fmt not in ("gptq", "gptq_v2"):
            self.problem(None, f"checkpoint_format {fmt!r} is neither 'gptq' (v1) nor 'gptq_v2'")
            return
        bits, group, sym, desc_act = qc.get("bits"), qc.get("group_size"), qc.get("sym", True), qc.get("desc_act")
        if bits not in (2, 3, 4, 8):
            self.problem(None, f"GPTQ bits {bits!r}, expected 2, 3, 4 or 8")
            return
        if not isinstance(group, int) or not (group == -1 or group > 0):
            self.problem(None, f"GPTQ group_size {group!r}, expected -1 or a positive integer")
            return
        for key in ("sym", "desc_act"):
            if not isinstance(qc.get(key), bool):
                self.problem(None, f"GPTQ {key} {qc.get(key)!r}, expected true/false")
        side = os.path.join(self.folder, "quantize_config.json")
        if os.path.exists(side):
            with open(side) as f:
                sc = json.load(f)
            for key in ("bits", "group_size", "sym", "desc_act", "checkpoint_format", "quant_method"):
                if key in sc and sc[key] != qc.get(key, {"checkpoint_format": "gptq"}.get(key)):
                    self.probs.add("quantize_config.json", None, f"{key} {sc[key]!r} != config.json's {qc.get(key)!r}")
        v1, mask = fmt == "gptq", (1 << bits) - 1
        for prefix, gguf, n, k, has_bias in self.model.linears():
            g = k if group == -1 else group
            ng = -(-k // g)
            if k % 32 or n % 32:
                self.problem(prefix + ".qweight", f"K={k} and N={n} must be multiples of 32 (whole bit streams)")
                continue
            qw = self.tensor(prefix + ".qweight", ("I32",), [k * bits // 32, n])
            qz = self.tensor(prefix + ".qzeros", ("I32",), [ng, n * bits // 32])
            sc = self.tensor(prefix + ".scales", ("F16",), [ng, n])
            gi = self.tensor(prefix + ".g_idx", ("I32",), [k])
            self.bias(prefix, n, has_bias)
            if any(t is None for t in (qw, qz, sc, gi)):
                continue
            stored = unpack_bits(qz, bits, n).T  # [N, groups]
            if v1 and np.any(stored == mask):
                self.problem(prefix + ".qzeros", f"v1 (checkpoint_format 'gptq') stores zero - 1 = {mask} (zero 0 "
                             f"stored as -1), read back as zero {mask + 1}: v1 cannot hold a zero of 0; use gptq_v2")
            zeros = stored + 1 if v1 else stored
            if sym and np.any(zeros != 1 << (bits - 1)):
                bad = int(np.count_nonzero(zeros != 1 << (bits - 1)))
                self.problem(prefix + ".qzeros", f"sym: every zero must be {1 << (bits - 1)} "
                             f"(stored {(1 << (bits - 1)) - v1} in {fmt}); {bad} are not")
            gi = gi.astype(np.int64)
            if np.any((gi < 0) | (gi >= ng)):
                self.problem(prefix + ".g_idx", f"values outside [0, {ng})")
                continue
            if not desc_act and np.any(gi != np.arange(k) // g):
                self.problem(prefix + ".g_idx", f"desc_act false but g_idx is not k // {g}")
            codes = unpack_bits(np.ascontiguousarray(qw.T), bits, k)  # [N, K]
            self.weights[prefix] = dequant(codes, zeros, sc.T.astype(np.float32), gi)
            self.quant[prefix] = (bits, min(g, k), bool(sym), k)

    def check_awq(self, qc):
        self.family = "awq"
        if str(qc.get("version", "")).lower() != "gemm":
            self.problem(None, f"AWQ version {qc.get('version')!r}, only 'gemm' is checked")
            return
        bits, group = qc.get("bits"), qc.get("group_size")
        if bits != 4:
            self.problem(None, f"AWQ GEMM bits {bits!r}, expected 4")
            return
        if qc.get("zero_point") is not True:
            self.problem(None, f"AWQ zero_point {qc.get('zero_point')!r}: AutoAWQ's GEMM writer needs zeros and "
                         "vLLM applies qzeros always; expected true")
        if not isinstance(group, int) or not (group == -1 or group > 0):
            self.problem(None, f"AWQ group_size {group!r}, expected -1 or a positive integer")
            return
        for prefix, gguf, n, k, has_bias in self.model.linears():
            g = k if group == -1 else group
            if k % g or n % 8:
                self.problem(prefix + ".qweight", f"K={k} must be a multiple of the group {g} and N={n} of 8")
                continue
            qw = self.tensor(prefix + ".qweight", ("I32",), [k, n // 8])
            qz = self.tensor(prefix + ".qzeros", ("I32",), [k // g, n // 8])
            sc = self.tensor(prefix + ".scales", ("F16",), [k // g, n])
            self.bias(prefix, n, has_bias)
            if any(t is None for t in (qw, qz, sc)):
                continue
            codes = self.awq_unpack(qw).T  # [N, K]
            zeros = self.awq_unpack(qz).T  # [N, groups]
            self.weights[prefix] = dequant(codes, zeros, sc.T.astype(np.float32), np.arange(k) // g)
            self.quant[prefix] = (4, min(g, k), None, k)

    @staticmethod
    def awq_unpack(words):
        """[R, C] words -> [R, 8C] nibbles, slot i of word c going to column 8c + AWQ_ORDER[i]."""
        w = words.astype(np.int64) & 0xFFFFFFFF
        slots = (w[..., None] >> (4 * np.arange(8))) & 0xF  # [R, C, 8] by slot
        out = np.empty_like(slots)
        out[..., list(AWQ_ORDER)] = slots
        return out.reshape(words.shape[0], -1)

    def check_ct(self, qc):
        self.family = "compressed-tensors"
        top_keys = {"config_groups", "quant_method", "kv_cache_scheme", "format", "quantization_status",
                    "global_compression_ratio", "ignore", "sparsity_config", "transform_config", "version",
                    "run_compressed"}
        for key in qc:
            if key not in top_keys:
                self.problem(None, f"quantization_config key {key!r} unknown to compressed-tensors")
        groups = qc.get("config_groups")
        if not isinstance(groups, dict) or not groups:
            self.problem(None, "compressed-tensors config_groups missing or empty")
            return
        ignore = qc.get("ignore") or []
        if not self.model.tied and not self.matches(ignore, "lm_head", "Linear"):
            self.problem(None, "compressed-tensors ignore must contain lm_head (it is stored unquantized)")
        schemes = []
        for gname, scheme in groups.items():
            if not isinstance(scheme, dict):
                self.problem(None, f"config_groups.{gname}: preset names are not checked; give the scheme")
                continue
            for key in scheme:
                if key not in ("targets", "weights", "input_activations", "output_activations", "format"):
                    self.problem(None, f"config_groups.{gname}: QuantizationScheme key {key!r} unknown")
            args = {}
            for part in ("weights", "input_activations", "output_activations"):
                if scheme.get(part) is not None:
                    args[part] = self.ct_args(f"config_groups.{gname}.{part}", scheme[part])
            schemes.append((gname, scheme, args))
        for prefix, gguf, n, k, has_bias in self.model.linears():
            hit = [s for s in schemes if self.matches(s[1].get("targets") or [], prefix, "Linear")]
            if self.matches(ignore, prefix, "Linear") or not hit:
                self.problem(prefix + ".weight", "not quantized by any config group (ignored or untargeted)",
                             prefix + ".weight_packed")
                continue
            gname, scheme, args = hit[0]
            w = args.get("weights")
            if w is None:
                self.problem(None, f"config_groups.{gname}: no weights args")
                continue
            fmt = scheme.get("format") or qc.get("format")
            self.bias(prefix, n, has_bias)
            if fmt == "pack-quantized":
                self.ct_packed(prefix, n, k, w, gname)
            elif fmt == "float-quantized":
                self.ct_float(prefix, n, k, w, args.get("input_activations"), gname)
            else:
                self.problem(None, f"config_groups.{gname}: format {fmt!r} not checked "
                             "(pack-quantized, float-quantized)")

    @staticmethod
    def matches(targets, name, cls):
        """compressed-tensors target matching: a class name, 're:<regex>' (re.match) or the module name."""
        for t in targets:
            if t == cls or t == name or (t.startswith("re:") and re.match(t[3:], name)):
                return True
        return False

    def ct_args(self, where, a):
        """QuantizationArgs [CT]: unknown keys and bad values are problems; returns normalised args."""
        known = {"num_bits", "type", "symmetric", "group_size", "strategy", "block_structure", "dynamic",
                 "actorder", "scale_dtype", "zp_dtype", "observer", "observer_kwargs"}
        if not isinstance(a, dict):
            self.problem(None, f"{where}: not an object")
            return None
        for key in a:
            if key not in known:
                self.problem(None, f"{where}: QuantizationArgs key {key!r} unknown (compressed-tensors forbids extras)")
        out = dict(num_bits=a.get("num_bits", 8), type=str(a.get("type", "int")).lower(),
                   symmetric=a.get("symmetric", True), group_size=a.get("group_size"), strategy=a.get("strategy"),
                   dynamic=a.get("dynamic", False), actorder=a.get("actorder"))
        if out["type"] not in ("int", "float"):
            self.problem(None, f"{where}: type {a.get('type')!r}")
        if not isinstance(out["num_bits"], int) or not isinstance(out["symmetric"], bool):
            self.problem(None, f"{where}: num_bits/symmetric of the wrong type")
        g = out["group_size"]
        if g is not None and not isinstance(g, int):
            self.problem(None, f"{where}: group_size {g!r}")
            out["group_size"] = g = None
        if out["strategy"] is None:  # inferred as compressed-tensors does
            out["strategy"] = "tensor" if g is None else "group" if g > 0 else "channel"
        out["strategy"] = str(out["strategy"]).lower()
        if out["strategy"] not in ("tensor", "channel", "group", "block", "token", "tensor_group", "attn_head"):
            self.problem(None, f"{where}: strategy {a.get('strategy')!r}")
        if out["strategy"] == "group" and not (isinstance(out["group_size"], int) and out["group_size"] > 0):
            self.problem(None, f"{where}: strategy group needs a positive group_size")
        act = out["actorder"]
        out["actorder"] = {True: "group", False: None, "dynamic": "group", "static": "weight"}.get(act, act)
        if out["actorder"] not in (None, "group", "weight"):
            self.problem(None, f"{where}: actorder {act!r}")
        return out

    def ct_packed(self, prefix, n, k, w, gname):
        bits, strategy = w["num_bits"], w["strategy"]
        if w["type"] != "int" or bits not in (4, 8):
            self.problem(None, f"config_groups.{gname}: pack-quantized is checked for int 4/8 bits "
                         "(vLLM's WNA16 takes only these)")
            return
        if strategy not in ("group", "channel"):
            self.problem(None, f"config_groups.{gname}: pack-quantized strategy {strategy!r}; vLLM's WNA16 "
                         "needs group or channel")
            return
        g = w["group_size"] if strategy == "group" else k
        if not isinstance(g, int) or g <= 0:
            return  # reported with the args
        ng = -(-k // g)
        packed = self.tensor(prefix + ".weight_packed", ("I32",), [n, -(-k * bits // 32)])
        scale = self.tensor(prefix + ".weight_scale", FLOAT_DTYPES, [n, ng])
        shape = self.tensor(prefix + ".weight_shape", ("I64",), [2])
        if shape is not None and list(shape) != [n, k]:
            self.problem(prefix + ".weight_shape", f"{list(shape)}, expected [{n}, {k}]")
        zp = None
        if not w["symmetric"]:
            zp = self.tensor(prefix + ".weight_zero_point", ("I32",), [-(-n * bits // 32), ng])
        elif prefix + ".weight_zero_point" in self.ckpt.where:
            self.problem(prefix + ".weight_zero_point", "present but the scheme is symmetric")
            self.expected.add(prefix + ".weight_zero_point")
        gi = np.arange(k) // g
        if w["actorder"] == "group":
            t = self.tensor(prefix + ".weight_g_idx", ("I32",), [k])
            gi = None if t is None else t.astype(np.int64)
            if gi is not None and np.any((gi < 0) | (gi >= ng)):
                self.problem(prefix + ".weight_g_idx", f"values outside [0, {ng})")
                gi = None
        if packed is None or scale is None or gi is None or (not w["symmetric"] and zp is None):
            return
        codes = unpack_bits(packed, bits, k)
        zeros = np.full((n, ng), 1 << (bits - 1)) if zp is None \
            else unpack_bits(np.ascontiguousarray(zp.T), bits, n).T
        self.weights[prefix] = dequant(codes, zeros, to_f32(scale, self.dtype_of(prefix + ".weight_scale")), gi)
        self.quant[prefix] = (bits, min(g, k), w["symmetric"], k)

    def ct_float(self, prefix, n, k, w, inp, gname):
        if w["type"] != "float" or w["num_bits"] != 8:
            self.problem(None, f"config_groups.{gname}: float-quantized is checked for float 8-bit weights")
            return
        strategy = w["strategy"]
        if strategy not in ("channel", "tensor"):
            self.problem(None, f"config_groups.{gname}: float-quantized strategy {strategy!r} not checked")
            return
        weight = self.tensor(prefix + ".weight", ("F8_E4M3",), [n, k])
        sname = prefix + ".weight_scale"
        scale = self.tensor(sname, FLOAT_DTYPES, [n, 1] if strategy == "channel" else None)
        if scale is not None and strategy == "tensor" and list(scale.shape) not in ([1], []):
            self.problem(sname, f"shape {list(scale.shape)}, expected [1] (or the old 0-d [])")
            scale = None
        if inp is not None and not inp["dynamic"]:
            self.tensor(prefix + ".input_scale", FLOAT_DTYPES, None)
        if weight is None or scale is None:
            return
        s = to_f32(scale, self.dtype_of(sname)).reshape(-1, 1) if strategy == "channel" \
            else to_f32(scale, self.dtype_of(sname)).reshape(1, 1)
        self.weights[prefix] = E4M3[weight] * s
        self.quant[prefix] = ("fp8", k if strategy == "channel" else 0, True, k)

    # -- the whole folder ---------------------------------------------------------------------------------
    def run(self):
        if self.cfg.get("model_type") not in ("llama", "mistral"):
            self.problem(None, f"model_type {self.cfg.get('model_type')!r}: only llama-type layouts are checked")
        qc = self.cfg.get("quantization_config")
        method = qc.get("quant_method") if isinstance(qc, dict) else None
        if method == "gptq":
            self.check_gptq(qc)
        elif method == "awq":
            self.check_awq(qc)
        elif method == "compressed-tensors":
            self.check_ct(qc)
        elif method == "bitsandbytes":
            hf_bnb.check_bnb(self, qc)
        else:
            self.problem(None, f"quantization_config.quant_method {method!r} is not gptq, awq, compressed-tensors "
                         "or bitsandbytes")
        for name, gguf, shape in self.model.dense():
            self.tensor(name, FLOAT_DTYPES, shape)
        for name in sorted(set(self.ckpt.where) - self.expected):
            self.problem(name, "unexpected tensor")
        if not any(os.path.exists(os.path.join(self.folder, f)) for f in ("tokenizer.json", "tokenizer.model")):
            self.probs.add(os.path.basename(self.folder.rstrip("/")), None, "no tokenizer.json or tokenizer.model")
        return self

    def marlin_note(self):
        """Whether vLLM's Marlin kernels take the folder at tensor parallel 1 [VM] (a note, not a problem)."""
        qc = self.cfg.get("quantization_config") or {}
        if self.family == "gptq":
            bits, group, why = qc.get("bits"), qc.get("group_size"), []
            if not qc.get("sym", True) or bits not in (4, 8):
                why.append("gptq_marlin needs symmetric 4/8-bit")
        elif self.family == "awq":
            bits, group, why = 4, qc.get("group_size"), []
        else:
            return None
        if group not in (-1, 32, 64, 128):
            why.append(f"group size {group} not in -1/32/64/128")
        bad = [p for p, _, n, k, _ in self.model.linears() if n % 64 or k % 128]
        if bad:
            why.append(f"{len(bad)} linears with N % 64 or K % 128 (first {bad[0]})")
        name = "gptq_marlin" if self.family == "gptq" else "awq_marlin"
        return f"vLLM {name}: " + ("eligible" if not why else "not eligible: " + "; ".join(why))

    def compare(self, ref, what):
        """Bit-for-bit comparison of every unpacked linear with ref[prefix] (float32 [N, K])."""
        out = []
        for prefix, gguf, n, k, _ in self.model.linears():
            if prefix not in self.weights:
                continue
            if prefix not in ref:
                self.problem(None, f"{prefix}: no {what} weight to compare with")
                continue
            a, b = self.weights[prefix], ref[prefix]
            equal = a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
            row = {"tensor": prefix, "equal": bool(equal)}
            if not equal:
                if a.shape != b.shape:
                    row["shape"] = [list(a.shape), list(b.shape)]
                    self.problem(prefix, f"shape {list(a.shape)} != {what} {list(b.shape)}", prefix + ".qweight")
                else:
                    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
                    row.update(max_abs_diff=float(np.nanmax(d)), count=int(np.count_nonzero(a != b)))
                    self.probs.add(self.ckpt.file_of(self.first_tensor(prefix)), prefix,
                                   f"unpacked weights differ from {what}: {row['count']} of {a.size} values, "
                                   f"max |diff| {row['max_abs_diff']:.6g}")
            out.append(row)
        return out

    def first_tensor(self, prefix):
        return next((t for t in self.ckpt.where if t.startswith(prefix + ".")), prefix + ".weight")

    def check_format_name(self, prefix, fmt, where):
        """The calq format the GGUF names must be the quantization the folder declares."""
        q = self.quant.get(prefix)
        if q is None:
            return
        bits, group, sym, k = q
        m = re.fullmatch(r"int(\d)-(pt|pc|g(\d+))-(sym|asym)(-f32)?", fmt)
        if bits == "fp8":
            ok = fmt == ("fp8-e4m3-pt" if group == 0 else "fp8-e4m3")
        elif bits == "nf4-bnb":  # (blocksize, nested blocksize) of the quant state
            ok = fmt == "nf4-bnb" and (group, sym) == (64, 256)
        elif m:
            fg = 0 if m.group(2) == "pt" else k if m.group(2) == "pc" else min(int(m.group(3)), k)
            ok = int(m.group(1)) == bits and fg == group and (sym is None or (m.group(4) == "sym") == sym) \
                and not m.group(5)
        else:
            ok = False
        if not ok:
            self.probs.add(where, prefix, f"calq format {fmt!r} is not the folder's quantization "
                           f"({bits}, group {group}, {sym}, k {k})")


def gguf_reference(checker, path):
    """calq's dequantized weights of every linear in a calq GGUF (prefix -> float32 [N, K]); float GGUF
    tensors compared with the folder's unquantized ones on the way."""
    import calq  # only --against needs it
    meta, tensors, data = read_gguf(path)
    ref, where = {}, os.path.basename(path)
    checker.dense_compared = 0
    for prefix, gguf, n, k, _ in checker.model.linears():
        if gguf not in tensors:
            checker.probs.add(where, gguf, "missing")
            continue
        t, ne, off = tensors[gguf]
        fmt, shape = meta.get(f"calq.qtensor.{gguf}.format"), meta.get(f"calq.qtensor.{gguf}.shape")
        if t != GGML_I8 or fmt is None or shape is None:
            checker.probs.add(where, gguf, f"not a calq-specific tensor (ggml type {t}); cannot compare")
            continue
        if list(shape) != [n, k]:
            checker.probs.add(where, gguf, f"calq shape {list(shape)}, expected [{n}, {k}]")
            continue
        ref[prefix] = np.asarray(calq.formats.dequantize(data[off:off + ne[0]], fmt, [n, k]), dtype=np.float32)
        checker.check_format_name(prefix, fmt, where)
    for name, gguf, shape in checker.model.dense():
        if gguf not in tensors or name not in checker.ckpt.where:
            continue
        t, ne, off = tensors[gguf]
        if t not in GGML_FLOAT or list(reversed(ne)) != list(shape):
            continue  # a quantized head: nothing exact to compare with
        dt = GGML_FLOAT[t][0]
        raw = np.frombuffer(data, dtype={"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[dt], count=math.prod(ne),
                            offset=off).reshape(shape)
        st_dtype = checker.dtype_of(name) if name in checker.ckpt.where else None
        if st_dtype not in FLOAT_DTYPES:
            continue
        checker.dense_compared += 1
        if not np.array_equal(to_f32(raw, dt), to_f32(checker.ckpt.read(name), st_dtype)):
            checker.probs.add(checker.ckpt.file_of(name), name, f"differs from {where}'s {gguf} ({dt})")
    return ref


def check(folder, against=None, reference=None):
    """Check a folder; returns the Checker (problems in .probs.lines, unpacked weights in .weights,
    comparisons in .compared). `reference`: {prefix: float32 [N, K]} to compare with instead of a GGUF."""
    c = Checker(folder).run()
    c.compared, c.dense_compared = [], 0
    if against is not None:
        c.compared = c.compare(gguf_reference(c, against), os.path.basename(against))
    elif reference is not None:
        c.compared = c.compare(reference, "the reference")
    return c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="Hugging Face folder (config.json, *.safetensors)")
    ap.add_argument("--against", metavar="FILE.gguf", help="calq GGUF of the same quantization to compare with")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        c = check(args.dir, args.against)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"{args.dir}: {e}", file=sys.stderr)
        return 1
    lines, notes = c.probs.lines, [n for n in [c.marlin_note()] if n]
    if args.json:
        print(json.dumps({"dir": args.dir, "family": c.family, "linears": len(c.weights), "problems": lines,
                          "notes": notes, "compared": c.compared}, indent=1))
    else:
        for line in lines + [f"note: {n}" for n in notes]:
            print(line)
        if not lines:
            same = f", bit for bit equal to {args.against}" if args.against else ""
            print(f"OK: {args.dir}: {c.family}, {len(c.weights)} linears{same}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
