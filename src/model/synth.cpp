// Synthetic models and their tokenizer (see synth.h for the contract).
#include "model/synth.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_set>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"
#include "model/hf_export.h"
#include "model/loader_util.h"

namespace calq::model {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The seed of one row's stream: (seed, role, layer, row) mixed, so that every row of every tensor
// has its own stream whatever the order or the thread that draws it.
uint64_t row_seed(uint64_t seed, TensorRole role, int64_t layer, int64_t expert, int64_t row) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ static_cast<uint64_t>(role));
  h = splitmix64(h ^ static_cast<uint64_t>(layer + 1));
  if (expert >= 0) h = splitmix64(h ^ static_cast<uint64_t>(expert + 1));
  return splitmix64(h ^ static_cast<uint64_t>(row));
}

// Mean and half-width of the uniform distribution of a role's values.
struct Draw {
  double mean = 0;
  double half_width = 0;  // sqrt(3) × std
};

Draw draw_of(const ModelConfig& c, TensorRole role, const Shape& shape) {
  const double fan_in = static_cast<double>(shape.back());
  const double depth = 1.0 / std::sqrt(static_cast<double>(c.num_layers));
  const auto uniform = [](double mean, double std) { return Draw{mean, std::sqrt(3.0) * std}; };
  if (is_norm(role) || is_head_norm(role)) return Draw{1.0, 0.3};
  if (is_bias(role)) return uniform(0.0, 0.5);
  switch (role) {
    case TensorRole::kTokenEmbedding:
      return uniform(0.0, c.tie_word_embeddings ? 2.0 / std::sqrt(static_cast<double>(c.hidden_size)) : 1.0);
    case TensorRole::kOutput: return uniform(0.0, 2.0 / std::sqrt(fan_in));
    case TensorRole::kAttnQ:
    case TensorRole::kAttnK: return uniform(0.0, 1.5 / std::sqrt(fan_in));
    case TensorRole::kAttnOut: return uniform(0.0, depth / std::sqrt(fan_in));
    case TensorRole::kMlpDown:
    case TensorRole::kExpertDown: return uniform(0.0, 1.5 * depth / std::sqrt(fan_in));
    default: return uniform(0.0, 1.0 / std::sqrt(fan_in));
  }
}

// --- the "outliers" weights (synth.h: SynthWeights::kOutliers) ---

constexpr double kRowSigma = 0.25;          // log-normal spread of a linear's row scales
constexpr double kNormSigma = 0.2;          // log-normal spread of the norms' gains
constexpr int64_t kColumnsPerOutlier = 256;  // a linear's outlier input columns: 1 in 256 (at least 1)
constexpr double kColumnFactorMin = 2.0, kColumnFactorMax = 3.0;
constexpr int64_t kChannelsPerOutlier = 512;  // recurring residual outlier channels: 1 in 512 (at least 1)
constexpr double kChannelFactorMin = 10.0, kChannelFactorMax = 50.0;

// e^x from basic operations only (a Taylor polynomial of e^(x/32) raised to the 32nd power; fused
// multiply-adds), so that it has the same bits everywhere, unlike a libm's exp. Relative error
// below 1e-12 for |x| <= 4, far below float32's.
double exp_exact(double x) {
  const double y = x * 0x1p-5;
  double p = 1.0 / 5040;
  for (const double c : {1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0}) p = std::fma(p, y, c);
  for (int i = 0; i < 5; ++i) p *= p;
  return p;
}

// An approximately standard normal number from one 64-bit draw: the sum of its four 16-bit parts
// (Irwin-Hall of 4: excess kurtosis -0.3, |z| <= sqrt(12)), centred and scaled exactly.
double normal_of(uint64_t bits) {
  static const double inv_std = 1.0 / std::sqrt(1431655765.0);  // 4 × (65536² - 1) / 12, exact
  const auto sum = static_cast<int64_t>((bits & 0xffff) + ((bits >> 16) & 0xffff) + ((bits >> 32) & 0xffff) +
                                        (bits >> 48));
  return static_cast<double>(sum - 131070) * inv_std;
}

double unit_of(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1p-53; }  // [0, 1), exact

