#include "pipeline/tensor_swap.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "model/architecture.h"

namespace calq::pipeline {
namespace {

bool tied(const model::Model& m) { return m.output.same_storage(m.embedding); }

// "blk.3.attn_v.weight" -> "attn_v"; "token_embd.weight" -> "token_embd".
std::string short_role_of(const std::string& name) {
  std::string s = name;
  if (s.rfind("blk.", 0) == 0) {
    const size_t dot = s.find('.', 4);
    s = dot == std::string::npos ? s : s.substr(dot + 1);
  }
  constexpr std::string_view kSuffix = ".weight";
  if (s.size() > kSuffix.size() && s.compare(s.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
    s.resize(s.size() - kSuffix.size());
  }
  return s;
}

WeightRef make_ref(const model::Model& m, model::TensorRole role, int64_t layer) {
  WeightRef r{.role = role, .layer = layer, .name = model::gguf_tensor_name(*m.arch, role, layer)};
  r.short_role = short_role_of(r.name);
  return r;
}

}  // namespace

std::vector<WeightRef> weight_refs(const model::Model& m) {
  std::vector<WeightRef> refs;
  refs.push_back(make_ref(m, model::TensorRole::kTokenEmbedding, -1));
  for (int64_t l = 0; l < static_cast<int64_t>(m.layers.size()); ++l) {
    for (const model::TensorRole role : model::layer_linear_roles(m.config)) refs.push_back(make_ref(m, role, l));
    const auto& experts = m.layers[static_cast<size_t>(l)].experts;
    for (const model::TensorRole role :
         {model::TensorRole::kExpertGate, model::TensorRole::kExpertUp, model::TensorRole::kExpertDown}) {
      for (int64_t e = 0; e < static_cast<int64_t>(experts.size()); ++e) {
        WeightRef r = make_ref(m, role, l);
        r.expert = e;
        refs.push_back(std::move(r));
      }
    }
  }
  if (!tied(m)) refs.push_back(make_ref(m, model::TensorRole::kOutput, -1));
  return refs;
}

const model::LinearWeight& weight_at(const model::Model& m, const WeightRef& ref) {
  if (ref.role == model::TensorRole::kTokenEmbedding) return m.embedding;
  if (ref.role == model::TensorRole::kOutput) return m.output;
  const model::LayerWeights& l = m.layers.at(static_cast<size_t>(ref.layer));
  if (ref.expert >= 0) return l.experts.at(static_cast<size_t>(ref.expert)).linear(ref.role);
  return l.linear(ref.role);
}

void set_weight(model::Model& m, const WeightRef& ref, const model::LinearWeight& w) {
  if (ref.role == model::TensorRole::kTokenEmbedding) {
    const bool was_tied = tied(m);
    m.embedding = w;
    if (was_tied) m.output = w;
  } else if (ref.role == model::TensorRole::kOutput) {
    m.output = w;
  } else if (ref.expert >= 0) {
    m.layers.at(static_cast<size_t>(ref.layer)).experts.at(static_cast<size_t>(ref.expert)).linear(ref.role) = w;
  } else {
    m.layers.at(static_cast<size_t>(ref.layer)).linear(ref.role) = w;
  }
}

model::Model hybrid_model(const model::Model& base, const model::Model& donor, std::span<const WeightRef> refs) {
  model::Model h = base;
  for (const WeightRef& r : refs) set_weight(h, r, weight_at(donor, r));
  return h;
}

void check_same_layout(const model::Model& a, const model::Model& b) {
  const auto mismatch = [&](const std::string& what) {
    fail(ErrorKind::kInvalidArgument, "{} and {} do not have the same layout: {}", a.source.string(),
         b.source.string(), what);
  };
  if (a.arch != b.arch) mismatch("different architectures");
  if (a.config.vocab_size != b.config.vocab_size) {
    mismatch(fmt::format("vocabulary {} vs {}", a.config.vocab_size, b.config.vocab_size));
  }
  if (a.layers.size() != b.layers.size()) mismatch(fmt::format("{} vs {} layers", a.layers.size(), b.layers.size()));
  for (size_t l = 0; l < a.layers.size(); ++l) {
    if (a.layers[l].experts.size() != b.layers[l].experts.size()) {
      mismatch(fmt::format("layer {} has {} vs {} experts", l, a.layers[l].experts.size(), b.layers[l].experts.size()));
    }
  }
  if (a.config.num_heads != b.config.num_heads || a.config.num_kv_heads != b.config.num_kv_heads ||
      a.config.head_dim != b.config.head_dim) {
    mismatch("different attention heads");
  }
  if (tied(a) != tied(b)) mismatch("one has its output head tied to the embedding, the other not");
  // A weight moved from one model into the other is only the same function when everything around
  // it is: rotations and scales folded into the norms (rotate, awq, smoothquant) change the basis
  // the linear weights work in.
  if (a.config.rotation.has_value() != b.config.rotation.has_value()) {
    mismatch("one has a Hadamard rotation (calq.rotation.*), the other not; swapping single tensors between "
             "them mixes two bases");
  }
  // A LoRA adapter is fitted to (or trained on) its own model's weight: moving the weight without
  // it, or under the other model's, is neither model.
  if (a.has_adapters() || b.has_adapters()) {
    mismatch(fmt::format("{} carries LoRA adapters; swapping single tensors would separate a weight from its adapter",
                         a.has_adapters() ? a.source.string() : b.source.string()));
  }
  // An online input transform changes the basis its site's consumers work in, as a rotation does.
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (size_t site = 0; site < static_cast<size_t>(model::kNumInputSites); ++site) {
      const std::optional<model::KronTransform>& ta = a.layers[l].transforms[site];
      const std::optional<model::KronTransform>& tb = b.layers[l].transforms[site];
      if (ta.has_value() != tb.has_value() || (ta && !ta->same_values(*tb))) {
        mismatch(fmt::format("their online input transforms blk.{}.calq_kron.{} differ; swapping single tensors "
                             "between them mixes two bases",
                             l, model::site_name(static_cast<model::InputSite>(site))));
      }
    }
  }
  const auto same_norm = [&](const Tensor& x, const Tensor& y, const std::string& name) {
    const Tensor fx = x.to_f32(), fy = y.to_f32();
    if (fx.numel() != fy.numel() ||
        !std::equal(fx.f32(), fx.f32() + fx.numel(), fy.f32(), [](float u, float v) { return u == v; })) {
      mismatch(fmt::format("norm weights {} differ (scales folded by awq, smoothquant or rotate?); swapping single "
                           "tensors between them would mix two different models",
                           name));
    }
  };
  for (size_t l = 0; l < a.layers.size(); ++l) {
    same_norm(a.layers[l].attn_norm, b.layers[l].attn_norm, fmt::format("blk.{}.attn_norm", l));
    same_norm(a.layers[l].mlp_norm, b.layers[l].mlp_norm, fmt::format("blk.{}.ffn_norm", l));
  }
  same_norm(a.final_norm, b.final_norm, "output_norm");
  for (const WeightRef& r : weight_refs(a)) {
    const model::LinearWeight& wa = weight_at(a, r);
    const model::LinearWeight& wb = weight_at(b, r);
    if (wa.rows() != wb.rows() || wa.cols() != wb.cols()) {
      mismatch(fmt::format("tensor {} is [{}, {}] vs [{}, {}]", r.name, wa.rows(), wa.cols(), wb.rows(), wb.cols()));
    }
  }
}

}  // namespace calq::pipeline
