// LoRA adapters in a calq GGUF model file (gguf_lora.h): the round trip (bit-exact factors,
// the same logits, B's rows permuted in the file where its base's are), what `calq check` says,
// and the loader's refusals of malformed adapter tensors.
#include "model/gguf_lora.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "io/gguf_check.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

using calq::testing::error_of;

LoraAdapter random_adapter(int64_t rank, int64_t in, int64_t out, double alpha, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.05f);
  Tensor a = Tensor::zeros(DType::kF32, {rank, in}), b = Tensor::zeros(DType::kF32, {out, rank});
  for (int64_t i = 0; i < a.numel(); ++i) a.mutable_f32()[i] = g(rng);
  for (int64_t i = 0; i < b.numel(); ++i) b.mutable_f32()[i] = g(rng);
  return LoraAdapter::make(std::move(a), std::move(b), alpha, in, out, "test");
}

// The tiny model (dense F32) with adapters on q and k of layer 0 (ranks 3 and 5) and on down of
// layer 1 (rank 2); with `quantize_q`, layer 0's q in a calq-specific format (rows not permuted).
Model model_with_adapters(const std::string& dir, ThreadPool& pool, bool quantize_q = false) {
  Model m = testutil::load_tiny_model(testing::temp_dir(dir), {.tied = true, .layers = 2}, pool);
  m.source.clear();  // no tokenizer to carry
  LinearWeight& q = m.layers[0].linear(TensorRole::kAttnQ);
  if (quantize_q) {
    const Tensor d = q.to_dense(pool);
    q = QuantizedTensor::quantize(pool, format_by_name("int4-g32-asym"), d.f32(), d.dim(0), d.dim(1), {});
  }
  const auto add = [&](int64_t layer, TensorRole role, int64_t rank, uint32_t seed) {
    const LinearWeight& w = m.layers[static_cast<size_t>(layer)].linear(role);
    m.layers[static_cast<size_t>(layer)].adapter_slot(role) = random_adapter(rank, w.cols(), w.rows(), 4.0, seed);
  };
  add(0, TensorRole::kAttnQ, 3, 1);
  add(0, TensorRole::kAttnK, 5, 2);
  add(1, TensorRole::kMlpDown, 2, 3);
  return m;
}

bool same_factors(const LoraAdapter* x, const LoraAdapter* y) {
  if (x == nullptr || y == nullptr) return x == y;
  const auto same = [](const Tensor& s, const Tensor& t) {
    return s.shape() == t.shape() && std::memcmp(s.f32(), t.f32(), s.nbytes()) == 0;
  };
  return same(x->a(), y->a()) && same(x->b(), y->b()) && x->alpha() == y->alpha();
}

