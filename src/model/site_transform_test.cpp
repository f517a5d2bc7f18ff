#include "model/site_transform.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "io/gguf_check.h"
#include "model/decode.h"
#include "model/fold.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/rotate.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/random_data.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

using testing::error_of;

constexpr InputSite kLayerSites[] = {InputSite::kAttnIn, InputSite::kAttnOut, InputSite::kMlpIn, InputSite::kMlpDown};

// The logits of a model with transforms on every site must equal the original's to float
// rounding: max |Δ| ≤ kRelTol · max |logit|. A transformed product x̃·W̃ᵀ rounds x̃ in two float
// products of n2 and n1 terms and W̃ once (kron_transform_test.cpp bounds this): with the
// well-conditioned factors below that is a relative perturbation of order √(n1 + n2)·u ≈ 5e-7
// per product (u = 2⁻²⁴, n1 + n2 ≤ 80; the errors are not aligned), which the layers carry to the
// logits as they carry any reordering of float operations — the same size of change as the
// Hadamard rotation of this model, whose test (rotate_test.cpp) holds it to 1e-5.
constexpr double kRelTol = 1e-5;

Tensor square(int64_t n, const std::vector<float>& v) {
  Tensor t = Tensor::zeros(DType::kF32, {n, n});
  std::copy(v.begin(), v.end(), t.mutable_f32());
  return t;
}

// A = I + N(0, 0.2²/n1); B = diag(d)·(I + N(0, 0.2²/n2)) with d in [0.5, 2]: well conditioned but
// neither orthogonal nor close to the identity in scale, so a missing fold or a missing online
// step changes the logits by O(1).
KronTransform random_transform(int64_t width, uint32_t seed) {
  const KronShape s = kron_factors(width);
  const auto near_identity = [](int64_t n, uint32_t sd) {
    std::vector<float> v = testing::gaussian(static_cast<size_t>(n * n), sd, 0.2f / std::sqrt(static_cast<float>(n)));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i * n + i)] += 1.0f;
    return v;
  };
  std::vector<float> b = near_identity(s.n2, seed + 1);
  std::mt19937 gen(seed + 2);
  std::uniform_real_distribution<float> scale(0.5f, 2.0f);
  for (int64_t i = 0; i < s.n2; ++i) {
    const float d = scale(gen);
    for (int64_t j = 0; j < s.n2; ++j) b[static_cast<size_t>(i * s.n2 + j)] *= d;
  }
  return KronTransform::make(square(s.n1, near_identity(s.n1, seed)), square(s.n2, b), "test");
}

int64_t width_of(const Model& m, InputSite site) {
  return site_width(*find_site(block_topology(m.config), site), m.config);
}

void install_everywhere(Model& m, ThreadPool& pool, uint32_t seed) {
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    for (const InputSite site : kLayerSites) {
      set_site_transform(m, l, site, random_transform(width_of(m, site), seed++), pool);
    }
  }
}

double rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double max_abs = 0.0, max_diff = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(a.f32()[i])));
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(a.f32()[i]) - b.f32()[i]));
  }
  return max_diff / max_abs;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::equal(a.bytes().begin(), a.bytes().end(), b.bytes().begin());
}

Model reference_model(ThreadPool& pool) {
  return load_hf_model(testing::shared_dir() / "models/calq-ref-llama", pool);
}

// The tiny Qwen2 model (hidden 32 = 4 × 8, intermediate 48 = 6 × 8, biases), without a source
// folder (load_tiny_model removes it; a GGUF export then writes no tokenizer).
Model tiny_model(const std::string& tag, ThreadPool& pool) {
  Model m = testutil::load_tiny_model(testing::temp_dir(tag), {.tied = false, .model_type = "qwen2"}, pool);
  m.source.clear();
  return m;
}

// Every per-layer linear weight quantized to `format`.
void quantize_layers(Model& m, const char* format, ThreadPool& pool) {
  for (LayerWeights& l : m.layers) {
    for (const TensorRole role : kLayerLinearRoles) {
      const Tensor& w = l.linear(role).dense();
      l.linear(role) = QuantizedTensor::quantize(pool, format_by_name(format), w.f32(), w.dim(0), w.dim(1));
    }
  }
}

