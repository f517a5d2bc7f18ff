#include "model/forward.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/hadamard.h"
#include "core/matmul.h"
#include "core/vec_math.h"
#include "model/kv_cache.h"
#include "model/moe.h"

namespace calq::model {
namespace {

// Row-parallel loops over tokens: a few rows per chunk keeps the pool overhead small.
constexpr Grain kRowGrain{.min_items = 16};
// Query rows per attention block (see attention()).
constexpr int64_t kQueryBlock = 64;

void apply_rope(float* x, int64_t ld, int64_t seq_len, int64_t num_heads, int64_t head_dim, const float* cos_t,
                const float* sin_t, ThreadPool& pool) {
  const int64_t half = head_dim / 2;
  pool.parallel_for(0, static_cast<size_t>(seq_len), kRowGrain, [&](size_t r0, size_t r1) {
    for (size_t t = r0; t < r1; ++t) {
      const float* c = cos_t + static_cast<int64_t>(t) * half;
      const float* s = sin_t + static_cast<int64_t>(t) * half;
      for (int64_t h = 0; h < num_heads; ++h) {
        float* v = x + static_cast<int64_t>(t) * ld + h * head_dim;
        // HF rotate_half: pairs (i, i + half).
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i];
          const float b = v[i + half];
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  });
}

// Causal grouped-query attention for one sequence. q: [T, nh*hd], k/v: [T, nkv*hd], out: [T, nh*hd].
// window > 0: the query at i sees keys i - window < j <= i (transformers' sliding window).
void attention(const ModelConfig& cfg, const float* q, const float* k, const float* v, float* out, int64_t seq_len,
               int64_t window, ThreadPool& pool) {
  const int64_t hd = cfg.head_dim;
  const int64_t q_ld = cfg.q_dim();
  const int64_t kv_ld = cfg.kv_dim();
  const int64_t group = cfg.num_heads / cfg.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // A window at least as long as the sequence masks nothing.
  if (window >= seq_len) window = 0;
  pool.parallel_for(0, static_cast<size_t>(cfg.num_heads), Grain{.min_items = 1}, [&](size_t h0, size_t h1) {
    std::vector<float> scores(static_cast<size_t>(std::min(seq_len, kQueryBlock) * seq_len));
    for (size_t h = h0; h < h1; ++h) {
      const int64_t kvh = static_cast<int64_t>(h) / group;
      const float* qh = q + static_cast<int64_t>(h) * hd;
      const float* kh = k + kvh * hd;
      const float* vh = v + kvh * hd;
      // Causal attention in blocks of query rows: block [i0, i1) only needs keys [k0, i1) (k0 = 0
      // without a window), which skips the masked triangles while keeping each product a plain
      // sgemm. Column c of the score block is key k0 + c.
      for (int64_t i0 = 0; i0 < seq_len; i0 += kQueryBlock) {
        const int64_t i1 = std::min(seq_len, i0 + kQueryBlock);
        const int64_t k0 = window > 0 ? std::max<int64_t>(0, i0 - window + 1) : 0;
        const int64_t width = i1 - k0;
        float* block = scores.data();
        matmul_nt_single(MatmulArgs{.x = qh + i0 * q_ld, .ldx = q_ld, .w = kh + k0 * kv_ld, .ldw = kv_ld,
                                    .y = block, .ldy = seq_len, .m = i1 - i0, .n = width, .k = hd});
        for (int64_t i = i0; i < i1; ++i) {
          float* row = block + (i - i0) * seq_len;
          const int64_t lo = (window > 0 ? std::max<int64_t>(0, i - window + 1) : 0) - k0;  // first visible column
          const int64_t n = i - k0 + 1 - lo;
          float* vis = row + lo;
          for (int64_t j = 0; j < n; ++j) vis[j] *= scale;
          const float mx = max_value(vis, n);
          const float inv = static_cast<float>(1.0 / exp_sub_sum(vis, n, mx));  // vis[j] = exp(vis[j] - mx)
          for (int64_t j = 0; j < n; ++j) vis[j] *= inv;
          std::fill(row, vis, 0.0f);
          std::fill(vis + n, row + width, 0.0f);
        }
        matmul_nn_single(block, seq_len, vh + k0 * kv_ld, kv_ld, out + i0 * q_ld + static_cast<int64_t>(h) * hd,
                         q_ld, i1 - i0, hd, width);
      }
    }
  });
}

// x[rows, width of the site] ← x·T when the layer has a transform on `site` (a no-op otherwise).
void apply_site_transform(const LayerWeights& w, InputSite site, float* x, int64_t rows, ThreadPool& pool) {
  if (const KronTransform* t = w.transform(site)) t->apply_rows(x, rows, pool);
}

void call_hook(const LinearHook* hook, int64_t layer, TensorRole role, const float* x, int64_t rows, int64_t cols) {
  if (hook != nullptr && *hook) (*hook)(LinearInput{layer, role, x, rows, cols});
}

void linear(ThreadPool& pool, const LayerWeights& lw, TensorRole role, const float* x, int64_t rows, float* y,
            bool accumulate = false) {
  layer_linear(pool, lw, role, x, rows, y, accumulate);
}

// y[t, :] += bias for every row (the bias of a linear layer, added after the product as
// torch.nn.Linear's addmm does).
void add_bias_rows(ThreadPool& pool, float* y, int64_t rows, const Tensor& bias) {
  const int64_t cols = bias.dim(0);
  const float* b = bias.f32();
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      float* yr = y + static_cast<int64_t>(r) * cols;
      for (int64_t i = 0; i < cols; ++i) yr[i] += b[i];
    }
  });
}

}  // namespace

