// Whole-model GGUF quantization on a small llama-shaped GGUF written here: output types follow the
// plan, bytes equal each format's scalar reference (with the imatrix entry when there is one),
// metadata is llama.cpp's plus calq's keys, the file is the same for any thread count, and errors
// leave no output file.
#include "pipeline/gguf_quantize.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/format.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

constexpr int64_t kHidden = 256;  // a multiple of the k-quant block, so no fallback
constexpr int64_t kLayers = 2;

struct SourceTensor {
  std::string name;
  std::vector<int64_t> ne;
  uint32_t type;
  std::vector<std::byte> bytes;
};

std::vector<SourceTensor> make_tensors(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<SourceTensor> t;
  auto add = [&](const std::string& name, std::vector<int64_t> ne) {
    const bool vec = ne.size() == 1;
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    SourceTensor s{name, ne, vec ? io::kGgmlF32 : io::kGgmlF16, {}};
    s.bytes.resize(static_cast<size_t>(n) * (vec ? 4 : 2));
    for (int64_t i = 0; i < n; ++i) {
      const float x = vec ? 1.0f + normal(rng) : normal(rng);
      if (vec) {
        std::memcpy(s.bytes.data() + i * 4, &x, 4);
      } else {
        const uint16_t h = f32_to_f16(x);
        std::memcpy(s.bytes.data() + i * 2, &h, 2);
      }
    }
    t.push_back(std::move(s));
  };
  // In the converter's order (not llama.cpp's), so the output order is really chosen.
  add("token_embd.weight", {kHidden, 64});
  for (int64_t b = 0; b < kLayers; ++b) {
    const std::string p = "blk." + std::to_string(b) + ".";
    add(p + "attn_norm.weight", {kHidden});
    add(p + "ffn_down.weight", {2 * kHidden, kHidden});
    add(p + "ffn_gate.weight", {kHidden, 2 * kHidden});
    add(p + "ffn_up.weight", {kHidden, 2 * kHidden});
    add(p + "ffn_norm.weight", {kHidden});
    add(p + "attn_k.weight", {kHidden, kHidden / 4});
    add(p + "attn_output.weight", {kHidden, kHidden});
    add(p + "attn_q.weight", {kHidden, kHidden});
    add(p + "attn_v.weight", {kHidden, kHidden / 4});
  }
  add("output_norm.weight", {kHidden});
  return t;
}

io::GgufMetadata make_metadata() {
  return {{"general.architecture", io::GgufValue::of_string("llama")},
          {"general.name", io::GgufValue::of_string("mini")},
          {"llama.block_count", io::GgufValue::of_uint32(kLayers)},
          {"general.file_type", io::GgufValue::of_uint32(1)},
          {"llama.attention.head_count", io::GgufValue::of_uint32(4)},
          {"llama.attention.head_count_kv", io::GgufValue::of_uint32(1)},
          {"general.quantization_version", io::GgufValue::of_uint32(2)},
          {"tokenizer.ggml.model", io::GgufValue::of_string("llama")}};
}

class GgufQuantize : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = calq::testing::temp_dir("gguf_quantize");
    src_ = make_tensors(7);
    std::vector<io::GgufWriteTensor> w;
    for (const SourceTensor& s : src_) w.push_back({.name = s.name, .ne = s.ne, .type = s.type, .data = s.bytes});
    io::write_gguf(dir_ / "in.gguf", make_metadata(), w);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The tensor's values as float32, decoded independently of the pipeline.
  std::vector<float> source_f32(const std::string& name) const {
    for (const SourceTensor& s : src_) {
      if (s.name != name) continue;
      std::vector<float> v(s.bytes.size() / (s.type == io::kGgmlF32 ? 4 : 2));
      convert_to_f32_scalar(s.type == io::kGgmlF32 ? DType::kF32 : DType::kF16, s.bytes.data(), v.data(), v.size());
      return v;
    }
    ADD_FAILURE() << "no tensor " << name;
    return {};
  }

  // Every quantized tensor of `out` equals the format's scalar reference on the source values.
  void expect_reference_bytes(const io::GgufFile& out, const Imatrix* im) {
    for (const io::GgufTensorInfo& t : out.tensors()) {
      if (t.ne.size() < 2) continue;
      const Format* f = format_by_ggml_type(t.type);
      ASSERT_NE(f, nullptr) << t.name;
      if (t.type == io::kGgmlF16) continue;  // unchanged from the input (checked by plan)
      const std::vector<float> x = source_f32(t.name);
      const ImatrixEntry* e = im != nullptr ? im->find(t.name) : nullptr;
      std::vector<std::byte> want(f->tensor_bytes(t.ne[1], t.ne[0]));
      f->quantize_reference(x.data(), t.ne[1], t.ne[0], want,
                            {.tensor_name = t.name, .importance = e != nullptr ? e->values.data() : nullptr});
      const auto got = out.tensor_data(t);
      ASSERT_EQ(got.size(), want.size()) << t.name;
      EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << t.name;
    }
  }

  std::filesystem::path dir_;
  std::vector<SourceTensor> src_;
};

