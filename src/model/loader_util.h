// Helpers shared by the safetensors and GGUF loaders. Internal to calq_model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::model {

// A new float32 tensor of `shape` from `src` (F32/F16/BF16, row-major, numel(shape) elements),
// converted in parallel blocks. A NaN/Inf is a kFormat error naming `origin` (the file), the
// tensor `name` and the flat index of the first one.
Tensor widen_checked(DType dtype, const std::byte* src, const Shape& shape, ThreadPool& pool,
                     std::string_view origin, std::string_view name);

// Dequantizes `t` block by block (never all of it at once) and fails like widen_checked when a
// value is not finite — a NaN/Inf scale in a quantized file — naming the first one in row order.
void check_finite(const QuantizedTensor& t, ThreadPool& pool, std::string_view origin, std::string_view name);

// Fills m.layers (m.config.num_layers of them) for every per-layer role the config has (biases
// only where the architecture uses them): load_linear(role, layer) for linear roles,
// load_vector(role, layer) for norms and biases, load_experts(layer) for a MoE model's experts
// (config.moe->num_experts of them; required when the config has experts).
void load_layers(Model& m, const std::function<LinearWeight(TensorRole, int64_t)>& load_linear,
                 const std::function<Tensor(TensorRole, int64_t)>& load_vector,
                 const std::function<std::vector<ExpertWeights>(int64_t)>& load_experts = {});

// Sorts tensors into model order (embedding, layer 0 in table order, layer 1, ..., final norm,
// head; names the table does not know last) — layer 10 would sort before layer 2 by name.
// `gguf` selects which of the table's names the tensors carry.
void sort_in_model_order(std::vector<SourceTensor>& tensors, const Architecture& arch, bool gguf);

}  // namespace calq::model
