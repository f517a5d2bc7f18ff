#include "grad/layer.h"

#include <algorithm>
#include <cassert>
#include <tuple>

#include "core/error.h"
#include "grad/ops_attention.h"
#include "grad/ops_basic.h"
#include "grad/ops_gemm.h"

namespace calq::grad {
namespace {

using model::ModelConfig;
using model::InputSite;
using model::TensorRole;

template <typename T>
std::vector<T> widen(const float* data, int64_t n) {
  return std::vector<T>(data, data + n);
}

template <typename T>
std::vector<T> dense_copy(const model::LinearWeight& w, ThreadPool& pool) {
  if (w.act_quant().enabled()) {
    fail(ErrorKind::kUnsupported, "training through activation quantization ({}) is not supported",
         model::activation_quant_name(w.act_quant().kind));
  }
  const Tensor dense = w.to_dense(pool);
  return widen<T>(dense.f32(), dense.numel());
}

template <typename T>
std::vector<T> vector_copy(const Tensor& t) {
  return t.empty() ? std::vector<T>{} : widen<T>(t.f32(), t.numel());
}

size_t sz(int64_t n) { return static_cast<size_t>(n); }

AttentionShape attention_shape(const ModelConfig& c, int64_t layer, int64_t seq_len, int64_t batch) {
  return AttentionShape{.batch = batch, .seq_len = seq_len, .num_heads = c.num_heads, .num_kv_heads = c.num_kv_heads,
                        .head_dim = c.head_dim, .window = c.window_for_layer(layer)};
}

// The kLayerLinearRoles position of a linear role (its LoRA slot).
size_t lora_slot(TensorRole role) {
  for (size_t i = 0; i < std::size(model::kLayerLinearRoles); ++i)
    if (model::kLayerLinearRoles[i] == role) return i;
  assert(false && "not a per-layer linear role");
  return 0;
}

template <typename T>
LoraParams<T> lora_copy(const model::LoraAdapter& a) {
  return LoraParams<T>{.a = widen<T>(a.a().f32(), a.a().numel()), .b = widen<T>(a.b().f32(), a.b().numel()),
                       .rank = a.rank(), .scale = static_cast<T>(a.scale())};
}

template <typename T>
const T* data_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}
template <typename T>
T* data_or_null(std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

}  // namespace

void check_trainable(const ModelConfig& c) {
  if (c.rotation && (c.rotation->residual_online || c.rotation->down_seed)) {
    fail(ErrorKind::kUnsupported,
         "training a model with online Hadamard rotations (applied at run time) is not supported");
  }
  if (c.kv_cache != nullptr) fail(ErrorKind::kUnsupported, "training through a quantized KV cache is not supported");
  if (!c.plain_llama_block()) {
    fail(ErrorKind::kUnsupported, "training a '{}' model ({}) is not supported yet: the gradient engine runs the "
         "plain Llama block", c.model_type,
         c.moe ? "mixture of experts" : c.qk_norm ? "q/k head norms" : "rotary scaling");
  }
}

template <typename T>
LayerParams<T> LayerParams<T>::from_weights(const ModelConfig& c, const model::LayerWeights& w, ThreadPool& pool) {
  check_trainable(c);
  if (w.has_transforms()) {
    fail(ErrorKind::kUnsupported,
         "training a model with online Kronecker input transforms (applied at run time) is not supported");
  }
  LayerParams p;
  p.attn_norm = vector_copy<T>(w.attn_norm);
  p.wq = dense_copy<T>(w.wq, pool);
  p.wk = dense_copy<T>(w.wk, pool);
  p.wv = dense_copy<T>(w.wv, pool);
  p.wo = dense_copy<T>(w.wo, pool);
  p.mlp_norm = vector_copy<T>(w.mlp_norm);
  p.w_gate = dense_copy<T>(w.w_gate, pool);
  p.w_up = dense_copy<T>(w.w_up, pool);
  p.w_down = dense_copy<T>(w.w_down, pool);
  if (c.qkv_bias) {
    p.bq = vector_copy<T>(w.bq);
    p.bk = vector_copy<T>(w.bk);
    p.bv = vector_copy<T>(w.bv);
  }
  for (const TensorRole role : model::kLayerLinearRoles)
    if (const model::LoraAdapter* a = w.adapter(role)) p.lora[lora_slot(role)] = lora_copy<T>(*a);
  return p;
}

template <typename T>
LayerParams<T> LayerParams<T>::zeros(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), i = c.intermediate_size;
  LayerParams p;
  p.attn_norm.assign(sz(h), T(0));
  p.wq.assign(sz(q * h), T(0));
  p.wk.assign(sz(kv * h), T(0));
  p.wv.assign(sz(kv * h), T(0));
  p.wo.assign(sz(h * q), T(0));
  p.mlp_norm.assign(sz(h), T(0));
  p.w_gate.assign(sz(i * h), T(0));
  p.w_up.assign(sz(i * h), T(0));
  p.w_down.assign(sz(h * i), T(0));
  if (c.qkv_bias) {
    p.bq.assign(sz(q), T(0));
    p.bk.assign(sz(kv), T(0));
    p.bv.assign(sz(kv), T(0));
  }
  return p;
}

