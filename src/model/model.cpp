#include "model/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <memory>
#include <optional>
#include <set>

#include "core/error.h"
#include "formats/format.h"
#include "formats/int_dot.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/hf_quant.h"
#include "model/loader_util.h"

namespace calq::model {
namespace {

// Loads one tensor as float32, checking shape and finiteness.
Tensor load_f32(const io::SafetensorsModel& st, const std::string& name, const Shape& expected,
                ThreadPool& pool) {
  const io::TensorInfo& info = st.info(name);
  if (info.shape != expected) {
    fail(ErrorKind::kFormat, "{}: tensor '{}' has shape {} but the config implies {}", st.folder().string(), name,
         shape_string(info.shape), shape_string(expected));
  }
  const Tensor src = st.tensor(name);
  return widen_checked(src.dtype(), src.data(), expected, pool, st.folder().string(), name);
}

void check_known_tensors(const io::SafetensorsModel& st, const ModelConfig& config, const Architecture& arch,
                         const HfQuantSpec* quant) {
  for (const auto& stored : st.names()) {
    // A quantized linear's tensors ("...q_proj.qweight") stand for its weight ("...q_proj.weight").
    std::string name = stored;
    if (quant != nullptr) hf_quant_tensor_of(*quant, stored, &name);
    const auto parsed = parse_hf_tensor_name(arch, name);
    if (!parsed) {
      // Rotary caches and the like are harmless; anything else means a layout calq would misread.
      if (name.find("rotary_emb") != std::string::npos) continue;
      fail(ErrorKind::kUnsupported, "{}: tensor '{}' is not part of the '{}' architecture as calq knows it",
           st.folder().string(), stored, config.model_type);
    }
    if (parsed->layer >= config.num_layers) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' belongs to layer {} but num_hidden_layers is {}",
           st.folder().string(), name, parsed->layer, config.num_layers);
    }
    if (config.moe && parsed->expert >= config.moe->num_experts) {
      fail(ErrorKind::kFormat, "{}: tensor '{}' is expert {} of layer {} but config.json has {} experts per layer",
           st.folder().string(), name, parsed->expert, parsed->layer, config.moe->num_experts);
    }
  }
}

}  // namespace

const LinearWeight& ExpertWeights::linear(TensorRole role) const {
  switch (role) {
    case TensorRole::kExpertGate: return w_gate;
    case TensorRole::kExpertUp: return w_up;
    case TensorRole::kExpertDown: return w_down;
    default: assert(false && "not an expert role"); return w_gate;
  }
}

LinearWeight& ExpertWeights::linear(TensorRole role) {
  return const_cast<LinearWeight&>(static_cast<const ExpertWeights&>(*this).linear(role));
}

const LinearWeight& LayerWeights::linear(TensorRole role) const {
  switch (role) {
    case TensorRole::kMoeRouter: return router;
    case TensorRole::kSharedExpertGate: return shared_expert_gate;
    case TensorRole::kAttnQ: return wq;
    case TensorRole::kAttnK: return wk;
    case TensorRole::kAttnV: return wv;
    case TensorRole::kAttnOut: return wo;
    case TensorRole::kMlpGate: return w_gate;
    case TensorRole::kMlpUp: return w_up;
    case TensorRole::kMlpDown: return w_down;
    default: assert(false && "not a per-layer linear role"); return wq;
  }
}

LinearWeight& LayerWeights::linear(TensorRole role) {
  return const_cast<LinearWeight&>(static_cast<const LayerWeights&>(*this).linear(role));
}

const Tensor& LayerWeights::vector(TensorRole role) const {
  switch (role) {
    case TensorRole::kAttnNorm: return attn_norm;
    case TensorRole::kMlpNorm: return mlp_norm;
    case TensorRole::kAttnQBias: return bq;
    case TensorRole::kAttnKBias: return bk;
    case TensorRole::kAttnVBias: return bv;
    case TensorRole::kAttnQNorm: return q_norm;
    case TensorRole::kAttnKNorm: return k_norm;
    default: assert(false && "not a per-layer norm or bias role"); return attn_norm;
  }
}

