#include "model/fold.h"

#include <cassert>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"

namespace calq::model {
namespace {

std::string tensor_label(const ModelConfig& config, TensorRole role, int64_t layer) {
  const Architecture* arch = find_architecture(config.model_type);
  if (arch != nullptr && has_slot(*arch, role)) return hf_tensor_name(*arch, role, layer);
  return "layer " + std::to_string(layer) + " " + std::string(role_name(role));
}

// An owned float32 copy of a dense tensor (the original may be shared or a read-only view).
Tensor owned_copy(const Tensor& t) {
  Tensor out = Tensor::zeros(DType::kF32, t.shape());
  if (t.nbytes() > 0) std::memcpy(out.mutable_data(), t.data(), t.nbytes());
  return out;
}

}  // namespace

std::vector<TensorRole> input_consumers(TensorRole group) {
  switch (group) {
    case TensorRole::kAttnQ: return {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV};
    case TensorRole::kMlpGate: return {TensorRole::kMlpGate, TensorRole::kMlpUp};
    case TensorRole::kMlpDown: return {TensorRole::kMlpDown};
    case TensorRole::kAttnOut: return {TensorRole::kAttnOut};
    default: break;
  }
  fail(ErrorKind::kInvalidArgument, "input scales: '{}' does not start an input group (attn_q, attn_output, "
       "mlp_gate or mlp_down)", role_name(group));
}

void fold_input_scales(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, TensorRole group,
                       std::span<const float> s) {
  const std::vector<TensorRole> consumers = input_consumers(group);
  if (group == TensorRole::kAttnOut && config.num_heads != config.num_kv_heads) {
    fail(ErrorKind::kUnsupported,
         "layer {}: cannot fold input scales of {} into v: {} query heads share {} value heads (grouped-query "
         "attention); only num_heads == num_kv_heads is supported",
         layer_index, tensor_label(config, TensorRole::kAttnOut, layer_index), config.num_heads,
         config.num_kv_heads);
  }

  // Validate everything before changing anything.
  const int64_t in = layer.linear(consumers[0]).cols();
  for (const TensorRole role : consumers) {
    const LinearWeight& w = layer.linear(role);
    if (w.empty() || w.is_quantized()) {
      fail(ErrorKind::kUnsupported, "{}: input scales can only be folded into a dense float32 weight (it is {})",
           tensor_label(config, role, layer_index), w.empty() ? std::string("missing") : w.format_name());
    }
    assert(w.cols() == in);
  }
  if (static_cast<int64_t>(s.size()) != in) {
    fail(ErrorKind::kInvalidArgument, "{}: {} input scales given for {} input columns",
         tensor_label(config, consumers[0], layer_index), s.size(), in);
  }
  for (size_t c = 0; c < s.size(); ++c) {
    if (!std::isfinite(s[c]) || !(s[c] > 0.0f)) {
      fail(ErrorKind::kInvalidArgument, "{}: input scale {} is {} (must be finite and > 0)",
           tensor_label(config, consumers[0], layer_index), c, s[c]);
    }
  }
  const bool norm_producer = group == TensorRole::kAttnQ || group == TensorRole::kMlpGate;
  const TensorRole producer = group == TensorRole::kAttnQ     ? TensorRole::kAttnNorm
                              : group == TensorRole::kMlpGate ? TensorRole::kMlpNorm
                              : group == TensorRole::kMlpDown ? TensorRole::kMlpUp
                                                              : TensorRole::kAttnV;
  const bool has_bias = group == TensorRole::kAttnOut && config.qkv_bias;
  if (norm_producer) {
    const Tensor& norm = layer.vector(producer);
    if (norm.dtype() != DType::kF32 || norm.numel() != in) {
      fail(ErrorKind::kUnsupported, "{}: input scales need a float32 norm weight of {} values",
           tensor_label(config, producer, layer_index), in);
    }
  } else {
    const LinearWeight& p = layer.linear(producer);
    if (p.empty() || p.is_quantized()) {
      fail(ErrorKind::kUnsupported, "{}: input scales can only be folded into a dense float32 weight (it is {})",
           tensor_label(config, producer, layer_index), p.empty() ? std::string("missing") : p.format_name());
    }
    assert(p.rows() == in);
    if (has_bias) {
      const Tensor& b = layer.vector(TensorRole::kAttnVBias);
      if (b.dtype() != DType::kF32 || b.numel() != in) {
        fail(ErrorKind::kUnsupported, "{}: input scales need a float32 bias of {} values",
             tensor_label(config, TensorRole::kAttnVBias, layer_index), in);
      }
    }
  }

  // Consumers: column c times s[c].
  for (const TensorRole role : consumers) {
    Tensor w = owned_copy(layer.linear(role).dense());
    float* d = w.mutable_f32();
    const int64_t rows = w.dim(0);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = d + r * in;
      for (int64_t c = 0; c < in; ++c) row[c] *= s[static_cast<size_t>(c)];
    }
    layer.linear(role) = LinearWeight(std::move(w));
  }
  // Producer: output c divided by s[c].
  if (norm_producer) {
    Tensor norm = owned_copy(layer.vector(producer));
    float* d = norm.mutable_f32();
    for (int64_t c = 0; c < in; ++c) d[c] /= s[static_cast<size_t>(c)];
    layer.vector(producer) = std::move(norm);
  } else {
    Tensor p = owned_copy(layer.linear(producer).dense());
    const int64_t cols = p.dim(1);
    float* d = p.mutable_f32();
    for (int64_t r = 0; r < in; ++r) {
      const float sr = s[static_cast<size_t>(r)];
      for (int64_t c = 0; c < cols; ++c) d[r * cols + c] /= sr;
    }
    layer.linear(producer) = LinearWeight(std::move(p));
    if (has_bias) {
      Tensor b = owned_copy(layer.vector(TensorRole::kAttnVBias));
      float* bd = b.mutable_f32();
      for (int64_t c = 0; c < in; ++c) bd[c] /= s[static_cast<size_t>(c)];
      layer.vector(TensorRole::kAttnVBias) = std::move(b);
    }
  }
}

}  // namespace calq::model