template <typename T>
LayerParams<T> LayerParams<T>::lora_grads(const LayerParams& p) {
  LayerParams g;
  for (size_t i = 0; i < p.lora.size(); ++i) {
    const LoraParams<T>& a = p.lora[i];
    if (a.empty()) continue;
    g.lora[i] = LoraParams<T>{.a = std::vector<T>(a.a.size(), T(0)), .b = std::vector<T>(a.b.size(), T(0)),
                              .rank = a.rank, .scale = a.scale};
  }
  return g;
}

template <typename T>
std::vector<std::pair<TensorRole, std::vector<T>*>> LayerParams<T>::tensors() {
  std::vector<std::pair<TensorRole, std::vector<T>*>> out = {
      {TensorRole::kAttnNorm, &attn_norm}, {TensorRole::kAttnQ, &wq},       {TensorRole::kAttnK, &wk},
      {TensorRole::kAttnV, &wv},           {TensorRole::kAttnOut, &wo},     {TensorRole::kMlpNorm, &mlp_norm},
      {TensorRole::kMlpGate, &w_gate},     {TensorRole::kMlpUp, &w_up},     {TensorRole::kMlpDown, &w_down},
      {TensorRole::kAttnQBias, &bq},       {TensorRole::kAttnKBias, &bk},   {TensorRole::kAttnVBias, &bv}};
  std::erase_if(out, [](const auto& e) { return e.second->empty(); });
  return out;
}

template <typename T>
std::vector<std::pair<TensorRole, const std::vector<T>*>> LayerParams<T>::tensors() const {
  std::vector<std::pair<TensorRole, const std::vector<T>*>> out;
  for (const auto& [role, v] : const_cast<LayerParams*>(this)->tensors()) out.emplace_back(role, v);
  return out;
}

template <typename T>
int64_t LayerParams<T>::numel() const {
  int64_t n = 0;
  for (const auto& [role, v] : tensors()) n += static_cast<int64_t>(v->size());
  return n;
}

template <typename T>
int64_t LayerWorkspace<T>::values(const ModelConfig& c, int64_t seq_len, int64_t batch) {
  const int64_t n = seq_len * batch;
  return n * (5 * c.hidden_size + 4 * c.q_dim() + 4 * c.kv_dim() + 6 * c.intermediate_size) +
         batch * c.num_heads * seq_len * seq_len + seq_len * c.head_dim;
}

template <typename T>
LayerWorkspace<T>::LayerWorkspace(const ModelConfig& c, int64_t seq_len, int64_t batch)
    : seq_len_(seq_len), batch_(batch) {
  assert(seq_len > 0 && batch > 0);
  const int64_t n = seq_len * batch;
  for (auto* v : {&norm1_, &h1_, &norm2_, &d_h1_, &d_norm_}) v->resize(sz(n * c.hidden_size));
  for (auto* v : {&q_, &attn_, &d_attn_, &dq_}) v->resize(sz(n * c.q_dim()));
  for (auto* v : {&k_, &v_, &dk_, &dv_}) v->resize(sz(n * c.kv_dim()));
  for (auto* v : {&gate_, &up_, &act_, &d_act_, &d_gate_, &d_up_}) v->resize(sz(n * c.intermediate_size));
  probs_.resize(sz(batch * c.num_heads * seq_len * seq_len));
  rope_cos_.resize(sz(seq_len * c.head_dim / 2));
  rope_sin_.resize(sz(seq_len * c.head_dim / 2));
  rope_tables_t(seq_len, c.head_dim, c.rope_theta, rope_cos_.data(), rope_sin_.data());
}

