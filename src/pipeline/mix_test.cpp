// Mixes: calq assigns exactly the types llama-quantize assigned in its own files made from the
// reference model, keeps llama.cpp's tensor order, and applies the layer/fallback rules on
// synthetic models.
#include "pipeline/mix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "io/gguf.h"
#include "pipeline/gguf_quantize.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

const char* kRefF16 = "models/calq-ref-llama-f16.gguf";

struct PeerCase {
  const char* file;  // under peer-tests/llama.cpp-quants/
  const char* mix;
};

class PeerMix : public ::testing::TestWithParam<PeerCase> {};

TEST_P(PeerMix, SameTypesAndOrderAsLlamaCpp) {
  const std::string peer_rel = std::string("peer-tests/llama.cpp-quants/") + GetParam().file;
  CALQ_REQUIRE_SHARED(kRefF16);
  CALQ_REQUIRE_SHARED(peer_rel);
  const io::GgufFile src = io::GgufFile::open(calq::testing::shared_dir() / kRefF16);
  const io::GgufFile peer = io::GgufFile::open(calq::testing::shared_dir() / peer_rel);
  const QuantMix& mix = mix_by_name(GetParam().mix);

  const std::vector<TensorPlan> plan = plan_gguf_quantization(src, mix);
  ASSERT_EQ(plan.size(), peer.tensors().size());
  size_t changed = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const io::GgufTensorInfo& want = peer.tensors()[i];
    // Same position in the file (llama.cpp's order), same type, same shape.
    EXPECT_EQ(plan[i].name, want.name) << "position " << i;
    EXPECT_EQ(plan[i].choice.type, want.type) << want.name;
    EXPECT_EQ(plan[i].ne, want.ne) << want.name;
    EXPECT_FALSE(plan[i].choice.fell_back) << want.name;
    changed += plan[i].choice.quantize ? 1 : 0;
  }
  EXPECT_GT(changed, 0u);
  // general.file_type as llama.cpp wrote it.
  EXPECT_EQ(static_cast<uint32_t>(peer.get("general.file_type").as_int("peer")), mix.file_type);
}

INSTANTIATE_TEST_SUITE_P(Peer, PeerMix,
                         ::testing::Values(PeerCase{"calq-ref-llama-Q8_0.gguf", "q8_0"},
                                           PeerCase{"calq-ref-llama-Q4_K_M.gguf", "Q4_K_M"},
                                           PeerCase{"calq-ref-llama-Q4_K_M-imatrix.gguf", "q4_k_m"},
                                           PeerCase{"calq-ref-llama-Q3_K_M-imatrix.gguf", "q3_k_m"},
                                           PeerCase{"calq-ref-llama-Q2_K-imatrix.gguf", "q2_k"}),
                         [](const ::testing::TestParamInfo<PeerCase>& p) {
                           std::string s = p.param.mix;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s + "_" + std::to_string(p.index);
                         });

// ---- Synthetic models ----

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ2K = 10, kQ3K = 11, kQ4K = 12,
                   kQ5K = 13, kQ6K = 14, kIq4Nl = 20, kIq4Xs = 23;

// A llama-shaped tensor list: hidden `h`, `layers` blocks, optional output.weight.
std::vector<MixTensor> llama_like(int64_t layers, int64_t h, bool with_output) {
  std::vector<MixTensor> t;
  t.push_back({"token_embd.weight", {h, 1000}, kF16});
  t.push_back({"output_norm.weight", {h}, kF32});
  if (with_output) t.push_back({"output.weight", {h, 1000}, kF16});
  for (int64_t i = 0; i < layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    t.push_back({b + "attn_norm.weight", {h}, kF32});
    t.push_back({b + "attn_q.weight", {h, h}, kF16});
    t.push_back({b + "attn_k.weight", {h, h / 4}, kF16});
    t.push_back({b + "attn_v.weight", {h, h / 4}, kF16});
    t.push_back({b + "attn_output.weight", {h, h}, kF16});
    t.push_back({b + "ffn_gate.weight", {h, 2 * h}, kF16});
    t.push_back({b + "ffn_up.weight", {h, 2 * h}, kF16});
    t.push_back({b + "ffn_down.weight", {2 * h, h}, kF16});
    t.push_back({b + "ffn_norm.weight", {h}, kF32});
  }
  return t;
}