// E[e^(2 sigma z)] for z = normal_of(...): (sinh(a) / a)^4 with a = sigma × sqrt(3).
double mean_square_scale(double sigma) {
  const double a = sigma * std::sqrt(3.0);
  const double r = (exp_exact(a) - exp_exact(-a)) / (2 * a);
  return r * r * r * r;
}

// `count` distinct indices in [0, n), drawn from `rng`, as a mask.
std::vector<bool> pick(std::mt19937_64& rng, int64_t n, int64_t count) {
  std::vector<bool> mask(static_cast<size_t>(n), false);
  for (int64_t got = 0; got < count;) {
    const auto i = static_cast<size_t>(((rng() >> 32) * static_cast<uint64_t>(n)) >> 32);
    if (!mask[i]) {
      mask[i] = true;
      ++got;
    }
  }
  return mask;
}

// The residual-stream channels whose gains are outliers in every norm of the model.
std::vector<bool> outlier_channels(uint64_t seed, int64_t hidden) {
  std::mt19937_64 rng(splitmix64(splitmix64(seed) ^ 0x6f75746c69657273ULL));  // "outliers"
  return pick(rng, hidden, std::max<int64_t>(1, hidden / kChannelsPerOutlier));
}

// A norm's gains (one row): log-normal around 1; for the model's outlier channels (not in a
// per-head norm) times a factor in [10, 50]; then scaled to a mean square of 1, so that what a
// norm feeds keeps its scale. Two draws per channel whatever the channel.
void outlier_norm(const ModelConfig& c, uint64_t seed, TensorRole role, int64_t layer, float* out, int64_t n) {
  std::mt19937_64 rng(row_seed(seed, role, layer, -1, 0));
  const std::vector<bool> outlier =
      is_head_norm(role) ? std::vector<bool>(static_cast<size_t>(n), false) : outlier_channels(seed, c.hidden_size);
  std::vector<double> g(static_cast<size_t>(n));
  double sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double z = normal_of(rng());
    const double u = unit_of(rng());
    double v = exp_exact(kNormSigma * z);
    if (outlier[static_cast<size_t>(i)]) v *= std::fma(u, kChannelFactorMax - kChannelFactorMin, kChannelFactorMin);
    g[static_cast<size_t>(i)] = v;
    sum_sq = std::fma(v, v, sum_sq);
  }
  const double scale = is_head_norm(role) ? 1.0 : 1.0 / std::sqrt(sum_sq / static_cast<double>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(g[static_cast<size_t>(i)] * scale);
}

// A linear's (or the embedding's) input-column factors: 1, or in [2, 3] for its outlier columns
// (none in the embedding), divided by their root mean square so that rows keep the role's std.
std::vector<double> column_factors(uint64_t seed, TensorRole role, int64_t layer, int64_t expert, int64_t cols) {
  std::vector<double> f(static_cast<size_t>(cols), 1.0);
  if (role == TensorRole::kTokenEmbedding) return f;
  std::mt19937_64 rng(row_seed(seed, role, layer, expert, -1));
  const std::vector<bool> outlier = pick(rng, cols, std::max<int64_t>(1, cols / kColumnsPerOutlier));
  double sum_sq = 0;
  for (int64_t j = 0; j < cols; ++j) {
    if (outlier[static_cast<size_t>(j)]) {
      f[static_cast<size_t>(j)] = std::fma(unit_of(rng()), kColumnFactorMax - kColumnFactorMin, kColumnFactorMin);
    }
    sum_sq = std::fma(f[static_cast<size_t>(j)], f[static_cast<size_t>(j)], sum_sq);
  }
  const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(cols));
  for (double& v : f) v *= inv_rms;
  return f;
}

float round_to(float v, DType dtype) { return dtype == DType::kBF16 ? bf16_to_f32(f32_to_bf16(v)) : v; }

