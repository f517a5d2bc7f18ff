#include "model/kv_cache.h"

#include <vector>

#include "core/error.h"

namespace calq::model {

void check_kv_cache_format(const Format& format, const ModelConfig& config) {
  format.check_shape(config.num_kv_heads, config.head_dim, "KV cache");
}

const Format* kv_cache_format_by_name(std::string_view name) {
  if (name == "f32" || name == "none") return nullptr;
  if (name == "int8") return &format_by_name("int8-pc-sym");
  if (name == "int4") return &format_by_name("int4-g32-sym");
  if (name == "fp8") return &format_by_name("fp8-e4m3");
  return &format_by_name(name);
}

void quantize_kv_rows(const Format& format, float* x, int64_t seq_len, int64_t num_kv_heads, int64_t head_dim,
                      ThreadPool& pool) {
  const int64_t width = num_kv_heads * head_dim;
  const size_t bytes = format.tensor_bytes(num_kv_heads, head_dim);
  const QuantizeOptions options{.tensor_name = "KV cache"};
  // A few tokens per chunk: one token is only num_kv_heads·head_dim values.
  pool.parallel_for(0, static_cast<size_t>(seq_len), Grain{.min_items = 16}, [&](size_t t0, size_t t1) {
    std::vector<std::byte> code(bytes);
    for (size_t t = t0; t < t1; ++t) {
      float* row = x + static_cast<int64_t>(t) * width;
      // Scalar twin, on this thread: the bytes equal quantize()'s (format.h), and a pool call
      // from inside a chunk would run inline anyway.
      format.quantize_reference(row, num_kv_heads, head_dim, code, options);
      format.dequantize_rows(code.data(), num_kv_heads, head_dim, 0, num_kv_heads, row);
    }
  });
}

}  // namespace calq::model