LayerScratch::LayerScratch(const ModelConfig& c, int64_t seq_len)
    : seq_len_(seq_len),
      norm_(static_cast<size_t>(seq_len * c.hidden_size)),
      q_(static_cast<size_t>(seq_len * c.q_dim())),
      k_(static_cast<size_t>(seq_len * c.kv_dim())),
      v_(static_cast<size_t>(seq_len * c.kv_dim())),
      attn_(static_cast<size_t>(seq_len * c.q_dim())),
      gate_(static_cast<size_t>(seq_len * c.mlp_intermediate())),
      up_(static_cast<size_t>(seq_len * c.mlp_intermediate())),
      rope_cos_(static_cast<size_t>(seq_len * c.head_dim / 2)),
      rope_sin_(static_cast<size_t>(seq_len * c.head_dim / 2)) {
  rope_tables(seq_len, c.head_dim, c.rope_theta, rope_cos_.data(), rope_sin_.data(), c.rope_freq_factors);
  if (c.moe) moe_ = std::make_shared<MoeScratch>(c, seq_len);
}

void rope_tables(int64_t seq_len, int64_t head_dim, double theta, float* cos_out, float* sin_out,
                 std::span<const float> freq_factors) {
  const int64_t half = head_dim / 2;
  // transformers: inv_freq = 1 / base ** (arange(0, d, 2).float() / d), all float32; the angle is
  // the float32 product position * inv_freq. Mirroring the roundings keeps logits within ~1e-5.
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[static_cast<size_t>(i)] = 1.0f / static_cast<float>(std::pow(static_cast<double>(static_cast<float>(theta)),
                                                                          static_cast<double>(expo)));
    if (!freq_factors.empty()) inv_freq[static_cast<size_t>(i)] /= freq_factors[static_cast<size_t>(i)];
  }
  for (int64_t t = 0; t < seq_len; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(t) * inv_freq[static_cast<size_t>(i)];
      cos_out[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_out[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

void layer_linear(ThreadPool& pool, const LayerWeights& lw, TensorRole role, const float* x, int64_t rows, float* y,
                  bool accumulate) {
  const LinearWeight& w = lw.linear(role);
  linear_nt(pool, x, w.cols(), rows, w, y, w.rows(), accumulate);
  if (const LoraAdapter* a = lw.adapter(role)) a->apply(pool, x, rows, y);
}

void rms_norm_rows(const float* x, const float* weight, float* y, int64_t rows, int64_t cols, double eps,
                   ThreadPool& pool) {
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* xr = x + static_cast<int64_t>(r) * cols;
      float* yr = y + static_cast<int64_t>(r) * cols;
      double ss = 0.0;
      for (int64_t i = 0; i < cols; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(cols) + eps));
      for (int64_t i = 0; i < cols; ++i) yr[i] = weight[i] * (xr[i] * inv);
    }
  });
}