// The values of one tensor of `shape` (rows = all but the last dimension), row-parallel, rounded to
// `dtype` and stored in `out` as `store` (kF32: float32 values; kBF16: bf16 words).
void draw_into(const ModelConfig& c, uint64_t seed, SynthWeights weights, TensorRole role, int64_t layer,
               int64_t expert, const Shape& shape, DType dtype, DType store, std::span<std::byte> out,
               ThreadPool& pool) {
  assert(store == DType::kF32 || (store == DType::kBF16 && dtype == DType::kBF16));
  const int64_t cols = shape.back();
  const int64_t rows = shape_numel(shape) / cols;
  assert(out.size() == static_cast<size_t>(rows * cols) * dtype_size(store));
  const auto put = [&](const float* row, int64_t r) {
    const size_t at = static_cast<size_t>(r * cols);
    if (store == DType::kF32) {
      std::memcpy(out.data() + at * sizeof(float), row, static_cast<size_t>(cols) * sizeof(float));
      return;
    }
    auto* words = reinterpret_cast<uint16_t*>(out.data()) + at;
    for (int64_t i = 0; i < cols; ++i) words[i] = f32_to_bf16(row[i]);
  };
  const bool outliers = weights == SynthWeights::kOutliers && !is_bias(role);
  if (outliers && (is_norm(role) || is_head_norm(role))) {
    std::vector<float> row(static_cast<size_t>(cols));
    outlier_norm(c, seed, role, layer, row.data(), cols);
    for (float& v : row) v = round_to(v, dtype);
    put(row.data(), 0);
    return;
  }
  const Draw d = draw_of(c, role, shape);
  const std::vector<double> column = outliers ? column_factors(seed, role, layer, expert, cols) : std::vector<double>{};
  // Row scales e^(0.25 z) over their root mean square: the role's std on average.
  const double row_std = d.half_width / std::sqrt(3.0) / std::sqrt(mean_square_scale(kRowSigma));
  const Grain grain{.min_items = static_cast<size_t>(std::max<int64_t>(1, 16384 / cols))};
  pool.parallel_for(0, static_cast<size_t>(rows), grain, [&](size_t r0, size_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (size_t r = r0; r < r1; ++r) {
      std::mt19937_64 rng(row_seed(seed, role, layer, expert, static_cast<int64_t>(r)));
      if (outliers) {
        const double a = row_std * exp_exact(kRowSigma * normal_of(rng()));
        for (int64_t i = 0; i < cols; ++i) {
          row[static_cast<size_t>(i)] =
              round_to(static_cast<float>(normal_of(rng()) * a * column[static_cast<size_t>(i)]), dtype);
        }
      } else {
        for (int64_t i = 0; i < cols; ++i) {
          // k / 2^52 - 1 in [-1, 1) is exact; one fused multiply-add rounds once, the same on any machine.
          const auto k = static_cast<int64_t>(rng() >> 11);
          const double u = static_cast<double>(k - (int64_t{1} << 52)) * 0x1p-52;
          row[static_cast<size_t>(i)] = round_to(static_cast<float>(std::fma(u, d.half_width, d.mean)), dtype);
        }
      }
      put(row.data(), static_cast<int64_t>(r));
    }
  });
}

Tensor draw_tensor(const ModelConfig& c, uint64_t seed, SynthWeights weights, TensorRole role, int64_t layer,
                   int64_t expert, const Shape& shape, DType dtype, ThreadPool& pool) {
  Tensor t = Tensor::zeros(DType::kF32, shape);
  draw_into(c, seed, weights, role, layer, expert, shape, dtype, DType::kF32,
            std::span(static_cast<std::byte*>(t.mutable_data()), t.nbytes()), pool);
  return t;
}

void require(bool ok, std::string_view field, int64_t value, std::string_view rule) {
  if (!ok) fail(ErrorKind::kInvalidArgument, "synthetic model: {} = {} {}", field, value, rule);
}

}  // namespace