Tensor& LayerWeights::vector(TensorRole role) {
  return const_cast<Tensor&>(static_cast<const LayerWeights&>(*this).vector(role));
}

bool LayerWeights::has_transforms() const {
  return std::any_of(transforms.begin(), transforms.end(), [](const auto& t) { return t.has_value(); });
}

namespace {
size_t linear_slot(TensorRole role) {
  for (size_t i = 0; i < std::size(kLayerLinearRoles); ++i)
    if (kLayerLinearRoles[i] == role) return i;
  assert(false && "not a per-layer linear role");
  return 0;
}
}  // namespace

const LoraAdapter* LayerWeights::adapter(TensorRole role) const {
  const auto& a = adapters[linear_slot(role)];
  return a ? &*a : nullptr;
}

std::optional<LoraAdapter>& LayerWeights::adapter_slot(TensorRole role) { return adapters[linear_slot(role)]; }

bool LayerWeights::has_adapters() const {
  return std::any_of(adapters.begin(), adapters.end(), [](const auto& a) { return a.has_value(); });
}

bool Model::has_adapters() const {
  return std::any_of(layers.begin(), layers.end(), [](const LayerWeights& l) { return l.has_adapters(); });
}

bool Model::has_transforms() const {
  return std::any_of(layers.begin(), layers.end(), [](const LayerWeights& l) { return l.has_transforms(); });
}

void set_fast_kernels(Model& model, bool on, bool float_only) {
  const auto set = [&](LinearWeight& w) {
    const bool integer = w.is_quantized() && int_matmul_supported(w.quantized());
    w.set_fast_kernels(on && !(float_only && integer));
  };
  for (LayerWeights& l : model.layers) {
    for (TensorRole role : kLayerLinearRoles) set(l.linear(role));
    set(l.router);
    set(l.shared_expert_gate);
    for (ExpertWeights& e : l.experts) {
      set(e.w_gate);
      set(e.w_up);
      set(e.w_down);
    }
  }
  set(model.output);
}

Shape expected_shape(const ModelConfig& c, TensorRole role) {
  switch (role) {
    case TensorRole::kTokenEmbedding:
    case TensorRole::kOutput: return {c.vocab_size, c.hidden_size};
    case TensorRole::kAttnNorm:
    case TensorRole::kMlpNorm:
    case TensorRole::kFinalNorm: return {c.hidden_size};
    case TensorRole::kAttnQ: return {c.q_dim(), c.hidden_size};
    case TensorRole::kAttnK:
    case TensorRole::kAttnV: return {c.kv_dim(), c.hidden_size};
    case TensorRole::kAttnOut: return {c.hidden_size, c.q_dim()};
    case TensorRole::kMlpGate:
    case TensorRole::kMlpUp: return {c.mlp_intermediate(), c.hidden_size};
    case TensorRole::kMlpDown: return {c.hidden_size, c.mlp_intermediate()};
    case TensorRole::kAttnQBias: return {c.q_dim()};
    case TensorRole::kAttnKBias:
    case TensorRole::kAttnVBias: return {c.kv_dim()};
    case TensorRole::kAttnQNorm:
    case TensorRole::kAttnKNorm: return {c.head_dim};
    case TensorRole::kMoeRouter: return {c.moe ? c.moe->num_experts : 0, c.hidden_size};
    case TensorRole::kExpertGate:
    case TensorRole::kExpertUp: return {c.moe ? c.moe->expert_intermediate : 0, c.hidden_size};
    case TensorRole::kExpertDown: return {c.hidden_size, c.moe ? c.moe->expert_intermediate : 0};
    case TensorRole::kSharedExpertGate: return {1, c.hidden_size};
  }
  return {};
}

