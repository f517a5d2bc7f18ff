#include "model/rotate.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hadamard.h"

namespace calq::model {
namespace {

// Rows per chunk for the copy/scale/transpose loops (each row is a few hundred values or more).
constexpr Grain kRowGrain{.min_items = 16};

std::string tensor_label(const Model& m, TensorRole role, int64_t layer) {
  if (m.arch != nullptr && has_slot(*m.arch, role)) return hf_tensor_name(*m.arch, role, layer);
  return layer >= 0 ? fmt::format("layer {} {}", layer, role_name(role)) : std::string(role_name(role));
}

void require_dense(const Model& m, const LinearWeight& w, TensorRole role, int64_t layer) {
  if (w.is_quantized()) {
    fail(ErrorKind::kInvalidArgument,
         "{}: cannot rotate tensor '{}': it is held in format {}; rotation needs a float32 model "
         "(rotate before quantizing)",
         m.source.string(), tensor_label(m, role, layer), w.format_name());
  }
}

Tensor ones(int64_t n) {
  Tensor t = Tensor::zeros(DType::kF32, {n});
  std::fill(t.mutable_f32(), t.mutable_f32() + n, 1.0f);
  return t;
}

// A new [rows, cols] tensor W·diag(g) (g may be null: a plain copy), then each row ← row·Q.
Tensor rotate_reader(const Tensor& w, const Tensor* g, const RandomizedHadamard& q, ThreadPool& pool) {
  const int64_t rows = w.dim(0), cols = w.dim(1);
  Tensor out = Tensor::zeros(DType::kF32, {rows, cols});
  const float* src = w.f32();
  float* dst = out.mutable_f32();
  const float* gain = g != nullptr ? g->f32() : nullptr;
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        dst[r * cols + c] = gain != nullptr ? src[r * cols + c] * gain[c] : src[r * cols + c];
      }
    }
  });
  q.apply_rows(dst, rows, pool);
  return out;
}

// dst[cols, rows] = srcᵀ for src[rows, cols].
void transpose(const float* src, float* dst, int64_t rows, int64_t cols, ThreadPool& pool) {
  pool.parallel_for(0, static_cast<size_t>(cols), kRowGrain, [&](size_t c0, size_t c1) {
    for (auto c = static_cast<int64_t>(c0); c < static_cast<int64_t>(c1); ++c) {
      for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = src[r * cols + c];
    }
  });
}

// A new [rows = hidden, cols] tensor Qᵀ·W: (Qᵀ·W)ᵀ = Wᵀ·Q, i.e. the rows of Wᵀ times Q.
Tensor rotate_writer(const Tensor& w, const RandomizedHadamard& q, ThreadPool& pool) {
  const int64_t rows = w.dim(0), cols = w.dim(1);
  std::vector<float> wt(static_cast<size_t>(rows * cols));
  transpose(w.f32(), wt.data(), rows, cols, pool);
  q.apply_rows(wt.data(), cols, pool);
  Tensor out = Tensor::zeros(DType::kF32, {rows, cols});
  transpose(wt.data(), out.mutable_f32(), cols, rows, pool);
  return out;
}

void require_size(const Model& m, const char* what, int64_t n) {
  if (!hadamard_supported(n)) {
    fail(ErrorKind::kUnsupported, "{}: cannot rotate: {} {} has no Hadamard transform (supported: {})",
         m.source.string(), what, n, hadamard_supported_sizes());
  }
}

}  // namespace

uint64_t down_rotation_seed(uint64_t seed) {
  // A fixed odd offset (the 64-bit golden ratio): distinct from `seed` for every seed.
  return seed ^ 0x9E3779B97F4A7C15ull;
}

void rotate_model(Model& m, const RotateOptions& options, ThreadPool& pool) {
  const ModelConfig& c = m.config;
  if (c.rotation) {
    fail(ErrorKind::kInvalidArgument, "{}: the model is already rotated (residual seed {})", m.source.string(),
         c.rotation->residual_seed);
  }
  if (m.has_transforms()) {
    // The norms fold into the weights that read their output, which with a transform is x·T.
    fail(ErrorKind::kInvalidArgument, "{}: cannot rotate a model with online Kronecker transforms (rotate first)",
         m.source.string());
  }
  if (m.has_adapters()) {
    // Adapters read the unrotated residual stream and write into it: they would need rotating too.
    fail(ErrorKind::kInvalidArgument, "{}: cannot rotate a model with LoRA adapters (rotate first, then add adapters)",
         m.source.string());
  }
  require_size(m, "hidden_size", c.hidden_size);
  if (options.rotate_down) require_size(m, "intermediate_size", c.intermediate_size);
  require_dense(m, m.embedding, TensorRole::kTokenEmbedding, -1);
  require_dense(m, m.output, TensorRole::kOutput, -1);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (TensorRole role : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut,
                            TensorRole::kMlpGate, TensorRole::kMlpUp, TensorRole::kMlpDown}) {
      require_dense(m, m.layers[l].linear(role), role, static_cast<int64_t>(l));
    }
  }
  const bool tied = c.tie_word_embeddings || m.output.same_storage(m.embedding);

  const RandomizedHadamard q(c.hidden_size, options.seed);
  const uint64_t down_seed = down_rotation_seed(options.seed);
  std::optional<RandomizedHadamard> q_down;
  if (options.rotate_down) q_down.emplace(c.intermediate_size, down_seed);

  for (LayerWeights& l : m.layers) {
    l.wq = rotate_reader(l.wq.dense(), &l.attn_norm, q, pool);
    l.wk = rotate_reader(l.wk.dense(), &l.attn_norm, q, pool);
    l.wv = rotate_reader(l.wv.dense(), &l.attn_norm, q, pool);
    l.wo = rotate_writer(l.wo.dense(), q, pool);
    l.w_gate = rotate_reader(l.w_gate.dense(), &l.mlp_norm, q, pool);
    l.w_up = rotate_reader(l.w_up.dense(), &l.mlp_norm, q, pool);
    Tensor down = rotate_writer(l.w_down.dense(), q, pool);
    // The online intermediate rotation: (x·Q_d)·(W_down·Q_d)ᵀ = x·W_downᵀ.
    if (q_down) q_down->apply_rows(down.mutable_f32(), down.dim(0), pool);
    l.w_down = std::move(down);
    l.attn_norm = ones(c.hidden_size);
    l.mlp_norm = ones(c.hidden_size);
  }
  if (!tied) {
    m.embedding = rotate_reader(m.embedding.dense(), nullptr, q, pool);
    m.output = rotate_reader(m.output.dense(), &m.final_norm, q, pool);
    m.final_norm = ones(c.hidden_size);
  }
  // Tied: embedding, head and final norm stay as they are; the forward pass rotates the stream.
  m.config.rotation = ModelConfig::Rotation{
      .residual_seed = options.seed,
      .residual_online = tied,
      .down_seed = options.rotate_down ? std::optional<uint64_t>(down_seed) : std::nullopt,
  };
}

}  // namespace calq::model
