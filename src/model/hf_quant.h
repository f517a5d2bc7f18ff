// Quantized Hugging Face checkpoints (GPTQ, AWQ, compressed-tensors, bitsandbytes NF4): the tensors
// and quantization_config that write_hf_model (hf_export.h) writes for a model quantized in calq's int,
// fp8 or nf4-bnb formats, and the reading of such folders (calq's or other tools') by load_hf_model.
// Layouts: io/hf_quant_pack.h; docs/formats.md, "Hugging Face quantized checkpoints".
//
// Schemes and the calq formats each takes (HfQuantScheme; hf_quant_scheme_fits says why not):
//  * gptq (checkpoint_format "gptq", v1) and gptq-v2 ("gptq_v2"): int{2,3,4,8}-{g32,g64,g128,g256,pc,pt}-{sym,asym}
//    (fp16 scales). v1 cannot store a zero point of 0: writing such a tensor is an error naming it.
//  * awq (GEMM): int4-{gN,pc,pt}-{sym,asym}; zero points always stored.
//  * compressed-tensors: int{4,8}-{gN,pc,pt}-{sym,asym} as "pack-quantized"; fp8-e4m3 (channel scales)
//    and fp8-e4m3-pt (one scale) as "float-quantized" FP8 weights (W8A16: no activation scheme).
//  * bnb-nf4: nf4-bnb only (NF4 with bitsandbytes' double quantization), as transformers serializes a
//    4-bit bitsandbytes model (hf_quant_bnb.h). Note the names: the packed weight keeps `<base>.weight`
//    (U8), its state is `<base>.weight.absmax` etc.
//
// Contract of the writer side: hf_quant_tensors gives the checkpoint tensors of one linear, named
// `base` + ".qweight" etc. (base = the Hugging Face weight name without ".weight"); dequantizing
// them by the scheme's published rule gives, bit for bit, what calq's format dequantizes to.
// hf_quant_config_json gives config.json's "quantization_config" (and quantize_config.json's text
// for GPTQ, empty otherwise).
//
// Contract of the reader side: hf_quant_spec(folder) parses config.json's quantization_config (with
// quantize_config.json as GPTQ's fallback); nullopt when there is none. An unknown quant_method,
// checkpoint_format, compressed-tensors format or QuantizationArgs key, or a value calq cannot run
// (bits, a mix of config groups, activation quantization), is Error(kUnsupported/kFormat) naming the
// file and key. load_hf_quant_linear reads one linear: into calq's int format of the same bits,
// group and symmetry (fp16 scales; an -f32 variant when the file's scales are not fp16 values),
// fp8-e4m3 / -pt, so the model runs in the format; an act-order GPTQ tensor whose g_idx is not
// k / group is dequantized to float32 (no calq format holds groups in another order). Every tensor
// size is checked against the config and the expected shape (kFormat naming folder and tensor).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "io/hf_quant_config.h"
#include "io/safetensors.h"
#include "model/linear_weight.h"

namespace calq::model {

enum class HfQuantScheme { kNone, kGptq, kGptqV2, kAwq, kCompressedTensors, kBnbNf4 };

// "gptq", "gptq-v2", "awq", "compressed-tensors", "bnb-nf4" (and "none"); parse: nullopt when unknown.
std::string_view hf_quant_scheme_name(HfQuantScheme scheme);
std::optional<HfQuantScheme> parse_hf_quant_scheme(std::string_view name);

// "" when the scheme can hold tensors in `format`, else why not (one sentence).
std::string hf_quant_scheme_fits(HfQuantScheme scheme, const Format& format);

struct HfQuantTensor {
  std::string name;
  DType dtype = DType::kI32;
  Shape shape;
  std::vector<std::byte> bytes;
};
std::vector<HfQuantTensor> hf_quant_tensors(HfQuantScheme scheme, const QuantizedTensor& weight, std::string_view base);

struct HfQuantConfigText {
  std::string quantization_config;  // a JSON object
  std::string quantize_config;      // quantize_config.json's text (GPTQ), else empty
};
HfQuantConfigText hf_quant_config_json(HfQuantScheme scheme, const Format& format);

using io::HfQuantSpec;  // io/hf_quant_config.h
std::optional<HfQuantSpec> hf_quant_spec(const std::filesystem::path& folder);

// Whether `name` is one of a quantized linear's tensors ("...q_proj.qweight", bitsandbytes'
// "...q_proj.weight.absmax"): its weight name ("...q_proj.weight") into *weight_name. bitsandbytes'
// packed weight itself is named "...q_proj.weight" (U8) and is not one of these.
bool hf_quant_tensor_of(const HfQuantSpec& spec, std::string_view name, std::string* weight_name);

// The linear whose Hugging Face weight name is `weight_name` ([rows, cols] = `expected`); nullopt for
// a linear the checkpoint keeps in float (its ".weight" present in a float dtype: the head,
// compressed-tensors' ignore list, bitsandbytes' skipped modules), which the caller reads as any float
// tensor.
std::optional<LinearWeight> load_hf_quant_linear(const HfQuantSpec& spec, const io::SafetensorsModel& st,
                                  const std::string& weight_name, const Shape& expected, ThreadPool& pool);

}  // namespace calq::model
