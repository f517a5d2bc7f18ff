// KV-cache quantization (model/kv_cache.h): token-by-token encoding equals the format's own
// round trip, never looks at other tokens (a prefix gives the same logits as the whole sequence),
// does not depend on the thread count, costs more at fewer bits, and bad formats are errors.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "core/error.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

std::vector<float> random_rows(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  v[5] = 40.0f;  // an outlier in token 0: must not change any other token's values
  return v;
}

TEST(KvCache, EachTokenIsTheFormatsOwnRoundTrip) {
  ThreadPool pool(2);
  const int64_t seq = 37, heads = 2, hd = 64;
  for (const char* name : {"int8-pc-sym", "q8_0", "q4_0", "int4-g32-sym", "fp8-e4m3", "fp8-e4m3-pt"}) {
    SCOPED_TRACE(name);
    const Format& f = format_by_name(name);
    const std::vector<float> x = random_rows(seq * heads * hd, 3);
    std::vector<float> got = x;
    quantize_kv_rows(f, got.data(), seq, heads, hd, pool);
    std::vector<std::byte> code(f.tensor_bytes(heads, hd));
    std::vector<float> want(static_cast<size_t>(heads * hd));
    double err = 0;
    for (int64_t t = 0; t < seq; ++t) {
      const float* row = x.data() + t * heads * hd;
      f.quantize_reference(row, heads, hd, code);
      f.dequantize_rows_reference(code.data(), heads, hd, 0, heads, want.data());
      for (int64_t i = 0; i < heads * hd; ++i) {
        ASSERT_EQ(got[static_cast<size_t>(t * heads * hd + i)], want[static_cast<size_t>(i)]) << "token " << t;
        err += std::fabs(row[i] - want[static_cast<size_t>(i)]);
      }
    }
    EXPECT_GT(err, 0.0);  // it did quantize
  }
}

TEST(KvCache, ThreadCountDoesNotChangeTheValues) {
  ThreadPool one(1), two(2);
  const std::vector<float> x = random_rows(300 * 128, 4);
  std::vector<float> a = x, b = x;
  quantize_kv_rows(format_by_name("q4_0"), a.data(), 300, 2, 64, one);
  quantize_kv_rows(format_by_name("q4_0"), b.data(), 300, 2, 64, two);
  EXPECT_EQ(a, b);
}

double max_abs_diff(const Tensor& a, const Tensor& b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(std::fabs(a.f32()[i] - b.f32()[i])));
  return m;
}

TEST(KvCache, ForwardIsCausalAndCostsMoreAtFewerBits) {
  ThreadPool pool(2);
  const auto dir = testing::temp_dir("kv_cache");
  Model m = testutil::load_tiny_model(dir / "hf", {.tied = true}, pool);
  const int64_t vocab = m.config.vocab_size;
  const std::vector<int32_t> ids = testutil::test_token_ids(40, vocab);
  const Tensor fp = forward(m, ids, pool);
  const double fp_prefix_diff = max_abs_diff(forward(m, std::span(ids).first(17), pool), fp, 17 * vocab);
  double prev = 0;
  for (const char* name : {"int8-pc-sym", "fp8-e4m3", "int4-pc-sym", "int2-pc-sym"}) {  // fewer bits down the list
    SCOPED_TRACE(name);
    m.config.kv_cache = &format_by_name(name);
    const Tensor full = forward(m, ids, pool);
    const Tensor prefix = forward(m, std::span(ids).first(17), pool);
    // A cache fills token by token: the first 17 positions cannot see tokens 17 and later. The
    // two passes differ only by float rounding (other sgemm shapes), far below the cache's error.
    const double causal = max_abs_diff(prefix, full, 17 * vocab);
    const double d = max_abs_diff(full, fp, 40 * vocab);
    EXPECT_LE(causal, fp_prefix_diff * 4 + 1e-6);
    EXPECT_GT(d, 100 * causal);
    EXPECT_GT(d, prev);
    prev = d;
  }
  ThreadPool one(1);
  m.config.kv_cache = &format_by_name("int4-pc-sym");
  EXPECT_EQ(max_abs_diff(forward(m, ids, one), forward(m, ids, pool), 40 * vocab), 0.0);
  std::filesystem::remove_all(dir);
}

TEST(KvCache, NamesAndBadFormats) {
  EXPECT_EQ(kv_cache_format_by_name("f32"), nullptr);
  EXPECT_EQ(kv_cache_format_by_name("none"), nullptr);
  EXPECT_EQ(kv_cache_format_by_name("int8")->name(), "int8-pc-sym");
  EXPECT_EQ(kv_cache_format_by_name("int4")->name(), "int4-g32-sym");
  EXPECT_EQ(kv_cache_format_by_name("fp8")->name(), "fp8-e4m3");
  EXPECT_EQ(kv_cache_format_by_name("q8_0")->name(), "q8_0");
  EXPECT_THROW(kv_cache_format_by_name("int9"), Error);
  ModelConfig c = testutil::tiny_config(true);  // head_dim 8: no room for a 32-value block
  try {
    check_kv_cache_format(format_by_name("q8_0"), c);
    FAIL() << "q8_0 accepted for head_dim 8";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(check_kv_cache_format(format_by_name("int8-pc-sym"), c));
}

}  // namespace
}  // namespace calq::model
