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

// Fills m.layers (m.config.num_layers of them) with load_role(role, layer) for every per-layer
// role the config has (biases only where the architecture uses them).
void load_layers(Model& m, const std::function<Tensor(TensorRole, int64_t)>& load_role);

// Sorts tensors into model order (embedding, layer 0 in table order, layer 1, ..., final norm,
// head; names the table does not know last) — layer 10 would sort before layer 2 by name.
// `gguf` selects which of the table's names the tensors carry.
void sort_in_model_order(std::vector<SourceTensor>& tensors, const Architecture& arch, bool gguf);

}  // namespace calq::model
