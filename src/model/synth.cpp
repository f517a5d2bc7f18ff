// Synthetic models and their tokenizer (see synth.h for the contract).
#include "model/synth.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cassert>
#include <cmath>
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

// The values of one tensor of `shape` (rows = all but the last dimension), row-parallel.
Tensor draw_tensor(const ModelConfig& c, uint64_t seed, TensorRole role, int64_t layer, int64_t expert, const Shape& shape,
                   DType dtype, ThreadPool& pool) {
  Tensor t = Tensor::zeros(DType::kF32, shape);
  const int64_t cols = shape.back();
  const int64_t rows = t.numel() / cols;
  const Draw d = draw_of(c, role, shape);
  float* out = t.mutable_f32();
  pool.parallel_for(0, static_cast<size_t>(rows), Grain{.min_items = static_cast<size_t>(std::max<int64_t>(1, 16384 / cols))}, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      std::mt19937_64 rng(row_seed(seed, role, layer, expert, static_cast<int64_t>(r)));
      float* row = out + r * static_cast<size_t>(cols);
      for (int64_t i = 0; i < cols; ++i) {
        // k / 2^52 - 1 in [-1, 1) is exact; one fused multiply-add rounds once, the same on any machine.
        const auto k = static_cast<int64_t>(rng() >> 11);
        const double u = static_cast<double>(k - (int64_t{1} << 52)) * 0x1p-52;
        float v = static_cast<float>(std::fma(u, d.half_width, d.mean));
        if (dtype == DType::kBF16) v = bf16_to_f32(f32_to_bf16(v));
        row[i] = v;
      }
    }
  });
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

Model synth_model(const ModelConfig& config, uint64_t seed, ThreadPool& pool, DType dtype) {
  assert(dtype == DType::kF32 || dtype == DType::kBF16);
  Model m;
  m.config = config;
  m.arch = find_architecture(config.model_type);
  if (m.arch == nullptr) fail(ErrorKind::kUnsupported, "synthetic model: model_type '{}' is not supported", config.model_type);
  const auto draw = [&](TensorRole role, int64_t layer) {
    return draw_tensor(config, seed, role, layer, -1, expected_shape(config, role), dtype, pool);
  };
  const auto draw_experts = [&](int64_t layer) {
    std::vector<ExpertWeights> experts(static_cast<size_t>(config.moe->num_experts));
    for (int64_t e = 0; e < config.moe->num_experts; ++e) {
      for (const TensorRole role : {TensorRole::kExpertGate, TensorRole::kExpertUp, TensorRole::kExpertDown}) {
        experts[static_cast<size_t>(e)].linear(role) =
            draw_tensor(config, seed, role, layer, e, expected_shape(config, role), dtype, pool);
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
