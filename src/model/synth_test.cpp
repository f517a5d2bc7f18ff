// synth_config / synth_model / write_synth_hf_model / synth_tokenizer_json: determinism (seed,
// thread count), scales that keep activations O(1) and logits spread, the "outliers" weights'
// structure, the streamed folder against the in-memory path, config checks, and a tokenizer calq and
// llama.cpp's conversion accept.
#include "model/synth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/tokenizer.h"
#include "io/tokenizer/hf_gguf_vocab.h"
#include "model/forward.h"
#include "model/hf_export.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

std::vector<float> all_values(const Model& m) {
  std::vector<float> v;
  const auto add = [&](const float* p, int64_t n) { v.insert(v.end(), p, p + n); };
  add(m.embedding.dense().f32(), m.embedding.numel());
  if (!m.output.same_storage(m.embedding)) add(m.output.dense().f32(), m.output.numel());
  add(m.final_norm.f32(), m.final_norm.numel());
  for (const LayerWeights& l : m.layers) {
    for (const TensorSlot& slot : m.arch->slots) {
      if (!is_per_layer(slot.role) || !has_role(m.config, slot.role)) continue;
      if (is_expert(slot.role)) {
        for (const ExpertWeights& e : l.experts) add(e.linear(slot.role).dense().f32(), e.linear(slot.role).numel());
      } else if (is_linear(slot.role)) {
        add(l.linear(slot.role).dense().f32(), l.linear(slot.role).numel());
      } else {
        add(l.vector(slot.role).f32(), l.vector(slot.role).numel());
      }
    }
  }
  return v;
}

TEST(Synth, SameSeedSameBitsForAnyThreadCountOtherSeedOtherValues) {
  const ModelConfig c = synth_config({.model_type = "qwen2", .layers = 2, .hidden = 48, .heads = 6, .kv_heads = 2,
                                      .ffn = 80, .vocab = 300});
  ThreadPool one(1), three(3);
  const std::vector<float> a = all_values(synth_model(c, 42, one));
  const std::vector<float> b = all_values(synth_model(c, 42, three));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  const std::vector<float> other = all_values(synth_model(c, 43, one));
  int64_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == other[i];
  EXPECT_LT(same, static_cast<int64_t>(a.size() / 100));
  // Each tensor's draws are its own: a model with one more layer has the same embedding and layer 0.
  ModelConfig deeper = c;
  deeper.num_layers = 3;
  const Model m2 = synth_model(c, 42, one), m3 = synth_model(deeper, 42, one);
  EXPECT_EQ(std::memcmp(m2.embedding.dense().f32(), m3.embedding.dense().f32(), m2.embedding.nbytes()), 0);
  EXPECT_EQ(std::memcmp(m2.layers[0].wq.dense().f32(), m3.layers[0].wq.dense().f32(), m2.layers[0].wq.nbytes()), 0);
}

TEST(Synth, Bf16ValuesAreBf16Numbers) {
  ThreadPool pool(1);
  const Model m = synth_model(synth_config({.model_type = "llama"}), 7, pool, DType::kBF16);
  for (const float v : all_values(m)) {
    ASSERT_EQ(v, bf16_to_f32(f32_to_bf16(v)));
  }
}

