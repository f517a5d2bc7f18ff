// GGUF models: tiny models written the way llama.cpp's converter writes them (Q/K permuted for
// llama/mistral, biases for qwen2) load to exactly the weights of their Hugging Face folder and
// give the same logits; bad files give errors naming file, tensor/key and type; the reference
// model's F16 GGUF (made by llama.cpp itself) holds the HF bf16 weights rounded to f16.
#include "model/gguf_model.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "core/error.h"
#include "formats/format.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"
#include "support/error_of.h"

namespace calq::model {
namespace {

using calq::testing::error_of;

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// The float32 tensor of a per-layer role of a dense (float) model.
const Tensor& dense_role(const LayerWeights& l, TensorRole role) {
  return is_linear(role) ? l.linear(role).dense() : l.vector(role);
}

// Every weight of `a` equals the one of `b`, bit for bit.
void expect_same_weights(const Model& a, const Model& b) {
  EXPECT_TRUE(same_bytes(a.embedding.dense(), b.embedding.dense()));
  EXPECT_TRUE(same_bytes(a.final_norm, b.final_norm));
  EXPECT_TRUE(same_bytes(a.output.dense(), b.output.dense()));
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (!is_per_layer(role) || !has_role(a.config, role)) continue;
      EXPECT_TRUE(same_bytes(dense_role(a.layers[l], role), dense_role(b.layers[l], role)))
          << "layer " << l << " " << role_name(role);
    }
  }
}

struct GgufCase {
  std::string model_type;
  bool tied;
  DType dtype;  // of the HF folder and of the GGUF's 2-d tensors
  int64_t window;
};

class TinyGguf : public ::testing::TestWithParam<GgufCase> {};

TEST_P(TinyGguf, LoadsToTheHfWeightsAndLogits) {
  const GgufCase p = GetParam();
  const auto dir = testing::temp_dir("gguf");
  testutil::write_tiny_model(dir / "hf", {.tied = p.tied, .dtype = p.dtype, .model_type = p.model_type,
                                          .sliding_window = p.window});
  ThreadPool pool(2);
  const Model hf = load_hf_model(dir / "hf", pool);
  const auto path = dir / "tiny.gguf";
  testutil::write_tiny_gguf(hf, path, p.dtype);
  const Model gg = load_gguf_model(path, pool);

  EXPECT_EQ(gg.config.model_type, p.model_type == "mistral" ? "llama" : p.model_type);  // the converter's name
  EXPECT_EQ(gg.config.tie_word_embeddings, p.tied);
  EXPECT_EQ(gg.config.qkv_bias, hf.config.qkv_bias);
  EXPECT_EQ(gg.config.sliding_window, p.window);
  EXPECT_EQ(gg.config.window_for_layer(1), hf.config.window_for_layer(1));
  EXPECT_EQ(gg.config.vocab_size, hf.config.vocab_size);
  EXPECT_EQ(gg.config.head_dim, hf.config.head_dim);
  EXPECT_EQ(gg.parameter_count(), hf.parameter_count());
  expect_same_weights(hf, gg);

  const std::vector<int32_t> ids = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 60, 0};
  const Tensor a = forward(hf, ids, pool);
  const Tensor b = forward(gg, ids, pool);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);

  // Kept as stored (GgufLoadOptions::keep_source_dtype): f16/bf16 weights are views in their format
  // (Q/K rows reordered copies), float32 ones dense; the same logits, bit for bit.
  const Model kept = load_gguf_model(std::make_shared<const io::GgufFile>(io::GgufFile::open(path)), pool,
                                     {.keep_source_dtype = true});
  const bool half = p.dtype != DType::kF32;
  EXPECT_EQ(kept.output.is_quantized(), half);
  EXPECT_EQ(kept.layers[0].wq.is_quantized(), half);
  EXPECT_EQ(kept.layers[1].w_down.format_name(), !half ? "f32" : p.dtype == DType::kF16 ? "f16" : "bf16");
  const Tensor c = forward(kept, ids, pool);
  EXPECT_EQ(std::memcmp(a.data(), c.data(), a.nbytes()), 0);

  // A file that skipped the permutation would load Q/K rows in the wrong order: the loader's
  // un-permutation is not the identity on these heads.
  if (hf.arch->gguf_permutes_qk) {
    std::vector<float> unperm(static_cast<size_t>(hf.layers[0].wq.numel()));
    unpermute_qk_rows(hf.layers[0].wq.dense().f32(), unperm.data(), hf.config.num_heads, hf.config.head_dim,
                      hf.config.hidden_size);
    EXPECT_NE(std::memcmp(unperm.data(), hf.layers[0].wq.dense().f32(), unperm.size() * 4), 0);
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Models, TinyGguf,
                         ::testing::Values(GgufCase{"llama", true, DType::kF16, 0},
                                           GgufCase{"llama", false, DType::kF32, 0},
                                           GgufCase{"llama", false, DType::kBF16, 0},
                                           GgufCase{"qwen2", true, DType::kF16, 0},
                                           GgufCase{"qwen2", false, DType::kF32, 0},
                                           GgufCase{"mistral", false, DType::kF16, 5}),
                         [](const auto& param_info) {
                           const GgufCase& c = param_info.param;
                           return c.model_type + (c.tied ? "_tied_" : "_untied_") + std::string(dtype_name(c.dtype)) +
                                  (c.window > 0 ? "_window" : "");
                         });