ModelConfig synth_config(const SynthSpec& s) {
  const Architecture* arch = find_architecture(s.model_type);
  if (arch == nullptr) {
    fail(ErrorKind::kUnsupported, "synthetic model: model_type '{}' is not supported (supported: {})", s.model_type,
         fmt::join(supported_model_types(), ", "));
  }
  constexpr int64_t kMax = int64_t{1} << 31;
  require(s.layers >= 1 && s.layers <= 4096, "layers", s.layers, "must be in [1, 4096]");
  require(s.hidden >= 2 && s.hidden <= kMax, "hidden", s.hidden, "must be in [2, 2^31]");
  require(s.heads >= 1 && s.heads <= s.hidden, "heads", s.heads, "must be in [1, hidden]");
  const int64_t kv_heads = s.kv_heads == 0 ? s.heads : s.kv_heads;
  require(kv_heads >= 1 && s.heads % kv_heads == 0, "kv_heads", kv_heads, fmt::format("must divide heads ({})", s.heads));
  require(s.head_dim != 0 || s.hidden % s.heads == 0, "hidden", s.hidden,
          fmt::format("must be a multiple of heads ({}) unless head_dim is given", s.heads));
  const int64_t head_dim = s.head_dim == 0 ? s.hidden / s.heads : s.head_dim;
  require(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= 4096, "head_dim", head_dim, "must be even, in [2, 4096]");
  require(s.ffn >= 1 && s.ffn <= kMax, "ffn", s.ffn, "must be in [1, 2^31]");
  require(s.vocab >= kSynthMinVocab && s.vocab <= kMax, "vocab", s.vocab,
          fmt::format("must be in [{}, 2^31] (the generated tokenizer's specials and bytes)", kSynthMinVocab));
  require(s.sliding_window >= 0 && s.sliding_window <= kMax, "sliding_window", s.sliding_window, "must be >= 0");
  require(s.sliding_window == 0 || arch->window_rule != WindowRule::kNone, "sliding_window", s.sliding_window,
          fmt::format("needs an architecture with a sliding window ('{}' has none)", s.model_type));
  require(s.max_position >= 1 && s.max_position <= kMax, "max_position", s.max_position, "must be in [1, 2^31]");
  if (!(s.rope_theta > 0) || !std::isfinite(s.rope_theta)) {
    fail(ErrorKind::kInvalidArgument, "synthetic model: rope_theta = {} must be positive", s.rope_theta);
  }
  if (!(s.rms_norm_eps > 0) || !std::isfinite(s.rms_norm_eps)) {
    fail(ErrorKind::kInvalidArgument, "synthetic model: rms_norm_eps = {} must be positive", s.rms_norm_eps);
  }
  const MoeRule* moe = arch->moe;
  const bool any_moe = s.experts != 0 || s.experts_per_token != 0 || s.expert_ffn != 0 || s.shared_ffn != 0 ||
                       s.norm_topk_prob.has_value();
  if (moe == nullptr && any_moe) {
    fail(ErrorKind::kInvalidArgument, "synthetic model: experts need a mixture-of-experts architecture ('{}' is dense)",
         s.model_type);
  }
  if (moe != nullptr && !moe->shared_expert && s.shared_ffn != 0) {
    fail(ErrorKind::kInvalidArgument, "synthetic model: shared_ffn = {}: '{}' has no shared expert", s.shared_ffn,
         s.model_type);
  }
  const int64_t experts = s.experts == 0 ? 4 : s.experts;
  const int64_t per_token = s.experts_per_token == 0 ? std::min<int64_t>(2, experts) : s.experts_per_token;
  if (moe != nullptr) {
    require(experts >= 1 && experts <= 4096, "experts", experts, "must be in [1, 4096]");
    require(per_token >= 1 && per_token <= experts, "experts_per_token", per_token,
            fmt::format("must be in [1, experts ({})]", experts));
    require(s.expert_ffn >= 0 && s.expert_ffn <= kMax, "expert_ffn", s.expert_ffn, "must be in [0, 2^31]");
    require(s.shared_ffn >= 0 && s.shared_ffn <= kMax, "shared_ffn", s.shared_ffn, "must be in [0, 2^31]");
  }
  if (!s.rope_scaling.empty() && s.rope_scaling != "linear" && s.rope_scaling != "llama3") {
    fail(ErrorKind::kInvalidArgument, "synthetic model: rope_scaling '{}' is not supported (linear or llama3)",
         s.rope_scaling);
  }
  ModelConfig c;
  c.model_type = s.model_type;
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.intermediate_size = s.ffn;
  c.num_layers = s.layers;
  c.num_heads = s.heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.max_position_embeddings = s.max_position;
  c.rms_norm_eps = s.rms_norm_eps;
  c.rope_theta = s.rope_theta;
  c.tie_word_embeddings = s.tied;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  if (s.sliding_window > 0) {
    c.sliding_window = s.sliding_window;
    c.layer_window.assign(static_cast<size_t>(s.layers), true);
  }
  if (!s.rope_scaling.empty()) {
    c.rope_scaling = ModelConfig::RopeScaling{.type = s.rope_scaling,
                                              .factor = s.rope_factor,
                                              .low_freq_factor = s.rope_low_freq_factor,
                                              .high_freq_factor = s.rope_high_freq_factor,
                                              .original_max_position = s.rope_original_max_position};
  }
  if (moe != nullptr) {
    const int64_t width = s.expert_ffn == 0 ? s.ffn : s.expert_ffn;
    c.moe = ModelConfig::Moe{.num_experts = experts,
                             .experts_per_token = per_token,
                             .expert_intermediate = width,
                             .shared_intermediate = moe->shared_expert ? (s.shared_ffn == 0 ? s.ffn : s.shared_ffn) : 0,
                             .norm_topk_prob = s.norm_topk_prob.value_or(moe->gguf_norm_topk)};
    // Mixtral's config has one width, intermediate_size, for its experts.
    if (moe->expert_width_key == "intermediate_size") c.intermediate_size = width;
  }
  // Through config.json, so that the derived fields are the loader's.
  return parse_hf_config_text(hf_config_json(c), "synthetic config.json");
}

