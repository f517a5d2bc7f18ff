#include "model/tiny_model_testutil.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>

#include "core/mapped_file.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"

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
  c.model_type = o.model_type;
  if (o.vocab_size > 0) c.vocab_size = o.vocab_size;
  const Architecture* arch = find_architecture(o.model_type);
  if (arch == nullptr) throw std::invalid_argument("write_tiny_model: unknown model_type " + o.model_type);
  const std::string& t = o.model_type;
  const char* class_name = t == "qwen2"       ? "Qwen2ForCausalLM"
                           : t == "mistral"   ? "MistralForCausalLM"
                           : t == "qwen3"     ? "Qwen3ForCausalLM"
                           : t == "mixtral"   ? "MixtralForCausalLM"
                           : t == "qwen2_moe" ? "Qwen2MoeForCausalLM"
                           : t == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                                              : "LlamaForCausalLM";
  nlohmann::json cfg = {{"model_type", o.model_type},
                        {"architectures", {class_name}},
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
  if (t == "qwen3" || t == "qwen3_moe") cfg["head_dim"] = c.head_dim;
  if (t == "mixtral") {
    cfg["intermediate_size"] = 64;  // the expert width: a multiple of 32 so that block formats fit
    cfg["num_local_experts"] = o.num_experts;
    cfg["num_experts_per_tok"] = o.experts_per_token;
  } else if (t == "qwen2_moe" || t == "qwen3_moe") {
    cfg["num_experts"] = o.num_experts;
    cfg["num_experts_per_tok"] = o.experts_per_token;
    cfg["moe_intermediate_size"] = 32;
    cfg["norm_topk_prob"] = o.norm_topk_prob;
    cfg["decoder_sparse_step"] = 1;
    cfg["mlp_only_layers"] = nlohmann::json::array();
    if (t == "qwen2_moe") cfg["shared_expert_intermediate_size"] = 64;
  }
  if (o.rope_type == "linear") {
    cfg["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  } else if (o.rope_type == "llama3") {
    cfg["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 64}};
  }
  if (t == "mistral" || t == "mixtral") {
    cfg["sliding_window"] = o.sliding_window > 0 ? nlohmann::json(o.sliding_window) : nlohmann::json(nullptr);
  } else if (t == "qwen2" || t == "qwen3" || t == "qwen2_moe" || t == "qwen3_moe") {
    cfg["use_sliding_window"] = o.sliding_window > 0;
    // Real Qwen2 configs carry a window value even when it is off.
    cfg["sliding_window"] = o.sliding_window > 0 ? o.sliding_window : 4096;
    cfg["max_window_layers"] = o.max_window_layers;
  }
  const std::string cfg_text = cfg.dump(2);
  write_file_atomic(folder / "config.json", std::as_bytes(std::span(cfg_text.data(), cfg_text.size())));
  c = parse_hf_config_text(cfg_text, "tiny config.json");  // the shapes the loader will expect

  std::mt19937 rng(o.seed);
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  std::vector<std::vector<std::byte>> blobs;
  const auto add = [&](TensorRole role, int64_t layer, int64_t expert) {
    const Shape shape = expected_shape(c, role);
    const bool norm = !is_linear(role) && !is_expert(role) && role != TensorRole::kTokenEmbedding && !is_bias(role);
    std::normal_distribution<float> d(norm ? 1.0f : 0.0f, norm ? 0.1f : is_bias(role) ? 0.8f : 0.3f);
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
    names.push_back(hf_tensor_name(*arch, role, layer, expert));
    shapes.push_back(shape);
    blobs.push_back(std::move(blob));
  };
  add(TensorRole::kTokenEmbedding, -1, -1);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const auto& slot : arch->slots) {
      if (!is_per_layer(slot.role)) continue;
      if (!is_expert(slot.role)) {
        add(slot.role, l, -1);
        continue;
      }
      for (int64_t e = 0; e < c.moe->num_experts; ++e) add(slot.role, l, e);
    }
  }
  add(TensorRole::kFinalNorm, -1, -1);
  if (!o.tied) add(TensorRole::kOutput, -1, -1);
  std::vector<io::TensorToWrite> tensors;
  for (size_t i = 0; i < names.size(); ++i) tensors.push_back({names[i], o.dtype, shapes[i], blobs[i]});
  io::write_sharded_safetensors(folder, tensors, o.shards);
}

