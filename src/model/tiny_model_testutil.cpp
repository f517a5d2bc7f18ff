#include "model/tiny_model_testutil.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "core/mapped_file.h"
#include "io/safetensors.h"

namespace calq::model::testutil {

ModelConfig tiny_config(bool tied) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = tied;
  return c;
}

void write_tiny_model(const std::filesystem::path& folder, const TinyModelOptions& o) {
  std::filesystem::create_directories(folder);
  ModelConfig c = tiny_config(o.tied);
  c.num_layers = o.layers;
  nlohmann::json cfg = {{"model_type", "llama"},
                        {"architectures", {"LlamaForCausalLM"}},
                        {"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden_size},
                        {"intermediate_size", c.intermediate_size},
                        {"num_hidden_layers", c.num_layers},
                        {"num_attention_heads", c.num_heads},
                        {"num_key_value_heads", c.num_kv_heads},
                        {"rms_norm_eps", c.rms_norm_eps},
                        {"rope_theta", c.rope_theta},
                        {"hidden_act", "silu"},
                        {"tie_word_embeddings", c.tie_word_embeddings}};
  const std::string cfg_text = cfg.dump(2);
  write_file_atomic(folder / "config.json", std::as_bytes(std::span(cfg_text.data(), cfg_text.size())));

  const Architecture* arch = find_architecture("llama");
  std::mt19937 rng(o.seed);
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  std::vector<std::vector<std::byte>> blobs;
  const auto add = [&](TensorRole role, int64_t layer) {
    const Shape shape = expected_shape(c, role);
    const bool norm = !is_linear(role) && role != TensorRole::kTokenEmbedding;
    std::normal_distribution<float> d(norm ? 1.0f : 0.0f, norm ? 0.1f : 0.3f);
    const auto n = static_cast<size_t>(shape_numel(shape));
    std::vector<std::byte> blob(n * dtype_size(o.dtype));
    for (size_t i = 0; i < n; ++i) {
      const float v = d(rng);
      if (o.dtype == DType::kF32) {
        std::memcpy(blob.data() + 4 * i, &v, 4);
      } else {
        const uint16_t h = o.dtype == DType::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(blob.data() + 2 * i, &h, 2);
      }
    }
    names.push_back(hf_tensor_name(*arch, role, layer));
    shapes.push_back(shape);
    blobs.push_back(std::move(blob));
  };
  add(TensorRole::kTokenEmbedding, -1);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      if (is_per_layer(static_cast<TensorRole>(r))) add(static_cast<TensorRole>(r), l);
    }
  }
  add(TensorRole::kFinalNorm, -1);
  if (!o.tied) add(TensorRole::kOutput, -1);
  std::vector<io::TensorToWrite> tensors;
  for (size_t i = 0; i < names.size(); ++i) tensors.push_back({names[i], o.dtype, shapes[i], blobs[i]});
  io::write_sharded_safetensors(folder, tensors, o.shards);
}

namespace {

std::vector<double> rms_norm(const std::vector<double>& x, int64_t rows, int64_t cols, const Tensor& w, double eps) {
  std::vector<double> y(x.size());
  for (int64_t t = 0; t < rows; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < cols; ++i) ss += x[t * cols + i] * x[t * cols + i];
    const double inv = 1.0 / std::sqrt(ss / cols + eps);
    for (int64_t i = 0; i < cols; ++i) y[t * cols + i] = w.f32()[i] * x[t * cols + i] * inv;
  }
  return y;
}

// y[t, o] = sum_i x[t, i] * W[o, i]
std::vector<double> linear(const std::vector<double>& x, int64_t rows, const Tensor& w) {
  const int64_t out = w.dim(0), in = w.dim(1);
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += x[t * in + i] * w.f32()[o * in + i];
      y[t * out + o] = acc;
    }
  }
  return y;
}

void rope(std::vector<double>& x, int64_t rows, int64_t heads, int64_t hd, double theta) {
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = x.data() + t * heads * hd + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(t) * std::pow(theta, -2.0 * i / hd);
        const double a = v[i], b = v[i + half];
        v[i] = a * std::cos(angle) - b * std::sin(angle);
        v[i + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
}

}  // namespace

void naive_decoder_layer(const ModelConfig& c, const LayerWeights& w, std::vector<double>& h, int64_t T) {
  const int64_t H = c.hidden_size, hd = c.head_dim;
  auto xn = rms_norm(h, T, H, w.attn_norm, c.rms_norm_eps);
  auto q = linear(xn, T, w.wq);
  auto k = linear(xn, T, w.wk);
  auto v = linear(xn, T, w.wv);
  rope(q, T, c.num_heads, hd, c.rope_theta);
  rope(k, T, c.num_kv_heads, hd, c.rope_theta);
  std::vector<double> attn(static_cast<size_t>(T * c.q_dim()), 0.0);
  const int64_t group = c.num_heads / c.num_kv_heads;
  for (int64_t head = 0; head < c.num_heads; ++head) {
    const int64_t kvh = head / group;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> p(static_cast<size_t>(t + 1));
      double mx = -1e300;
      for (int64_t j = 0; j <= t; ++j) {
        double s = 0;
        for (int64_t i = 0; i < hd; ++i) s += q[t * c.q_dim() + head * hd + i] * k[j * c.kv_dim() + kvh * hd + i];
        p[j] = s / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, p[j]);
      }
      double z = 0;
      for (auto& e : p) z += (e = std::exp(e - mx));
      for (int64_t j = 0; j <= t; ++j) {
        for (int64_t i = 0; i < hd; ++i) attn[t * c.q_dim() + head * hd + i] += p[j] / z * v[j * c.kv_dim() + kvh * hd + i];
      }
    }
  }
  const auto o = linear(attn, T, w.wo);
  for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
  auto xn2 = rms_norm(h, T, H, w.mlp_norm, c.rms_norm_eps);
  auto g = linear(xn2, T, w.w_gate);
  const auto u = linear(xn2, T, w.w_up);
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  const auto d = linear(g, T, w.w_down);
  for (size_t i = 0; i < h.size(); ++i) h[i] += d[i];
}

std::vector<double> naive_forward(const Model& m, const std::vector<int32_t>& ids) {
  const int64_t T = static_cast<int64_t>(ids.size()), H = m.config.hidden_size;
  std::vector<double> h(static_cast<size_t>(T * H));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < H; ++i) h[t * H + i] = m.embedding.f32()[ids[t] * H + i];
  }
  for (const auto& layer : m.layers) naive_decoder_layer(m.config, layer, h, T);
  const auto xn = rms_norm(h, T, H, m.final_norm, m.config.rms_norm_eps);
  return linear(xn, T, m.output);
}

}  // namespace calq::model::testutil