void decoder_layer_forward(const ModelConfig& cfg, const LayerWeights& w, int64_t layer, float* hidden,
                           int64_t seq_len, LayerScratch& s, ThreadPool& pool, const LinearHook* hook) {
  const int64_t hs = cfg.hidden_size;
  const int64_t inter = cfg.mlp_intermediate();
  if (seq_len > s.seq_len_) {
    fail(ErrorKind::kInvalidArgument, "sequence of {} tokens exceeds the scratch size {}", seq_len, s.seq_len_);
  }

  // Attention block.
  rms_norm_rows(hidden, w.attn_norm.f32(), s.norm_.data(), seq_len, hs, cfg.rms_norm_eps, pool);
  // An online transform (kron_transform.h) changes each site's input before its consumers and
  // the hook: the stored weights multiply x·T.
  apply_site_transform(w, InputSite::kAttnIn, s.norm_.data(), seq_len, pool);
  call_hook(hook, layer, TensorRole::kAttnQ, s.norm_.data(), seq_len, hs);
  call_hook(hook, layer, TensorRole::kAttnK, s.norm_.data(), seq_len, hs);
  call_hook(hook, layer, TensorRole::kAttnV, s.norm_.data(), seq_len, hs);
  linear(pool, w, TensorRole::kAttnQ, s.norm_.data(), seq_len, s.q_.data());
  linear(pool, w, TensorRole::kAttnK, s.norm_.data(), seq_len, s.k_.data());
  linear(pool, w, TensorRole::kAttnV, s.norm_.data(), seq_len, s.v_.data());
  if (cfg.qkv_bias) {
    add_bias_rows(pool, s.q_.data(), seq_len, w.bq);
    add_bias_rows(pool, s.k_.data(), seq_len, w.bk);
    add_bias_rows(pool, s.v_.data(), seq_len, w.bv);
  }
  if (cfg.qk_norm) {
    // Qwen3: RMSNorm over each head's head_dim values (rows of head_dim), before the rotation.
    rms_norm_rows(s.q_.data(), w.q_norm.f32(), s.q_.data(), seq_len * cfg.num_heads, cfg.head_dim, cfg.rms_norm_eps,
                  pool);
    rms_norm_rows(s.k_.data(), w.k_norm.f32(), s.k_.data(), seq_len * cfg.num_kv_heads, cfg.head_dim,
                  cfg.rms_norm_eps, pool);
  }
  apply_rope(s.q_.data(), cfg.q_dim(), seq_len, cfg.num_heads, cfg.head_dim, s.rope_cos_.data(),
             s.rope_sin_.data(), pool);
  apply_rope(s.k_.data(), cfg.kv_dim(), seq_len, cfg.num_kv_heads, cfg.head_dim, s.rope_cos_.data(),
             s.rope_sin_.data(), pool);
  if (cfg.kv_cache != nullptr) {  // what a quantized cache would hand back (kv_cache.h)
    quantize_kv_rows(*cfg.kv_cache, s.k_.data(), seq_len, cfg.num_kv_heads, cfg.head_dim, pool);
    quantize_kv_rows(*cfg.kv_cache, s.v_.data(), seq_len, cfg.num_kv_heads, cfg.head_dim, pool);
  }
  attention(cfg, s.q_.data(), s.k_.data(), s.v_.data(), s.attn_.data(), seq_len, cfg.window_for_layer(layer), pool);
  apply_site_transform(w, InputSite::kAttnOut, s.attn_.data(), seq_len, pool);
  call_hook(hook, layer, TensorRole::kAttnOut, s.attn_.data(), seq_len, cfg.q_dim());
  linear(pool, w, TensorRole::kAttnOut, s.attn_.data(), seq_len, hidden, /*accumulate=*/true);

  // MLP block: down(silu(gate(x)) * up(x)), or the experts (moe.h).
  rms_norm_rows(hidden, w.mlp_norm.f32(), s.norm_.data(), seq_len, hs, cfg.rms_norm_eps, pool);
  if (cfg.moe) {
    moe_mlp_forward(cfg, w, layer, s.norm_.data(), seq_len, hidden, *s.moe_, pool, hook);
    return;
  }
  apply_site_transform(w, InputSite::kMlpIn, s.norm_.data(), seq_len, pool);
  call_hook(hook, layer, TensorRole::kMlpGate, s.norm_.data(), seq_len, hs);
  call_hook(hook, layer, TensorRole::kMlpUp, s.norm_.data(), seq_len, hs);
  linear(pool, w, TensorRole::kMlpGate, s.norm_.data(), seq_len, s.gate_.data());
  linear(pool, w, TensorRole::kMlpUp, s.norm_.data(), seq_len, s.up_.data());
  pool.parallel_for(0, static_cast<size_t>(seq_len), kRowGrain, [&](size_t r0, size_t r1) {
    const int64_t off = static_cast<int64_t>(r0) * inter;
    silu_mul(s.gate_.data() + off, s.up_.data() + off, static_cast<int64_t>(r1 - r0) * inter);
  });
  if (cfg.rotation && cfg.rotation->down_seed) {
    // Online rotation of the intermediate (rotate.h): w_down holds W_down·Q_d.
    RandomizedHadamard(inter, *cfg.rotation->down_seed).apply_rows(s.gate_.data(), seq_len, pool);
  }
  apply_site_transform(w, InputSite::kMlpDown, s.gate_.data(), seq_len, pool);
  call_hook(hook, layer, TensorRole::kMlpDown, s.gate_.data(), seq_len, inter);
  linear(pool, w, TensorRole::kMlpDown, s.gate_.data(), seq_len, hidden, /*accumulate=*/true);
}

