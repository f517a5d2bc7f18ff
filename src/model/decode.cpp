#include "model/decode.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/hadamard.h"
#include "core/vec_math.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/moe.h"

namespace calq::model {
namespace {

size_t sz(int64_t n) { return static_cast<size_t>(n); }

// HF rotate_half on every head of one token's row at the position whose table rows are c/s.
void rope_row(float* x, int64_t num_heads, int64_t head_dim, const float* c, const float* s) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i];
      const float b = v[i + half];
      v[i] = a * c[i] - b * s[i];
      v[i + half] = b * c[i] + a * s[i];
    }
  }
}

void apply_site_transform(const LayerWeights& w, InputSite site, float* x, int64_t rows, ThreadPool& pool) {
  if (const KronTransform* t = w.transform(site)) t->apply_rows(x, rows, pool);
}

void add_bias_rows(float* y, int64_t rows, const Tensor& bias) {
  const int64_t cols = bias.dim(0);
  const float* b = bias.f32();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i) y[r * cols + i] += b[i];
  }
}

}  // namespace

DecodeCache::DecodeCache(const ModelConfig& c, int64_t batch, int64_t max_len)
    : batch_(batch),
      max_len_(max_len),
      k_(sz(c.num_layers * batch * max_len * c.kv_dim())),
      v_(k_.size()),
      rope_cos_(sz(max_len * c.head_dim / 2)),
      rope_sin_(sz(max_len * c.head_dim / 2)),
      hidden_(sz(batch * c.hidden_size)),
      norm_(sz(batch * c.hidden_size)),
      q_(sz(batch * c.q_dim())),
      k_new_(sz(batch * c.kv_dim())),
      v_new_(sz(batch * c.kv_dim())),
      attn_(sz(batch * c.q_dim())),
      gate_(sz(batch * c.mlp_intermediate())),
      up_(sz(batch * c.mlp_intermediate())) {
  if (batch < 1 || max_len < 1) {
    fail(ErrorKind::kInvalidArgument, "decode cache needs batch and max_len of at least 1, got {} and {}", batch,
         max_len);
  }
  rope_tables(max_len, c.head_dim, c.rope_theta, rope_cos_.data(), rope_sin_.data(), c.rope_freq_factors);
  if (c.moe) moe_ = std::make_shared<MoeScratch>(c, batch);
}

int64_t DecodeCache::bytes_for(const ModelConfig& c, int64_t batch, int64_t max_len) {
  return 2 * c.num_layers * batch * max_len * c.kv_dim() * static_cast<int64_t>(sizeof(float));
}

