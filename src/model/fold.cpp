#include "model/fold.h"

#include <cassert>
#include <cmath>
#include <cstring>
#include <optional>
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

// The bias role added after `linear`, when the model holds one (Qwen2's v bias).
std::optional<TensorRole> held_bias(const ModelConfig& config, TensorRole linear) {
  for (size_t i = 0; i < kNumTensorRoles; ++i) {
    const auto role = static_cast<TensorRole>(i);
    if (is_bias(role) && bias_target(role) == linear && has_role(config, role)) return role;
  }
  return std::nullopt;
}

// The foldable site whose first consumer is `group`, or nullptr.
const SiteWiring* group_site(const BlockTopology& block, TensorRole group) {
  const SiteWiring* w = site_of(block, group);
  if (w == nullptr || w->consumers.front() != group || w->fold == FoldPoint::kNone) return nullptr;
  return w;
}

[[noreturn]] void fail_not_a_group(const BlockTopology& block, TensorRole group) {
  std::string groups;
  for (const SiteWiring& w : block.layer_sites) {
    if (w.fold == FoldPoint::kNone) continue;
    if (!groups.empty()) groups += ", ";
    groups += role_name(w.consumers.front());
  }
  fail(ErrorKind::kInvalidArgument, "input scales: '{}' does not start an input group ({})", role_name(group),
       groups);
}

void check_dense(const LinearWeight& w, const ModelConfig& config, TensorRole role, int64_t layer_index) {
  if (w.empty() || w.is_quantized()) {
    fail(ErrorKind::kUnsupported, "{}: input scales can only be folded into a dense float32 weight (it is {})",
         tensor_label(config, role, layer_index), w.empty() ? std::string("missing") : w.format_name());
  }
}

void check_vector(const Tensor& v, const ModelConfig& config, TensorRole role, int64_t layer_index, int64_t n,
                  const char* what) {
  if (v.dtype() != DType::kF32 || v.numel() != n) {
    fail(ErrorKind::kUnsupported, "{}: input scales need a float32 {} of {} values",
         tensor_label(config, role, layer_index), what, n);
  }
}

// v[c] /= s[c] in a new tensor.
Tensor divided(const Tensor& v, std::span<const float> s) {
  Tensor out = owned_copy(v);
  float* d = out.mutable_f32();
  for (size_t c = 0; c < s.size(); ++c) d[c] /= s[c];
  return out;
}

}  // namespace

std::vector<TensorRole> input_consumers(TensorRole group, const BlockTopology& block) {
  const SiteWiring* w = group_site(block, group);
  if (w == nullptr) fail_not_a_group(block, group);
  return {w->consumers.begin(), w->consumers.end()};
}

void fold_input_scales(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, TensorRole group,
                       std::span<const float> s) {
  const BlockTopology& block = block_topology(config);
  const SiteWiring* w = group_site(block, group);
  if (w == nullptr) fail_not_a_group(block, group);
  fold_input_scales(layer, config, layer_index, w->site, s);
}

