// Models with quantized weights: a model whose linear weights, embedding and head are held in a
// number format gives bit-identical logits to the same model with those weights dequantized to
// float32 up front (every registered format, any thread count); quantized GGUF tensors load in
// their format with llama.cpp's Q/K row permutation undone on whole rows of bytes; undecodable
// types, quantized norms and NaN scales are errors naming the tensor; llama.cpp's own Q8_0 file
// of the reference model gives logits close to its F16 file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"
#include "support/error_of.h"

namespace calq::model {
namespace {

// Dimensions that every block size up to 256 divides (the tiny test model's 32/48 do not).
ModelConfig quant_config(bool tied) {
  ModelConfig c = testutil::tiny_config(tied);
  c.vocab_size = 96;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 2048;
  return c;
}

Tensor random_tensor(const Shape& shape, uint32_t seed, float mean, float stddev) {
  Tensor t = Tensor::zeros(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_f32()[i] = d(rng);
  return t;
}

// A random float32 Llama with quant_config's dimensions.
Model random_model(bool tied) {
  Model m;
  m.config = quant_config(tied);
  m.arch = find_architecture("llama");
  m.source = "random";
  uint32_t seed = 100;
  const auto matrix = [&](TensorRole role) { return random_tensor(expected_shape(m.config, role), ++seed, 0.0f, 0.05f); };
  m.embedding = random_tensor(expected_shape(m.config, TensorRole::kTokenEmbedding), ++seed, 0.0f, 0.5f);
  m.output = tied ? m.embedding : LinearWeight(matrix(TensorRole::kOutput));
  m.final_norm = random_tensor({m.config.hidden_size}, ++seed, 1.0f, 0.1f);
  m.layers.resize(static_cast<size_t>(m.config.num_layers));
  for (auto& l : m.layers) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (!is_per_layer(role) || !has_role(m.config, role)) continue;
      if (is_linear(role)) {
        l.linear(role) = matrix(role);
      } else {
        l.vector(role) = random_tensor(expected_shape(m.config, role), ++seed, 1.0f, 0.1f);
      }
    }
  }
  return m;
}

bool fits(const Format& f, const LinearWeight& w) { return w.cols() % f.traits().block_size == 0; }

// Every matrix of a float model `m` that `f` can hold, quantized to `f` (a tied head stays tied).
Model quantized_copy(const Model& m, const Format& f, ThreadPool& pool) {
  Model q = m;
  const auto quantize = [&](LinearWeight& w) {
    if (!fits(f, w)) return;
    const Tensor& d = w.dense();
    w = QuantizedTensor::quantize(pool, f, d.f32(), d.dim(0), d.dim(1));
  };
  quantize(q.embedding);
  if (m.output.same_storage(m.embedding)) {
    q.output = q.embedding;
  } else {
    quantize(q.output);
  }
  for (auto& l : q.layers) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (is_per_layer(role) && is_linear(role) && has_role(q.config, role)) quantize(l.linear(role));
    }
  }
  return q;
}

// `q` with every quantized weight dequantized to float32 up front.
Model dequantized_copy(const Model& q, ThreadPool& pool) {
  Model d = q;
  const auto widen = [&](LinearWeight& w) { w = w.to_dense(pool); };
  widen(d.embedding);
  if (q.output.same_storage(q.embedding)) {
    d.output = d.embedding;
  } else {
    widen(d.output);
  }
  for (auto& l : d.layers) {
    for (size_t r = 0; r < kNumTensorRoles; ++r) {
      const auto role = static_cast<TensorRole>(r);
      if (is_per_layer(role) && is_linear(role) && has_role(d.config, role)) widen(l.linear(role));
    }
  }
  return d;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

std::string param_name(const ::testing::TestParamInfo<const Format*>& info) {
  std::string s = info.param->name();
  for (char& ch : s) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return s;
}

const std::vector<int32_t> kIds = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 95, 0, 41, 77};

class QuantizedModel : public ::testing::TestWithParam<const Format*> {};