TEST(SiteTransform, ReferenceModelLogitsUnchanged) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  ThreadPool pool(2);
  const Model original = reference_model(pool);
  const auto ids = testutil::test_token_ids(64, original.config.vocab_size);
  const Tensor before = forward(original, ids, pool);
  Model t = original;  // shares tensors: the installer must not write into them
  install_everywhere(t, pool, 100);
  ASSERT_TRUE(t.has_transforms());
  EXPECT_FALSE(original.has_transforms());
  for (const InputSite site : kLayerSites) EXPECT_NE(t.layers[5].transform(site), nullptr);
  EXPECT_EQ(t.layers[0].transform(InputSite::kMlpDown)->n1(), 32);
  EXPECT_EQ(t.layers[0].transform(InputSite::kMlpDown)->n2(), 48);
  for (const TensorRole role : kLayerLinearRoles) {
    EXPECT_FALSE(same_bits(t.layers[3].linear(role).dense(), original.layers[3].linear(role).dense()));
  }
  const Tensor after = forward(t, ids, pool);
  const double rel = rel_diff(before, after);
  std::printf("calq-ref-llama, transforms on 24 sites: max |Δlogit| / max |logit| = %.2e\n", rel);
  EXPECT_LT(rel, kRelTol);
  EXPECT_TRUE(same_bits(forward(original, ids, pool), before));

  // A missing online step would not be rounding: drop one layer's mlp_down transform.
  Model broken = t;
  broken.layers[2].transforms[static_cast<size_t>(InputSite::kMlpDown)].reset();
  EXPECT_GT(rel_diff(before, forward(broken, ids, pool)), 1e-2);
}

// decode_step (one token at a time, apply_rows on one row) against forward on the whole sequence,
// with decode_test.cpp's tolerance.
TEST(SiteTransform, ReferenceModelDecodeMatchesForward) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  ThreadPool pool(2);
  Model m = reference_model(pool);
  install_everywhere(m, pool, 7);
  const int64_t T = 24, V = m.config.vocab_size;
  const auto ids = testutil::test_token_ids(T, V);
  const Tensor full = forward(m, ids, pool);
  DecodeCache cache(m.config, 1, T);
  std::vector<float> logits(static_cast<size_t>(V));
  double max_err = 0, max_abs = 0;
  for (int64_t t = 0; t < T; ++t) {
    decode_step(m, std::span<const int32_t>(&ids[static_cast<size_t>(t)], 1), cache, logits.data(), pool);
    for (int64_t i = 0; i < V; ++i) {
      max_err = std::max(max_err, static_cast<double>(std::fabs(logits[static_cast<size_t>(i)] - full.f32()[t * V + i])));
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(full.f32()[t * V + i])));
    }
  }
  EXPECT_GT(max_abs, 0.1);
  EXPECT_LT(max_err, 2e-5 * std::max(1.0, max_abs));
}

// The hook sees what the stored weights multiply: x·T, not x. Layer 0's attn_in input is the same
// norm output in both models, so the transformed one is exactly apply_rows of the original's; the
// later sites see inputs that differ by upstream rounding only.
TEST(SiteTransform, HookSeesTheTransformedInput) {
  ThreadPool pool(2);
  const Model original = tiny_model("kron_hook", pool);
  Model t = original;
  install_everywhere(t, pool, 3);
  const auto ids = testutil::test_token_ids(19, original.config.vocab_size);
  const auto capture = [&](const Model& m) {
    std::map<TensorRole, std::vector<float>> seen;
    const LinearHook hook = [&](const LinearInput& in) {
      if (in.layer == 0) seen[in.role].assign(in.x, in.x + in.rows * in.cols);
    };
    forward(m, ids, pool, &hook);
    return seen;
  };
  const auto plain = capture(original);
  const auto transformed = capture(t);
  const std::pair<TensorRole, InputSite> probes[] = {{TensorRole::kAttnQ, InputSite::kAttnIn},
                                                     {TensorRole::kAttnV, InputSite::kAttnIn},
                                                     {TensorRole::kAttnOut, InputSite::kAttnOut},
                                                     {TensorRole::kMlpUp, InputSite::kMlpIn},
                                                     {TensorRole::kMlpDown, InputSite::kMlpDown}};
  for (const auto& [role, site] : probes) {
    SCOPED_TRACE(std::string(role_name(role)));
    std::vector<float> want = plain.at(role);
    t.layers[0].transform(site)->apply_rows(want.data(), static_cast<int64_t>(ids.size()), pool);
    const std::vector<float>& got = transformed.at(role);
    ASSERT_EQ(got.size(), want.size());
    if (site == InputSite::kAttnIn) {
      EXPECT_EQ(got, want);
      continue;
    }
    double max_abs = 0, max_err = 0, moved = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(want[i])));
      max_err = std::max(max_err, static_cast<double>(std::fabs(got[i] - want[i])));
      moved = std::max(moved, static_cast<double>(std::fabs(got[i] - plain.at(role)[i])));
    }
    EXPECT_LT(max_err, 1e-5 * max_abs);
    EXPECT_GT(moved, 1e-2 * max_abs);  // x·T is not x
  }
}

