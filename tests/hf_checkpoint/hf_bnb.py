"""The bitsandbytes 4-bit family of the independent checker (hf_checkpoint_check.py): NF4 with double
quantization as transformers saves a bitsandbytes 4-bit model, written from bitsandbytes' and transformers'
published code, apart from calq's writer (src/model/hf_quant_bnb.cpp).

Facts relied on (source in brackets; no code copied):
 [BF]  bitsandbytes bitsandbytes/functional.py: get_4bit_type("nf4") (the 16 NF4 values below);
       create_dynamic_map(signed=True) (for i in 0..6: means of adjacent points of torch.linspace(0.1, 1,
       2**i + 1) in float32, times +-10**(i-6), then 0 and 1.0, sorted: 256 values); quantize_4bit with
       compress_statistics: offset = absmax.mean(), the absmax minus the offset quantized blockwise (256)
       with the dynamic map; dequantize_4bit: absmax = dequantize_blockwise(...) + offset (float32), then
       the NF4 kernel; QuantState.as_dict(packed=True) / from_dict: tensors absmax, quant_map, nested_absmax,
       nested_quant_map and "quant_state.bitsandbytes__nf4" = the other items as JSON (quant_type,
       blocksize, dtype, shape, nested_blocksize, nested_dtype, nested_offset; unknown keys rejected).
 [BK]  bitsandbytes csrc/kernels.cu kDequantizeBlockwise: General8bit out = code[q] * absmax[block]; NF4 out
       = nf4_lut[byte >> 4] * absmax for the first element of a byte and nf4_lut[byte & 15] * absmax for
       the second (the first element is in the HIGH nibble), stored as the state's dtype;
       backends/default/ops.py _dequantize_4bit_compute: the same in torch (float32 products, then .to(dtype)).
 [BU]  bitsandbytes utils.py pack_dict_to_tensor: json.dumps(dict) encoded as UTF-8 into a uint8 tensor;
       nn/modules.py Linear4bit._save_to_state_dict: state items saved as "<prefix>weight." + key; the
       packed weight is Params4bit's data, uint8 [ceil(N*K/2), 1] (quant_storage uint8).
 [TQ]  transformers utils/quantization_config.py BitsAndBytesConfig (to_dict: quant_method "bitsandbytes",
       load_in_4bit, load_in_8bit, bnb_4bit_quant_type, bnb_4bit_use_double_quant, bnb_4bit_compute_dtype,
       bnb_4bit_quant_storage, llm_int8_skip_modules, ...); quantizers/quantizer_bnb_4bit.py: a pre-quantized
       weight needs "<weight>.quant_state.bitsandbytes__nf4" (or __fp4) in the state dict; modules in
       llm_int8_skip_modules stay float.
torch.linspace (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp): step = (end - start) / (steps - 1) in
float32, start + step * i for the first half and end - step * (steps - 1 - i) for the rest; each value is
rounded once here (as an FMA computes it), which reproduces published dumps of bitsandbytes' map.
"""
import json
from fractions import Fraction

import numpy as np

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)  # [BF] get_4bit_type("nf4")
STATE_KEYS = ["quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"]
SUFFIXES = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state.bitsandbytes__nf4")


def _linspace_f32(n):
    f = np.float32
    start, end = f(0.1), f(1.0)
    step = f((end - start) / f(n - 1))
    out = []
    for i in range(n):
        exact = Fraction(float(start)) + Fraction(float(step)) * i if i < n // 2 \
            else Fraction(float(end)) - Fraction(float(step)) * (n - 1 - i)
        out.append(round_f32(exact))
    return np.array(out, dtype=np.float32)


def round_f32(x):
    """The float32 nearest to the rational x (ties to even): one rounding, as an FMA gives."""
    c = np.float32(float(x))
    best = c
    for cand in (np.nextafter(c, np.float32(-np.inf)), np.nextafter(c, np.float32(np.inf))):
        d, db = abs(Fraction(float(cand)) - x), abs(Fraction(float(best)) - x)
        if d < db or (d == db and int(cand.view(np.uint32)) % 2 == 0):
            best = cand
    return best


def dynamic_map():
    """bitsandbytes' create_dynamic_map(signed=True) [BF], float32 [256], ascending."""
    data = []
    for i in range(7):
        p = _linspace_f32(2 ** i + 1)
        means = (p[:-1] + p[1:]) / np.float32(2.0)
        scale = np.float32(10.0 ** (i - 6))
        data += [float(scale * m) for m in means] + [float(-scale * m) for m in means]
    data += [0.0, 1.0]
    return np.array(sorted(data), dtype=np.float32)


DYNAMIC = dynamic_map()


def round_to(w, dtype):
    """float32 values as the state's dtype gives them back (.to(dtype), round to nearest even) [BK]."""
    if dtype == "float16":
        return w.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        u = w.view(np.uint32).astype(np.uint64)
        return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
    return w