bool have_types(std::initializer_list<uint32_t> types) {
  for (uint32_t t : types) {
    if (format_by_ggml_type(t) == nullptr) return false;
  }
  return true;
}

TEST_F(GgufQuantize, PureBf16WritesPlannedTypesReferenceBytesAndLlamaCppMetadata) {
  const io::GgufFile in = io::GgufFile::open(dir_ / "in.gguf");
  ThreadPool pool(3);
  size_t calls = 0;
  const QuantizeGgufResult r = quantize_gguf(
      in, dir_ / "out.gguf",
      {.mix = &mix_by_name("bf16"), .on_tensor = [&](const TensorDone& d) { EXPECT_EQ(d.done, ++calls); }}, pool);
  EXPECT_EQ(calls, src_.size());
  EXPECT_EQ(r.n_quantized, 1 + 7 * kLayers);  // token_embd + 7 linears per block; norms stay F32

  const io::GgufFile out = io::GgufFile::open(dir_ / "out.gguf");
  // llama.cpp's order: non-block tensors by name, then block by block by name.
  std::vector<std::string> names;
  for (const auto& t : out.tensors()) names.push_back(t.name);
  ASSERT_EQ(names.size(), src_.size());
  EXPECT_EQ(names[0], "output_norm.weight");
  EXPECT_EQ(names[1], "token_embd.weight");
  EXPECT_EQ(names[2], "blk.0.attn_k.weight");
  EXPECT_EQ(names[3], "blk.0.attn_norm.weight");
  for (const auto& t : out.tensors()) EXPECT_EQ(t.type, t.ne.size() == 1 ? io::kGgmlF32 : io::kGgmlBF16) << t.name;
  // bf16 of the f16 inputs, rounded by core's converter.
  const std::vector<float> x = source_f32("blk.1.ffn_down.weight");
  const auto got = out.tensor_data(*out.find_tensor("blk.1.ffn_down.weight"));
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, got.data() + 2 * i, 2);
    ASSERT_EQ(h, f32_to_bf16(x[i])) << i;
  }
  // Norms copied byte for byte.
  const auto norm = out.tensor_data(*out.find_tensor("blk.0.ffn_norm.weight"));
  const auto& src_norm = src_[5].bytes;
  ASSERT_EQ(src_[5].name, "blk.0.ffn_norm.weight");
  EXPECT_TRUE(std::equal(norm.begin(), norm.end(), src_norm.begin(), src_norm.end()));

  // Metadata: the input's keys in order, quantization_version and file_type moved to the end, then calq's.
  std::vector<std::string> keys;
  for (const auto& [k, v] : out.metadata()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"general.architecture", "general.name", "llama.block_count",
                                            "llama.attention.head_count", "llama.attention.head_count_kv",
                                            "tokenizer.ggml.model", "general.quantization_version",
                                            "general.file_type", "calq.version", "calq.recipe"}));
  EXPECT_EQ(out.get("general.file_type").as_int("t"), 32);  // llama.cpp's LLAMA_FTYPE_MOSTLY_BF16
  EXPECT_EQ(out.get("calq.recipe").as_string("t"), "mix=bf16");
  EXPECT_FALSE(out.get("calq.version").as_string("t").empty());
}