TEST(SiteTransform, SameBitsForAnyThreadCount) {
  ThreadPool one(1), three(3);
  Model a = tiny_model("kron_threads_a", one);
  Model b = tiny_model("kron_threads_b", three);
  install_everywhere(a, one, 11);
  install_everywhere(b, three, 11);
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (const TensorRole role : kLayerLinearRoles) {
      EXPECT_TRUE(same_bits(a.layers[l].linear(role).dense(), b.layers[l].linear(role).dense()));
    }
  }
  const auto ids = testutil::test_token_ids(37, a.config.vocab_size);
  EXPECT_TRUE(same_bits(forward(a, ids, one), forward(b, ids, three)));
}

// Weights are quantized after the fold. With int4 the transformed model loses about as much as
// the plain one (the transforms here are random, not trained: no better, but not broken either),
// and it round-trips through GGUF (calq-specific I8 weights plus the F32 factors) bit for bit.
TEST(SiteTransform, ReferenceModelQuantizesAfterTheFold) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  ThreadPool pool(2);
  const Model original = reference_model(pool);
  Model t = original;
  install_everywhere(t, pool, 40);
  const auto ids = testutil::test_token_ids(48, original.config.vocab_size);
  const Tensor ref = forward(original, ids, pool);
  Model q_plain = original, q_t = t;
  quantize_layers(q_plain, "int4-g32-asym", pool);
  quantize_layers(q_t, "int4-g32-asym", pool);
  ASSERT_TRUE(q_t.layers[0].wq.is_quantized());
  const Tensor out_t = forward(q_t, ids, pool);
  for (int64_t i = 0; i < out_t.numel(); ++i) ASSERT_TRUE(std::isfinite(out_t.f32()[i])) << i;
  const double err_plain = rel_diff(ref, forward(q_plain, ids, pool));
  const double err_t = rel_diff(ref, out_t);
  std::printf("int4-g32-asym: max |Δlogit| / max |logit| plain %.3f, with transforms %.3f\n", err_plain, err_t);
  EXPECT_GT(err_t, kRelTol);  // it was quantized
  EXPECT_LT(err_t, 2.0 * err_plain);

  const auto path = testing::temp_dir("kron_quant_gguf") / "m.gguf";
  write_gguf_model(q_t, path, {}, pool);
  const Model back = load_gguf_model(path, pool);
  EXPECT_TRUE(same_bits(forward(back, ids, pool), out_t));
  std::filesystem::remove_all(path.parent_path());
}