bool has_role(const ModelConfig& config, TensorRole role) {
  if (is_bias(role)) return config.qkv_bias;
  if (is_head_norm(role)) return config.qk_norm;
  switch (role) {
    case TensorRole::kMoeRouter:
    case TensorRole::kExpertGate:
    case TensorRole::kExpertUp:
    case TensorRole::kExpertDown: return config.moe.has_value();
    case TensorRole::kSharedExpertGate: return config.moe && config.moe->shared_intermediate > 0;
    case TensorRole::kMlpGate:
    case TensorRole::kMlpUp:
    case TensorRole::kMlpDown: return config.mlp_intermediate() > 0;
    default: return true;
  }
}

std::vector<TensorRole> layer_linear_roles(const ModelConfig& config) {
  std::vector<TensorRole> out;
  for (const TensorRole role : kLayerLinearRoles) {
    if (has_role(config, role)) out.push_back(role);
  }
  return out;
}

int64_t Model::parameter_count() const {
  int64_t n = embedding.numel() + final_norm.numel();
  if (!config.tie_word_embeddings) n += output.numel();
  for (const auto& l : layers) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (!is_per_layer(role) || is_expert(role) || !has_role(config, role)) continue;
      n += is_linear(role) ? l.linear(role).numel() : l.vector(role).numel();
    }
    for (const ExpertWeights& e : l.experts) n += e.w_gate.numel() + e.w_up.numel() + e.w_down.numel();
  }
  return n;
}

uint64_t Model::storage_bytes() const {
  // Norms and biases are float32 in every file calq reads or writes.
  uint64_t n = embedding.nbytes() + final_norm.nbytes();
  if (!output.same_storage(embedding)) n += output.nbytes();
  for (const auto& l : layers) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (!is_per_layer(role) || is_expert(role) || !has_role(config, role)) continue;
      n += is_linear(role) ? l.linear(role).nbytes() : l.vector(role).nbytes();
    }
    for (const ExpertWeights& e : l.experts) n += e.w_gate.nbytes() + e.w_up.nbytes() + e.w_down.nbytes();
    for (const auto& a : l.adapters)
      if (a) n += a->nbytes();
  }
  return n;
}

double Model::bits_per_weight() const {
  const int64_t p = parameter_count();
  return p > 0 ? 8.0 * static_cast<double>(storage_bytes()) / static_cast<double>(p) : 0.0;
}

namespace {

// A bf16/f16 linear weight as a view of the mapped file (see HfLoadOptions), else float32.
LinearWeight load_linear(const std::shared_ptr<const io::SafetensorsModel>& st, const std::string& name,
                         const Shape& expected, bool keep_source_dtype, ThreadPool& pool,
                         const HfQuantSpec* quant = nullptr) {
  if (quant != nullptr && expected.size() == 2) {
    std::optional<LinearWeight> w = load_hf_quant_linear(*quant, *st, name, expected, pool);
    if (w) return std::move(*w);  // else the checkpoint keeps this linear in float
  }
  if (keep_source_dtype && expected.size() == 2) {
    const io::TensorInfo& info = st->info(name);
    const char* format_name = info.dtype == DType::kBF16 ? "bf16" : info.dtype == DType::kF16 ? "f16" : nullptr;
    if (format_name != nullptr && info.shape == expected) {
      const Tensor src = st->tensor(name);
      QuantizedTensor t = QuantizedTensor::view(format_by_name(format_name), expected[0], expected[1],
                                                src.bytes(), st);
      check_finite(t, pool, st->folder().string(), name);
      return t;
    }
  }
  return load_f32(*st, name, expected, pool);
}

}  // namespace

