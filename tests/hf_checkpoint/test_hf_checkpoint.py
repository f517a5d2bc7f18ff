"""pytest for hf_checkpoint_check.py (the independent checker of GPTQ / AWQ / compressed-tensors / bitsandbytes
NF4 folders).

a. Self-tests that need no calq writer: tiny llama folders packed here (by other means than the checker's
   unpacking: bit arrays through np.packbits, per-slot loops) must pass and equal the weights they were
   made from; each deliberately broken one must be reported, naming the tensor.
b. End to end against calq (CALQ_BINARY, PYTHONPATH=<build>/python): a synthetic bf16 llama quantized to a
   GGUF and exported as a folder with the same format; the folder must check and equal calq's dequantized
   weights bit for bit. Skipped until `calq quantize --help` lists --export.
"""
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hf_bnb  # noqa: E402
import hf_checkpoint_check as hc  # noqa: E402
import hf_readers as hr  # noqa: E402

HIDDEN, HEADS, KV, HEAD_DIM, INTER, VOCAB = 64, 2, 1, 32, 128, 40
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


# -- writing folders -----------------------------------------------------------------------------------------
def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> (safetensors dtype, numpy array of the raw element type)."""
    header, blobs, pos = {}, [], 0
    for name in sorted(tensors):
        dt, arr = tensors[name]
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    header["__metadata__"] = {"format": "pt"} if metadata is None else metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def llama_config(qc):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
            "intermediate_size": INTER, "num_attention_heads": HEADS, "num_key_value_heads": KV,
            "head_dim": HEAD_DIM, "num_hidden_layers": 1, "vocab_size": VOCAB, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "quantization_config": qc}


def linears():
    """(prefix, N, K) of the tiny model's linears."""
    q, kv = HEADS * HEAD_DIM, KV * HEAD_DIM
    return [("model.layers.0.self_attn.q_proj", q, HIDDEN), ("model.layers.0.self_attn.k_proj", kv, HIDDEN),
            ("model.layers.0.self_attn.v_proj", kv, HIDDEN), ("model.layers.0.self_attn.o_proj", HIDDEN, q),
            ("model.layers.0.mlp.gate_proj", INTER, HIDDEN), ("model.layers.0.mlp.up_proj", INTER, HIDDEN),
            ("model.layers.0.mlp.down_proj", HIDDEN, INTER)]