SynthWeights parse_synth_weights(std::string_view name) {
  if (name == "uniform") return SynthWeights::kUniform;
  if (name == "outliers") return SynthWeights::kOutliers;
  fail(ErrorKind::kInvalidArgument, "synthetic model: weights '{}' is not supported (uniform or outliers)", name);
}

Model synth_model(const ModelConfig& config, uint64_t seed, ThreadPool& pool, DType dtype, SynthWeights weights) {
  assert(dtype == DType::kF32 || dtype == DType::kBF16);
  Model m;
  m.config = config;
  m.arch = find_architecture(config.model_type);
  if (m.arch == nullptr) fail(ErrorKind::kUnsupported, "synthetic model: model_type '{}' is not supported", config.model_type);
  const auto draw = [&](TensorRole role, int64_t layer) {
    return draw_tensor(config, seed, weights, role, layer, -1, expected_shape(config, role), dtype, pool);
  };
  const auto draw_experts = [&](int64_t layer) {
    std::vector<ExpertWeights> experts(static_cast<size_t>(config.moe->num_experts));
    for (int64_t e = 0; e < config.moe->num_experts; ++e) {
      for (const TensorRole role : {TensorRole::kExpertGate, TensorRole::kExpertUp, TensorRole::kExpertDown}) {
        experts[static_cast<size_t>(e)].linear(role) =
            draw_tensor(config, seed, weights, role, layer, e, expected_shape(config, role), dtype, pool);
      }
    }
    return experts;
  };
  m.embedding = draw(TensorRole::kTokenEmbedding, -1);
  m.final_norm = draw(TensorRole::kFinalNorm, -1);
  m.output = config.tie_word_embeddings ? m.embedding : LinearWeight(draw(TensorRole::kOutput, -1));
  load_layers(m, [&](TensorRole role, int64_t layer) -> LinearWeight { return draw(role, layer); }, draw,
              draw_experts);
  return m;
}

void write_synth_hf_model(const ModelConfig& config, uint64_t seed, const std::filesystem::path& folder,
                          const SynthFolderOptions& options, ThreadPool& pool) {
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16) {
    fail(ErrorKind::kInvalidArgument, "{}: dtype {} is not supported (float32 or bfloat16)", folder.string(),
         dtype_name(options.dtype));
  }
  HfFolderContents contents{.config_text = hf_config_json(config, options.dtype)};
  for (HfTensorEntry& t : hf_tensor_entries(config)) {
    contents.tensors.push_back({.name = t.name,
                                .dtype = options.dtype,
                                .shape = t.shape,
                                .produce = [&config, &options, &pool, seed, t](std::span<std::byte> out) {
                                  draw_into(config, seed, options.weights, t.role, t.layer, t.expert, t.shape,
                                            options.dtype, options.dtype, out, pool);
                                }});
  }
  contents.files = {{"tokenizer.json", synth_tokenizer_json(config.vocab_size)},
                    {"tokenizer_config.json", synth_tokenizer_config_json()}};
  write_hf_folder(folder, contents,
                  {.overwrite = options.overwrite, .max_shard_bytes = options.max_shard_bytes, .progress = options.progress});
}