std::map<std::string, uint32_t> types_of(const QuantMix& mix, const ModelShape& shape, const std::vector<MixTensor>& t) {
  const std::vector<TypeChoice> c = assign_types(mix, shape, t);
  std::map<std::string, uint32_t> m;
  for (size_t i = 0; i < t.size(); ++i) m[t[i].name] = c[i].type;
  return m;
}

TEST(Mix, Q4KMGivesMoreBitsOnLlamaCppsLayersOf32) {
  const ModelShape shape{.arch = "llama", .n_layer = 32, .n_head = 32, .n_head_kv = 8};
  auto tensors = llama_like(32, 256, false);
  // Input order must not matter: reverse it.
  std::reverse(tensors.begin(), tensors.end());
  const auto types = types_of(mix_by_name("q4_k_m"), shape, tensors);
  // use_more_bits for 32 layers: the first and last four, and layers 6, 9, ..., 27.
  const std::set<int> more = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
  for (int i = 0; i < 32; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const uint32_t want = more.count(i) ? kQ6K : kQ4K;
    EXPECT_EQ(types.at(b + "attn_v.weight"), want) << i;
    EXPECT_EQ(types.at(b + "ffn_down.weight"), want) << i;
    EXPECT_EQ(types.at(b + "attn_q.weight"), kQ4K) << i;
    EXPECT_EQ(types.at(b + "attn_norm.weight"), kF32) << i;
  }
  EXPECT_EQ(types.at("token_embd.weight"), kQ6K);  // tied: the output rule applies
  EXPECT_EQ(types.at("output_norm.weight"), kF32);
}

TEST(Mix, UntiedEmbeddingsKeepTheDefaultAndOutputGetsQ6K) {
  const ModelShape shape{.arch = "llama", .n_layer = 2, .n_head = 4, .n_head_kv = 4};
  const auto types = types_of(mix_by_name("q4_k_s"), shape, llama_like(2, 256, true));
  EXPECT_EQ(types.at("token_embd.weight"), kQ4K);
  EXPECT_EQ(types.at("output.weight"), kQ6K);
  // Q4_K_S: attn_v of the first four layers and ffn_down of the first eighth get Q5_K.
  EXPECT_EQ(types.at("blk.0.attn_v.weight"), kQ5K);
  EXPECT_EQ(types.at("blk.1.attn_v.weight"), kQ5K);
  EXPECT_EQ(types.at("blk.0.ffn_down.weight"), kQ4K);  // 2 layers: n/8 = 0
}

TEST(Mix, Q2KAttnVDependsOnGroupedQueryRatio) {
  const auto t = llama_like(4, 256, false);
  const QuantMix& q2k = mix_by_name("q2_k");
  EXPECT_EQ(types_of(q2k, {.arch = "llama", .n_layer = 4, .n_head = 8, .n_head_kv = 2}, t).at("blk.3.attn_v.weight"),
            kQ4K);
  EXPECT_EQ(types_of(q2k, {.arch = "llama", .n_layer = 4, .n_head = 8, .n_head_kv = 8}, t).at("blk.3.attn_v.weight"),
            kQ3K);
  const auto types = types_of(q2k, {.arch = "llama", .n_layer = 4, .n_head = 8, .n_head_kv = 8}, t);
  EXPECT_EQ(types.at("blk.2.ffn_down.weight"), kQ3K);
  EXPECT_EQ(types.at("blk.2.attn_output.weight"), kQ3K);
  EXPECT_EQ(types.at("blk.2.ffn_up.weight"), kQ2K);
}