TEST_P(QuantizedModel, LogitsEqualTheModelDequantizedUpFront) {
  const Format& f = *GetParam();
  ThreadPool pool(4), one(1);
  for (const bool tied : {true, false}) {
    const Model q = quantized_copy(random_model(tied), f, pool);
    ASSERT_TRUE(q.layers[0].wq.is_quantized()) << f.name();  // block sizes up to 256 fit every matrix
    ASSERT_TRUE(q.layers[1].w_down.is_quantized());
    ASSERT_TRUE(q.embedding.is_quantized());
    EXPECT_EQ(q.output.same_storage(q.embedding), tied);
    const Model d = dequantized_copy(q, pool);
    EXPECT_FALSE(d.layers[0].wq.is_quantized());
    EXPECT_EQ(q.parameter_count(), d.parameter_count());

    const Tensor a = forward(q, kIds, pool);
    const Tensor b = forward(d, kIds, pool);
    EXPECT_TRUE(same_bits(a, b)) << "tied " << tied;
    EXPECT_TRUE(same_bits(a, forward(q, kIds, one))) << "1 thread, tied " << tied;
    // Not vacuous: the format changed the logits.
    EXPECT_FALSE(same_bits(a, forward(random_model(tied), kIds, pool))) << "tied " << tied;
    bool finite = true;
    for (int64_t i = 0; i < a.numel(); ++i) finite = finite && std::isfinite(a.f32()[i]);
    EXPECT_TRUE(finite);
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, QuantizedModel, ::testing::ValuesIn(all_formats()), param_name);

// Registered formats with llama.cpp's layout (a ggml type other than the float ones, which load
// as float32).
std::vector<const Format*> gguf_block_formats() {
  std::vector<const Format*> out;
  for (const Format* f : all_formats()) {
    const auto& id = f->traits().ggml_type;
    if (id && *id != io::kGgmlF32 && *id != io::kGgmlF16 && *id != io::kGgmlBF16) out.push_back(f);
  }
  return out;
}

// A float model written as the converter would (F32), then rewritten with every 2-d tensor in `f`
// (quantizing the file's rows, i.e. after the Q/K permutation, as llama-quantize does).
void write_quantized_gguf(const Model& m, const Format& f, const std::filesystem::path& dir,
                          const std::string& name, ThreadPool& pool) {
  testutil::write_tiny_gguf(m, dir / "f32.gguf", DType::kF32);
  const io::GgufFile file = io::GgufFile::open(dir / "f32.gguf");
  std::vector<io::GgufWriteTensor> tensors = io::gguf_write_tensors(file);
  std::vector<QuantizedTensor> keep;
  keep.reserve(tensors.size());
  for (auto& t : tensors) {
    if (t.ne.size() != 2) continue;
    keep.push_back(QuantizedTensor::quantize(pool, f, reinterpret_cast<const float*>(t.data.data()), t.ne[1], t.ne[0]));
    t.type = *f.traits().ggml_type;
    t.data = keep.back().bytes;
  }
  io::write_gguf(dir / name, file.metadata(), tensors);
}

class QuantizedGguf : public ::testing::TestWithParam<const Format*> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(QuantizedGguf);

TEST_P(QuantizedGguf, LoadsInItsFormatWithQkRowsRestored) {
  const Format& f = *GetParam();
  ThreadPool pool(3);
  const auto dir = testing::temp_dir("qgguf");
  for (const bool tied : {true, false}) {
    const Model m = random_model(tied);
    write_quantized_gguf(m, f, dir, "q.gguf", pool);
    const Model g = load_gguf_model(dir / "q.gguf", pool);
    const Model copied = load_gguf_model(io::GgufFile::open(dir / "q.gguf"), pool);  // bytes copied
    // What quantizing the un-permuted float weights in memory gives: rows are independent, so
    // the loader's row moves must reproduce it byte for byte.
    const Model want = quantized_copy(m, f, pool);
    const auto same_weight = [&](const LinearWeight& a, const LinearWeight& b, const std::string& what) {
      ASSERT_TRUE(a.is_quantized()) << what;
      EXPECT_EQ(a.format_name(), f.name()) << what;
      ASSERT_EQ(a.shape(), b.shape()) << what;
      EXPECT_EQ(std::memcmp(a.quantized().bytes.data(), b.quantized().bytes.data(), a.nbytes()), 0) << what;
    };
    same_weight(g.embedding, want.embedding, "token_embd");
    same_weight(g.output, want.output, "output");
    EXPECT_EQ(g.output.same_storage(g.embedding), tied);
    for (size_t l = 0; l < g.layers.size(); ++l) {
      for (size_t r = 0; r < kNumTensorRoles; ++r) {
        const auto role = static_cast<TensorRole>(r);
        if (!is_per_layer(role) || !is_linear(role) || !has_role(g.config, role)) continue;
        same_weight(g.layers[l].linear(role), want.layers[l].linear(role), fmt::format("layer {} {}", l, role_name(role)));
        same_weight(copied.layers[l].linear(role), want.layers[l].linear(role), "copied");
      }
    }
    const Tensor logits = forward(g, kIds, pool);
    EXPECT_TRUE(same_bits(logits, forward(want, kIds, pool))) << "tied " << tied;
    EXPECT_TRUE(same_bits(logits, forward(copied, kIds, pool))) << "tied " << tied;
    EXPECT_TRUE(same_bits(logits, forward(dequantized_copy(g, pool), kIds, pool))) << "tied " << tied;
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(GgufFormats, QuantizedGguf, ::testing::ValuesIn(gguf_block_formats()), param_name);

TEST(QkPermutation, QuantizedRowsRoundTrip) {
  ThreadPool pool(2);
  const int64_t heads = 4, hd = 64, cols = 256;
  const Tensor w = random_tensor({heads * hd, cols}, 7, 0.0f, 1.0f);
  std::vector<float> permuted(static_cast<size_t>(w.numel()));
  permute_qk_rows(w.f32(), permuted.data(), heads, hd, cols);
  int tested = 0;
  for (const Format* f : all_formats()) {
    if (f->trailer_bytes(heads * hd, cols) != 0 || cols % f->traits().block_size != 0) continue;
    ++tested;
    const QuantizedTensor q = QuantizedTensor::quantize(pool, *f, w.f32(), heads * hd, cols);
    const QuantizedTensor qp = QuantizedTensor::quantize(pool, *f, permuted.data(), heads * hd, cols);
    const QuantizedTensor moved = permute_qk_rows(q, heads, hd);
    ASSERT_EQ(moved.bytes.size(), qp.bytes.size());
    EXPECT_EQ(std::memcmp(moved.bytes.data(), qp.bytes.data(), qp.bytes.size()), 0) << f->name();
    EXPECT_NE(std::memcmp(moved.bytes.data(), q.bytes.data(), q.bytes.size()), 0) << f->name();
    const QuantizedTensor back = unpermute_qk_rows(moved, heads, hd);
    EXPECT_EQ(std::memcmp(back.bytes.data(), q.bytes.data(), q.bytes.size()), 0) << f->name();
  }
  EXPECT_GT(tested, 0);
}

using calq::testing::error_of;

// The F32 GGUF of a random model with tensor `name` replaced by `bytes` of ggml type `type`.
std::filesystem::path with_tensor(const std::filesystem::path& dir, const std::string& name, uint32_t type,
                                  std::span<const std::byte> bytes) {
  testutil::write_tiny_gguf(random_model(true), dir / "f32.gguf", DType::kF32);
  const io::GgufFile file = io::GgufFile::open(dir / "f32.gguf");
  std::vector<io::GgufWriteTensor> tensors = io::gguf_write_tensors(file);
  bool found = false;
  for (auto& t : tensors) {
    if (t.name != name) continue;
    t.type = type;
    t.data = bytes;
    found = true;
  }
  EXPECT_TRUE(found) << name;
  const auto path = dir / "edited.gguf";
  io::write_gguf(path, file.metadata(), tensors);
  return path;
}

TEST(QuantizedGgufErrors, UndecodableTypeNamesFileTensorAndType) {
  // A ggml type the io layer knows, with one element per block (so any shape fits), that no
  // registered format decodes.
  const io::GgmlTypeInfo* type = nullptr;
  for (uint32_t id = 0; id < 64 && type == nullptr; ++id) {
    const io::GgmlTypeInfo* info = io::ggml_type_info(id);
    if (info != nullptr && info->block_size == 1 && format_by_ggml_type(id) == nullptr && id != io::kGgmlF32) {
      type = info;
    }
  }
  ASSERT_NE(type, nullptr);
  const auto dir = testing::temp_dir("qundec");
  const ModelConfig c = quant_config(true);
  std::vector<std::byte> bytes(static_cast<size_t>(c.q_dim() * c.hidden_size * type->type_size));
  const auto path = with_tensor(dir, "blk.1.attn_q.weight", type->id, bytes);
  ThreadPool pool(1);
  ErrorKind kind{};
  const std::string msg = error_of([&] { load_gguf_model(path, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("blk.1.attn_q.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::string(type->name)), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot decode"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

const Format* q8_0() { return format_by_ggml_type(8); }

TEST(QuantizedGgufErrors, QuantizedNormIsRefused) {
  if (q8_0() == nullptr) GTEST_SKIP() << "q8_0 is not registered";
  const auto dir = testing::temp_dir("qnorm");
  ThreadPool pool(1);
  const Tensor norm = random_tensor({1, 256}, 3, 1.0f, 0.1f);
  const QuantizedTensor q = QuantizedTensor::quantize(pool, *q8_0(), norm.f32(), 1, 256);
  const auto path = with_tensor(dir, "blk.0.ffn_norm.weight", 8, q.bytes);
  ErrorKind kind{};
  const std::string msg = error_of([&] { load_gguf_model(path, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("blk.0.ffn_norm.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Q8_0"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(QuantizedGgufErrors, NonFiniteScaleIsNamed) {
  if (q8_0() == nullptr) GTEST_SKIP() << "q8_0 is not registered";
  const auto dir = testing::temp_dir("qnan");
  ThreadPool pool(2);
  const ModelConfig c = quant_config(true);
  const Tensor w = random_tensor({c.kv_dim(), c.hidden_size}, 4, 0.0f, 0.05f);
  const QuantizedTensor q = QuantizedTensor::quantize(pool, *q8_0(), w.f32(), c.kv_dim(), c.hidden_size);
  std::vector<std::byte> bytes(q.bytes.begin(), q.bytes.end());
  // Q8_0 blocks are 34 bytes, an f16 scale first: make block 21's scale +Inf (row 2, block 5).
  const uint16_t inf = 0x7C00;
  std::memcpy(bytes.data() + 21 * 34, &inf, 2);
  const auto path = with_tensor(dir, "blk.0.attn_v.weight", 8, bytes);
  ErrorKind kind{};
  const std::string msg = error_of([&] { load_gguf_model(path, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kFormat);
  EXPECT_NE(msg.find("blk.0.attn_v.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
  EXPECT_NE(msg.find("flat index 672"), std::string::npos) << msg;  // the block's first element: 21 × 32
  std::filesystem::remove_all(dir);
}

// llama.cpp's Q8_0 quantization of the reference model loads with its Q8_0 bytes as they are, and
// its logits on the first 512-token window of heldout.txt are close to the F16 file's.
TEST(LlamaCppQuants, Q8_0LogitsAreCloseToF16) {
  CALQ_REQUIRE_SHARED("peer-tests/llama.cpp-quants/calq-ref-llama-Q8_0.gguf");
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/tokenizer.json");
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  ASSERT_NE(q8_0(), nullptr) << "q8_0 is not registered";
  const auto shared = testing::shared_dir();
  const io::Tokenizer tok = io::Tokenizer::from_file(shared / "models/calq-ref-llama/tokenizer.json");
  // The first window of the protocol: the first 512 ids of the text (a 16 KB prefix holds them,
  // and the Metaspace pre-tokenizer makes ids far before the cut independent of it).
  const std::string text = read_text_file(shared / "data/heldout.txt").substr(0, 16384);
  std::vector<int32_t> ids = tok.encode(text, /*add_special_tokens=*/false);
  ASSERT_GE(ids.size(), 600u);
  ids.resize(512);

  ThreadPool pool(0);
  const Model q8 = load_gguf_model(shared / "peer-tests/llama.cpp-quants/calq-ref-llama-Q8_0.gguf", pool);
  const Model f16 = load_gguf_model(shared / "models/calq-ref-llama-f16.gguf", pool);
  EXPECT_EQ(q8.embedding.format_name(), "q8_0");
  EXPECT_TRUE(q8.output.same_storage(q8.embedding));
  for (const auto& l : q8.layers) {
    EXPECT_EQ(l.wq.format_name(), "q8_0");
    EXPECT_EQ(l.w_down.format_name(), "q8_0");
  }
  EXPECT_EQ(q8.parameter_count(), f16.parameter_count());

  const Tensor a = forward(q8, ids, pool);
  const Tensor b = forward(f16, ids, pool);
  ASSERT_EQ(a.shape(), b.shape());
  const int64_t vocab = a.dim(1);
  double max_diff = 0, sum_sq = 0, sum_sq_ref = 0;
  int64_t same_argmax = 0;
  for (int64_t t = 0; t < a.dim(0); ++t) {
    const float* x = a.f32() + t * vocab;
    const float* y = b.f32() + t * vocab;
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = static_cast<double>(x[v]) - y[v];
      max_diff = std::max(max_diff, std::abs(d));
      sum_sq += d * d;
      sum_sq_ref += static_cast<double>(y[v]) * y[v];
    }
    same_argmax += std::max_element(x, x + vocab) - x == std::max_element(y, y + vocab) - y;
  }
  const double rel_rms = std::sqrt(sum_sq / sum_sq_ref);
  RecordProperty("max_abs_logit_diff", std::to_string(max_diff));
  RecordProperty("relative_rms_logit_diff", std::to_string(rel_rms));
  RecordProperty("same_argmax", static_cast<int>(same_argmax));
  std::printf("Q8_0 vs F16, window 0: max |dlogit| %.4f, relative RMS %.5f, same argmax %lld / 512\n", max_diff,
              rel_rms, static_cast<long long>(same_argmax));
  // Measured when this test was written: max |Δlogit| 0.197, relative RMS 0.0059, same argmax at
  // 507 of 512 positions; the bounds leave ~25% headroom over the first two.
  EXPECT_LT(max_diff, 0.25);
  EXPECT_LT(rel_rms, 0.01);
  EXPECT_GE(same_argmax, 500);
}

}  // namespace
}  // namespace calq::model

namespace calq::model {
namespace {

TEST(HfSourceDtype, KeptAsViewsWithTheSameLogits) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  ThreadPool pool(2);
  const auto folder = testing::shared_dir() / "models/calq-ref-llama";
  const Model f32 = load_hf_model(folder, pool);
  const Model kept = load_hf_model(folder, pool, {.keep_source_dtype = true});
  EXPECT_EQ(kept.layers[0].wq.format_name(), "bf16");
  EXPECT_EQ(kept.embedding.format_name(), "bf16");
  EXPECT_TRUE(kept.output.same_storage(kept.embedding));
  EXPECT_EQ(f32.layers[0].wq.format_name(), "f32");
  const std::vector<int32_t> ids = {5, 99, 1234, 16000, 7, 7, 300};
  const Tensor a = forward(f32, ids, pool);
  const Tensor b = forward(kept, ids, pool);
  ASSERT_EQ(a.numel(), b.numel());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.nbytes()));
}

}  // namespace
}  // namespace calq::model