// Per-role statistics follow the contract (mean and std of the uniform draws).
TEST(Synth, RoleScales) {
  ThreadPool pool(2);
  const ModelConfig c = synth_config({.model_type = "qwen2", .layers = 4, .hidden = 128, .heads = 4, .ffn = 256});
  const Model m = synth_model(c, 1, pool);
  const auto stats = [](const float* p, int64_t n) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) s += p[i];
    const double mean = s / static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) ss += (p[i] - mean) * (p[i] - mean);
    return std::pair{mean, std::sqrt(ss / static_cast<double>(n))};
  };
  const auto expect = [&](const float* p, int64_t n, double mean, double std, const char* what) {
    const auto [m_, s_] = stats(p, n);
    EXPECT_NEAR(m_, mean, 4 * std / std::sqrt(static_cast<double>(n)) + 1e-12) << what;
    EXPECT_NEAR(s_, std, 0.1 * std) << what;
  };
  const double h = 128, f = 256, depth = 0.5;
  const LayerWeights& l = m.layers[2];
  expect(m.embedding.dense().f32(), m.embedding.numel(), 0, 1, "embedding");
  expect(m.output.dense().f32(), m.output.numel(), 0, 2 / std::sqrt(h), "output");
  expect(l.wq.dense().f32(), l.wq.numel(), 0, 1.5 / std::sqrt(h), "wq");
  expect(l.wv.dense().f32(), l.wv.numel(), 0, 1 / std::sqrt(h), "wv");
  expect(l.wo.dense().f32(), l.wo.numel(), 0, depth / std::sqrt(h), "wo");
  expect(l.w_down.dense().f32(), l.w_down.numel(), 0, 1.5 * depth / std::sqrt(f), "w_down");
  expect(l.bq.f32(), l.bq.numel(), 0, 0.5, "bq");
  expect(l.attn_norm.f32(), l.attn_norm.numel(), 1, 0.3 / std::sqrt(3.0), "attn_norm");
}

// The residual stream stays O(1) at every layer and the logits spread, for shallow and deep models.
TEST(Synth, ActivationsStayOrderOneAndLogitsSpread) {
  ThreadPool pool(2);
  for (const int64_t layers : {2, 24}) {
    for (const std::string type : {"llama", "llama tied", "qwen2_moe", "llama outliers"}) {
      SCOPED_TRACE(fmt::format("{} layers, {}", layers, type));
      const bool tied = type == "llama tied";
      const ModelConfig c = synth_config({.model_type = type == "qwen2_moe" ? type : "llama", .layers = layers,
                                          .hidden = 64, .heads = 4, .kv_heads = 2, .ffn = 96, .tied = tied});
      const Model m = synth_model(c, 11, pool, DType::kF32,
                                  type == "llama outliers" ? SynthWeights::kOutliers : SynthWeights::kUniform);
      std::vector<int32_t> ids;
      for (int32_t i = 0; i < 24; ++i) ids.push_back((i * 37 + 5) % 320);
      const auto T = static_cast<int64_t>(ids.size());
      std::vector<float> h(static_cast<size_t>(T * c.hidden_size));
      embed_tokens(m, ids, h.data());
      LayerScratch scratch(c, T);
      const auto rms = [&] {
        double ss = 0;
        for (const float v : h) ss += static_cast<double>(v) * v;
        return std::sqrt(ss / static_cast<double>(h.size()));
      };
      for (int64_t l = 0; l < c.num_layers; ++l) {
        decoder_layer_forward(c, m.layers[static_cast<size_t>(l)], l, h.data(), T, scratch, pool);
        const double r = rms();
        EXPECT_GT(r, 0.1) << "layer " << l;
        EXPECT_LT(r, 4.0) << "layer " << l;
      }
      const Tensor logits = forward(m, ids, pool);
      double s = 0, ss = 0;
      for (int64_t i = 0; i < logits.numel(); ++i) s += logits.f32()[i];
      const double mean = s / static_cast<double>(logits.numel());
      for (int64_t i = 0; i < logits.numel(); ++i) ss += (logits.f32()[i] - mean) * (logits.f32()[i] - mean);
      const double std = std::sqrt(ss / static_cast<double>(logits.numel()));
      EXPECT_GT(std, 0.7);
      EXPECT_LT(std, 4.0);
    }
  }
}

// Every file of folder `a` equals the same file of `b`, and they hold the same files.
void expect_same_folders(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto names = [](const std::filesystem::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  };
  ASSERT_EQ(names(a), names(b));
  for (const std::string& name : names(a)) EXPECT_TRUE(read_text_file(a / name) == read_text_file(b / name)) << name;
}

