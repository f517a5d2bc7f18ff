#include "grad/model_grad.h"

#include <cassert>
#include <fmt/format.h>
#include <utility>

#include "grad/loss.h"
#include "grad/ops_basic.h"

namespace calq::grad {
namespace {

using model::ModelConfig;

template <typename T>
std::vector<T> widen(const Tensor& t) {
  return std::vector<T>(t.f32(), t.f32() + t.numel());
}

template <typename T>
const T* head_of(const ModelParams<T>& p) {
  return p.tied() ? p.embedding.data() : p.output.data();
}

// The forward pass, keeping the hidden state entering every layer and the one leaving the last
// (boundaries[(L + 1) · N · H]), the final norm's output and the logits.
template <typename T>
struct ForwardState {
  std::vector<T> boundaries, normed, logits;
};

template <typename T>
ForwardState<T> run_forward(ThreadPool& pool, const ModelConfig& c, const ModelParams<T>& p,
                            std::span<const int32_t> ids, LayerWorkspace<T>& ws, const LoraDropout& dropout = {}) {
  assert(static_cast<int64_t>(ids.size()) == ws.rows());
  const auto n = static_cast<int64_t>(ids.size());
  const int64_t h = c.hidden_size;
  const auto layers = static_cast<int64_t>(p.layers.size());
  ForwardState<T> s;
  s.boundaries.resize(static_cast<size_t>((layers + 1) * n * h));
  embedding_forward(p.embedding.data(), c.vocab_size, h, ids, s.boundaries.data());
  for (int64_t l = 0; l < layers; ++l) {
    T* next = s.boundaries.data() + (l + 1) * n * h;
    std::copy_n(next - n * h, n * h, next);
    layer_forward(pool, c, l, p.layers[static_cast<size_t>(l)], next, ws, static_cast<const SiteMaps<T>*>(nullptr),
                  dropout);
  }
  s.normed.resize(static_cast<size_t>(n * h));
  rms_norm_forward(pool, s.boundaries.data() + layers * n * h, p.final_norm.data(), n, h, c.rms_norm_eps,
                   s.normed.data());
  s.logits.resize(static_cast<size_t>(n * c.vocab_size));
  linear_forward(pool, s.normed.data(), n, h, head_of(p), c.vocab_size, static_cast<const T*>(nullptr),
                 s.logits.data());
  return s;
}

template <typename T>
double loss_of(ThreadPool& pool, const ModelConfig& c, const std::vector<T>& logits, std::span<const int32_t> ids,
               int64_t seq_len, const LossSpec<T>& loss, T* dlogits) {
  const auto n = static_cast<int64_t>(ids.size());
  if (loss.kind == LossKind::kKlDivergence) {
    assert(static_cast<int64_t>(loss.teacher_logits.size()) == n * c.vocab_size);
    return kl_divergence(pool, logits.data(), loss.teacher_logits.data(), n, c.vocab_size, dlogits);
  }
  const std::vector<int32_t> targets = next_token_targets(ids, seq_len);
  return cross_entropy(pool, logits.data(), n, c.vocab_size, targets, dlogits);
}

int64_t layer_numel(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  return 2 * h + 2 * h * c.q_dim() + 2 * h * c.kv_dim() + 3 * h * c.intermediate_size +
         (c.qkv_bias ? c.q_dim() + 2 * c.kv_dim() : 0);
}

}  // namespace

template <typename T>
ModelParams<T> ModelParams<T>::from_model(const model::Model& m, ThreadPool& pool) {
  check_trainable(m.config);
  ModelParams p;
  p.embedding = widen<T>(m.embedding.to_dense(pool));
  for (const auto& lw : m.layers) p.layers.push_back(LayerParams<T>::from_weights(m.config, lw, pool));
  p.final_norm = widen<T>(m.final_norm);
  if (!m.output.same_storage(m.embedding)) p.output = widen<T>(m.output.to_dense(pool));
  return p;
}

template <typename T>
ModelParams<T> ModelParams<T>::zeros(const ModelConfig& c) {
  ModelParams p;
  const auto table = static_cast<size_t>(c.vocab_size * c.hidden_size);
  p.embedding.assign(table, T(0));
  for (int64_t l = 0; l < c.num_layers; ++l) p.layers.push_back(LayerParams<T>::zeros(c));
  p.final_norm.assign(static_cast<size_t>(c.hidden_size), T(0));
  if (!c.tie_word_embeddings) p.output.assign(table, T(0));
  return p;
}

template <typename T>
ModelParams<T> ModelParams<T>::lora_grads(const ModelParams& p) {
  ModelParams g;
  for (const LayerParams<T>& l : p.layers) g.layers.push_back(LayerParams<T>::lora_grads(l));
  return g;
}

template <typename T>
std::vector<typename ModelParams<T>::Named> ModelParams<T>::lora_tensors() {
  std::vector<Named> out;
  for (size_t l = 0; l < layers.size(); ++l) {
    for (size_t s = 0; s < layers[l].lora.size(); ++s) {
      LoraParams<T>& a = layers[l].lora[s];
      if (a.empty()) continue;
      const std::string_view role = model::role_name(model::kLayerLinearRoles[s]);
      if (!a.a.empty()) out.push_back({fmt::format("layer {} {} lora_A", l, role), &a.a});
      if (!a.b.empty()) out.push_back({fmt::format("layer {} {} lora_B", l, role), &a.b});
    }
  }
  return out;
}

template <typename T>
std::vector<typename ModelParams<T>::Named> ModelParams<T>::tensors() {
  std::vector<Named> out{{"embedding", &embedding}};
  for (size_t l = 0; l < layers.size(); ++l) {
    for (const auto& [role, v] : layers[l].tensors()) out.push_back({fmt::format("layer {} {}", l, model::role_name(role)), v});
  }
  out.push_back({"final_norm", &final_norm});
  if (!output.empty()) out.push_back({"output", &output});
  return out;
}

template <typename T>
int64_t ModelParams<T>::numel() const {
  int64_t n = static_cast<int64_t>(embedding.size() + final_norm.size() + output.size());
  for (const auto& l : layers) n += l.numel();
  return n;
}

template <typename T>
std::vector<T> model_logits(ThreadPool& pool, const ModelConfig& c, const ModelParams<T>& p,
                            std::span<const int32_t> ids, int64_t seq_len) {
  assert(seq_len > 0 && static_cast<int64_t>(ids.size()) % seq_len == 0);
  LayerWorkspace<T> ws(c, seq_len, static_cast<int64_t>(ids.size()) / seq_len);
  return run_forward(pool, c, p, ids, ws).logits;
}

template <typename T>
double model_loss(ThreadPool& pool, const ModelConfig& c, const ModelParams<T>& p, std::span<const int32_t> ids,
                  int64_t seq_len, const LossSpec<T>& loss) {
  const std::vector<T> logits = model_logits(pool, c, p, ids, seq_len);
  return loss_of(pool, c, logits, ids, seq_len, loss, static_cast<T*>(nullptr));
}

template <typename T>
double model_forward_backward(ThreadPool& pool, const ModelConfig& c, const ModelParams<T>& p,
                              std::span<const int32_t> ids, int64_t seq_len, const LossSpec<T>& loss,
                              ModelParams<T>& g, const LoraDropout& dropout) {
  assert(g.layers.size() == p.layers.size());
  const auto n = static_cast<int64_t>(ids.size());
  const int64_t h = c.hidden_size;
  const auto layers = static_cast<int64_t>(p.layers.size());
  assert(seq_len > 0 && n % seq_len == 0);
  LayerWorkspace<T> ws(c, seq_len, n / seq_len);
  ForwardState<T> s = run_forward(pool, c, p, ids, ws, dropout);

  std::vector<T> dlogits(s.logits.size());
  const double value = loss_of(pool, c, s.logits, ids, seq_len, loss, dlogits.data());
  s.logits = {};

  // Head and final norm.
  std::vector<T> d_normed(static_cast<size_t>(n * h)), d_hidden(d_normed.size()), d_prev(d_normed.size());
  std::vector<T>& d_head = p.tied() ? g.embedding : g.output;
  linear_backward(pool, s.normed.data(), n, h, head_of(p), c.vocab_size, dlogits.data(), d_normed.data(), false,
                  d_head.empty() ? nullptr : d_head.data(), static_cast<T*>(nullptr));
  dlogits = {};
  rms_norm_backward(pool, s.boundaries.data() + layers * n * h, p.final_norm.data(), n, h, c.rms_norm_eps,
                    d_normed.data(), d_hidden.data(), false, g.final_norm.empty() ? nullptr : g.final_norm.data());

  // Layers, last to first, each recomputed from its stored input.
  for (int64_t l = layers - 1; l >= 0; --l) {
    const auto li = static_cast<size_t>(l);
    layer_backward(pool, c, l, p.layers[li], s.boundaries.data() + l * n * h, d_hidden.data(), d_prev.data(),
                   g.layers[li], ws, static_cast<SiteMaps<T>*>(nullptr), dropout);
    std::swap(d_hidden, d_prev);
  }
  if (!g.embedding.empty()) embedding_backward(pool, c.vocab_size, h, ids, d_hidden.data(), g.embedding.data());
  return value;
}

MemoryEstimate estimate_training_memory(const ModelConfig& c, const MemoryEstimateOptions& o) {
  constexpr uint64_t kBytes = sizeof(float);
  const int64_t table = c.vocab_size * c.hidden_size;
  const int64_t all = table * (c.tie_word_embeddings ? 1 : 2) + c.hidden_size + c.num_layers * layer_numel(c);
  const bool whole = o.scope == MemoryEstimateOptions::Scope::kWholeModel;
  const int64_t trained = whole ? all : layer_numel(c);
  const int64_t n = o.seq_len * o.batch;
  int64_t activations = LayerWorkspace<float>::values(c, o.seq_len, o.batch) + o.threads * o.seq_len * o.seq_len;
  if (whole) {
    activations += (c.num_layers + 5) * n * c.hidden_size + (o.teacher_logits ? 3 : 2) * n * c.vocab_size;
  } else {
    activations += 3 * n * c.hidden_size;
  }
  MemoryEstimate e;
  e.weights = kBytes * static_cast<uint64_t>(all);
  e.gradients = kBytes * static_cast<uint64_t>(trained);
  e.optimizer = kBytes * static_cast<uint64_t>(trained * o.optimizer_values_per_parameter);
  e.activations = kBytes * static_cast<uint64_t>(activations);
  e.total = e.weights + e.gradients + e.optimizer + e.activations;
  return e;
}

#define CALQ_GRAD_INSTANTIATE(T)                                                                                      \
  template struct ModelParams<T>;                                                                                     \
  template std::vector<T> model_logits<T>(ThreadPool&, const ModelConfig&, const ModelParams<T>&,                     \
                                          std::span<const int32_t>, int64_t);                                         \
  template double model_loss<T>(ThreadPool&, const ModelConfig&, const ModelParams<T>&, std::span<const int32_t>,     \
                                int64_t, const LossSpec<T>&);                                                         \
  template double model_forward_backward<T>(ThreadPool&, const ModelConfig&, const ModelParams<T>&,                   \
                                            std::span<const int32_t>, int64_t, const LossSpec<T>&, ModelParams<T>&,       \
                                            const LoraDropout&);
CALQ_GRAD_INSTANTIATE(float)
CALQ_GRAD_INSTANTIATE(double)
#undef CALQ_GRAD_INSTANTIATE

}  // namespace calq::grad