namespace {

// The layer's forward from `input`, keeping every activation in ws. Writes the output into
// `output` unless it is null (a backward does not need it); output may alias input. With maps,
// each mapped site's linears read the map's output (kept in ws.m_*).
template <typename T>
void forward_impl(ThreadPool& pool, const ModelConfig& c, int64_t layer, const LayerParams<T>& p, const T* input,
                  T* output, LayerWorkspace<T>& ws, const SiteMaps<T>* maps, const LoraDropout& dropout) {
  auto [norm1, q, k, v, probs, attn, h1, norm2, gate, up, act] =
      std::tie(ws.norm1_, ws.q_, ws.k_, ws.v_, ws.probs_, ws.attn_, ws.h1_, ws.norm2_, ws.gate_, ws.up_, ws.act_);
  const T* cos_t = ws.rope_cos_.data();
  const T* sin_t = ws.rope_sin_.data();
  const int64_t n = ws.rows(), h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  // What the site's linears read: the activation itself, or the map's output of it.
  const auto site_input = [&](InputSite site, const std::vector<T>& x, std::vector<T>& mapped, int64_t width) {
    if (maps == nullptr || !maps->maps(site)) return x.data();
    mapped.resize(sz(n * width));
    maps->forward(pool, site, x.data(), n, width, mapped.data());
    return static_cast<const T*>(mapped.data());
  };
  // The adapter of the linear in `slot`, if any: y += s·(drop(x)·Aᵀ)·Bᵀ (y null: only its
  // intermediate, which the backward needs).
  const auto adapt = [&](size_t slot, const T* x, int64_t in, int64_t out, T* y) {
    const LoraParams<T>& a = p.lora[slot];
    if (a.empty()) return;
    std::vector<T>& us = ws.lora_us_[slot];
    us.resize(sz(n * a.rank));
    lora_forward(pool, a, dropout, layer, static_cast<int64_t>(slot), x, n, in, out, us.data(), ws.lora_scratch_, y);
  };
  rms_norm_forward(pool, input, p.attn_norm.data(), n, h, c.rms_norm_eps, norm1.data());
  const T* x1 = site_input(InputSite::kAttnIn, norm1, ws.m_attn_in_, h);
  linear_forward(pool, x1, n, h, p.wq.data(), qd, data_or_null(p.bq), q.data());
  linear_forward(pool, x1, n, h, p.wk.data(), kvd, data_or_null(p.bk), k.data());
  linear_forward(pool, x1, n, h, p.wv.data(), kvd, data_or_null(p.bv), v.data());
  adapt(0, x1, h, qd, q.data());
  adapt(1, x1, h, kvd, k.data());
  adapt(2, x1, h, kvd, v.data());
  rope_forward(pool, q.data(), qd, ws.batch(), ws.seq_len(), c.num_heads, c.head_dim, cos_t, sin_t);
  rope_forward(pool, k.data(), kvd, ws.batch(), ws.seq_len(), c.num_kv_heads, c.head_dim, cos_t, sin_t);
  attention_forward(pool, attention_shape(c, layer, ws.seq_len(), ws.batch()), q.data(), k.data(), v.data(),
                    probs.data(), attn.data());
  const T* ao = site_input(InputSite::kAttnOut, attn, ws.m_attn_out_, qd);
  // h1 = input + attn·Woᵀ, accumulated onto the residual as the runtime does.
  std::copy_n(input, n * h, h1.data());
  gemm_nt(pool, Gemm<T>{.a = ao, .lda = qd, .b = p.wo.data(), .ldb = qd, .c = h1.data(), .ldc = h,
                        .m = n, .n = h, .k = qd, .accumulate = true});
  adapt(3, ao, qd, h, h1.data());
  rms_norm_forward(pool, h1.data(), p.mlp_norm.data(), n, h, c.rms_norm_eps, norm2.data());
  const T* x2 = site_input(InputSite::kMlpIn, norm2, ws.m_mlp_in_, h);
  linear_forward(pool, x2, n, h, p.w_gate.data(), inter, static_cast<const T*>(nullptr), gate.data());
  linear_forward(pool, x2, n, h, p.w_up.data(), inter, static_cast<const T*>(nullptr), up.data());
  adapt(4, x2, h, inter, gate.data());
  adapt(5, x2, h, inter, up.data());
  swiglu_forward(pool, gate.data(), up.data(), n * inter, act.data());
  const T* ad = site_input(InputSite::kMlpDown, act, ws.m_mlp_down_, inter);
  if (output == nullptr) {
    adapt(6, ad, inter, h, static_cast<T*>(nullptr));
    return;
  }
  std::copy_n(h1.data(), n * h, output);
  gemm_nt(pool, Gemm<T>{.a = ad, .lda = inter, .b = p.w_down.data(), .ldb = inter, .c = output, .ldc = h,
                        .m = n, .n = h, .k = inter, .accumulate = true});
  adapt(6, ad, inter, h, output);
}

}  // namespace