std::string synth_tokenizer_json(int64_t vocab) {
  if (vocab < kSynthMinVocab) {
    fail(ErrorKind::kInvalidArgument, "synthetic tokenizer: vocab = {} must be at least {}", vocab, kSynthMinVocab);
  }
  using ordered_json = nlohmann::ordered_json;
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's word boundary
  static constexpr std::string_view kChars =
      "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,!?'-:;\"()";
  std::vector<std::string> pieces;  // by id
  std::unordered_set<std::string> have;
  const auto add = [&](const std::string& piece) {
    pieces.push_back(piece);
    have.insert(piece);
  };
  for (const char* s : {"<unk>", "<s>", "</s>"}) add(s);
  for (int b = 0; b < 256; ++b) add(fmt::format("<0x{:02X}>", b));
  add(kSpace);
  // Half of what is left in single characters (at most all of kChars), the rest in merges.
  const auto left = static_cast<size_t>(vocab) - pieces.size();
  const size_t n_chars = std::min(kChars.size(), (left + 1) / 2);
  std::vector<std::string> chars;
  for (size_t i = 0; i < n_chars; ++i) {
    chars.emplace_back(1, kChars[i]);
    add(chars.back());
  }
  ordered_json merges = ordered_json::array();
  const size_t first_word = static_cast<size_t>(kSynthMinVocab) - 1;  // "▁": merges grow from it and the characters
  for (size_t base = first_word; static_cast<int64_t>(pieces.size()) < vocab && base < pieces.size(); ++base) {
    for (size_t i = 0; i < chars.size() && static_cast<int64_t>(pieces.size()) < vocab; ++i) {
      const std::string left_piece = pieces[base];
      const std::string piece = left_piece + chars[i];
      if (have.count(piece) != 0) continue;
      merges.push_back(ordered_json::array({left_piece, chars[i]}));
      add(piece);
    }
  }
  assert(static_cast<int64_t>(pieces.size()) == vocab);  // with a character, merges never run out
  const auto special = [](int64_t id, const char* text) {
    return ordered_json{{"id", id},         {"content", text}, {"single_word", false}, {"lstrip", false},
                        {"rstrip", false},  {"normalized", false}, {"special", true}};
  };
  const ordered_json bos_piece = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  ordered_json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "first"}, {"split", false}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, bos_piece,
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"ignore_merges", false},
        {"vocab", "@VOCAB@"},
        {"merges", std::move(merges)}}},
  };
  // The vocabulary in id order, as `tokenizers` writes it (an ordered_json object of 128k keys
  // would be built in quadratic time: it searches its keys on every insertion).
  std::string vocab_text = "{";
  for (size_t id = 0; id < pieces.size(); ++id) {
    vocab_text += fmt::format("{}{}: {}", id == 0 ? "" : ", ", nlohmann::json(pieces[id]).dump(), id);
  }
  vocab_text += "}";
  std::string text = j.dump(1);
  const size_t at = text.find("\"@VOCAB@\"");
  assert(at != std::string::npos);
  text.replace(at, 9, vocab_text);
  return text + "\n";
}

std::string synth_tokenizer_config_json() {
  const nlohmann::ordered_json j = {{"add_bos_token", true},         {"add_eos_token", false},
                                    {"bos_token", "<s>"},            {"eos_token", "</s>"},
                                    {"unk_token", "<unk>"},          {"pad_token", nullptr},
                                    {"clean_up_tokenization_spaces", false},
                                    {"legacy", false},               {"tokenizer_class", "LlamaTokenizerFast"}};
  return j.dump(2) + "\n";
}

}  // namespace calq::model