TEST(GgufLora, RoundTripKeepsAdaptersAndLogits) {
  ThreadPool pool(2);
  for (const bool quantize_q : {false, true}) {
    SCOPED_TRACE(quantize_q ? "calq-specific q" : "float q");
    const Model m = model_with_adapters("lora_rt", pool, quantize_q);
    const auto dir = testing::temp_dir("lora_rt_file");
    write_gguf_model(m, dir / "m.gguf", {}, pool);
    const io::GgufFile file = io::GgufFile::open(dir / "m.gguf");
    ASSERT_NE(file.find(kCalqRequiresCalqKey), nullptr);
    const io::GgufValue* alpha = file.find(kCalqLoraAlphaKey);
    ASSERT_NE(alpha, nullptr);
    EXPECT_EQ(alpha->f, 4.0);
    const io::GgufTensorInfo* qa = file.find_tensor("blk.0.attn_q.weight.lora_a");
    const io::GgufTensorInfo* qb = file.find_tensor("blk.0.attn_q.weight.lora_b");
    ASSERT_NE(qa, nullptr);
    ASSERT_NE(qb, nullptr);
    EXPECT_EQ(qa->type, io::kGgmlF32);
    EXPECT_EQ(qa->ne, (std::vector<int64_t>{32, 3}));  // {in, rank}
    EXPECT_EQ(qb->ne, (std::vector<int64_t>{3, 32}));  // {rank, out}
    EXPECT_NE(file.find_tensor("blk.1.ffn_down.weight.lora_b"), nullptr);
    EXPECT_EQ(file.find_tensor("blk.1.attn_q.weight.lora_a"), nullptr);
    // B's rows: permuted for llama.cpp's rotary layout as the float base is, as stored for a
    // calq-specific base.
    const LoraAdapter& a = *m.layers[0].adapter(TensorRole::kAttnQ);
    std::vector<float> want(static_cast<size_t>(a.b().numel()));
    if (quantize_q) {
      std::copy_n(a.b().f32(), want.size(), want.data());
    } else {
      permute_qk_rows(a.b().f32(), want.data(), m.config.num_heads, m.config.head_dim, a.rank());
    }
    EXPECT_EQ(std::memcmp(file.tensor_data(*qb).data(), want.data(), want.size() * sizeof(float)), 0);

    const Model back = load_gguf_model(dir / "m.gguf", pool);
    for (size_t l = 0; l < m.layers.size(); ++l)
      for (const TensorRole role : kLayerLinearRoles)
        EXPECT_TRUE(same_factors(m.layers[l].adapter(role), back.layers[l].adapter(role))) << l << " " << role_name(role);
    EXPECT_EQ(back.storage_bytes(), m.storage_bytes());
    EXPECT_EQ(back.bits_per_weight(), m.bits_per_weight());
    const auto ids = testutil::test_token_ids(17, m.config.vocab_size);
    const Tensor x = forward(back, ids, pool), y = forward(m, ids, pool);
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.f32(), y.f32(), x.nbytes()), 0);

    // `calq check`: a calq-only file, one finding per adapter tensor.
    const io::GgufCheckReport report = io::check_gguf_file(dir / "m.gguf");
    EXPECT_TRUE(report.calq_only);
    EXPECT_TRUE(std::any_of(report.findings.begin(), report.findings.end(), [](const io::GgufFinding& f) {
      return f.where.empty() && f.message.find("6 LoRA adapter tensors") != std::string::npos;
    }));
    EXPECT_TRUE(std::any_of(report.findings.begin(), report.findings.end(), [](const io::GgufFinding& f) {
      return f.where == "blk.0.attn_k.weight.lora_b" && f.message.find("--lora") != std::string::npos;
    }));
    std::filesystem::remove_all(dir);
  }
}