TEST_F(GgufQuantize, Q4KMIsTheSameForAnyThreadCountAndMatchesTheReferenceEncoders) {
  constexpr uint32_t kQ4K = 12, kQ6K = 14;
  if (!have_types({kQ4K, kQ6K})) GTEST_SKIP() << "q4_K/q6_K formats not registered in this build";
  const io::GgufFile in = io::GgufFile::open(dir_ / "in.gguf");
  for (size_t threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    quantize_gguf(in, dir_ / ("out" + std::to_string(threads) + ".gguf"), {.mix = &mix_by_name("q4_k_m")}, pool);
  }
  const auto one = MappedFile::open(dir_ / "out1.gguf");
  for (const char* other : {"out2.gguf", "out3.gguf"}) {
    const auto f = MappedFile::open(dir_ / other);
    EXPECT_TRUE(std::equal(one->bytes().begin(), one->bytes().end(), f->bytes().begin(), f->bytes().end())) << other;
  }
  const io::GgufFile out = io::GgufFile::open(dir_ / "out1.gguf");
  // 2 layers: llama.cpp's use_more_bits holds for layer 1 only (i >= 7n/8; n/8 = 0), so attn_v and
  // ffn_down of block 1 get Q6_K and block 0 keeps Q4_K.
  EXPECT_EQ(out.find_tensor("blk.0.attn_v.weight")->type, kQ4K);
  EXPECT_EQ(out.find_tensor("blk.0.ffn_down.weight")->type, kQ4K);
  EXPECT_EQ(out.find_tensor("blk.1.attn_v.weight")->type, kQ6K);
  EXPECT_EQ(out.find_tensor("blk.1.ffn_down.weight")->type, kQ6K);
  EXPECT_EQ(out.find_tensor("blk.1.attn_q.weight")->type, kQ4K);
  EXPECT_EQ(out.find_tensor("token_embd.weight")->type, kQ6K);
  EXPECT_EQ(out.get("general.file_type").as_int("t"), 15);
  expect_reference_bytes(out, nullptr);
}

TEST_F(GgufQuantize, ImatrixEntriesReachTheEncoders) {
  constexpr uint32_t kQ4K = 12, kQ6K = 14;
  if (!have_types({kQ4K, kQ6K})) GTEST_SKIP() << "q4_K/q6_K formats not registered in this build";
  Imatrix im{.path = "test.imatrix"};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.01f, 4.0f);
  for (const SourceTensor& s : src_) {
    if (s.ne.size() < 2 || s.name == "token_embd.weight") continue;
    ImatrixEntry e{.ncall = 1};
    for (int64_t j = 0; j < s.ne[0]; ++j) e.values.push_back(u(rng));
    im.entries.emplace(s.name, std::move(e));
  }
  const io::GgufFile in = io::GgufFile::open(dir_ / "in.gguf");
  ThreadPool pool(2);
  const QuantizeGgufResult r =
      quantize_gguf(in, dir_ / "out.gguf", {.mix = &mix_by_name("q4_k_m"), .imatrix = &im}, pool);
  EXPECT_EQ(r.n_with_importance, 7 * kLayers);
  const io::GgufFile out = io::GgufFile::open(dir_ / "out.gguf");
  expect_reference_bytes(out, &im);
  EXPECT_EQ(out.get("calq.recipe").as_string("t"), "mix=q4_k_m;imatrix=test.imatrix");
}

TEST_F(GgufQuantize, ImatrixOfTheWrongLengthIsAnErrorAndNoFileAppears) {
  Imatrix im{.path = "short.imatrix"};
  im.entries.emplace("blk.0.attn_q.weight", ImatrixEntry{.ncall = 1, .values = std::vector<float>(10, 1.0f)});
  const io::GgufFile in = io::GgufFile::open(dir_ / "in.gguf");
  ThreadPool pool(1);
  try {
    quantize_gguf(in, dir_ / "out.gguf", {.mix = &mix_by_name("bf16"), .imatrix = &im}, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.weight"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out.gguf"));
}

TEST_F(GgufQuantize, QuantizedInputIsRefusedNamingTheTensor) {
  // A Q8_0 tensor (34-byte blocks of 32): calq does not requantize.
  std::vector<std::byte> q8(34 * (kHidden / 32) * 4);
  const std::vector<io::GgufWriteTensor> w = {
      {.name = "blk.0.attn_q.weight", .ne = {kHidden, 4}, .type = 8, .data = q8}};
  io::write_gguf(dir_ / "q8.gguf", make_metadata(), w);
  const io::GgufFile in = io::GgufFile::open(dir_ / "q8.gguf");
  ThreadPool pool(1);
  try {
    quantize_gguf(in, dir_ / "out.gguf", {.mix = &mix_by_name("bf16")}, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Q8_0"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out.gguf"));
}