template <typename T>
void layer_forward(ThreadPool& pool, const ModelConfig& c, int64_t layer, const LayerParams<T>& p, T* hidden,
                   LayerWorkspace<T>& ws, const SiteMaps<T>* maps, const LoraDropout& dropout) {
  forward_impl(pool, c, layer, p, hidden, hidden, ws, maps, dropout);
}

template <typename T>
void layer_backward(ThreadPool& pool, const ModelConfig& c, int64_t layer, const LayerParams<T>& p, const T* input,
                    const T* d_output, T* d_input, LayerGrads<T>& g, LayerWorkspace<T>& ws, SiteMaps<T>* maps,
                    const LoraDropout& dropout) {
  assert(d_input != input && d_input != d_output);
  forward_impl(pool, c, layer, p, input, static_cast<T*>(nullptr), ws, static_cast<const SiteMaps<T>*>(maps),
               dropout);
  const int64_t n = ws.rows(), h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
  const T* cos_t = ws.rope_cos_.data();
  const T* sin_t = ws.rope_sin_.data();
  const auto mapped = [&](InputSite site) { return maps != nullptr && maps->maps(site); };
  // The input a site's linears read (as forward_impl chose it).
  const auto read = [&](InputSite site, const std::vector<T>& x, const std::vector<T>& m) {
    return mapped(site) ? m.data() : x.data();
  };
  // Given dL/d(what the linears read) in d_read: dL/d(the activation) — d_read itself, or the
  // map's backward of it written into `into`.
  const auto unmap = [&](InputSite site, const std::vector<T>& x, int64_t width, T* d_read, std::vector<T>& into) {
    if (!mapped(site)) return d_read;
    into.resize(sz(n * width));
    maps->backward(pool, site, x.data(), n, width, d_read, into.data());
    return into.data();
  };
  // The adapter of the linear in `slot`, if any: its gradients, and its part of dx added.
  const auto adapt_back = [&](size_t slot, const T* x, int64_t in, int64_t out, const T* dy, T* dx) {
    const LoraParams<T>& a = p.lora[slot];
    if (a.empty()) return;
    lora_backward(pool, a, dropout, layer, static_cast<int64_t>(slot), x, n, in, out, ws.lora_us_[slot].data(), dy,
                  g.lora[slot], dx, ws.lora_scratch_);
  };

  // MLP: out = h1 + down(silu(gate(norm2)) ⊙ up(norm2)).
  const T* ad = read(InputSite::kMlpDown, ws.act_, ws.m_mlp_down_);
  linear_backward(pool, ad, n, inter, p.w_down.data(), h, d_output, ws.d_act_.data(), false, data_or_null(g.w_down),
                  static_cast<T*>(nullptr));
  adapt_back(6, ad, inter, h, d_output, ws.d_act_.data());
  const T* d_act = unmap(InputSite::kMlpDown, ws.act_, inter, ws.d_act_.data(), ws.dm_i_);
  swiglu_backward(pool, ws.gate_.data(), ws.up_.data(), d_act, n * inter, ws.d_gate_.data(), ws.d_up_.data());
  const T* x2 = read(InputSite::kMlpIn, ws.norm2_, ws.m_mlp_in_);
  linear_backward(pool, x2, n, h, p.w_gate.data(), inter, ws.d_gate_.data(), ws.d_norm_.data(), false,
                  data_or_null(g.w_gate), static_cast<T*>(nullptr));
  adapt_back(4, x2, h, inter, ws.d_gate_.data(), ws.d_norm_.data());
  linear_backward(pool, x2, n, h, p.w_up.data(), inter, ws.d_up_.data(), ws.d_norm_.data(), true,
                  data_or_null(g.w_up), static_cast<T*>(nullptr));
  adapt_back(5, x2, h, inter, ws.d_up_.data(), ws.d_norm_.data());
  const T* d_norm2 = unmap(InputSite::kMlpIn, ws.norm2_, h, ws.d_norm_.data(), ws.dm_h_);
  std::copy_n(d_output, n * h, ws.d_h1_.data());
  rms_norm_backward(pool, ws.h1_.data(), p.mlp_norm.data(), n, h, c.rms_norm_eps, d_norm2, ws.d_h1_.data(), true,
                    data_or_null(g.mlp_norm));

  // Attention: h1 = input + o(attention(rope(q(norm1)), rope(k(norm1)), v(norm1))).
  const T* ao = read(InputSite::kAttnOut, ws.attn_, ws.m_attn_out_);
  linear_backward(pool, ao, n, qd, p.wo.data(), h, ws.d_h1_.data(), ws.d_attn_.data(), false, data_or_null(g.wo),
                  static_cast<T*>(nullptr));
  adapt_back(3, ao, qd, h, ws.d_h1_.data(), ws.d_attn_.data());
  const T* d_attn = unmap(InputSite::kAttnOut, ws.attn_, qd, ws.d_attn_.data(), ws.dm_q_);
  attention_backward(pool, attention_shape(c, layer, ws.seq_len(), ws.batch()), ws.q_.data(), ws.k_.data(),
                     ws.v_.data(), ws.probs_.data(), d_attn, ws.dq_.data(), ws.dk_.data(), ws.dv_.data());
  rope_backward(pool, ws.dq_.data(), qd, ws.batch(), ws.seq_len(), c.num_heads, c.head_dim, cos_t, sin_t);
  rope_backward(pool, ws.dk_.data(), kvd, ws.batch(), ws.seq_len(), c.num_kv_heads, c.head_dim, cos_t, sin_t);
  const T* x1 = read(InputSite::kAttnIn, ws.norm1_, ws.m_attn_in_);
  linear_backward(pool, x1, n, h, p.wq.data(), qd, ws.dq_.data(), ws.d_norm_.data(), false, data_or_null(g.wq),
                  data_or_null(g.bq));
  adapt_back(0, x1, h, qd, ws.dq_.data(), ws.d_norm_.data());
  linear_backward(pool, x1, n, h, p.wk.data(), kvd, ws.dk_.data(), ws.d_norm_.data(), true, data_or_null(g.wk),
                  data_or_null(g.bk));
  adapt_back(1, x1, h, kvd, ws.dk_.data(), ws.d_norm_.data());
  linear_backward(pool, x1, n, h, p.wv.data(), kvd, ws.dv_.data(), ws.d_norm_.data(), true, data_or_null(g.wv),
                  data_or_null(g.bv));
  adapt_back(2, x1, h, kvd, ws.dv_.data(), ws.d_norm_.data());
  const T* d_norm1 = unmap(InputSite::kAttnIn, ws.norm1_, h, ws.d_norm_.data(), ws.dm_h_);
  std::copy_n(ws.d_h1_.data(), n * h, d_input);
  rms_norm_backward(pool, input, p.attn_norm.data(), n, h, c.rms_norm_eps, d_norm1, d_input, true,
                    data_or_null(g.attn_norm));
}

template struct LayerParams<float>;
template struct LayerParams<double>;
template class LayerWorkspace<float>;
template class LayerWorkspace<double>;
template void layer_forward<float>(ThreadPool&, const ModelConfig&, int64_t, const LayerParams<float>&, float*,
                                   LayerWorkspace<float>&, const SiteMaps<float>*, const LoraDropout&);
template void layer_forward<double>(ThreadPool&, const ModelConfig&, int64_t, const LayerParams<double>&, double*,
                                    LayerWorkspace<double>&, const SiteMaps<double>*, const LoraDropout&);
template void layer_backward<float>(ThreadPool&, const ModelConfig&, int64_t, const LayerParams<float>&, const float*,
                                    const float*, float*, LayerGrads<float>&, LayerWorkspace<float>&,
                                    SiteMaps<float>*, const LoraDropout&);
template void layer_backward<double>(ThreadPool&, const ModelConfig&, int64_t, const LayerParams<double>&,
                                     const double*, const double*, double*, LayerGrads<double>&,
                                     LayerWorkspace<double>&, SiteMaps<double>*, const LoraDropout&);

}  // namespace calq::grad