TEST(Mix, FallbackWhenRowLengthIsNotAMultipleOfTheBlock) {
  const ModelShape shape{.arch = "llama", .n_layer = 1, .n_head = 1, .n_head_kv = 1};
  const std::vector<MixTensor> t = {
      {"blk.0.attn_q.weight", {96, 8}, kF16},   // 96 % 256 != 0, 96 % 32 == 0
      {"blk.0.attn_k.weight", {40, 8}, kF16},   // not even a multiple of 32
      {"blk.0.attn_v.weight", {256, 8}, kF16},  // fits
  };
  auto check = [&](const char* mix, uint32_t q, uint32_t k, uint32_t v) {
    const std::vector<TypeChoice> c = assign_types(mix_by_name(mix), shape, t);
    EXPECT_EQ(c[0].type, q) << mix;
    EXPECT_TRUE(c[0].fell_back) << mix;
    EXPECT_EQ(c[1].type, k) << mix;
    EXPECT_TRUE(c[1].fell_back) << mix;
    EXPECT_EQ(c[2].type, v) << mix;
    EXPECT_FALSE(c[2].fell_back) << mix;
  };
  check("q4_k", kQ5_0, kF16, kQ4K);
  check("q5_k", kQ5_1, kF16, kQ5K);
  check("pure-q6_k", kQ8_0, kF16, kQ6K);
  check("q3_k", kQ4_0, kF16, kQ3K);
  check("pure-q2_k", kQ4_0, kF16, kQ2K);
  check("iq4_xs", kIq4Nl, kF16, kIq4Xs);
}

TEST(Mix, PureMixesIgnoreTheRulesButNotTheExclusions) {
  const ModelShape shape{.arch = "llama", .n_layer = 8, .n_head = 8, .n_head_kv = 2};
  std::vector<MixTensor> t = llama_like(8, 256, true);
  t.push_back({"blk.0.ffn_gate_inp.weight", {256, 8}, kF32});  // MoE router: never quantized
  t.push_back({"rope_freqs.weight", {32}, kF32});
  for (const auto& [name, type] : types_of(mix_by_name("pure-q2_k"), shape, t)) {
    const bool excluded = name.find("norm") != std::string::npos || name == "blk.0.ffn_gate_inp.weight" ||
                          name == "rope_freqs.weight";
    EXPECT_EQ(type, excluded ? kF32 : kQ2K) << name;
  }
  for (const auto& [name, type] : types_of(mix_by_name("f16"), shape, t)) {
    const bool excluded = name.find("norm") != std::string::npos || name.find("gate_inp") != std::string::npos ||
                          name == "rope_freqs.weight";
    EXPECT_EQ(type, excluded ? kF32 : kF16) << name;
  }
}

TEST(Mix, NamesAreCaseInsensitiveAndUnknownNamesListTheKnownOnes) {
  EXPECT_EQ(&mix_by_name("Q4_K_M"), &mix_by_name("q4_k_m"));
  EXPECT_EQ(mix_by_name("q2_k").kind, MixKind::kLlama);
  EXPECT_EQ(mix_by_name("pure-q2_k").kind, MixKind::kPure);
  EXPECT_EQ(mix_by_name("q4_0").kind, MixKind::kPure);
  EXPECT_EQ(find_mix("q4_k_xl"), nullptr);
  try {
    mix_by_name("q4_k_xl");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("q4_k_xl"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("q4_k_m"), std::string::npos);
  }
}

TEST(Mix, LlamaOrderPutsNonBlockTensorsFirstThenBlocksNumerically) {
  const std::vector<MixTensor> t = {{"blk.10.a.weight", {1}, kF32}, {"output.weight", {1}, kF32},
                                    {"blk.2.b.weight", {1}, kF32},  {"blk.2.a.weight", {1}, kF32},
                                    {"token_embd.weight", {1}, kF32}};
  const std::vector<size_t> order = llama_tensor_order(t);
  std::vector<std::string> names;
  for (size_t i : order) names.push_back(t[i].name);
  EXPECT_EQ(names, (std::vector<std::string>{"output.weight", "token_embd.weight", "blk.2.a.weight", "blk.2.b.weight",
                                             "blk.10.a.weight"}));
}

}  // namespace
}  // namespace calq::pipeline
