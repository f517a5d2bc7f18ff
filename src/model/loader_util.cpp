#include "model/loader_util.h"

#include <cassert>

#include <algorithm>
#include <climits>
#include <cmath>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"

namespace calq::model {

Tensor widen_checked(DType dtype, const std::byte* src, const Shape& shape, ThreadPool& pool,
                     std::string_view origin, std::string_view name) {
  Tensor out = Tensor::zeros(DType::kF32, shape);
  const size_t n = static_cast<size_t>(out.numel());
  const size_t elem = dtype_size(dtype);
  constexpr size_t kBlock = 1 << 16;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<uint8_t> bad(blocks, 0);
  float* dst = out.mutable_f32();
  pool.parallel_for(0, blocks, Grain{.min_items = 4}, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      const size_t i0 = b * kBlock;
      const size_t len = std::min(kBlock, n - i0);
      convert_to_f32(dtype, src + i0 * elem, dst + i0, len);
      for (size_t i = i0; i < i0 + len; ++i) {
        if (!std::isfinite(dst[i])) {
          bad[b] = 1;
          break;
        }
      }
    }
  });
  // The first bad block in index order names the first bad element, whatever the thread count.
  for (size_t b = 0; b < blocks; ++b) {
    if (!bad[b]) continue;
    for (size_t i = b * kBlock; i < n; ++i) {
      if (!std::isfinite(dst[i])) {
        fail(ErrorKind::kFormat, "{}: tensor '{}' holds a non-finite value ({}) at flat index {}", origin, name,
             dst[i], i);
      }
    }
  }
  return out;
}

void check_finite(const QuantizedTensor& t, ThreadPool& pool, std::string_view origin, std::string_view name) {
  // Rows per block: ~64K values, so a thread's scratch stays small.
  const int64_t block_rows = std::max<int64_t>(1, (int64_t{1} << 16) / t.cols);
  const auto blocks = static_cast<size_t>((t.rows + block_rows - 1) / block_rows);
  std::vector<int64_t> first_bad(blocks, -1);  // flat index of the first non-finite value per block
  pool.parallel_for(0, blocks, Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
    std::vector<float> buf(static_cast<size_t>(block_rows * t.cols));
    for (size_t b = b0; b < b1; ++b) {
      const int64_t r0 = static_cast<int64_t>(b) * block_rows;
      const int64_t r1 = std::min(t.rows, r0 + block_rows);
      t.dequantize_rows(r0, r1, buf.data());
      const int64_t n = (r1 - r0) * t.cols;
      for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(buf[static_cast<size_t>(i)])) {
          first_bad[b] = r0 * t.cols + i;
          break;
        }
      }
      // A view of a mapped file: checked pages leave the resident set, so that loading a model
      // larger than memory keeps only what the run touches later (core/mapped_file.h).
      const size_t rb = t.row_bytes();
      release_mapped_pages(t.bytes.subspan(static_cast<size_t>(r0) * rb, static_cast<size_t>(r1 - r0) * rb));
    }
  });
  // Once more whole: the kernel maps cached neighbours of a faulting page too ("fault-around"), so
  // reading a block brings back pages of the block released before it.
  release_mapped_pages(t.bytes);
  for (const int64_t i : first_bad) {
    if (i < 0) continue;
    std::vector<float> row(static_cast<size_t>(t.cols));
    t.dequantize_rows(i / t.cols, i / t.cols + 1, row.data());
    const float v = row[static_cast<size_t>(i % t.cols)];
    fail(ErrorKind::kFormat, "{}: tensor '{}' ({}) decodes to a non-finite value ({}) at flat index {}", origin, name,
         t.format->name(), v, i);
  }
}

void sort_in_model_order(std::vector<SourceTensor>& tensors, const Architecture& arch, bool gguf) {
  using Key = std::tuple<int64_t, int64_t, std::string>;
  const auto key = [&](const SourceTensor& t) {
    const auto parsed = gguf ? parse_gguf_tensor_name(arch, t.name) : parse_hf_tensor_name(arch, t.name);
    if (!parsed) return Key{INT64_MAX, 0, t.name};
    int64_t group = parsed->layer;
    if (parsed->layer < 0) group = parsed->role == TensorRole::kTokenEmbedding ? -1 : INT64_MAX - 1;
    const auto slot_index = static_cast<int64_t>(find_slot(arch, parsed->role) - arch.slots.data());
    return Key{group, slot_index, t.name};
  };
  std::stable_sort(tensors.begin(), tensors.end(),
                   [&](const SourceTensor& a, const SourceTensor& b) { return key(a) < key(b); });
}

void load_layers(Model& m, const std::function<LinearWeight(TensorRole, int64_t)>& load_linear,
                 const std::function<Tensor(TensorRole, int64_t)>& load_vector,
                 const std::function<std::vector<ExpertWeights>(int64_t)>& load_experts) {
  m.layers.resize(static_cast<size_t>(m.config.num_layers));
  for (int64_t i = 0; i < m.config.num_layers; ++i) {
    LayerWeights& layer = m.layers[static_cast<size_t>(i)];
    if (m.config.moe) {
      assert(load_experts);
      layer.experts = load_experts(i);
    }
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (!is_per_layer(role) || is_expert(role) || !has_role(m.config, role)) continue;
      if (is_linear(role)) {
        layer.linear(role) = load_linear(role, i);
      } else {
        layer.vector(role) = load_vector(role, i);
      }
    }
  }
}

}  // namespace calq::model