namespace {

void fold(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, InputSite site,
          std::span<const float> s, bool consumers_too) {
  const SiteWiring* wiring = find_site(block_topology(config), site);
  if (wiring == nullptr || wiring->fold == FoldPoint::kNone) {
    fail(ErrorKind::kInvalidArgument, "input scales: site '{}' has no fold point in the {} block", site_name(site),
         block_topology(config).name);
  }
  if (layer.transform(site) != nullptr) {
    // The consumers read x·T: a per-channel scale of x does not commute with T, and one of x·T
    // has no producer to fold into.
    fail(ErrorKind::kUnsupported,
         "layer {}: cannot fold input scales of site '{}': it has an online Kronecker transform (fold scales "
         "before installing transforms)",
         layer_index, site_name(site));
  }
  const std::span<const TensorRole> consumers = wiring->consumers;
  const TensorRole producer = wiring->producer;
  // A LoRA adapter reads the consumer's input (or adds to the producer's output) unscaled: the
  // fold would change the adapted linear's function.
  for (const TensorRole role : consumers) {
    if (layer.adapter(role) != nullptr) {
      fail(ErrorKind::kUnsupported,
           "{}: cannot fold input scales of site '{}': it has a LoRA adapter (fold scales before adding adapters)",
           tensor_label(config, role, layer_index), site_name(site));
    }
  }
  if (wiring->fold != FoldPoint::kNormWeight && is_linear(producer) && layer.adapter(producer) != nullptr) {
    fail(ErrorKind::kUnsupported,
         "{}: cannot fold input scales of site '{}' into it: it has a LoRA adapter (fold scales before adding adapters)",
         tensor_label(config, producer, layer_index), site_name(site));
  }
  if (!can_fold(*wiring, config)) {
    switch (wiring->condition) {
      case FoldCondition::kOneQueryHeadPerKvHead:
        fail(ErrorKind::kUnsupported,
             "layer {}: cannot fold input scales of {} into {}: {} query heads share {} value heads (grouped-query "
             "attention); only num_heads == num_kv_heads is supported",
             layer_index, tensor_label(config, consumers.front(), layer_index),
             tensor_label(config, producer, layer_index), config.num_heads, config.num_kv_heads);
      case FoldCondition::kAlways: break;
    }
    assert(false && "fold refused without a condition");
  }

  // Validate everything before changing anything.
  const int64_t in = layer.linear(consumers.front()).cols();
  for (const TensorRole role : consumers) {
    check_dense(layer.linear(role), config, role, layer_index);
    assert(layer.linear(role).cols() == in);
  }
  if (static_cast<int64_t>(s.size()) != in) {
    fail(ErrorKind::kInvalidArgument, "{}: {} input scales given for {} input columns",
         tensor_label(config, consumers.front(), layer_index), s.size(), in);
  }
  for (size_t c = 0; c < s.size(); ++c) {
    if (!std::isfinite(s[c]) || !(s[c] > 0.0f)) {
      fail(ErrorKind::kInvalidArgument, "{}: input scale {} is {} (must be finite and > 0)",
           tensor_label(config, consumers.front(), layer_index), c, s[c]);
    }
  }
  const bool norm_producer = wiring->fold == FoldPoint::kNormWeight;
  const std::optional<TensorRole> bias = norm_producer ? std::nullopt : held_bias(config, producer);
  if (norm_producer) {
    check_vector(layer.vector(producer), config, producer, layer_index, in, "norm weight");
  } else {
    check_dense(layer.linear(producer), config, producer, layer_index);
    assert(layer.linear(producer).rows() == in);
    if (bias) check_vector(layer.vector(*bias), config, *bias, layer_index, in, "bias");
  }

  // Consumers: column c times s[c].
  for (const TensorRole role : consumers) {
    if (!consumers_too) break;
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
    layer.vector(producer) = divided(layer.vector(producer), s);
    return;
  }
  Tensor p = owned_copy(layer.linear(producer).dense());
  const int64_t cols = p.dim(1);
  float* d = p.mutable_f32();
  for (int64_t r = 0; r < in; ++r) {
    const float sr = s[static_cast<size_t>(r)];
    for (int64_t c = 0; c < cols; ++c) d[r * cols + c] /= sr;
  }
  layer.linear(producer) = LinearWeight(std::move(p));
  if (bias) layer.vector(*bias) = divided(layer.vector(*bias), s);
}

}  // namespace

void fold_input_scales(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, InputSite site,
                       std::span<const float> s) {
  fold(layer, config, layer_index, site, s, true);
}

void fold_into_producer(LayerWeights& layer, const ModelConfig& config, int64_t layer_index, InputSite site,
                        std::span<const float> s) {
  fold(layer, config, layer_index, site, s, false);
}

}  // namespace calq::model
