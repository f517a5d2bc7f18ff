// Writing a Model as a GGUF file in llama.cpp's layout (what convert_hf_to_gguf.py, and
// llama-quantize after it, write for a llama/qwen2 model), so that llama.cpp's tools load it when
// every tensor has a ggml type, and calq loads it back (load_gguf_model) in every case.
//
// Contract:
//  * Tensors: llama.cpp's names (architecture.h), ne = the reverse of the row-major shape.
//    Norms and biases are F32. A dense (float32) linear weight is written as F32 (convert it with
//    the registered "f16"/"bf16" format first to get F16/BF16). A quantized weight whose format has
//    a ggml type is written in that type, its bytes untouched; where the architecture says so
//    (gguf_permutes_qk), the rows of Q/K weights and biases are permuted for llama.cpp's
//    interleaved rotary embedding (whole rows of bytes for block types).
//  * A quantized weight in a calq-specific format (no ggml type: int*, nf4*, fp8*, nvfp4, ...) is
//    stored as a 1-D I8 tensor of its encoded bytes (ne = {byte count}) under the same name, rows in
//    Hugging Face order (not permuted: such formats may carry per-tensor trailers), described by
//    `calq.qtensor.<name>.format` (registry name) and `calq.qtensor.<name>.shape` ([rows, cols],
//    uint64); the file then carries `calq.requires_calq = true`. docs/formats.md documents it.
//  * The output head is written (output.weight) only when it is not the embedding's storage, or
//    when llama.cpp's loader requires it (Architecture::gguf_output_required: qwen2moe); such a
//    file reads back untied.
//  * Metadata: general.* (from the source GGUF when model.source is one, file_type and
//    quantization_version excepted; else architecture, type "model", name = the source folder's
//    name, size_label from the parameter count written), the "<arch>." hyper-parameters from the
//    config, the tokenizer (the source GGUF's tokenizer.* keys in order, or the source HF folder's
//    tokenizer.json converted by io::hf_tokenizer_to_gguf — its errors propagate, a folder without
//    tokenizer.json is kNotFound; a Model with an empty `source` gets no tokenizer keys),
//    general.quantization_version = 2,
//    general.file_type (options.file_type, else guessed from the most common type of the linear
//    weights; omitted when that type has no llama_ftype), calq's keys, then options.extra_metadata.
//  * Order (GgufTensorOrder::kAuto): a file whose linear weights are all float (F32/F16/BF16) is
//    laid out like the converter's output (tensors in the sorted order of their Hugging Face names,
//    general.file_type among the hyper-parameters); otherwise like llama-quantize's (global
//    tensors, then block by block sorted by name; quantization_version and file_type last).
//  * Written through io::write_gguf (temp file + rename): on any error no output appears. Errors
//    are calq::Error naming the output path and the tensor or key (kUnsupported for a config llama.cpp
//    cannot express, kInvalidArgument for a bad option, kIo from the write).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "io/gguf.h"
#include "model/model.h"

namespace calq::model {

enum class GgufTensorOrder { kAuto, kConvert, kQuantize };

struct GgufExportOptions {
  // e.g. calq.version, calq.recipe, calq.calib_sha256; appended at the end (keys must be new).
  std::vector<std::pair<std::string, io::GgufValue>> extra_metadata;
  std::optional<uint32_t> file_type;  // general.file_type (llama_ftype) when the caller knows it
  GgufTensorOrder order = GgufTensorOrder::kAuto;
};

// Metadata keys of calq-specific tensors.
std::string calq_qtensor_format_key(std::string_view tensor_name);  // "calq.qtensor.<name>.format"
std::string calq_qtensor_shape_key(std::string_view tensor_name);   // "calq.qtensor.<name>.shape"
inline constexpr std::string_view kCalqRequiresCalqKey = "calq.requires_calq";
// Hadamard rotation of a rotated model (ModelConfig::rotation, model/rotate.h): residual seed
// (uint64) and whether the runtime applies it (bool), both written for every rotated model; the
// down-projection seed (uint64) only when the runtime rotates the MLP intermediate. A runtime
// rotation sets calq.requires_calq (llama.cpp would run the model unrotated).
inline constexpr std::string_view kCalqRotationResidualSeedKey = "calq.rotation.residual_seed";
inline constexpr std::string_view kCalqRotationResidualOnlineKey = "calq.rotation.residual_online";
inline constexpr std::string_view kCalqRotationDownSeedKey = "calq.rotation.down_seed";
// Online Kronecker input transforms (LayerWeights::transforms, kron_transform.h): factor A of
// layer L's site S as the F32 tensor "blk.L.calq_kron.S.a" (ne = {n1, n1}, row-major as held), B
// as "blk.L.calq_kron.S.b" (ne = {n2, n2}); written after the model's tensors, by layer and site.
// Any transform sets calq.requires_calq (llama.cpp would run the folded weights on untransformed
// inputs). The names do not end in "weight", so a GGUF mix quantization (pipeline/gguf_quantize.h)
// copies the factors unchanged.
std::string calq_kron_tensor_name(int64_t layer, InputSite site, char factor);  // factor 'a' or 'b'
inline constexpr std::string_view kCalqKronTag = "calq_kron";
// LoRA adapters (LayerWeights::adapters): F32 tensors "<weight>.lora_a" / ".lora_b" and the key
// calq.lora.alpha (gguf_lora.h; adapters of different alphas are kUnsupported), written after the
// transforms, by layer and role; they set calq.requires_calq (llama.cpp's model loader refuses
// extra tensors; its --lora takes them from a separate adapter file).
// Activation quantization of a linear weight (LinearWeight::act_quant, docs/formats.md):
// "calq.act_quant.<name>" = "int8-token" | "int8-tensor" | "llm-int8", and for the latter two
// "calq.act_quant.<name>.value" = f32 scale / threshold. Written for every weight whose spec is
// enabled (the output head under "output.weight" even when tied to the embedding and so not
// stored); any such key sets calq.requires_calq. The loader applies them and refuses an unknown
// kind, a missing, mistyped, non-finite or non-positive value, a value for int8-token and a key
// naming no linear weight of the model (Errors naming file and key).
std::string calq_act_quant_key(std::string_view tensor_name);        // "calq.act_quant.<name>"
std::string calq_act_quant_value_key(std::string_view tensor_name);  // "calq.act_quant.<name>.value"
inline constexpr std::string_view kCalqActQuantPrefix = "calq.act_quant.";

// The metadata write_gguf_model writes for `model` (without reading any tensor data).
io::GgufMetadata gguf_model_metadata(const Model& model, const GgufExportOptions& options);

void write_gguf_model(const Model& model, const std::filesystem::path& out, const GgufExportOptions& options,
                      ThreadPool& pool);

}  // namespace calq::model