namespace {

// convert_hf_to_gguf.py's LlamaModel.permute, index by index: the [rows, cols] matrix viewed as
// [n_head, 2, rows / n_head / 2, cols] with axes 1 and 2 swapped.
std::vector<float> converter_permute(const float* w, int64_t rows, int64_t cols, int64_t n_head) {
  const int64_t half = rows / n_head / 2;
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t a = 0; a < half; ++a) {    // axis 1 of the result
      for (int64_t b = 0; b < 2; ++b) {     // axis 2 of the result
        const int64_t dst_row = (h * half + a) * 2 + b;
        const int64_t src_row = (h * 2 + b) * half + a;
        for (int64_t col = 0; col < cols; ++col) out[dst_row * cols + col] = w[src_row * cols + col];
      }
    }
  }
  return out;
}

std::vector<std::byte> encode(const std::vector<float>& v, DType dtype) {
  std::vector<std::byte> out(v.size() * dtype_size(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

}  // namespace

void write_tiny_gguf(const Model& m, const std::filesystem::path& path, DType dtype) {
  const ModelConfig& c = m.config;
  const Architecture& arch = *m.arch;
  const std::string a(arch.gguf_arch);
  io::GgufMetadata meta;
  meta.emplace_back("general.architecture", io::GgufValue::of_string(a));
  meta.emplace_back("general.name", io::GgufValue::of_string("tiny"));
  meta.emplace_back(a + ".block_count", io::GgufValue::of_uint32(static_cast<uint32_t>(c.num_layers)));
  meta.emplace_back(a + ".context_length", io::GgufValue::of_uint32(static_cast<uint32_t>(c.max_position_embeddings)));
  meta.emplace_back(a + ".embedding_length", io::GgufValue::of_uint32(static_cast<uint32_t>(c.hidden_size)));
  meta.emplace_back(a + ".feed_forward_length", io::GgufValue::of_uint32(static_cast<uint32_t>(c.intermediate_size)));
  meta.emplace_back(a + ".attention.head_count", io::GgufValue::of_uint32(static_cast<uint32_t>(c.num_heads)));
  meta.emplace_back(a + ".attention.head_count_kv", io::GgufValue::of_uint32(static_cast<uint32_t>(c.num_kv_heads)));
  meta.emplace_back(a + ".rope.freq_base", io::GgufValue::of_float32(static_cast<float>(c.rope_theta)));
  meta.emplace_back(a + ".attention.layer_norm_rms_epsilon", io::GgufValue::of_float32(static_cast<float>(c.rms_norm_eps)));
  if (c.sliding_window > 0) {
    if (!arch.gguf_window_all_layers) throw std::invalid_argument("write_tiny_gguf: no GGUF key for this window");
    meta.emplace_back(a + ".attention.sliding_window", io::GgufValue::of_uint32(static_cast<uint32_t>(c.sliding_window)));
  }
  // The converter writes <arch>.vocab_size for llama; Qwen2's vocabulary size is the token list's.
  if (a == "llama") meta.emplace_back(a + ".vocab_size", io::GgufValue::of_uint32(static_cast<uint32_t>(c.vocab_size)));
  meta.emplace_back(a + ".rope.dimension_count", io::GgufValue::of_uint32(static_cast<uint32_t>(c.head_dim)));
  std::vector<std::string> tokens;
  for (int64_t i = 0; i < c.vocab_size; ++i) tokens.push_back(fmt::format("t{}", i));
  meta.emplace_back("tokenizer.ggml.tokens", io::GgufValue::of_strings(tokens));

  std::vector<std::vector<std::byte>> blobs;
  std::vector<io::GgufWriteTensor> tensors;
  blobs.reserve(3 + kNumTensorRoles * static_cast<size_t>(c.num_layers));
  const auto add = [&](TensorRole role, int64_t layer, const Tensor& t) {
    std::vector<float> v(t.f32(), t.f32() + t.numel());
    const TensorRole target = is_bias(role) ? bias_target(role) : role;
    if (arch.gguf_permutes_qk && (target == TensorRole::kAttnQ || target == TensorRole::kAttnK)) {
      const int64_t heads = target == TensorRole::kAttnQ ? c.num_heads : c.num_kv_heads;
      v = converter_permute(v.data(), t.dim(0), t.rank() == 2 ? t.dim(1) : 1, heads);
    }
    const DType out = (t.rank() == 1) ? DType::kF32 : dtype;  // the converter keeps 1-d tensors in F32
    blobs.push_back(encode(v, out));
    const uint32_t type = out == DType::kF32 ? io::kGgmlF32 : out == DType::kF16 ? io::kGgmlF16 : io::kGgmlBF16;
    tensors.push_back({gguf_tensor_name(arch, role, layer), std::vector<int64_t>(t.shape().rbegin(), t.shape().rend()),
                       type, blobs.back()});
  };
  add(TensorRole::kTokenEmbedding, -1, m.embedding.dense());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const auto& slot : arch.slots) {
      if (!is_per_layer(slot.role)) continue;
      const LayerWeights& w = m.layers[static_cast<size_t>(l)];
      add(slot.role, l, is_linear(slot.role) ? w.linear(slot.role).dense() : w.vector(slot.role));
    }
  }
  add(TensorRole::kFinalNorm, -1, m.final_norm);
  if (!c.tie_word_embeddings) add(TensorRole::kOutput, -1, m.output.dense());
  io::write_gguf(path, meta, tensors);
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

// y[t, o] = sum_i x[t, i] * W[o, i] (a quantized W is dequantized with the scalar reference kernel)
std::vector<double> linear(const std::vector<double>& x, int64_t rows, const LinearWeight& weight) {
  const int64_t out = weight.rows(), in = weight.cols();
  std::vector<float> w(static_cast<size_t>(out * in));
  if (weight.is_quantized()) {
    weight.quantized().dequantize_rows_reference(0, out, w.data());
  } else {
    weight.rows_f32(0, out, w.data());
  }
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += x[t * in + i] * w[o * in + i];
      y[t * out + o] = acc;
    }
  }
  return y;
}