void embed_tokens(const Model& m, std::span<const int32_t> ids, float* hidden) {
  const int64_t hs = m.config.hidden_size;
  for (size_t t = 0; t < ids.size(); ++t) {
    const int32_t id = ids[t];
    if (id < 0 || id >= m.config.vocab_size) {
      fail(ErrorKind::kInvalidArgument, "token id {} at position {} is outside the vocabulary [0, {})", id, t,
           m.config.vocab_size);
    }
    // One row: a copy for a dense embedding, one dequantized row for a quantized one.
    m.embedding.rows_f32(id, id + 1, hidden + static_cast<int64_t>(t) * hs);
  }
  if (m.config.rotation && m.config.rotation->residual_online) {
    // The layers read and write the residual stream rotated by Q; the embedding is not (rotate.h).
    RandomizedHadamard(hs, m.config.rotation->residual_seed)
        .apply_rows_serial(hidden, static_cast<int64_t>(ids.size()));
  }
}

void final_norm_rows(const Model& m, const float* hidden, int64_t seq_len, float* normed, ThreadPool& pool) {
  const int64_t hs = m.config.hidden_size;
  if (m.config.rotation && m.config.rotation->residual_online) {
    // Undo the residual rotation: the final norm and the head see the unrotated stream.
    std::copy(hidden, hidden + seq_len * hs, normed);
    RandomizedHadamard(hs, m.config.rotation->residual_seed).apply_transpose_rows(normed, seq_len, pool);
    rms_norm_rows(normed, m.final_norm.f32(), normed, seq_len, hs, m.config.rms_norm_eps, pool);
    return;
  }
  rms_norm_rows(hidden, m.final_norm.f32(), normed, seq_len, hs, m.config.rms_norm_eps, pool);
}

void output_logits(const Model& m, const float* hidden, int64_t seq_len, float* logits, ThreadPool& pool,
                   const LinearHook* hook) {
  const int64_t hs = m.config.hidden_size;
  std::vector<float> normed(static_cast<size_t>(seq_len * hs));
  final_norm_rows(m, hidden, seq_len, normed.data(), pool);
  call_hook(hook, -1, TensorRole::kOutput, normed.data(), seq_len, hs);
  linear_nt(pool, normed.data(), m.output.cols(), seq_len, m.output, logits, m.output.rows());
}

void forward_into(const Model& m, std::span<const int32_t> ids, float* logits, ThreadPool& pool,
                  const LinearHook* hook) {
  const auto seq_len = static_cast<int64_t>(ids.size());
  std::vector<float> hidden(static_cast<size_t>(seq_len * m.config.hidden_size));
  embed_tokens(m, ids, hidden.data());
  LayerScratch scratch(m.config, seq_len);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    decoder_layer_forward(m.config, m.layers[i], static_cast<int64_t>(i), hidden.data(), seq_len, scratch, pool,
                          hook);
  }
  output_logits(m, hidden.data(), seq_len, logits, pool, hook);
}

Tensor forward(const Model& m, std::span<const int32_t> ids, ThreadPool& pool, const LinearHook* hook) {
  Tensor logits = Tensor::zeros(DType::kF32, {static_cast<int64_t>(ids.size()), m.config.vocab_size});
  forward_into(m, ids, logits.mutable_f32(), pool, hook);
  return logits;
}

}  // namespace calq::model
