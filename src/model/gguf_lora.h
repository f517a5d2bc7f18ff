// The LoRA adapters of a GGUF model file (LayerWeights::adapters, lora_adapter.h), named as in
// llama.cpp's LoRA adapter GGUFs: for the linear weight "blk.L.attn_q.weight",
//   "blk.L.attn_q.weight.lora_a"  F32, ne = {in, rank}   (row-major A [rank, in])
//   "blk.L.attn_q.weight.lora_b"  F32, ne = {rank, out}  (row-major B [out, rank])
// and one model-wide float32 key "calq.lora.alpha" (scale = alpha / rank, PEFT's lora_alpha / r).
// B's rows are in the order of its base tensor's rows in the file: permuted for llama.cpp's
// interleaved rotary embedding where the base is (Q/K weights of a GGUF-native type or float;
// gguf_export.h), as llama.cpp's convert_lora_to_gguf.py writes them; not for a calq-specific base.
// Internal to calq_model (gguf_export.cpp writes them, gguf_model.cpp reads them).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/thread_pool.h"
#include "io/gguf.h"
#include "model/model.h"

namespace calq::model {

inline constexpr std::string_view kCalqLoraAlphaKey = "calq.lora.alpha";
inline constexpr std::string_view kLoraASuffix = ".lora_a";
inline constexpr std::string_view kLoraBSuffix = ".lora_b";

// Whether a tensor name ends in ".lora_a" or ".lora_b": the loader's check of known tensor names
// leaves such tensors to read_gguf_adapters.
bool is_lora_tensor_name(std::string_view name);

// The one alpha of `m`'s adapters (nullopt when it has none). Adapters with different alphas are
// Error(kUnsupported) naming `origin` (one key holds them).
std::optional<double> model_lora_alpha(const Model& m, std::string_view origin);

// The adapter tensor name of a base tensor: "<base>.lora_a" (`factor` 'a') or "<base>.lora_b".
std::string lora_tensor_name(std::string_view base, char factor);

// Reads every adapter of `file` into m.layers (m.config, m.arch and m.layers already loaded;
// `heads_of(role, base name)`: the head count the base tensor's rows are Q/K-permuted over in the
// file, 0 when they are not). Every lora tensor must be named after a layer linear weight the
// file holds, be F32 of finite values with its partner, the two of one rank ≥ 1 and the base's
// in/out; calq.lora.alpha must be present with them (a finite float > 0), and absent without them;
// else Error(kFormat) naming the file and the tensor or key.
void read_gguf_adapters(const io::GgufFile& file, Model& m,
                        const std::function<int64_t(TensorRole, std::string_view)>& heads_of, ThreadPool& pool);

}  // namespace calq::model