Model load_hf_model(const std::filesystem::path& folder, ThreadPool& pool, const HfLoadOptions& options) {
  Model m;
  m.config = parse_hf_config(folder / "config.json");
  m.arch = find_architecture(m.config.model_type);
  m.source = folder;
  // A GPTQ / AWQ / compressed-tensors checkpoint (hf_quant.h): its linears load in calq's formats.
  const std::optional<HfQuantSpec> quant = hf_quant_spec(folder);
  const HfQuantSpec* q = quant ? &*quant : nullptr;
  const auto st = std::make_shared<const io::SafetensorsModel>(
      io::SafetensorsModel::open_folder(folder, {.quantized = quant.has_value()}));
  check_known_tensors(*st, m.config, *m.arch, q);

  const auto load_vector = [&](TensorRole role, int64_t layer) {
    return load_f32(*st, hf_tensor_name(*m.arch, role, layer), expected_shape(m.config, role), pool);
  };
  const auto load_weight = [&](TensorRole role, int64_t layer) {
    return load_linear(st, hf_tensor_name(*m.arch, role, layer), expected_shape(m.config, role),
                       options.keep_source_dtype, pool, is_linear(role) ? q : nullptr);
  };
  m.embedding = load_weight(TensorRole::kTokenEmbedding, -1);
  m.final_norm = load_vector(TensorRole::kFinalNorm, -1);
  const std::string output_name = hf_tensor_name(*m.arch, TensorRole::kOutput, -1);
  if (m.config.tie_word_embeddings) {
    // HF ignores a stored lm_head when embeddings are tied; so do we, but say nothing is lost.
    m.output = m.embedding;
  } else if (st->contains(output_name)) {
    m.output = load_weight(TensorRole::kOutput, -1);
  } else {
    fail(ErrorKind::kNotFound, "{}: tensor '{}' not found (config.json says tie_word_embeddings = false)",
         folder.string(), output_name);
  }
  const auto load_experts = [&](int64_t layer) {
    std::vector<ExpertWeights> experts(static_cast<size_t>(m.config.moe->num_experts));
    for (int64_t e = 0; e < m.config.moe->num_experts; ++e) {
      for (const TensorRole role : {TensorRole::kExpertGate, TensorRole::kExpertUp, TensorRole::kExpertDown}) {
        experts[static_cast<size_t>(e)].linear(role) =
            load_linear(st, hf_tensor_name(*m.arch, role, layer, e), expected_shape(m.config, role),
                        options.keep_source_dtype, pool, q);
      }
    }
    return experts;
  };
  load_layers(m, load_weight, load_vector, load_experts);
  return m;
}

ModelSummary inspect_hf_model(const std::filesystem::path& folder) {
  ModelSummary s;
  s.config = parse_hf_config(folder / "config.json");
  const std::optional<HfQuantSpec> quant = hf_quant_spec(folder);
  const auto st = io::SafetensorsModel::open_folder(folder, {.quantized = quant.has_value()});
  const Architecture* arch = find_architecture(s.config.model_type);
  const std::string output_name = hf_tensor_name(*arch, TensorRole::kOutput, -1);
  std::set<std::string> counted;  // quantized linears, counted once by their weight's shape
  for (const auto& name : st.names()) {
    const auto& info = st.info(name);
    s.tensors.push_back({name, std::string(dtype_name(info.dtype)), info.shape});
    std::string weight;
    if (quant && hf_quant_tensor_of(*quant, name, &weight)) {
      const auto parsed = parse_hf_tensor_name(*arch, weight);
      if (parsed && !st.contains(weight) && counted.insert(weight).second) {
        s.parameter_count += shape_numel(expected_shape(s.config, parsed->role));
      }
      continue;
    }
    if (quant && quant->kind == HfQuantSpec::Kind::kBnbNf4 && info.dtype == DType::kU8) {
      // bitsandbytes keeps the packed weight under the weight's own name: count the weight's shape.
      if (const auto parsed = parse_hf_tensor_name(*arch, name)) {
        s.parameter_count += shape_numel(expected_shape(s.config, parsed->role));
        continue;
      }
    }
    if (!(s.config.tie_word_embeddings && name == output_name)) s.parameter_count += shape_numel(info.shape);
  }
  sort_in_model_order(s.tensors, *arch, /*gguf=*/false);
  return s;
}

}  // namespace calq::model