TEST(GgufPermutation, InverseAndLayout) {
  // 2 heads of 4 rows, 3 columns: row r holds r*10 + col.
  std::vector<float> w(24), p(24), back(24);
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 3; ++c) w[r * 3 + c] = static_cast<float>(r * 10 + c);
  }
  permute_qk_rows(w.data(), p.data(), 2, 4, 3);
  // Head 0 rows (0, 1 | 2, 3) interleave to (0, 2, 1, 3); head 1 likewise.
  const int expect_rows[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int r = 0; r < 8; ++r) EXPECT_EQ(p[r * 3 + 1], expect_rows[r] * 10 + 1) << r;
  unpermute_qk_rows(p.data(), back.data(), 2, 4, 3);
  EXPECT_EQ(back, w);
}

class GgufErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("gguf_err");
    testutil::write_tiny_model(dir_ / "hf", {.tied = true});
    model_ = load_hf_model(dir_ / "hf", pool_);
    testutil::write_tiny_gguf(model_, dir_ / "good.gguf", DType::kF16);
    good_ = std::make_unique<io::GgufFile>(io::GgufFile::open(dir_ / "good.gguf"));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes the good file with its metadata and tensors passed through `edit`, then loads it.
  std::string load_edited(const std::function<void(io::GgufMetadata&, std::vector<io::GgufWriteTensor>&)>& edit,
                          ErrorKind* kind = nullptr) {
    io::GgufMetadata meta = good_->metadata();
    std::vector<io::GgufWriteTensor> tensors = io::gguf_write_tensors(*good_);
    edit(meta, tensors);
    const auto path = dir_ / "bad.gguf";
    io::write_gguf(path, meta, tensors);
    return error_of([&] { load_gguf_model(path, pool_); }, kind);
  }

  static void set(io::GgufMetadata& meta, const std::string& key, io::GgufValue v) {
    for (auto& [k, val] : meta) {
      if (k == key) {
        val = std::move(v);
        return;
      }
    }
    meta.emplace_back(key, std::move(v));
  }

  ThreadPool pool_{1};
  std::filesystem::path dir_;
  Model model_;
  std::unique_ptr<io::GgufFile> good_;
};

TEST_F(GgufErrors, GoodFileLoads) { EXPECT_EQ(load_gguf_model(*good_, pool_).config.num_layers, 2); }

