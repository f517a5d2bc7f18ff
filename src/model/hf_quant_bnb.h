// bitsandbytes 4-bit (NF4, double quantization) checkpoints as transformers saves them: the writer and
// reader halves of hf_quant.h's bnb-nf4 scheme (internal to hf_quant*.cpp). Facts, from bitsandbytes'
// published code (functional.py QuantState.as_dict(packed=True) / from_dict, utils.py
// pack_dict_to_tensor, nn/modules.py Linear4bit._save_to_state_dict) and transformers'
// (utils/quantization_config.py BitsAndBytesConfig.to_dict, quantizers/quantizer_bnb_4bit.py):
//  * per linear `<base>` (its weight name without ".weight"), all in the state dict of its Linear4bit:
//      `<base>.weight`                                   U8  [N·K/2, 1]  two NF4 codes per byte, first element
//                                                                        of the flattened [N, K] in the high nibble
//      `<base>.weight.absmax`                            U8  [N·K/64]    nested (8-bit) code of each block's absmax
//      `<base>.weight.quant_map`                         F32 [16]        the NF4 table (not read by dequantize_4bit)
//      `<base>.weight.nested_absmax`                     F32 [G]         G = ceil(N·K/64 / 256)
//      `<base>.weight.nested_quant_map`                  F32 [256]       the signed dynamic map
//      `<base>.weight.quant_state.bitsandbytes__nf4`     U8  [bytes]     UTF-8 of json.dumps({"quant_type": "nf4",
//          "blocksize": 64, "dtype": "float32", "shape": [N, K], "nested_blocksize": 256, "nested_dtype":
//          "float32", "nested_offset": m}) with Python's default separators and float repr.
//    "dtype" is the weight dtype bitsandbytes quantized from and dequantizes to; calq writes "float32"
//    (nf4-bnb's values are fp32 products), so dequantize_4bit returns calq's weights bit for bit. A peer's
//    "bfloat16"/"float16" state is read into nf4-bnb too: bitsandbytes rounds each product to that dtype,
//    calq keeps the fp32 product (a difference below the dtype's rounding).
//  * config.json "quantization_config": BitsAndBytesConfig.to_dict() — quant_method "bitsandbytes",
//    _load_in_4bit / load_in_4bit true, _load_in_8bit / load_in_8bit false, llm_int8_threshold 6.0,
//    llm_int8_skip_modules, llm_int8_enable_fp32_cpu_offload false, llm_int8_has_fp16_weight false,
//    bnb_4bit_quant_type "nf4", bnb_4bit_use_double_quant true, bnb_4bit_compute_dtype,
//    bnb_4bit_quant_storage "uint8".
// The reader takes quant_method "bitsandbytes" with load_in_4bit, nf4, double quantization and uint8
// storage; 8-bit, fp4, no double quantization, another storage dtype, a blocksize other than 64,
// nested_blocksize other than 256 or K % 64 != 0 are Error(kUnsupported) naming the file and key or
// tensor; a size or dtype the config does not imply is kFormat naming the tensor.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/hf_quant.h"

namespace calq::model::bnb {

// The auxiliary tensors' suffixes (after the linear's base name).
inline constexpr std::string_view kSuffixes[] = {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax",
                                                 ".weight.nested_quant_map",
                                                 ".weight.quant_state.bitsandbytes__nf4"};

std::vector<HfQuantTensor> tensors(const QuantizedTensor& w, const std::string& base);
// json.dumps of the packed quant state, byte for byte as Python writes it.
std::string quant_state_json(int64_t rows, int64_t cols, float offset);
nlohmann::ordered_json config();

std::optional<LinearWeight> load_linear(const HfQuantSpec& spec, const io::SafetensorsModel& st,
                                        const std::string& weight_name, const Shape& expected);

}  // namespace calq::model::bnb