TEST(SiteTransform, GgufRoundTripKeepsTransformsAndLogits) {
  ThreadPool pool(2);
  Model m = tiny_model("kron_gguf", pool);
  install_everywhere(m, pool, 5);
  // One site without a transform: nothing is written for it.
  m.layers[1].transforms[static_cast<size_t>(InputSite::kAttnOut)].reset();
  const auto dir = testing::temp_dir("kron_gguf_file");
  write_gguf_model(m, dir / "m.gguf", {}, pool);
  const io::GgufFile file = io::GgufFile::open(dir / "m.gguf");
  const io::GgufValue* requires_calq = file.find(kCalqRequiresCalqKey);
  ASSERT_NE(requires_calq, nullptr);
  EXPECT_TRUE(requires_calq->as_bool("t"));
  const io::GgufTensorInfo* a = file.find_tensor("blk.1.calq_kron.mlp_down.a");
  const io::GgufTensorInfo* b = file.find_tensor("blk.1.calq_kron.mlp_down.b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->type, io::kGgmlF32);
  EXPECT_EQ(a->ne, (std::vector<int64_t>{6, 6}));  // 48 = 6 × 8
  EXPECT_EQ(b->ne, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(file.find_tensor("blk.1.calq_kron.attn_out.a"), nullptr);

  const Model back = load_gguf_model(dir / "m.gguf", pool);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (const InputSite site : kLayerSites) {
      const KronTransform* want = m.layers[l].transform(site);
      const KronTransform* got = back.layers[l].transform(site);
      ASSERT_EQ(want == nullptr, got == nullptr);
      if (want != nullptr) {
        EXPECT_TRUE(got->same_values(*want));
      }
    }
  }
  const auto ids = testutil::test_token_ids(21, m.config.vocab_size);
  // F32 tensors round-trip exactly, so the logits are the same bits.
  EXPECT_TRUE(same_bits(forward(m, ids, pool), forward(back, ids, pool)));

  // `calq check` reads it: a calq-only file, with a finding per factor tensor, and no exception.
  const io::GgufCheckReport report = io::check_gguf_file(dir / "m.gguf");
  EXPECT_TRUE(report.calq_only);
  EXPECT_TRUE(std::any_of(report.findings.begin(), report.findings.end(), [](const io::GgufFinding& f) {
    return f.where.empty() && f.message.find("14 online transform factors") != std::string::npos;
  }));
  const auto finding = std::find_if(report.findings.begin(), report.findings.end(),
                                    [](const io::GgufFinding& f) { return f.where == "blk.0.calq_kron.attn_in.a"; });
  ASSERT_NE(finding, report.findings.end());
  EXPECT_NE(finding->message.find("transform"), std::string::npos) << finding->message;
  // The summary `calq inspect` prints lists them too.
  const ModelSummary summary = inspect_gguf_model(dir / "m.gguf");
  EXPECT_TRUE(std::any_of(summary.tensors.begin(), summary.tensors.end(),
                          [](const SourceTensor& s) { return s.name == "blk.1.calq_kron.mlp_in.b"; }));
  std::filesystem::remove_all(dir);
}

// One tensor of a GGUF file, owned, for rewriting files.
struct OwnedTensor {
  std::string name;
  std::vector<int64_t> ne;
  uint32_t type;
  std::vector<std::byte> bytes;
};

TEST(SiteTransform, GgufLoaderRefusesMalformedFactors) {
  ThreadPool pool(1);
  Model m = tiny_model("kron_hostile", pool);
  install_everywhere(m, pool, 9);
  const auto dir = testing::temp_dir("kron_hostile_files");
  const auto good = dir / "good.gguf";
  write_gguf_model(m, good, {}, pool);
  const io::GgufFile src = io::GgufFile::open(good);
  const auto expect_format_error = [&](const std::string& what, const std::function<void(std::vector<OwnedTensor>&)>& edit,
                                       const std::vector<std::string>& needles) {
    SCOPED_TRACE(what);
    std::vector<OwnedTensor> owned;
    for (const io::GgufTensorInfo& t : src.tensors()) {
      const auto data = src.tensor_data(t);
      owned.push_back({t.name, t.ne, t.type, std::vector<std::byte>(data.begin(), data.end())});
    }
    edit(owned);
    std::vector<io::GgufWriteTensor> tensors;
    for (const OwnedTensor& t : owned) tensors.push_back({.name = t.name, .ne = t.ne, .type = t.type, .data = t.bytes});
    const auto path = dir / "bad.gguf";
    io::write_gguf(path, src.metadata(), tensors);
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
  const std::string a0 = "blk.0.calq_kron.attn_in.a", b0 = "blk.0.calq_kron.attn_in.b";  // 4 × 8 = 32

  expect_format_error("width", [&](auto& ts) {
    OwnedTensor& a = find(ts, a0);
    a.ne = {2, 2};
    a.bytes.resize(4 * sizeof(float));
  }, {a0, b0, "width 2 × 8 = 16", "site attn_in has width 32"});
  expect_format_error("not square", [&](auto& ts) {
    OwnedTensor& a = find(ts, a0);
    a.ne = {8, 2};
  }, {a0, "square F32"});
  expect_format_error("not F32", [&](auto& ts) {
    OwnedTensor& a = find(ts, a0);
    a.type = io::kGgmlF16;
    a.bytes.resize(a.bytes.size() / 2);
  }, {a0, "square F32", "F16"});
  expect_format_error("no B", [&](auto& ts) { erase(ts, b0); }, {a0, "without its partner '" + b0 + "'"});
  expect_format_error("no A", [&](auto& ts) { erase(ts, a0); }, {b0, "without its partner '" + a0 + "'"});
  expect_format_error("NaN", [&](auto& ts) {
    const float nan = std::nanf("");
    std::memcpy(find(ts, b0).bytes.data() + 3 * sizeof(float), &nan, sizeof(float));
  }, {b0, "non-finite", "flat index 3"});
  expect_format_error("head_in", [&](auto& ts) {
    find(ts, a0).name = "blk.0.calq_kron.head_in.a";
    find(ts, b0).name = "blk.0.calq_kron.head_in.b";
  }, {"blk.0.calq_kron.head_in.a", "'head_in' is not an input site"});
  expect_format_error("unknown site", [&](auto& ts) { find(ts, a0).name = "blk.0.calq_kron.attn.a"; },
                      {"blk.0.calq_kron.attn.a", "'attn' is not an input site"});
  expect_format_error("layer out of range", [&](auto& ts) {
    find(ts, a0).name = "blk.2.calq_kron.attn_in.a";
    find(ts, b0).name = "blk.2.calq_kron.attn_in.b";
  }, {"blk.2.calq_kron.attn_in.a", "layer 2", "block_count is 2"});
  expect_format_error("factor name", [&](auto& ts) { find(ts, a0).name = "blk.0.calq_kron.attn_in.c"; },
                      {"blk.0.calq_kron.attn_in.c", "is not named blk.<layer>.calq_kron.<site>.a or .b"});
  expect_format_error("no layer", [&](auto& ts) { find(ts, a0).name = "calq_kron.attn_in.a"; },
                      {"'calq_kron.attn_in.a' is not named"});
  // The untouched file loads.
  EXPECT_NO_THROW(load_gguf_model(good, pool));
  std::filesystem::remove_all(dir);
}

TEST(SiteTransform, InstallerErrors) {
  ThreadPool pool(1);
  Model m = tiny_model("kron_errors", pool);
  const auto expect_error = [&](const std::function<void()>& fn, const std::vector<std::string>& needles) {
    ErrorKind kind{};
    const std::string msg = error_of(fn, &kind);
    ASSERT_FALSE(msg.empty()) << "no error";
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument) << msg;
    for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  };
  const LinearWeight wq = m.layers[0].wq;
  expect_error([&] { set_site_transform(m, 0, InputSite::kAttnIn, random_transform(48, 1), pool); },
               {"layer 0 site attn_in", "width 6 × 8 = 48 for a site of width 32"});
  expect_error([&] { set_site_transform(m, 2, InputSite::kAttnIn, random_transform(32, 1), pool); },
               {"layer 2 site attn_in", "2 layers"});
  expect_error([&] { set_site_transform(m, -1, InputSite::kAttnIn, random_transform(32, 1), pool); },
               {"layer -1 site attn_in"});
  expect_error([&] { set_site_transform(m, 0, InputSite::kHeadIn, random_transform(32, 1), pool); },
               {"layer 0 site head_in: not an input site of a llama decoder layer"});
  // A singular factor names the layer and the site.
  const Tensor zero = Tensor::zeros(DType::kF32, {6, 6});
  const KronTransform singular = KronTransform::make(zero, random_transform(64, 2).b(), "x");
  expect_error([&] { set_site_transform(m, 1, InputSite::kMlpDown, singular, pool); },
               {"layer 1 site mlp_down: transform factor A is singular"});
  // Nothing changed by the refusals.
  EXPECT_TRUE(m.layers[0].wq.same_storage(wq));
  EXPECT_FALSE(m.has_transforms());

  set_site_transform(m, 0, InputSite::kAttnIn, random_transform(32, 1), pool);
  EXPECT_FALSE(m.layers[0].wq.same_storage(wq));
  expect_error([&] { set_site_transform(m, 0, InputSite::kAttnIn, random_transform(32, 2), pool); },
               {"layer 0 site attn_in: the site already has a transform"});
  // A quantized consumer.
  const Tensor& up = m.layers[1].w_up.dense();
  m.layers[1].w_up = QuantizedTensor::quantize(pool, format_by_name("q8_0"), up.f32(), up.dim(0), up.dim(1));
  expect_error([&] { set_site_transform(m, 1, InputSite::kMlpIn, random_transform(32, 3), pool); },
               {"layer 1 site mlp_in", "model.layers.1.mlp.up_proj.weight", "q8_0", "before quantizing"});
  EXPECT_EQ(m.layers[1].transform(InputSite::kMlpIn), nullptr);
}

// What cannot work through a transform says so instead of computing something else.
TEST(SiteTransform, FoldAndRotateRefuseTransformedModels) {
  ThreadPool pool(1);
  Model m = tiny_model("kron_refuse", pool);
  set_site_transform(m, 1, InputSite::kMlpIn, random_transform(32, 1), pool);
  const std::vector<float> s(32, 2.0f);
  ErrorKind kind{};
  std::string msg = error_of([&] { fold_input_scales(m.layers[1], m.config, 1, InputSite::kMlpIn, s); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kUnsupported);
  EXPECT_NE(msg.find("layer 1: cannot fold input scales of site 'mlp_in'"), std::string::npos) << msg;
  // Other sites still fold.
  EXPECT_NO_THROW(fold_input_scales(m.layers[1], m.config, 1, InputSite::kAttnIn, s));
  msg = error_of([&] { rotate_model(m, {}, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(msg.find("online Kronecker transforms"), std::string::npos) << msg;
  EXPECT_FALSE(m.config.rotation);
}

}  // namespace
}  // namespace calq::model