TEST_F(GgufErrors, UndecodableTensorTypeIsNamed) {
  // A ggml type the io layer knows, one element per block (any shape fits), that no registered
  // format decodes (quantized types with a format load: quantized_model_test.cpp).
  const io::GgmlTypeInfo* type = nullptr;
  for (uint32_t id = 1; id < 64 && type == nullptr; ++id) {
    const io::GgmlTypeInfo* info = io::ggml_type_info(id);
    if (info != nullptr && info->block_size == 1 && format_by_ggml_type(id) == nullptr) type = info;
  }
  ASSERT_NE(type, nullptr);
  std::vector<std::byte> bytes;
  ErrorKind kind{};
  const std::string msg = load_edited(
      [&](auto&, auto& tensors) {
        for (auto& t : tensors) {
          if (t.name != "blk.1.ffn_up.weight") continue;
          bytes.assign(static_cast<size_t>(t.ne[0] * t.ne[1] * type->type_size), std::byte{0});
          t.type = type->id;
          t.data = bytes;
        }
      },
      &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  for (const std::string& needle : {std::string("bad.gguf"), std::string("blk.1.ffn_up.weight"), std::string(type->name),
                                   std::string("cannot decode")}) {
    EXPECT_NE(msg.find(needle), std::string::npos) << needle << " in: " << msg;
  }
}

TEST_F(GgufErrors, UnknownArchitectureListsSupported) {
  ErrorKind kind{};
  const std::string msg =
      load_edited([](auto& meta, auto&) { set(meta, "general.architecture", io::GgufValue::of_string("gpt2")); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("'gpt2' is not supported (supported: llama, qwen2, qwen3, qwen2moe, qwen3moe)"), std::string::npos) << msg;
}

TEST_F(GgufErrors, MissingKeyIsNamed) {
  const std::string msg = load_edited([](auto& meta, auto&) {
    std::erase_if(meta, [](const auto& kv) { return kv.first == "llama.embedding_length"; });
  });
  EXPECT_NE(msg.find("llama.embedding_length"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
}

TEST_F(GgufErrors, MissingTensorIsNamed) {
  const std::string msg = load_edited([](auto&, auto& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.name == "blk.0.attn_v.weight"; });
  });
  EXPECT_NE(msg.find("'blk.0.attn_v.weight' not found"), std::string::npos) << msg;
}

TEST_F(GgufErrors, WrongShapeIsNamed) {
  // Metadata claiming a larger feed-forward than the tensors have.
  const std::string msg =
      load_edited([](auto& meta, auto&) { set(meta, "llama.feed_forward_length", io::GgufValue::of_uint32(64)); });
  EXPECT_NE(msg.find("blk.0.ffn_gate.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ne [32, 48]"), std::string::npos) << msg;
}

TEST_F(GgufErrors, UnknownTensorAndUnsupportedKeysAreRefused) {
  std::vector<float> extra(32, 0.0f);
  std::string msg = load_edited([&](auto&, auto& tensors) {
    tensors.push_back({"blk.0.attn_q_norm.weight", {32}, io::kGgmlF32, std::as_bytes(std::span(extra))});
  });
  EXPECT_NE(msg.find("blk.0.attn_q_norm.weight"), std::string::npos) << msg;
  msg = load_edited([](auto& meta, auto&) { set(meta, "llama.rope.scaling.type", io::GgufValue::of_string("yarn")); });
  EXPECT_NE(msg.find("llama.rope.scaling.type"), std::string::npos) << msg;
  msg = load_edited([](auto& meta, auto&) { set(meta, "llama.rope.dimension_count", io::GgufValue::of_uint32(4)); });
  EXPECT_NE(msg.find("partial rotary"), std::string::npos) << msg;
}

TEST(GgufQwen2, WindowKeyIsRefused) {
  const auto dir = testing::temp_dir("gguf_qwin");
  testutil::write_tiny_model(dir / "hf", {.model_type = "qwen2"});
  ThreadPool pool(1);
  const Model hf = load_hf_model(dir / "hf", pool);
  testutil::write_tiny_gguf(hf, dir / "q.gguf", DType::kF32);
  const io::GgufFile good = io::GgufFile::open(dir / "q.gguf");
  io::GgufMetadata meta = good.metadata();
  meta.emplace_back("qwen2.attention.sliding_window", io::GgufValue::of_uint32(8));
  io::write_gguf(dir / "w.gguf", meta, io::gguf_write_tensors(good));
  const std::string msg = error_of([&] { load_gguf_model(dir / "w.gguf", pool); });
  EXPECT_NE(msg.find("qwen2.attention.sliding_window"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

// The reference model's F16 GGUF, written by llama.cpp's convert_hf_to_gguf.py: it loads as the
// same model, and every weight is the HF bf16 weight rounded to f16 (after undoing the Q/K
// permutation; the converter widens bf16 to f32 and numpy rounds to nearest even).
TEST(ReferenceGguf, HoldsTheHfWeightsRoundedToF16) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
  ThreadPool pool(2);
  const auto shared = testing::shared_dir();
  const Model hf = load_hf_model(shared / "models/calq-ref-llama", pool);
  const Model gg = load_gguf_model(shared / "models/calq-ref-llama-f16.gguf", pool);
  const ModelConfig& a = hf.config;
  const ModelConfig& b = gg.config;
  EXPECT_EQ(b.model_type, "llama");
  EXPECT_EQ(b.num_layers, a.num_layers);
  EXPECT_EQ(b.hidden_size, a.hidden_size);
  EXPECT_EQ(b.intermediate_size, a.intermediate_size);
  EXPECT_EQ(b.num_heads, a.num_heads);
  EXPECT_EQ(b.num_kv_heads, a.num_kv_heads);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_EQ(b.vocab_size, a.vocab_size);
  EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(b.rope_theta, a.rope_theta);
  EXPECT_FLOAT_EQ(static_cast<float>(b.rms_norm_eps), static_cast<float>(a.rms_norm_eps));
  EXPECT_EQ(b.bos_token_id, a.bos_token_id);
  EXPECT_EQ(b.eos_token_id, a.eos_token_id);
  EXPECT_EQ(gg.parameter_count(), hf.parameter_count());

  // f16(x) for every weight x of the HF model; counts mismatches per tensor.
  int64_t total = 0, changed_by_rounding = 0;
  const auto expect_rounded = [&](const Tensor& h, const Tensor& g, const std::string& what) {
    ASSERT_EQ(h.shape(), g.shape()) << what;
    int64_t bad = 0;
    for (int64_t i = 0; i < h.numel(); ++i) {
      const float want = f16_to_f32(f32_to_f16(h.f32()[i]));
      if (g.f32()[i] != want) ++bad;
      if (want != h.f32()[i]) ++changed_by_rounding;
    }
    total += h.numel();
    EXPECT_EQ(bad, 0) << what;
  };
  expect_rounded(hf.embedding.dense(), gg.embedding.dense(), "token_embd");
  expect_rounded(hf.final_norm, gg.final_norm, "output_norm");  // F32 in the file: exact
  for (size_t l = 0; l < hf.layers.size(); ++l) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (is_per_layer(role) && has_role(a, role)) {
        expect_rounded(dense_role(hf.layers[l], role), dense_role(gg.layers[l], role),
                       fmt::format("layer {} {}", l, role_name(role)));
      }
    }
  }
  EXPECT_EQ(total, hf.parameter_count());
  // bf16 values are f16 values except the tiny ones below f16's normal range: a few change.
  RecordProperty("weights_changed_by_f16_rounding", static_cast<int>(changed_by_rounding));
  EXPECT_LT(changed_by_rounding, total / 100);

  const ModelSummary s = inspect_gguf_model(shared / "models/calq-ref-llama-f16.gguf");
  EXPECT_EQ(s.parameter_count, hf.parameter_count());
  ASSERT_FALSE(s.tensors.empty());
  EXPECT_EQ(s.tensors.front().name, "token_embd.weight");
  EXPECT_EQ(s.tensors.front().dtype, "F16");
  EXPECT_EQ(s.tensors.front().shape, Shape({16384, 512}));
  EXPECT_EQ(s.tensors[1].name, "blk.0.attn_norm.weight");
  EXPECT_EQ(s.tensors.back().name, "output_norm.weight");
}

}  // namespace
}  // namespace calq::model