def dequantize(packed, codes, nested, dmap, offset, n, k, blocksize, nested_blocksize, dtype):
    """float32 [N, K] by [BK]: absmax = map[code] * nested_absmax[block // nested_blocksize] + offset;
    w = NF4[nibble] * absmax[element // blocksize], high nibble first; then the state's dtype."""
    b = packed.reshape(-1).astype(np.int64)
    nib = np.empty(2 * b.size, np.int64)
    nib[0::2], nib[1::2] = b >> 4, b & 15
    blocks = np.arange(codes.size)
    absmax = dmap[codes.astype(np.int64)] * nested[blocks // nested_blocksize]
    absmax = absmax + np.float32(offset)
    w = NF4[nib[:n * k]] * absmax[np.arange(n * k) // blocksize]
    return round_to(w.astype(np.float32), dtype).reshape(n, k)


def check_config(checker, qc):
    """quantization_config [TQ]; returns False when the folder cannot be checked further."""
    def flag(*keys):
        return next((qc[k] for k in keys if qc.get(k) is not None), None)
    if flag("load_in_8bit", "_load_in_8bit"):
        checker.problem(None, "bitsandbytes load_in_8bit true: only 4-bit NF4 folders are checked")
        return False
    if flag("load_in_4bit", "_load_in_4bit") is not True:
        checker.problem(None, "bitsandbytes load_in_4bit is not true")
        return False
    if qc.get("bnb_4bit_quant_type") != "nf4":
        checker.problem(None, f"bnb_4bit_quant_type {qc.get('bnb_4bit_quant_type')!r}, only 'nf4' is checked")
        return False
    if qc.get("bnb_4bit_use_double_quant") is not True:
        checker.problem(None, "bnb_4bit_use_double_quant is not true: only double-quantized NF4 is checked")
        return False
    if qc.get("bnb_4bit_quant_storage", "uint8") != "uint8":
        checker.problem(None, f"bnb_4bit_quant_storage {qc.get('bnb_4bit_quant_storage')!r}, expected 'uint8'")
        return False
    skip = qc.get("llm_int8_skip_modules")
    if skip is not None and not checker.model.tied and "lm_head" not in skip:
        checker.problem(None, "llm_int8_skip_modules must name lm_head (it is stored unquantized)")
    return True


def check_state(checker, name, raw, n, k):
    """The packed quant state [BF][BU]: its dict, or None after a problem."""
    try:
        text = bytes(raw).decode("utf-8")
        state = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        checker.problem(name, f"not UTF-8 JSON: {e}")
        return None
    if not isinstance(state, dict) or list(state) != STATE_KEYS:
        checker.problem(name, f"keys {list(state) if isinstance(state, dict) else state!r}, expected {STATE_KEYS}")
        return None
    if json.dumps(state) != text:
        checker.problem(name, "not the text json.dumps writes for it (separators, float repr)")
    bad = []
    if state["quant_type"] != "nf4":
        bad.append(f"quant_type {state['quant_type']!r}")
    if state["blocksize"] not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        bad.append(f"blocksize {state['blocksize']!r}")
    if state["dtype"] not in ("float32", "bfloat16", "float16") or state["nested_dtype"] != "float32":
        bad.append(f"dtype {state['dtype']!r} / nested_dtype {state['nested_dtype']!r}")
    if state["shape"] != [n, k]:
        bad.append(f"shape {state['shape']!r}, expected [{n}, {k}]")
    if not isinstance(state["nested_blocksize"], int) or state["nested_blocksize"] <= 0:
        bad.append(f"nested_blocksize {state['nested_blocksize']!r}")
    if not isinstance(state["nested_offset"], float) or not np.isfinite(state["nested_offset"]):
        bad.append(f"nested_offset {state['nested_offset']!r}")
    if bad:
        checker.problem(name, "; ".join(bad))
        return None
    return state


def check_bnb(checker, qc):
    checker.family = "bitsandbytes"
    if not check_config(checker, qc):
        return
    for prefix, gguf, n, k, has_bias in checker.model.linears():
        w = prefix + ".weight"
        checker.bias(prefix, n, has_bias)
        st_raw = checker.tensor(w + ".quant_state.bitsandbytes__nf4", ("U8",), None)
        state = None if st_raw is None else check_state(checker, w + ".quant_state.bitsandbytes__nf4", st_raw, n, k)
        if state is None:
            for s in SUFFIXES[:-1]:
                checker.expected.add(w + "." + s)
            checker.expected.add(w)
            continue
        bs, nbs = state["blocksize"], state["nested_blocksize"]
        blocks = -(-n * k // bs)
        packed = checker.tensor(w, ("U8",), [-(-n * k // 2), 1])
        codes = checker.tensor(w + ".absmax", ("U8",), [blocks])
        qmap = checker.tensor(w + ".quant_map", ("F32",), [16])
        nested = checker.tensor(w + ".nested_absmax", ("F32",), [-(-blocks // nbs)])
        dmap = checker.tensor(w + ".nested_quant_map", ("F32",), [256])
        if qmap is not None and not np.array_equal(qmap, NF4):
            checker.problem(w + ".quant_map", "is not bitsandbytes' NF4 table (get_4bit_type('nf4'))")
        if dmap is not None and not np.array_equal(dmap, DYNAMIC):
            bad = int(np.count_nonzero(dmap != DYNAMIC))
            checker.problem(w + ".nested_quant_map", f"differs from create_dynamic_map(signed=True) in {bad} of 256")
        if any(t is None for t in (packed, codes, nested, dmap)):
            continue
        if not (np.all(np.isfinite(nested)) and np.all(np.isfinite(dmap))):
            checker.problem(w + ".nested_absmax", "non-finite nested constants")
            continue
        checker.weights[prefix] = dequantize(packed, codes, nested, dmap, state["nested_offset"], n, k, bs, nbs,
                                             state["dtype"])
        checker.quant[prefix] = ("nf4-bnb", bs, nbs, k)