void decode_step(const Model& m, std::span<const int32_t> ids, DecodeCache& s, float* logits, ThreadPool& pool) {
  const ModelConfig& cfg = m.config;
  const int64_t B = s.batch_;
  const int64_t pos = s.length_;
  if (static_cast<int64_t>(ids.size()) != B) {
    fail(ErrorKind::kInvalidArgument, "decode step got {} tokens for a batch of {}", ids.size(), B);
  }
  if (pos >= s.max_len_) {
    fail(ErrorKind::kInvalidArgument, "decode step at position {} exceeds the cache length {}", pos, s.max_len_);
  }
  const int64_t hs = cfg.hidden_size;
  const int64_t inter = cfg.mlp_intermediate();
  const int64_t hd = cfg.head_dim;
  const int64_t q_dim = cfg.q_dim();
  const int64_t kv_dim = cfg.kv_dim();
  const int64_t group = cfg.num_heads / cfg.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* cos_p = s.rope_cos_.data() + pos * (hd / 2);
  const float* sin_p = s.rope_sin_.data() + pos * (hd / 2);

  embed_tokens(m, ids, s.hidden_.data());
  for (int64_t layer = 0; layer < cfg.num_layers; ++layer) {
    const LayerWeights& w = m.layers[sz(layer)];
    float* k_cache = s.k_.data() + layer * B * s.max_len_ * kv_dim;
    float* v_cache = s.v_.data() + layer * B * s.max_len_ * kv_dim;

    // Attention block: this token's q/k/v, its k/v into the cache, attention over the cache.
    rms_norm_rows(s.hidden_.data(), w.attn_norm.f32(), s.norm_.data(), B, hs, cfg.rms_norm_eps, pool);
    apply_site_transform(w, InputSite::kAttnIn, s.norm_.data(), B, pool);
    layer_linear(pool, w, TensorRole::kAttnQ, s.norm_.data(), B, s.q_.data());
    layer_linear(pool, w, TensorRole::kAttnK, s.norm_.data(), B, s.k_new_.data());
    layer_linear(pool, w, TensorRole::kAttnV, s.norm_.data(), B, s.v_new_.data());
    if (cfg.qkv_bias) {
      add_bias_rows(s.q_.data(), B, w.bq);
      add_bias_rows(s.k_new_.data(), B, w.bk);
      add_bias_rows(s.v_new_.data(), B, w.bv);
    }
    if (cfg.qk_norm) {
      rms_norm_rows(s.q_.data(), w.q_norm.f32(), s.q_.data(), B * cfg.num_heads, hd, cfg.rms_norm_eps, pool);
      rms_norm_rows(s.k_new_.data(), w.k_norm.f32(), s.k_new_.data(), B * cfg.num_kv_heads, hd, cfg.rms_norm_eps,
                    pool);
    }
    for (int64_t b = 0; b < B; ++b) {
      rope_row(s.q_.data() + b * q_dim, cfg.num_heads, hd, cos_p, sin_p);
      rope_row(s.k_new_.data() + b * kv_dim, cfg.num_kv_heads, hd, cos_p, sin_p);
    }
    if (cfg.kv_cache != nullptr) {  // each token is quantized on its own (kv_cache.h)
      quantize_kv_rows(*cfg.kv_cache, s.k_new_.data(), B, cfg.num_kv_heads, hd, pool);
      quantize_kv_rows(*cfg.kv_cache, s.v_new_.data(), B, cfg.num_kv_heads, hd, pool);
    }
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(s.k_new_.data() + b * kv_dim, kv_dim, k_cache + (b * s.max_len_ + pos) * kv_dim);
      std::copy_n(s.v_new_.data() + b * kv_dim, kv_dim, v_cache + (b * s.max_len_ + pos) * kv_dim);
    }
    const int64_t window = cfg.window_for_layer(layer);
    const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;  // first visible key
    const int64_t n = pos + 1 - lo;
    pool.parallel_for(0, sz(B * cfg.num_heads), Grain{.min_items = 1}, [&](size_t i0, size_t i1) {
      std::vector<float> p(sz(n));
      for (size_t item = i0; item < i1; ++item) {
        const int64_t b = static_cast<int64_t>(item) / cfg.num_heads;
        const int64_t h = static_cast<int64_t>(item) % cfg.num_heads;
        const float* q = s.q_.data() + b * q_dim + h * hd;
        const float* keys = k_cache + (b * s.max_len_ + lo) * kv_dim + (h / group) * hd;
        const float* values = v_cache + (b * s.max_len_ + lo) * kv_dim + (h / group) * hd;
        for (int64_t j = 0; j < n; ++j) {
          const float* kj = keys + j * kv_dim;
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += q[d] * kj[d];
          p[sz(j)] = dot * scale;
        }
        const float mx = max_value(p.data(), n);
        const float inv = static_cast<float>(1.0 / exp_sub_sum(p.data(), n, mx));
        float* out = s.attn_.data() + b * q_dim + h * hd;
        std::fill_n(out, hd, 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const float pj = p[sz(j)] * inv;
          const float* vj = values + j * kv_dim;
          for (int64_t d = 0; d < hd; ++d) out[d] += pj * vj[d];
        }
      }
    });
    apply_site_transform(w, InputSite::kAttnOut, s.attn_.data(), B, pool);
    layer_linear(pool, w, TensorRole::kAttnOut, s.attn_.data(), B, s.hidden_.data(), /*accumulate=*/true);

    // MLP block: down(silu(gate(x)) * up(x)).
    rms_norm_rows(s.hidden_.data(), w.mlp_norm.f32(), s.norm_.data(), B, hs, cfg.rms_norm_eps, pool);
    if (cfg.moe) {
      moe_mlp_forward(cfg, w, layer, s.norm_.data(), B, s.hidden_.data(), *s.moe_, pool, nullptr);
      continue;
    }
    apply_site_transform(w, InputSite::kMlpIn, s.norm_.data(), B, pool);
    layer_linear(pool, w, TensorRole::kMlpGate, s.norm_.data(), B, s.gate_.data());
    layer_linear(pool, w, TensorRole::kMlpUp, s.norm_.data(), B, s.up_.data());
    silu_mul(s.gate_.data(), s.up_.data(), B * inter);
    if (cfg.rotation && cfg.rotation->down_seed) {
      RandomizedHadamard(inter, *cfg.rotation->down_seed).apply_rows(s.gate_.data(), B, pool);
    }
    apply_site_transform(w, InputSite::kMlpDown, s.gate_.data(), B, pool);
    layer_linear(pool, w, TensorRole::kMlpDown, s.gate_.data(), B, s.hidden_.data(), /*accumulate=*/true);
  }
  output_logits(m, s.hidden_.data(), B, logits, pool);
  ++s.length_;
}

}  // namespace calq::model