// End to end on the reference model: calq's Q4_K_M file has llama.cpp's layout and types, and
// its weights are no further from the F16 originals than llama-quantize's (summed squared error,
// each tensor weighted equally per element; with the imatrix, weighted by it).
void check_q4km_against_llama_cpp(bool with_imatrix) {
  const std::string peer_rel = std::string("peer-tests/llama.cpp-quants/calq-ref-llama-Q4_K_M") +
                               (with_imatrix ? "-imatrix" : "") + ".gguf";
  const char* kImatrix = "peer-tests/llama.cpp-quants/imatrix-calib.dat";
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  CALQ_REQUIRE_SHARED(peer_rel);
  CALQ_REQUIRE_SHARED(kImatrix);
  if (!have_types({12, 14})) GTEST_SKIP() << "q4_K/q6_K formats not registered in this build";
  const auto dir = calq::testing::temp_dir("ref_q4km");
  const io::GgufFile src = io::GgufFile::open(calq::testing::shared_dir() / "models/calq-ref-llama-f16.gguf");
  const io::GgufFile peer = io::GgufFile::open(calq::testing::shared_dir() / peer_rel);
  const Imatrix im = read_imatrix(calq::testing::shared_dir() / kImatrix);
  ThreadPool pool(2);
  const QuantizeGgufResult r = quantize_gguf(
      src, dir / "q.gguf", {.mix = &mix_by_name("q4_k_m"), .imatrix = with_imatrix ? &im : nullptr}, pool);
  EXPECT_EQ(r.n_with_importance, with_imatrix ? 42u : 0u);
  const io::GgufFile ours = io::GgufFile::open(dir / "q.gguf");
  ASSERT_EQ(ours.tensors().size(), peer.tensors().size());
  double err_ours = 0, err_peer = 0;
  for (size_t i = 0; i < ours.tensors().size(); ++i) {
    const io::GgufTensorInfo& a = ours.tensors()[i];
    const io::GgufTensorInfo& b = peer.tensors()[i];
    ASSERT_EQ(a.name, b.name);
    ASSERT_EQ(a.type, b.type) << a.name;
    ASSERT_EQ(a.size_bytes, b.size_bytes) << a.name;
    if (a.ne.size() < 2) continue;
    const Format& f = *format_by_ggml_type(a.type);
    const int64_t rows = a.ne[1], cols = a.ne[0];
    std::vector<float> x(static_cast<size_t>(rows * cols)), ya(x.size()), yb(x.size());
    convert_to_f32_scalar(DType::kF16, src.tensor_data(*src.find_tensor(a.name)).data(), x.data(), x.size());
    f.dequantize(pool, ours.tensor_data(a).data(), rows, cols, ya.data());
    f.dequantize(pool, peer.tensor_data(b).data(), rows, cols, yb.data());
    const ImatrixEntry* e = with_imatrix ? im.find(a.name) : nullptr;
    double ta = 0, tb = 0;
    for (size_t k = 0; k < x.size(); ++k) {
      const double w = e != nullptr ? e->values[k % static_cast<size_t>(cols)] : 1.0;
      ta += w * (x[k] - ya[k]) * (x[k] - ya[k]);
      tb += w * (x[k] - yb[k]) * (x[k] - yb[k]);
    }
    err_ours += ta / static_cast<double>(x.size());
    err_peer += tb / static_cast<double>(x.size());
  }
  std::printf("summed per-tensor %sMSE: calq %.6g, llama.cpp %.6g (ratio %.4f)\n", with_imatrix ? "imatrix-weighted " : "",
              err_ours, err_peer, err_ours / err_peer);
  EXPECT_LE(err_ours, err_peer);
  std::filesystem::remove_all(dir);
}

TEST(RefModelVsLlamaCpp, Q4KMErrorNoWorseThanLlamaQuantize) { check_q4km_against_llama_cpp(false); }
TEST(RefModelVsLlamaCpp, Q4KMWithImatrixErrorNoWorseThanLlamaQuantize) { check_q4km_against_llama_cpp(true); }

}  // namespace
}  // namespace calq::pipeline