def dense_tensors(rng):
    bf = lambda *shape: (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return {"model.embed_tokens.weight": ("BF16", bf(VOCAB, HIDDEN)), "lm_head.weight": ("BF16", bf(VOCAB, HIDDEN)),
            "model.norm.weight": ("BF16", bf(HIDDEN)), "model.layers.0.input_layernorm.weight": ("BF16", bf(HIDDEN)),
            "model.layers.0.post_attention_layernorm.weight": ("BF16", bf(HIDDEN))}


def write_folder(folder, qc, tensors, extra_files=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(llama_config(qc)))
    (folder / "tokenizer.json").write_text("{}")
    for name, content in (extra_files or {}).items():
        (folder / name).write_text(json.dumps(content))
    write_safetensors(folder / "model.safetensors", tensors)
    return folder


# -- packing (independent of the checker: bit arrays, per-slot loops) ---------------------------------------
def pack_stream(values, bits):
    """[R, C] codes -> int32 [R, ceil(C*bits/32)]: element i at bits [i*bits, (i+1)*bits) of the row's
    little-endian stream."""
    v = np.asarray(values, dtype=np.int64)
    bitarr = ((v[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(v.shape[0], -1)
    bitarr = np.pad(bitarr, ((0, 0), (0, -bitarr.shape[1] % 32)))
    return np.packbits(bitarr, axis=1, bitorder="little").view("<i4")


def pack_awq(values, order=AWQ_ORDER):
    """[R, C] nibbles -> int32 [R, C/8], slot i of word c = column 8c + order[i]."""
    v = np.asarray(values, dtype=np.uint32)
    out = np.zeros((v.shape[0], v.shape[1] // 8), np.uint32)
    for slot in range(8):
        out |= v[:, order[slot]::8] << np.uint32(4 * slot)
    return out.view(np.int32)


def f16_scales(rng, shape):
    return (rng.uniform(0.002, 0.05, shape)).astype(np.float16)


def reference(codes, zeros, scales, g_idx):
    """float32 [N, K] from [N, K] codes, [N, G] zeros and scales."""
    return np.stack([scales[n, g_idx].astype(np.float32) * (codes[n] - zeros[n, g_idx]).astype(np.float32)
                     for n in range(codes.shape[0])])


def make_gptq(folder, bits=4, group=32, sym=True, fmt="gptq", desc_act=False, seed=1, zeros_fn=None):
    """A GPTQ folder and its reference weights. zeros_fn(zeros) may change the zeros before storing."""
    rng = np.random.default_rng(seed)
    tensors, ref = dense_tensors(rng), {}
    for prefix, n, k in linears():
        g = k if group == -1 else group
        ng = -(-k // g)
        codes = rng.integers(0, 1 << bits, (n, k))
        zeros = np.full((n, ng), 1 << (bits - 1)) if sym else rng.integers(1, 1 << bits, (n, ng))
        scales = f16_scales(rng, (n, ng))
        g_idx = rng.permutation(np.arange(k) // g) if desc_act else np.arange(k) // g
        ref[prefix] = reference(codes, zeros, scales, g_idx)
        stored = zeros if zeros_fn is None else zeros_fn(zeros)
        stored = stored - 1 if fmt == "gptq" else stored
        tensors[prefix + ".qweight"] = ("I32", np.ascontiguousarray(pack_stream(codes, bits).T))
        tensors[prefix + ".qzeros"] = ("I32", pack_stream(stored.T & ((1 << bits) - 1), bits))
        tensors[prefix + ".scales"] = ("F16", np.ascontiguousarray(scales.T))
        tensors[prefix + ".g_idx"] = ("I32", g_idx.astype(np.int32))
    qc = {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": desc_act, "sym": sym,
          "checkpoint_format": fmt}
    return write_folder(folder, qc, tensors, {"quantize_config.json": qc}), ref, tensors


def make_awq(folder, group=32, order=AWQ_ORDER, seed=2):
    rng = np.random.default_rng(seed)
    tensors, ref = dense_tensors(rng), {}
    for prefix, n, k in linears():
        codes, zeros = rng.integers(0, 16, (n, k)), rng.integers(0, 16, (n, k // group))
        scales = f16_scales(rng, (n, k // group))
        ref[prefix] = reference(codes, zeros, scales, np.arange(k) // group)
        tensors[prefix + ".qweight"] = ("I32", pack_awq(codes.T, order))
        tensors[prefix + ".qzeros"] = ("I32", pack_awq(zeros.T, order))
        tensors[prefix + ".scales"] = ("F16", np.ascontiguousarray(scales.T))
    qc = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm",
          "modules_to_not_convert": None}
    return write_folder(folder, qc, tensors), ref, tensors


def ct_config(weights, fmt, inputs=None):
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "ignore": ["lm_head"], "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                                                 "input_activations": inputs}}}


def make_ct_int(folder, bits=4, group=32, sym=True, actorder=False, seed=3, zp_offset=True):
    rng = np.random.default_rng(seed)
    tensors, ref = dense_tensors(rng), {}
    for prefix, n, k in linears():
        g = k if group is None else group
        ng = k // g
        lo = 1 if sym else 0
        codes = rng.integers(lo, 1 << bits, (n, k))  # stored q + 2^(b-1)
        zp = np.full((n, ng), 1 << (bits - 1)) if sym else rng.integers(0, 1 << bits, (n, ng))  # stored zp + 2^(b-1)
        scales = f16_scales(rng, (n, ng))
        g_idx = rng.permutation(np.arange(k) // g) if actorder else np.arange(k) // g
        ref[prefix] = reference(codes, zp, scales, g_idx)
        tensors[prefix + ".weight_packed"] = ("I32", pack_stream(codes, bits))
        tensors[prefix + ".weight_scale"] = ("F16", scales)
        tensors[prefix + ".weight_shape"] = ("I64", np.array([n, k], np.int64))
        if not sym:
            signed = zp - (1 << (bits - 1))  # compressed-tensors' zero point; stored with the offset
            stored = zp if zp_offset else signed & ((1 << bits) - 1)
            tensors[prefix + ".weight_zero_point"] = ("I32", np.ascontiguousarray(pack_stream(stored.T, bits).T))
        if actorder:
            tensors[prefix + ".weight_g_idx"] = ("I32", g_idx.astype(np.int32))
    w = {"num_bits": bits, "type": "int", "symmetric": sym, "strategy": "channel" if group is None else "group",
         "group_size": group, "actorder": "group" if actorder else None, "dynamic": False, "observer": "minmax",
         "observer_kwargs": {}}
    return write_folder(folder, ct_config(w, "pack-quantized"), tensors), ref, tensors


def e4m3_decode(byte):
    """E4M3 "fn" value of a byte, by its definition."""
    s, e, m = (-1.0) ** (byte >> 7), (byte >> 3) & 15, byte & 7
    return s * np.ldexp(m / 8.0, -6) if e == 0 else s * np.ldexp(1 + m / 8.0, e - 7)


def make_ct_fp8(folder, per_tensor=False, seed=4, scale_shape=None):
    rng = np.random.default_rng(seed)
    tensors, ref = dense_tensors(rng), {}
    for prefix, n, k in linears():
        codes = rng.integers(0, 256, (n, k)).astype(np.uint8)
        codes[(codes & 0x7F) == 0x7F] = 0x30  # no NaN codes
        scales = rng.uniform(0.001, 0.01, (1,) if per_tensor else (n, 1)).astype(np.float32)
        dec = np.vectorize(e4m3_decode)(codes).astype(np.float32)
        ref[prefix] = dec * (scales.reshape(1, 1) if per_tensor else scales)
        tensors[prefix + ".weight"] = ("F8_E4M3", codes)
        tensors[prefix + ".weight_scale"] = ("F32", scales.reshape(scale_shape) if scale_shape else scales)
    w = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor" if per_tensor else "channel",
         "dynamic": False}
    inp = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "dynamic": True}
    return write_folder(folder, ct_config(w, "float-quantized", inp), tensors), ref, tensors


def make_bnb(folder, seed=5, high_first=True, dtype="float32"):
    """A bitsandbytes NF4 (double quantization) folder [hf_bnb.py's facts] and its reference weights, packed
    here per element: element 2i of the flattened weight in the high nibble of byte i (low with
    high_first=False, the broken order)."""
    rng = np.random.default_rng(seed)
    tensors, ref = dense_tensors(rng), {}
    dmap = hf_bnb.DYNAMIC
    for prefix, n, k in linears():
        blocks = n * k // 64
        codes = rng.integers(0, 16, n * k)
        qcodes = rng.integers(0, 256, blocks).astype(np.uint8)
        nested = rng.uniform(0.01, 0.1, -(-blocks // 256)).astype(np.float32)
        offset = float(np.float32(rng.uniform(0.05, 0.2)))
        w = np.empty(n * k, np.float32)
        for i in range(n * k):
            b = i // 64
            absmax = np.float32(np.float32(dmap[qcodes[b]] * nested[b // 256]) + np.float32(offset))
            w[i] = np.float32(hf_bnb.NF4[codes[i]] * absmax)
        ref[prefix] = w.reshape(n, k)
        first, second = (codes[0::2], codes[1::2]) if high_first else (codes[1::2], codes[0::2])
        packed = ((first << 4) | second).astype(np.uint8).reshape(-1, 1)
        state = {"quant_type": "nf4", "blocksize": 64, "dtype": dtype, "shape": [n, k], "nested_blocksize": 256,
                 "nested_dtype": "float32", "nested_offset": offset}
        w_name = prefix + ".weight"
        tensors[w_name] = ("U8", packed)
        tensors[w_name + ".absmax"] = ("U8", qcodes)
        tensors[w_name + ".quant_map"] = ("F32", hf_bnb.NF4.copy())
        tensors[w_name + ".nested_absmax"] = ("F32", nested)
        tensors[w_name + ".nested_quant_map"] = ("F32", dmap.copy())
        tensors[w_name + ".quant_state.bitsandbytes__nf4"] = ("U8", np.frombuffer(json.dumps(state).encode(), np.uint8))
    qc = {"quant_method": "bitsandbytes", "_load_in_8bit": False, "_load_in_4bit": True, "llm_int8_threshold": 6.0,
          "llm_int8_skip_modules": ["lm_head"], "llm_int8_enable_fp32_cpu_offload": False,
          "llm_int8_has_fp16_weight": False, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
          "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8", "load_in_4bit": True,
          "load_in_8bit": False}
    return write_folder(folder, qc, tensors), ref, tensors


def problems(folder, ref=None):
    return hc.check(str(folder), reference=ref).probs.lines


def only(lines, *words):
    """The problems mention every word (and there is at least one)."""
    assert lines, "the checker found nothing"
    assert any(all(w in line for w in words) for line in lines), lines
    return lines


# -- a. good folders -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits,group,sym,fmt,desc_act", [
    (4, 32, True, "gptq", False), (3, 32, False, "gptq_v2", False), (8, -1, True, "gptq", False),
    (2, 32, False, "gptq_v2", False), (4, 32, False, "gptq", True)])
def test_gptq_good(tmp_path, bits, group, sym, fmt, desc_act):
    folder, ref, _ = make_gptq(tmp_path / "m", bits, group, sym, fmt, desc_act)
    c = hc.check(str(folder), reference=ref)
    assert c.probs.lines == []
    assert c.family == "gptq" and len(c.compared) == 7 and all(r["equal"] for r in c.compared)


def test_gptq_v1_sym_4bit_words_are_0x77777777(tmp_path):
    _, _, tensors = make_gptq(tmp_path / "m", 4, 32, True, "gptq")
    assert np.all(tensors["model.layers.0.self_attn.q_proj.qzeros"][1].view(np.uint32) == 0x77777777)


def test_awq_good(tmp_path):
    folder, ref, _ = make_awq(tmp_path / "m")
    c = hc.check(str(folder), reference=ref)
    assert c.probs.lines == [] and all(r["equal"] for r in c.compared) and len(c.compared) == 7


@pytest.mark.parametrize("bits,group,sym,actorder", [(4, 32, True, False), (8, None, True, False),
                                                     (4, 32, False, True), (8, 32, False, False)])
def test_ct_int_good(tmp_path, bits, group, sym, actorder):
    folder, ref, _ = make_ct_int(tmp_path / "m", bits, group, sym, actorder)
    c = hc.check(str(folder), reference=ref)
    assert c.probs.lines == [] and all(r["equal"] for r in c.compared) and len(c.compared) == 7


@pytest.mark.parametrize("per_tensor,scale_shape", [(False, None), (True, None), (True, ())])
def test_ct_fp8_good(tmp_path, per_tensor, scale_shape):
    folder, ref, _ = make_ct_fp8(tmp_path / "m", per_tensor, scale_shape=scale_shape)
    c = hc.check(str(folder), reference=ref)
    assert c.probs.lines == [] and all(r["equal"] for r in c.compared) and len(c.compared) == 7


def test_bnb_dynamic_map_is_the_published_one():
    # Entries of bitsandbytes' create_dynamic_map() as published dumps print them; 18 and 178 are among the 42
    # that two-rounding linspace arithmetic would get one ulp off.
    m = hf_bnb.DYNAMIC
    assert m.dtype == np.float32 and m.shape == (256,) and np.all(np.diff(m) > 0)
    assert m[127] == 0 and m[255] == 1 and np.array_equal(m[126::-1], -m[128:255])
    for i, v in ((0, -0.992968738079071), (18, -0.7398437261581421), (64, -0.09859374910593033),
                 (126, -5.500000384017767e-07), (178, 0.06484375149011612), (200, 0.23359374701976776)):
        assert m[i] == np.float32(v), i


def test_bnb_good(tmp_path):
    folder, ref, _ = make_bnb(tmp_path / "m")
    c = hc.check(str(folder), reference=ref)
    assert c.probs.lines == []
    assert c.family == "bitsandbytes" and len(c.compared) == 7 and all(r["equal"] for r in c.compared)


def test_bnb_bf16_state_rounds_the_products(tmp_path):
    folder, ref, _ = make_bnb(tmp_path / "m", dtype="bfloat16")
    c = hc.check(str(folder), reference=ref)
    assert c.probs.lines and all("differ" in line for line in c.probs.lines)  # the float32 reference is unrounded
    w = c.weights["model.layers.0.self_attn.q_proj"]
    assert np.all(w.view(np.uint32) & 0xFFFF == 0)


def test_sharded_good_and_cli(tmp_path):
    folder, ref, tensors = make_gptq(tmp_path / "m")
    os.remove(folder / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[:9], "model-00002-of-00002.safetensors": names[9:]}
    for fname, part in halves.items():
        write_safetensors(folder / fname, {n: tensors[n] for n in part})
    total = sum(tensors[n][1].nbytes for n in names)
    index = {"metadata": {"total_size": total}, "weight_map": {n: f for f, part in halves.items() for n in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert problems(folder, ref) == []
    script = pathlib.Path(hc.__file__)
    run = subprocess.run([sys.executable, str(script), str(folder), "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["linears"] == 7
    assert report["notes"] == ["vLLM gptq_marlin: not eligible: 6 linears with N % 64 or K % 128 "
                               "(first model.layers.0.self_attn.q_proj)"]
    index["weight_map"][names[0]] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    run = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True)
    assert run.returncode == 1 and names[0] in run.stdout and "index.json" in run.stdout


# -- a. broken folders: each one named -----------------------------------------------------------------------
def test_awq_wrong_packing_order(tmp_path):
    folder, ref, _ = make_awq(tmp_path / "m", order=list(range(8)))
    only(problems(folder, ref), "model.safetensors", "q_proj", "differ")


def test_gptq_v1_config_with_v2_zeros_asym(tmp_path):
    # v2 zeros (the zero itself) in a folder that says v1: written as v2, relabelled.
    folder, ref, _ = make_gptq(tmp_path / "m", 4, 32, False, "gptq_v2")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["checkpoint_format"] = "gptq"
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "quantize_config.json").write_text(json.dumps(cfg["quantization_config"]))
    only(problems(folder, ref), "q_proj", "differ")


def test_gptq_v1_config_with_v2_zeros_sym(tmp_path):
    folder, _, _ = make_gptq(tmp_path / "m", 4, 32, True, "gptq", zeros_fn=lambda z: z + 1)
    only(problems(folder), "q_proj.qzeros", "every zero must be 8")


def test_gptq_v1_cannot_hold_zero_0(tmp_path):
    def with_zero_0(z):
        z = z.copy()
        z[3, 1] = 0
        return z
    folder, _, _ = make_gptq(tmp_path / "m", 4, 32, False, "gptq", zeros_fn=with_zero_0)
    only(problems(folder), "q_proj.qzeros", "gptq_v2")


def test_gptq_missing_g_idx(tmp_path):
    folder, _, tensors = make_gptq(tmp_path / "m")
    del tensors["model.layers.0.mlp.up_proj.g_idx"]
    write_safetensors(folder / "model.safetensors", tensors)
    only(problems(folder), "model.safetensors: model.layers.0.mlp.up_proj.g_idx: missing")


def test_gptq_scales_f32(tmp_path):
    folder, _, tensors = make_gptq(tmp_path / "m")
    name = "model.layers.0.self_attn.o_proj.scales"
    tensors[name] = ("F32", tensors[name][1].astype(np.float32))
    write_safetensors(folder / "model.safetensors", tensors)
    only(problems(folder), name, "dtype F32, expected F16")


def test_gptq_qweight_wrong_shape(tmp_path):
    folder, _, tensors = make_gptq(tmp_path / "m")
    name = "model.layers.0.mlp.down_proj.qweight"
    tensors[name] = ("I32", np.ascontiguousarray(tensors[name][1].T))
    write_safetensors(folder / "model.safetensors", tensors)
    only(problems(folder), name, "shape", "expected [16, 64]")


def test_gptq_desc_act_false_with_permuted_g_idx(tmp_path):
    folder, _, tensors = make_gptq(tmp_path / "m", desc_act=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["desc_act"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    os.remove(folder / "quantize_config.json")
    only(problems(folder), "g_idx", "desc_act false")


def test_awq_missing_qzeros(tmp_path):
    folder, _, tensors = make_awq(tmp_path / "m")
    del tensors["model.layers.0.self_attn.v_proj.qzeros"]
    write_safetensors(folder / "model.safetensors", tensors)
    only(problems(folder), "model.layers.0.self_attn.v_proj.qzeros: missing")


def test_ct_unknown_quantization_args_key(tmp_path):
    folder, _, _ = make_ct_int(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["bits"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    only(problems(folder), "config.json", "QuantizationArgs key 'bits' unknown")


def test_ct_zero_point_without_offset(tmp_path):
    folder, ref, _ = make_ct_int(tmp_path / "m", 4, 32, False, zp_offset=False)
    only(problems(folder, ref), "k_proj", "differ")


def test_ct_missing_g_idx_and_lm_head_not_ignored(tmp_path):
    folder, _, tensors = make_ct_int(tmp_path / "m", actorder=True)
    del tensors["model.layers.0.mlp.gate_proj.weight_g_idx"]
    write_safetensors(folder / "model.safetensors", tensors)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["ignore"] = []
    (folder / "config.json").write_text(json.dumps(cfg))
    lines = only(problems(folder), "gate_proj.weight_g_idx: missing")
    only(lines, "ignore must contain lm_head")


def test_ct_fp8_tensor_scale_shape(tmp_path):
    folder, _, _ = make_ct_fp8(tmp_path / "m", True, scale_shape=(1, 1))
    only(problems(folder), "weight_scale", "expected [1]")


def test_bnb_nibble_order_swapped(tmp_path):
    folder, ref, _ = make_bnb(tmp_path / "m", high_first=False)
    only(problems(folder, ref), "model.layers.0.mlp.down_proj", "differ")


def test_bnb_missing_nested_absmax_and_fp4_state(tmp_path):
    folder, ref, tensors = make_bnb(tmp_path / "m")
    del tensors["model.layers.0.mlp.up_proj.weight.nested_absmax"]
    name = "model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__nf4"
    state = json.loads(bytes(tensors[name][1]).decode())
    state["quant_type"] = "fp4"
    tensors[name] = ("U8", np.frombuffer(json.dumps(state).encode(), np.uint8))
    write_safetensors(folder / "model.safetensors", tensors)
    lines = only(problems(folder, ref), "up_proj.weight.nested_absmax", "missing")
    only(lines, "k_proj.weight.quant_state.bitsandbytes__nf4", "quant_type 'fp4'")


def test_unexpected_tensor_metadata_and_header(tmp_path):
    folder, _, tensors = make_awq(tmp_path / "m")
    tensors["model.layers.0.self_attn.q_proj.weight"] = ("F16", np.zeros((64, 64), np.float16))
    write_safetensors(folder / "model.safetensors", tensors, metadata={})
    lines = only(problems(folder), "q_proj.weight: unexpected tensor")
    only(lines, "__metadata__")
    with open(folder / "model.safetensors", "r+b") as f:
        f.write(struct.pack("<Q", 1 << 40))
    only(problems(folder), "model.safetensors", "header length")


# -- b. end to end against calq -------------------------------------------------------------------------------
CALQ = os.environ.get("CALQ_BINARY")


def calq_help():
    if not CALQ or not os.path.exists(CALQ):
        return None
    return subprocess.run([CALQ, "quantize", "--help"], capture_output=True, text=True).stdout


HELP = calq_help()
needs_export = pytest.mark.skipif(HELP is None or "--export" not in HELP,
                                  reason="needs CALQ_BINARY with `calq quantize --export` (issue 22 writers)")


@pytest.fixture(scope="session")
def synth_model(tmp_path_factory):
    pytest.importorskip("calq", reason="--against needs the calq module (PYTHONPATH=<build>/python)")
    out = tmp_path_factory.mktemp("synth") / "llama"
    subprocess.run([CALQ, "synth", "--arch", "llama", "--layers", "2", "--hidden", "256", "--heads", "4",
                    "--kv-heads", "2", "--ffn", "512", "--vocab", "320", "--dtype", "bf16", "-o", str(out)],
                   check=True, capture_output=True)
    return out


def quantize(model, fmt, out, export=None):
    cmd = [CALQ, "quantize", "--model", str(model), "--format", fmt, "--method", "rtn", "--out", str(out), "-q"]
    cmd += ["--export", export] if export else ["--head-format", "bf16"]
    return subprocess.run(cmd, capture_output=True, text=True)


@needs_export
@pytest.mark.parametrize("scheme,fmt", [
    ("gptq", "int4-g128-sym"), ("gptq", "int8-g128-sym"), ("gptq", "int3-g128-sym"), ("gptq", "int4-pc-sym"),
    ("gptq-v2", "int4-g128-asym"), ("gptq-v2", "int2-g64-asym"), ("awq", "int4-g128-asym"),
    ("awq", "int4-g64-sym"), ("compressed-tensors", "int4-g128-sym"), ("compressed-tensors", "int4-g128-asym"),
    ("compressed-tensors", "int8-pc-sym"), ("compressed-tensors", "fp8-e4m3"),
    ("compressed-tensors", "fp8-e4m3-pt"), ("bnb-nf4", "nf4-bnb")])
def test_export_equals_gguf(synth_model, tmp_path, scheme, fmt):
    gguf, out = tmp_path / "x.gguf", tmp_path / "out"
    for run in (quantize(synth_model, fmt, gguf), quantize(synth_model, fmt, out, scheme)):
        assert run.returncode == 0, run.stderr
    c = hc.check(str(out), against=str(gguf))
    assert c.probs.lines == []
    assert len(c.compared) == 14 and all(r["equal"] for r in c.compared)


@needs_export
def test_export_gptq_v1_with_a_zero_of_0(synth_model, tmp_path):
    # Every q_proj weight made non-negative: min-max asym groups then have zero 0, which v1 cannot store.
    model = tmp_path / "pos"
    shutil.copytree(synth_model, model)
    st = hr.SafetensorsFile(str(model / "model.safetensors"), hr.Problems())
    tensors = {n: (info["dtype"], st.read(n)) for n, info in st.tensors.items()}
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors[name] = ("BF16", tensors[name][1] & np.uint16(0x7FFF))
    write_safetensors(model / "model.safetensors", tensors)
    gguf, out = tmp_path / "x.gguf", tmp_path / "out"
    assert quantize(model, "int4-g128-asym", gguf).returncode == 0
    run = quantize(model, "int4-g128-asym", out, "gptq")
    if run.returncode != 0:
        assert "gptq-v2" in run.stderr, run.stderr
        assert not out.exists()
    else:
        assert hc.check(str(out), against=str(gguf)).probs.lines == []


def calq_int_codes(raw, fmt, rows, cols):
    """(codes [rows, cols], zeros [rows, G], fp16 scales [rows, G]) of calq's int<b>-g<N>-<sym|asym> bytes, as
    docs/formats.md lays them out: each row is cols/N blocks of [fp16 scale][asym: u8 zero][N*b/8 bytes of
    codes, LSB first]; sym zero = 2^(b-1)."""
    bits, group = int(fmt[3]), int(fmt.split("-")[1][1:])
    asym = fmt.endswith("-asym")
    block = 2 + asym + group * bits // 8
    blocks = np.frombuffer(raw, np.uint8).reshape(rows, cols // group, block)
    scales = np.ascontiguousarray(blocks[:, :, :2]).view("<f2")[:, :, 0]
    zeros = blocks[:, :, 2].astype(np.int64) if asym else np.full(scales.shape, 1 << (bits - 1))
    stream = np.unpackbits(np.ascontiguousarray(blocks[:, :, 2 + asym:]), axis=2, bitorder="little")
    codes = stream.reshape(rows, cols // group, group, bits) @ (1 << np.arange(bits))
    return codes.reshape(rows, cols), zeros, scales


@pytest.mark.skipif(HELP is None, reason="needs CALQ_BINARY")
@pytest.mark.parametrize("fmt", ["int4-g128-asym", "int3-g128-sym"])
def test_against_gguf_with_own_packer(synth_model, tmp_path, fmt):
    # The --against machinery (GGUF parsing, calq.formats.dequantize, the float tensors) on a GPTQ v2 folder
    # packed here from calq's own bytes, so that it is tested without calq's writers.
    gguf = tmp_path / "x.gguf"
    assert quantize(synth_model, fmt, gguf).returncode == 0
    meta, infos, data = hr.read_gguf(str(gguf))
    st = hr.SafetensorsFile(str(synth_model / "model.safetensors"), hr.Problems())
    tensors = {n: (info["dtype"], st.read(n).copy()) for n, info in st.tensors.items()
               if not n.endswith("_proj.weight")}
    model = hc.Model(json.loads((synth_model / "config.json").read_text()))
    bits = int(fmt[3])
    for prefix, name, n, k, _ in model.linears():
        assert meta[f"calq.qtensor.{name}.format"] == fmt
        _, ne, off = infos[name]
        codes, zeros, scales = calq_int_codes(data[off:off + ne[0]], fmt, n, k)
        tensors[prefix + ".qweight"] = ("I32", np.ascontiguousarray(pack_stream(codes, bits).T))
        tensors[prefix + ".qzeros"] = ("I32", pack_stream(zeros.T, bits))
        tensors[prefix + ".scales"] = ("F16", np.ascontiguousarray(scales.T))
        tensors[prefix + ".g_idx"] = ("I32", (np.arange(k) // 128).astype(np.int32))
    out = tmp_path / "out"
    shutil.copytree(synth_model, out)
    write_safetensors(out / "model.safetensors", tensors)
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": 128, "desc_act": False,
                                  "sym": fmt.endswith("-sym"), "checkpoint_format": "gptq_v2"}
    (out / "config.json").write_text(json.dumps(cfg))
    c = hc.check(str(out), against=str(gguf))
    assert c.probs.lines == []
    assert len(c.compared) == 14 and all(r["equal"] for r in c.compared) and c.dense_compared == 7
    # One flipped code in one tensor is found, named, and counted.
    name = "model.layers.1.mlp.down_proj.qweight"
    tensors[name][1][0, 5] ^= 1
    tensors["model.norm.weight"][1][7] ^= 1
    write_safetensors(out / "model.safetensors", tensors)
    lines = only(hc.check(str(out), against=str(gguf)).probs.lines, "model.layers.1.mlp.down_proj", "differ", "1 of")
    only(lines, "model.norm.weight", "output_norm.weight")
