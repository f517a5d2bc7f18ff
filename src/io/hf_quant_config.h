// The quantization_config of a quantized Hugging Face checkpoint (GPTQ, AWQ, compressed-tensors,
// bitsandbytes 4-bit NF4), as config.json (or GPTQ's quantize_config.json) states it: what
// model/hf_quant.h's reader needs.
//
// Contract: parse_hf_quant_config(text, origin, quantize_config_file) parses a JSON text — the whole
// config.json (nullopt when it has no "quantization_config") or, with quantize_config_file, AutoGPTQ's
// quantize_config.json (quant_method gptq when absent). An unknown quant_method, checkpoint_format,
// compressed-tensors format or QuantizationArgs key, or a value calq cannot run (bits, several config
// groups, activation quantization, AWQ other than GEMM with zero points, bitsandbytes other than 4-bit
// NF4 with double quantization in uint8 storage), is Error kUnsupported or
// kFormat naming `origin` and the key; invalid JSON is kFormat. Never anything else (fuzzed).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calq::io {

struct HfQuantSpec {
  enum class Kind { kGptq, kAwq, kCtPacked, kCtFp8, kBnbNf4 } kind = Kind::kGptq;
  int bits = 4;
  int64_t group = -1;  // −1: one group per row (channel); 0: one scale for the tensor (ct fp8 tensor)
  bool symmetric = true;
  bool gptq_v1 = true;
  // compressed-tensors' ignore list (module names or "re:" patterns); bitsandbytes' llm_int8_skip_modules
  std::vector<std::string> ignore;
  std::string origin;               // the file, for messages
};

std::optional<HfQuantSpec> parse_hf_quant_config(std::string_view text, const std::string& origin,
                                                 bool quantize_config_file = false);

}  // namespace calq::io