TEST(GgufLora, DifferentAlphasAreRefusedBeforeWriting) {
  ThreadPool pool(1);
  Model m = model_with_adapters("lora_alpha", pool);
  const LinearWeight& v = m.layers[1].linear(TensorRole::kAttnV);
  m.layers[1].adapter_slot(TensorRole::kAttnV) = random_adapter(2, v.cols(), v.rows(), 8.0, 9);
  const auto dir = testing::temp_dir("lora_alpha_file");
  ErrorKind kind{};
  const std::string e = error_of([&] { write_gguf_model(m, dir / "m.gguf", {}, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported) << e;
  EXPECT_NE(e.find("different alphas"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir / "m.gguf"));
  std::filesystem::remove_all(dir);
}

struct OwnedTensor {
  std::string name;
  std::vector<int64_t> ne;
  uint32_t type;
  std::vector<std::byte> bytes;
};

TEST(GgufLora, LoaderRefusesMalformedAdapters) {
  ThreadPool pool(1);
  const Model m = model_with_adapters("lora_hostile", pool);
  const auto dir = testing::temp_dir("lora_hostile_files");
  const auto good = dir / "good.gguf";
  write_gguf_model(m, good, {}, pool);
  const io::GgufFile src = io::GgufFile::open(good);
  using Edit = std::function<void(std::vector<OwnedTensor>&, io::GgufMetadata&)>;
  const auto expect_format_error = [&](const std::string& what, const Edit& edit,
                                       const std::vector<std::string>& needles) {
    SCOPED_TRACE(what);
    std::vector<OwnedTensor> owned;
    for (const io::GgufTensorInfo& t : src.tensors()) {
      const auto data = src.tensor_data(t);
      owned.push_back({t.name, t.ne, t.type, std::vector<std::byte>(data.begin(), data.end())});
    }
    io::GgufMetadata meta = src.metadata();
    edit(owned, meta);
    std::vector<io::GgufWriteTensor> tensors;
    for (const OwnedTensor& t : owned) tensors.push_back({.name = t.name, .ne = t.ne, .type = t.type, .data = t.bytes});
    const auto path = dir / "bad.gguf";
    io::write_gguf(path, meta, tensors);
    ErrorKind kind{};
    const std::string msg = error_of([&] { load_gguf_model(path, pool); }, &kind);
    ASSERT_FALSE(msg.empty()) << "no error";
    EXPECT_EQ(kind, ErrorKind::kFormat) << msg;
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  };
  const auto find = [](std::vector<OwnedTensor>& ts, const std::string& name) -> OwnedTensor& {
    return *std::find_if(ts.begin(), ts.end(), [&](const OwnedTensor& t) { return t.name == name; });
  };
  const auto erase = [](std::vector<OwnedTensor>& ts, const std::string& name) {
    ts.erase(std::find_if(ts.begin(), ts.end(), [&](const OwnedTensor& t) { return t.name == name; }));
  };
  const auto drop_key = [](io::GgufMetadata& meta, std::string_view key) {
    meta.erase(std::find_if(meta.begin(), meta.end(), [&](const auto& kv) { return kv.first == key; }));
  };
  const std::string a = "blk.0.attn_k.weight.lora_a", b = "blk.0.attn_k.weight.lora_b";  // rank 5, 32 -> 16

  expect_format_error("A's input width", [&](auto& ts, auto&) {
    OwnedTensor& t = find(ts, a);
    t.ne = {16, 10};
  }, {a, "{16, 10}", "takes 32 inputs"});
  expect_format_error("rank mismatch", [&](auto& ts, auto&) {
    OwnedTensor& t = find(ts, b);
    t.ne = {4, 16};
    t.bytes.resize(4 * 16 * sizeof(float));
  }, {b, "rank 5", "{5, 16}"});
  expect_format_error("B's output height", [&](auto& ts, auto&) {
    OwnedTensor& t = find(ts, b);
    t.ne = {5, 8};
    t.bytes.resize(5 * 8 * sizeof(float));
  }, {b, "16 outputs"});
  expect_format_error("not F32", [&](auto& ts, auto&) {
    OwnedTensor& t = find(ts, a);
    t.type = io::kGgmlF16;
    t.bytes.resize(t.bytes.size() / 2);
  }, {a, "F32", "F16"});
  expect_format_error("NaN", [&](auto& ts, auto&) {
    const float nan = std::nanf("");
    std::memcpy(find(ts, b).bytes.data() + 7 * sizeof(float), &nan, sizeof(float));
  }, {b, "non-finite", "flat index 7"});
  expect_format_error("no B", [&](auto& ts, auto&) { erase(ts, b); }, {a, "without its partner '" + b + "'"});
  expect_format_error("no A", [&](auto& ts, auto&) { erase(ts, a); }, {b, "without its partner '" + a + "'"});
  expect_format_error("not a linear", [&](auto& ts, auto&) {
    find(ts, a).name = "blk.0.attn_norm.weight.lora_a";
    find(ts, b).name = "blk.0.attn_norm.weight.lora_b";
  }, {"blk.0.attn_norm.weight.lora_", "not a layer linear weight"});
  expect_format_error("layer out of range", [&](auto& ts, auto&) {
    find(ts, a).name = "blk.7.attn_k.weight.lora_a";
    find(ts, b).name = "blk.7.attn_k.weight.lora_b";
  }, {"blk.7.attn_k.weight.lora_", "not a layer linear weight"});
  expect_format_error("no alpha", [&](auto&, auto& meta) { drop_key(meta, kCalqLoraAlphaKey); },
                      {"no key 'calq.lora.alpha'"});
  expect_format_error("bad alpha", [&](auto&, auto& meta) {
    for (auto& [k, v] : meta)
      if (k == kCalqLoraAlphaKey) v = io::GgufValue::of_float32(-1.0f);
  }, {"calq.lora.alpha", "> 0"});
  expect_format_error("alpha without adapters", [&](auto& ts, auto&) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const OwnedTensor& t) { return is_lora_tensor_name(t.name); }),
             ts.end());
  }, {"calq.lora.alpha", "without any adapter tensor"});
  EXPECT_NO_THROW(load_gguf_model(good, pool));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