void add_bias(std::vector<double>& y, int64_t rows, const Tensor& b) {
  const int64_t n = b.dim(0);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t o = 0; o < n; ++o) y[t * n + o] += b.f32()[o];
  }
}

void rope(std::vector<double>& x, int64_t rows, int64_t heads, int64_t hd, double theta,
          const std::vector<float>& factors) {
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = x.data() + t * heads * hd + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const double f = factors.empty() ? 1.0 : factors[static_cast<size_t>(i)];
        const double angle = static_cast<double>(t) * std::pow(theta, -2.0 * i / hd) / f;
        const double a = v[i], b = v[i + half];
        v[i] = a * std::cos(angle) - b * std::sin(angle);
        v[i + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
}

}  // namespace

void naive_decoder_layer(const ModelConfig& c, const LayerWeights& w, std::vector<double>& h, int64_t T,
                         int64_t layer) {
  const int64_t H = c.hidden_size, hd = c.head_dim;
  auto xn = rms_norm(h, T, H, w.attn_norm, c.rms_norm_eps);
  auto q = linear(xn, T, w.wq);
  auto k = linear(xn, T, w.wk);
  auto v = linear(xn, T, w.wv);
  if (c.qkv_bias) {
    add_bias(q, T, w.bq);
    add_bias(k, T, w.bk);
    add_bias(v, T, w.bv);
  }
  if (c.qk_norm) {
    q = rms_norm(q, T * c.num_heads, hd, w.q_norm, c.rms_norm_eps);
    k = rms_norm(k, T * c.num_kv_heads, hd, w.k_norm, c.rms_norm_eps);
  }
  // Sliding window: the query at t sees keys t - W < j <= t.
  const int64_t window = c.window_for_layer(layer);
  rope(q, T, c.num_heads, hd, c.rope_theta, c.rope_freq_factors);
  rope(k, T, c.num_kv_heads, hd, c.rope_theta, c.rope_freq_factors);
  std::vector<double> attn(static_cast<size_t>(T * c.q_dim()), 0.0);
  const int64_t group = c.num_heads / c.num_kv_heads;
  for (int64_t head = 0; head < c.num_heads; ++head) {
    const int64_t kvh = head / group;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t first = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
      std::vector<double> p(static_cast<size_t>(t + 1), 0.0);
      double mx = -1e300;
      for (int64_t j = first; j <= t; ++j) {
        double s = 0;
        for (int64_t i = 0; i < hd; ++i) s += q[t * c.q_dim() + head * hd + i] * k[j * c.kv_dim() + kvh * hd + i];
        p[j] = s / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, p[j]);
      }
      double z = 0;
      for (int64_t j = first; j <= t; ++j) z += (p[j] = std::exp(p[j] - mx));
      for (int64_t j = first; j <= t; ++j) {
        for (int64_t i = 0; i < hd; ++i) attn[t * c.q_dim() + head * hd + i] += p[j] / z * v[j * c.kv_dim() + kvh * hd + i];
      }
    }
  }
  const auto o = linear(attn, T, w.wo);
  for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
  auto xn2 = rms_norm(h, T, H, w.mlp_norm, c.rms_norm_eps);
  const auto swiglu = [&](const LinearWeight& gate, const LinearWeight& up, const LinearWeight& down,
                          const std::vector<double>& x, int64_t rows) {
    auto g = linear(x, rows, gate);
    const auto u = linear(x, rows, up);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    return linear(g, rows, down);
  };
  if (!c.moe) {
    const auto d = swiglu(w.w_gate, w.w_up, w.w_down, xn2, T);
    for (size_t i = 0; i < h.size(); ++i) h[i] += d[i];
    return;
  }
  // Experts: softmax over the router's logits, the top k, renormalised when norm_topk_prob.
  const int64_t E = c.moe->num_experts, K = c.moe->experts_per_token;
  const auto logits = linear(xn2, T, w.router);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> p(logits.begin() + t * E, logits.begin() + (t + 1) * E);
    const double mx = *std::max_element(p.begin(), p.end());
    double z = 0;
    for (double& pe : p) z += (pe = std::exp(pe - mx));
    for (double& pe : p) pe /= z;
    std::vector<int64_t> order(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) order[static_cast<size_t>(e)] = e;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
    double picked = 0;
    for (int64_t j = 0; j < K; ++j) picked += p[order[j]];
    const std::vector<double> x(xn2.begin() + t * H, xn2.begin() + (t + 1) * H);
    for (int64_t j = 0; j < K; ++j) {
      const ExpertWeights& ew = w.experts[static_cast<size_t>(order[j])];
      const double weight = c.moe->norm_topk_prob ? p[order[j]] / picked : p[order[j]];
      const auto y = swiglu(ew.w_gate, ew.w_up, ew.w_down, x, 1);
      for (int64_t i = 0; i < H; ++i) h[t * H + i] += weight * y[i];
    }
    if (c.moe->shared_intermediate > 0) {
      const auto y = swiglu(w.w_gate, w.w_up, w.w_down, x, 1);
      const double g = linear(x, 1, w.shared_expert_gate)[0];
      const double s = 1.0 / (1.0 + std::exp(-g));
      for (int64_t i = 0; i < H; ++i) h[t * H + i] += s * y[i];
    }
  }
}

std::vector<double> naive_forward(const Model& m, const std::vector<int32_t>& ids) {
  const int64_t T = static_cast<int64_t>(ids.size()), H = m.config.hidden_size;
  std::vector<double> h(static_cast<size_t>(T * H));
  std::vector<float> row(static_cast<size_t>(H));
  for (int64_t t = 0; t < T; ++t) {
    m.embedding.rows_f32(ids[t], ids[t] + 1, row.data());
    for (int64_t i = 0; i < H; ++i) h[t * H + i] = row[i];
  }
  for (size_t l = 0; l < m.layers.size(); ++l) naive_decoder_layer(m.config, m.layers[l], h, T, static_cast<int64_t>(l));
  const auto xn = rms_norm(h, T, H, m.final_norm, m.config.rms_norm_eps);
  return linear(xn, T, m.output);
}

Model load_tiny_model(const std::filesystem::path& folder, const TinyModelOptions& options, ThreadPool& pool) {
  write_tiny_model(folder, options);
  Model m = load_hf_model(folder, pool);
  std::filesystem::remove_all(folder);
  return m;
}

std::vector<int32_t> test_token_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>((i * 37 + 11) % vocab);
  return ids;
}

}  // namespace calq::model::testutil
