// Whole-model GGUF quantization: plan the types, convert and encode tensor by tensor (rows in
// parallel), then write everything through io::write_gguf.
#include "core/stopwatch.h"
#include "pipeline/gguf_quantize.h"

#include <cassert>
#include <chrono>
#include <cstring>
#include <string_view>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/format.h"

#ifndef CALQ_VERSION
#define CALQ_VERSION "unknown"
#endif

namespace calq::pipeline {
namespace {

// llama.cpp's GGML_QNT_VERSION: the k-quant/legacy-quant layout generation the file uses.
constexpr uint32_t kQuantizationVersion = 2;
// F16/BF16 -> F32 conversion is cheap per element: hand a thread at least this many rows' worth.
constexpr Grain kConvertGrain{.min_items = 1 << 16};

// The tensor as F32 in `buf` (or a view of the file for F32 tensors).
const float* to_f32(const io::GgufFile& in, const TensorPlan& p, std::vector<float>& buf, ThreadPool& pool) {
  const std::span<const std::byte> data = in.tensor_data(in.tensors()[p.index]);
  const size_t n = static_cast<size_t>(in.tensors()[p.index].element_count());
  DType dtype;
  switch (p.from_type) {
    case io::kGgmlF32: {
      // GGUF data is aligned to at least 8 bytes in the mapping; read it in place.
      return reinterpret_cast<const float*>(data.data());
    }
    case io::kGgmlF16: dtype = DType::kF16; break;
    case io::kGgmlBF16: dtype = DType::kBF16; break;
    default:
      fail(ErrorKind::kUnsupported, "{}: tensor {}: cannot quantize from {} (calq does not requantize; give an "
           "F32/F16/BF16 model)", in.path().string(), p.name, io::ggml_type_name(p.from_type));
  }
  buf.resize(n);
  const size_t esize = dtype_size(dtype);
  pool.parallel_for(0, n, kConvertGrain, [&](size_t b, size_t e) {
    convert_to_f32(dtype, data.data() + b * esize, buf.data() + b, e - b);
  });
  return buf.data();
}

}  // namespace

std::vector<TensorPlan> plan_gguf_quantization(const io::GgufFile& in, const QuantMix& mix) {
  const ModelShape shape = model_shape_from_gguf(in);
  std::vector<MixTensor> tensors;
  tensors.reserve(in.tensors().size());
  for (const io::GgufTensorInfo& t : in.tensors()) tensors.push_back({.name = t.name, .ne = t.ne, .type = t.type});
  const std::vector<TypeChoice> choices = assign_types(mix, shape, tensors);
  std::vector<TensorPlan> plan;
  plan.reserve(tensors.size());
  for (const size_t i : llama_tensor_order(tensors)) {
    plan.push_back({.index = i, .name = tensors[i].name, .ne = tensors[i].ne, .from_type = tensors[i].type,
                    .choice = choices[i]});
  }
  return plan;
}

io::GgufMetadata quantized_metadata(const io::GgufMetadata& in, const QuantMix& mix, const std::string& recipe) {
  io::GgufMetadata out;
  out.reserve(in.size() + 4);
  for (const auto& [key, value] : in) {
    const bool replaced = key == "general.quantization_version" || key == "general.file_type" ||
                          key.rfind("split.", 0) == 0 || key.rfind("calq.", 0) == 0;
    if (!replaced) out.emplace_back(key, value);
  }
  out.emplace_back("general.quantization_version", io::GgufValue::of_uint32(kQuantizationVersion));
  out.emplace_back("general.file_type", io::GgufValue::of_uint32(mix.file_type));
  out.emplace_back("calq.version", io::GgufValue::of_string(CALQ_VERSION));
  out.emplace_back("calq.recipe", io::GgufValue::of_string(recipe));
  return out;
}

QuantizeGgufResult quantize_gguf(const io::GgufFile& in, const std::filesystem::path& out,
                                 const QuantizeGgufOptions& options, ThreadPool& pool) {
  assert(options.mix != nullptr);
  const QuantMix& mix = *options.mix;
  const std::string origin = in.path().string();
  QuantizeGgufResult r;
  // LoRA adapters in a model file (model/gguf_lora.h) belong to the weights they were made with:
  // the mix would copy them beside re-encoded weights.
  for (const io::GgufTensorInfo& t : in.tensors()) {
    for (const std::string_view suffix : {std::string_view(".lora_a"), std::string_view(".lora_b")}) {
      if (t.name.size() > suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0)
        fail(ErrorKind::kUnsupported, "{}: tensor {} is a LoRA adapter factor; a mix does not quantize a model "
             "carrying adapters (they were made for its current weights)", origin, t.name);
    }
  }
  r.plan = plan_gguf_quantization(in, mix);

  // Check every type before the slow part, so a missing encoder fails fast.
  for (const TensorPlan& p : r.plan) {
    if (!p.choice.quantize) continue;
    if (p.from_type != io::kGgmlF32 && p.from_type != io::kGgmlF16 && p.from_type != io::kGgmlBF16) {
      fail(ErrorKind::kUnsupported, "{}: tensor {}: cannot quantize from {} (calq does not requantize; give an "
           "F32/F16/BF16 model)", origin, p.name, io::ggml_type_name(p.from_type));
    }
    const Format* f = format_by_ggml_type(p.choice.type);
    if (f == nullptr) {
      fail(ErrorKind::kUnsupported, "{}: tensor {}: mix {} needs ggml type {}, which has no encoder in this build",
           origin, p.name, mix.name, io::ggml_type_name(p.choice.type));
    }
    assert(f->trailer_bytes(1, p.ne[0]) == 0 && "a ggml type's format is GGUF-native");
  }

  std::vector<std::vector<std::byte>> encoded(r.plan.size());
  std::vector<io::GgufWriteTensor> tensors;
  tensors.reserve(r.plan.size());
  std::vector<float> f32;
  for (size_t k = 0; k < r.plan.size(); ++k) {
    const TensorPlan& p = r.plan[k];
    const io::GgufTensorInfo& info = in.tensors()[p.index];
    const auto t0 = std::chrono::steady_clock::now();
    TensorDone done{.done = k + 1, .total = r.plan.size(), .plan = &p};
    r.bytes_in += info.size_bytes;
    if (!p.choice.quantize) {
      tensors.push_back({.name = p.name, .ne = p.ne, .type = p.from_type, .data = in.tensor_data(info)});
      r.bytes_out += info.size_bytes;
    } else {
      const Format& format = *format_by_ggml_type(p.choice.type);
      const int64_t cols = p.ne[0];
      const int64_t n_mat = p.ne.size() > 2 ? p.ne[2] : 1;  // experts are quantized one by one
      const int64_t rows_per_mat = info.element_count() / cols / n_mat;
      const float* importance = nullptr;
      if (options.imatrix != nullptr) {
        if (const ImatrixEntry* e = options.imatrix->find(p.name)) {
          if (static_cast<int64_t>(e->values.size()) == cols * n_mat && info.element_count() == cols * rows_per_mat * n_mat) {
            importance = e->values.data();
          } else if (p.name != "token_embd.weight") {
            fail(ErrorKind::kFormat, "{}: imatrix entry {} has {} values; the tensor needs {} (ne[0] {} x {} matrices)",
                 options.imatrix->path.string(), p.name, e->values.size(), cols * n_mat, cols, n_mat);
          }
        }
      }
      const float* src = to_f32(in, p, f32, pool);
      const double t_convert = seconds_since(t0);
      std::vector<std::byte>& dst = encoded[k];
      const size_t mat_bytes = format.tensor_bytes(rows_per_mat, cols);
      dst.resize(mat_bytes * static_cast<size_t>(n_mat));
      for (int64_t m = 0; m < n_mat; ++m) {
        format.quantize(pool, src + m * rows_per_mat * cols, rows_per_mat, cols,
                        std::span<std::byte>(dst).subspan(static_cast<size_t>(m) * mat_bytes, mat_bytes),
                        {.tensor_name = p.name, .importance = importance ? importance + m * cols : nullptr});
      }
      r.seconds_convert += t_convert;
      r.seconds_encode += seconds_since(t0) - t_convert;
      tensors.push_back({.name = p.name, .ne = p.ne, .type = p.choice.type, .data = dst});
      r.bytes_out += dst.size();
      ++r.n_quantized;
      if (importance != nullptr) ++r.n_with_importance;
      if (p.choice.fell_back) ++r.n_fallback;
      done.used_importance = importance != nullptr;
    }
    done.seconds = seconds_since(t0);
    if (options.on_tensor) options.on_tensor(done);
  }

  std::string recipe = options.recipe;
  if (recipe.empty()) {
    recipe = "mix=" + mix.name;
    if (options.imatrix != nullptr) recipe += ";imatrix=" + options.imatrix->path.filename().string();
  }
  const io::GgufMetadata meta = quantized_metadata(in.metadata(), mix, recipe);
  io::GgufWriteOptions wopt = io::gguf_write_options(in);
  wopt.version = 3;
  const auto t_write = std::chrono::steady_clock::now();
  io::write_gguf(out, meta, tensors, wopt);
  r.seconds_write = seconds_since(t_write);
  return r;
}

}  // namespace calq::pipeline