// The streamed folder is the in-memory path's, byte for byte (tokenizer files, shards and index
// included), for any thread count, uniform and outlier weights, dense and mixture-of-experts.
TEST(Synth, StreamedFolderIsTheInMemoryPathsBytes) {
  ThreadPool one(1), three(3);
  const auto dir = testing::temp_dir("synth_stream");
  struct Case {
    SynthSpec spec;
    DType dtype;
    SynthWeights weights;
    uint64_t max_shard_bytes;
    bool sharded;
  };
  const std::vector<Case> cases = {
      {{.model_type = "llama", .hidden = 32, .heads = 4, .ffn = 48, .vocab = 270}, DType::kF32,
       SynthWeights::kUniform, 5'000'000'000, false},
      {{.model_type = "qwen3", .hidden = 32, .heads = 4, .kv_heads = 2, .ffn = 48, .vocab = 270, .tied = true},
       DType::kBF16, SynthWeights::kOutliers, 20'000, true},
      {{.model_type = "qwen2_moe", .hidden = 32, .heads = 4, .ffn = 48, .vocab = 270, .experts = 3, .expert_ffn = 16},
       DType::kBF16, SynthWeights::kOutliers, 40'000, true},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].spec.model_type);
    const Case& k = cases[i];
    const ModelConfig c = synth_config(k.spec);
    const auto streamed = dir / fmt::format("s{}", i), held = dir / fmt::format("m{}", i);
    size_t reports = 0;
    write_synth_hf_model(c, 5, streamed,
                         {.dtype = k.dtype,
                          .weights = k.weights,
                          .max_shard_bytes = k.max_shard_bytes,
                          .progress = [&](const io::TensorToProduce&, size_t index, size_t total, const std::string&) {
                            EXPECT_EQ(index, reports++);
                            EXPECT_EQ(total, hf_tensor_entries(c).size());
                          }},
                         one);
    EXPECT_EQ(reports, hf_tensor_entries(c).size());
    write_hf_model(synth_model(c, 5, three, k.dtype, k.weights), held,
                   {.dtype = k.dtype,
                    .extra_files = {{"tokenizer.json", synth_tokenizer_json(c.vocab_size)},
                                    {"tokenizer_config.json", synth_tokenizer_config_json()}},
                    .max_shard_bytes = k.max_shard_bytes},
                   three);
    expect_same_folders(streamed, held);
    EXPECT_EQ(std::filesystem::exists(streamed / "model.safetensors.index.json"), k.sharded);
    EXPECT_TRUE(std::filesystem::exists(streamed / "tokenizer.json"));
  }
  // An existing folder needs overwrite, as write_hf_model's.
  const ModelConfig c = synth_config(cases[0].spec);
  EXPECT_NE(testing::error_of([&] { write_synth_hf_model(c, 5, dir / "s0", {}, one); }).find("force"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

// "outliers" weights: same bits for any thread count; per-row scales, a few outlier input columns
// per linear, and norms whose recurring channels stand 10-50× above the others (synth.h).
TEST(Synth, OutlierWeightsStructure) {
  const ModelConfig c = synth_config({.model_type = "llama", .layers = 1, .hidden = 512, .heads = 4, .kv_heads = 1,
                                      .ffn = 128, .vocab = 270});
  ThreadPool one(1), three(3);
  const Model m = synth_model(c, 3, three, DType::kF32, SynthWeights::kOutliers);
  const std::vector<float> a = all_values(m), b = all_values(synth_model(c, 3, one, DType::kF32, SynthWeights::kOutliers));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  EXPECT_EQ(parse_synth_weights("uniform"), SynthWeights::kUniform);
  EXPECT_NE(testing::error_of([] { (void)parse_synth_weights("gaussian"); }).find("weights 'gaussian'"),
            std::string::npos);

  // Norms: mean square 1; the same hidden / 512 channel(s) 5× above the median or more, the others below 2.5×.
  std::vector<int64_t> first;
  for (const Tensor* norm : {&m.layers[0].attn_norm, &m.layers[0].mlp_norm, &m.final_norm}) {
    const float* g = norm->f32();
    std::vector<float> sorted(g, g + norm->numel());
    std::nth_element(sorted.begin(), sorted.begin() + 256, sorted.end());
    const double median = sorted[256];
    double ss = 0;
    std::vector<int64_t> big;
    for (int64_t i = 0; i < norm->numel(); ++i) {
      ss += static_cast<double>(g[i]) * g[i];
      if (g[i] > 5 * median) {
        big.push_back(i);
        EXPECT_LT(g[i], 100 * median);
      } else {
        EXPECT_LT(g[i], 2.5 * median);
      }
    }
    EXPECT_NEAR(ss / static_cast<double>(norm->numel()), 1.0, 1e-5);
    EXPECT_EQ(big.size(), 1u);
    if (first.empty()) first = big;
    EXPECT_EQ(big, first);
  }

  // q [512, 512]: the role's std, kurtosis above uniform's -1.2, rows spread e^(0.25 z), and
  // 512 / 256 columns about twice the median column's rms or more.
  const Tensor q = m.layers[0].wq.dense();
  const float* w = q.f32();
  const int64_t n = q.dim(0);
  double s2 = 0, s4 = 0;
  std::vector<double> row_rms(static_cast<size_t>(n)), col_ss(static_cast<size_t>(n), 0.0);
  for (int64_t r = 0; r < n; ++r) {
    double rs = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double v = w[r * n + j];
      rs += v * v;
      s4 += v * v * v * v;
      col_ss[static_cast<size_t>(j)] += v * v;
    }
    s2 += rs;
    row_rms[static_cast<size_t>(r)] = std::sqrt(rs / static_cast<double>(n));
  }
  const double count = static_cast<double>(n * n);
  EXPECT_NEAR(std::sqrt(s2 / count), 1.5 / std::sqrt(512.0), 0.05 * 1.5 / std::sqrt(512.0));
  const double kurtosis = s4 / count / ((s2 / count) * (s2 / count)) - 3;
  EXPECT_GT(kurtosis, 0.2);
  EXPECT_LT(kurtosis, 1.5);
  double mean = 0, var = 0;
  for (const double v : row_rms) mean += v / static_cast<double>(n);
  for (const double v : row_rms) var += (v - mean) * (v - mean) / static_cast<double>(n);
  EXPECT_GT(std::sqrt(var) / mean, 0.18);
  EXPECT_LT(std::sqrt(var) / mean, 0.33);
  std::vector<double> sorted_cols = col_ss;
  std::nth_element(sorted_cols.begin(), sorted_cols.begin() + n / 2, sorted_cols.end());
  const double median_col = sorted_cols[static_cast<size_t>(n / 2)];
  int64_t outlier_cols = 0;
  for (const double v : col_ss) outlier_cols += v > 1.5 * 1.5 * median_col;
  EXPECT_EQ(outlier_cols, 2);
}

TEST(Synth, ConfigChecksNameTheField) {
  const auto message = [](const SynthSpec& s) { return testing::error_of([&] { (void)synth_config(s); }); };
  EXPECT_NE(message({.heads = 4, .kv_heads = 3}).find("kv_heads = 3"), std::string::npos);
  EXPECT_NE(message({.vocab = 100}).find("vocab = 100"), std::string::npos);
  EXPECT_NE(message({.hidden = 30, .heads = 4}).find("hidden = 30"), std::string::npos);
  EXPECT_NE(message({.head_dim = 7}).find("head_dim = 7"), std::string::npos);
  EXPECT_NE(message({.model_type = "llama", .sliding_window = 16}).find("sliding_window = 16"), std::string::npos);
  EXPECT_NE(message({.layers = 0}).find("layers = 0"), std::string::npos);
  EXPECT_NE(message({.model_type = "llama", .experts = 4}).find("mixture-of-experts"), std::string::npos);
  EXPECT_NE(message({.model_type = "mixtral", .experts = 4, .experts_per_token = 5}).find("experts_per_token = 5"),
            std::string::npos);
  EXPECT_NE(message({.model_type = "qwen3_moe", .shared_ffn = 32}).find("shared_ffn = 32"), std::string::npos);
  EXPECT_NE(message({.model_type = "llama", .rope_scaling = "yarn"}).find("yarn"), std::string::npos);
  ErrorKind kind{};
  EXPECT_NE(testing::error_of([] { (void)synth_config({.model_type = "gpt2"}); }, &kind).find("llama"),
            std::string::npos);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  // What the loader derives: Qwen2's biases, head_dim given apart from hidden / heads, windows.
  const ModelConfig q = synth_config({.model_type = "qwen2", .hidden = 64, .heads = 4, .head_dim = 32,
                                      .sliding_window = 9});
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_EQ(q.q_dim(), 128);
  EXPECT_EQ(q.window_for_layer(0), 9);
  EXPECT_EQ(q.window_for_layer(1), 9);
  EXPECT_EQ(q.num_kv_heads, 4);
  EXPECT_EQ(q.bos_token_id, 1);
  // Experts: defaults, Mixtral's single width, the shared expert, llama.cpp's renormalisation.
  const ModelConfig mx = synth_config({.model_type = "mixtral", .ffn = 40});
  ASSERT_TRUE(mx.moe);
  EXPECT_EQ(mx.moe->num_experts, 4);
  EXPECT_EQ(mx.moe->experts_per_token, 2);
  EXPECT_EQ(mx.moe->expert_intermediate, 40);
  EXPECT_EQ(mx.intermediate_size, 40);
  EXPECT_TRUE(mx.moe->norm_topk_prob);
  const ModelConfig q2 = synth_config({.model_type = "qwen2_moe", .ffn = 40, .expert_ffn = 24});
  EXPECT_EQ(q2.moe->expert_intermediate, 24);
  EXPECT_EQ(q2.moe->shared_intermediate, 40);
  EXPECT_FALSE(q2.moe->norm_topk_prob);
  EXPECT_TRUE(synth_config({.model_type = "qwen3_moe"}).moe->norm_topk_prob);
  EXPECT_TRUE(synth_config({.model_type = "qwen3"}).qk_norm);
  const ModelConfig r = synth_config({.model_type = "llama", .rope_scaling = "llama3", .rope_original_max_position = 64});
  ASSERT_TRUE(r.rope_scaling);
  EXPECT_EQ(r.rope_freq_factors.size(), 8u);
}

TEST(Synth, TokenizerLoadsAndConverts) {
  for (const int64_t vocab : {kSynthMinVocab, int64_t{261}, int64_t{320}, int64_t{5000}}) {
    SCOPED_TRACE(vocab);
    const std::string text = synth_tokenizer_json(vocab);
    const auto j = nlohmann::json::parse(text);
    ASSERT_EQ(static_cast<int64_t>(j["model"]["vocab"].size()), vocab);
    for (const auto& [piece, id] : j["model"]["vocab"].items()) ASSERT_LT(id.get<int64_t>(), vocab) << piece;
    for (const auto& merge : j["model"]["merges"]) {
      ASSERT_TRUE(j["model"]["vocab"].contains(merge[0].get<std::string>()));
      ASSERT_TRUE(j["model"]["vocab"].contains(merge[0].get<std::string>() + merge[1].get<std::string>()));
    }
    const io::Tokenizer tok = io::Tokenizer::from_json_text(text, "synthetic tokenizer.json");
    const std::vector<int32_t> ids = tok.encode("the rain in Spain, 42 <x> é", true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), 1);  // <s>
    for (const int32_t id : ids) EXPECT_LT(id, vocab);
    EXPECT_EQ(tok.decode(ids, true), "the rain in Spain, 42 <x> é");
  }
  // llama.cpp's "llama" vocabulary, as its converter writes it.
  const auto dir = testing::temp_dir("synth_tok");
  std::ofstream(dir / "tokenizer.json") << synth_tokenizer_json(300);
  std::ofstream(dir / "tokenizer_config.json") << synth_tokenizer_config_json();
  const io::GgufMetadata meta = io::hf_tokenizer_to_gguf(dir);
  std::map<std::string, const io::GgufValue*> by_key;
  for (const auto& [k, v] : meta) by_key[k] = &v;
  ASSERT_TRUE(by_key.count("tokenizer.ggml.tokens"));
  EXPECT_EQ(by_key["tokenizer.ggml.model"]->s, "llama");
  EXPECT_EQ(by_key["tokenizer.ggml.tokens"]->array_size(), 300u);
  ASSERT_TRUE(by_key.count("tokenizer.ggml.bos_token_id"));
  EXPECT_EQ(by_key["tokenizer.ggml.bos_token_id"]->u, 1u);
  EXPECT_EQ(by_key["tokenizer.ggml.eos_token_id"]->u, 2u);
  EXPECT_TRUE(by_key.count("tokenizer.ggml.add_bos_token"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
