// A tiny random Llama written by calq's own safetensors writer, tied and untied, sharded and not,
// loads and runs and matches a naive scalar implementation; broken folders give clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"
#include "support/error_of.h"

namespace calq::model {
namespace {

void expect_full_forward_matches_naive(const Model& m, ThreadPool& pool) {
  std::vector<int32_t> ids = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3};
  const Tensor logits = forward(m, ids, pool);
  const auto naive = testutil::naive_forward(m, ids);
  ASSERT_EQ(static_cast<size_t>(logits.numel()), naive.size());
  double max_err = 0;
  for (size_t i = 0; i < naive.size(); ++i) max_err = std::max(max_err, std::abs(logits.f32()[i] - naive[i]));
  EXPECT_LT(max_err, 5e-5);
}

using calq::testing::error_of;

struct Variant {
  bool tied;
  size_t shards;
  DType dtype;
};

class TinyModel : public ::testing::TestWithParam<Variant> {};

TEST_P(TinyModel, LoadsRunsAndMatchesNaive) {
  const Variant v = GetParam();
  const auto dir = testing::temp_dir("tiny");
  testutil::write_tiny_model(dir, {.tied = v.tied, .shards = v.shards, .dtype = v.dtype});
  if (v.shards > 1) {
    EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
    EXPECT_TRUE(std::filesystem::exists(dir / "model-00002-of-00002.safetensors"));
  }
  ThreadPool pool(2);
  const Model m = load_hf_model(dir, pool);
  EXPECT_EQ(m.config.tie_word_embeddings, v.tied);
  EXPECT_EQ(m.output.same_storage(m.embedding), v.tied);
  const int64_t per_layer = 2 * 32 + 32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 32 * 48;
  EXPECT_EQ(m.parameter_count(), 61 * 32 * (v.tied ? 1 : 2) + 32 + 2 * per_layer);
  expect_full_forward_matches_naive(m, pool);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Variants, TinyModel,
                         ::testing::Values(Variant{true, 1, DType::kF32}, Variant{false, 1, DType::kBF16},
                                           Variant{true, 2, DType::kF16}, Variant{false, 2, DType::kF32}));

TEST(TinyModelErrors, MissingTensorIsNamed) {
  const auto dir = testing::temp_dir("missing");
  testutil::write_tiny_model(dir, {.tied = false});
  // Rewrite without lm_head.weight.
  auto st = io::SafetensorsFile::open(dir / "model.safetensors");
  std::vector<io::TensorToWrite> keep;
  for (const auto& t : st.tensors()) {
    if (t.name != "lm_head.weight") keep.push_back({t.name, t.dtype, t.shape, st.tensor(t.name).bytes()});
  }
  io::write_safetensors(dir / "model2.safetensors", keep);
  std::filesystem::rename(dir / "model2.safetensors", dir / "model.safetensors");
  ThreadPool pool(1);
  const std::string msg = error_of([&] { load_hf_model(dir, pool); });
  EXPECT_NE(msg.find("lm_head.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.string()), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(TinyModelErrors, WrongShapeIsNamed) {
  const auto dir = testing::temp_dir("shape");
  testutil::write_tiny_model(dir, {.tied = true});
  // Claim a bigger intermediate size than the tensors have.
  auto cfg = nlohmann::json::parse(read_text_file(dir / "config.json"));
  cfg["intermediate_size"] = 64;
  const std::string text = cfg.dump();
  write_file_atomic(dir / "config.json", std::as_bytes(std::span(text.data(), text.size())));
  ThreadPool pool(1);
  const std::string msg = error_of([&] { load_hf_model(dir, pool); });
  EXPECT_NE(msg.find("mlp.gate_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[48, 32]"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(TinyModelErrors, NonFiniteWeightIsNamed) {
  const auto dir = testing::temp_dir("nan");
  testutil::write_tiny_model(dir, {.tied = true});
  auto st = io::SafetensorsFile::open(dir / "model.safetensors");
  std::vector<std::vector<std::byte>> copies;
  std::vector<io::TensorToWrite> all;
  for (const auto& t : st.tensors()) {
    auto bytes = st.tensor(t.name).bytes();
    copies.emplace_back(bytes.begin(), bytes.end());
    if (t.name == "model.layers.1.self_attn.v_proj.weight") {
      const float nan = std::nanf("");
      std::memcpy(copies.back().data() + 40, &nan, 4);
    }
  }
  size_t i = 0;
  for (const auto& t : st.tensors()) all.push_back({t.name, t.dtype, t.shape, copies[i++]});
  io::write_safetensors(dir / "model.safetensors", all);
  ThreadPool pool(1);
  const std::string msg = error_of([&] { load_hf_model(dir, pool); });
  EXPECT_NE(msg.find("model.layers.1.self_attn.v_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(TinyModelErrors, UnsupportedAndMissingModelType) {
  const auto dir = testing::temp_dir("mtype");
  testutil::write_tiny_model(dir, {.tied = true});
  ThreadPool pool(1);
  auto cfg = nlohmann::json::parse(read_text_file(dir / "config.json"));
  for (const bool remove : {false, true}) {
    auto c = cfg;
    if (remove) {
      c.erase("model_type");
    } else {
      c["model_type"] = "falcon";
    }
    const std::string text = c.dump();
    write_file_atomic(dir / "config.json", std::as_bytes(std::span(text.data(), text.size())));
    try {
      load_hf_model(dir, pool);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), remove ? ErrorKind::kFormat : ErrorKind::kUnsupported);
      const std::string msg = e.what();
      EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(remove ? "model_type" : "falcon"), std::string::npos) << msg;
      EXPECT_NE(msg.find("llama, mistral, qwen2"), std::string::npos) << msg;  // lists what is supported
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(ReferenceModel, LoadsWithExpectedParameterCount) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
  ThreadPool pool(2);
  const Model m = load_hf_model(testing::shared_dir() / "models/calq-ref-llama", pool);
  EXPECT_EQ(m.layers.size(), 6u);
  EXPECT_NEAR(static_cast<double>(m.parameter_count()) / 1e6, 26.5, 0.1);
  EXPECT_EQ(inspect_hf_model(testing::shared_dir() / "models/calq-ref-llama").parameter_count, m.parameter_count());
}

}  // namespace
}  // namespace calq::model
