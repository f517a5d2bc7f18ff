// Contract test of FakeQuantizer over every registered format, plus the STE backward.
#include "grad/fake_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/grid.h"
#include "grad/fake_quant_int.h"

namespace calq::grad {
namespace {

constexpr int64_t kRows = 4, kCols = 256;

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> deq(ThreadPool& pool, const Format& f, const std::vector<std::byte>& bytes) {
  std::vector<float> out(static_cast<size_t>(kRows * kCols));
  f.dequantize(pool, bytes.data(), kRows, kCols, out.data());
  return out;
}

TEST(FakeQuant, EveryRegisteredFormatHasAPath) {
  for (const Format* f : all_formats()) EXPECT_TRUE(has_fake_quant(*f)) << f->name();
}

// For every format: Ŵ(W0) = deq(quantize(W0)); Ŵ(W) = deq(encode(W)) for other W; 1 vs 2 threads
// give identical Ŵ and mask; clipped elements (mask 0) are saturated (pushing them further out does
// not change Ŵ), and the mask is all ones where the format cannot clip.
TEST(FakeQuant, ContractOverEveryRegisteredFormat) {
  ThreadPool one(1), two(2);
  const auto w0 = gaussian(static_cast<size_t>(kRows * kCols), 11);
  const auto noise = gaussian(w0.size(), 12, 0.3f);
  for (const Format* f : all_formats()) {
    SCOPED_TRACE(f->name());
    ASSERT_TRUE(f->can_store(kRows, kCols));
    const QuantizeOptions opts{.tensor_name = "w"};
    std::vector<std::byte> bytes(f->tensor_bytes(kRows, kCols));
    f->quantize(one, w0.data(), kRows, kCols, bytes, opts);
    const auto expect = deq(one, *f, bytes);

    std::vector<float> got(w0.size()), got2(w0.size());
    std::vector<uint8_t> mask(w0.size()), mask2(w0.size());
    fake_quantize(one, *f, w0.data(), kRows, kCols, got.data(), mask.data(), opts);
    EXPECT_TRUE(same_bytes(got, expect)) << "fake_quantize != dequantize(quantize())";

    // Trained weights: moved, and scaled up so frozen ranges clip.
    std::vector<float> w(w0.size());
    for (size_t i = 0; i < w.size(); ++i) w[i] = 2.0f * w0[i] + noise[i];
    FakeQuantizer fq1(one, *f, w0.data(), kRows, kCols, opts), fq2(two, *f, w0.data(), kRows, kCols, opts);
    fq1.forward(one, w.data(), got.data(), mask.data());
    fq2.forward(two, w.data(), got2.data(), mask2.data());
    EXPECT_TRUE(same_bytes(got, got2)) << "1 vs 2 threads";
    EXPECT_EQ(mask, mask2) << "1 vs 2 threads";
    EXPECT_TRUE(same_bytes(deq(one, *f, fq1.encode(two, w.data())), got)) << "deq(encode(W)) != forward(W)";

    // Clipped elements are saturated: ten times further out, the same value, still clipped.
    const std::string& fam = f->traits().family;
    const bool frozen = fam == "int" || f->grid_codec() != nullptr;
    size_t clipped = 0;
    std::vector<float> pushed = w;
    for (size_t i = 0; i < w.size(); ++i) {
      if (mask[i] == 0) pushed[i] = 10.0f * w[i], ++clipped;
    }
    if (frozen) {
      std::vector<float> out(w.size());
      std::vector<uint8_t> m(w.size());
      fq1.forward(one, pushed.data(), out.data(), m.data());
      for (size_t i = 0; i < w.size(); ++i) {
        if (mask[i] == 0) {
          ASSERT_EQ(out[i], got[i]) << "element " << i << " is masked but not saturated";
          ASSERT_EQ(m[i], 0);
        }
      }
      // A frozen range cannot hold twice the weights it was chosen for.
      EXPECT_GT(clipped, 0u);
    } else if (fam == "nf4" || f->name() == "bf16" || f->name() == "f16") {
      EXPECT_EQ(clipped, 0u);
    }
    // Unclipped elements of a frozen int grid are within half a step of their value.
    if (fam == "int" && f->name().find("-g") != std::string::npos) {
      const int64_t group = f->traits().block_size;
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t g = 0; g < kCols / group; ++g) {
          float step = 0;  // the smallest nonzero spacing of the group's values = its scale
          for (int64_t j = 0; j < group; ++j) {
            const float a = got[static_cast<size_t>(r * kCols + g * group + j)];
            for (int64_t k = 0; k < group; ++k) {
              const float d = std::fabs(a - got[static_cast<size_t>(r * kCols + g * group + k)]);
              if (d > 0 && (step == 0 || d < step)) step = d;
            }
          }
          for (int64_t j = 0; j < group; ++j) {
            const size_t i = static_cast<size_t>(r * kCols + g * group + j);
            if (mask[i]) {
              ASSERT_LE(std::fabs(w[i] - got[i]), 0.5f * step * (1 + 1e-5f) + 1e-6f) << i;
            }
          }
        }
      }
    }
  }
}

TEST(FakeQuant, SteBackwardPassesOnlyInsideTheRange) {
  const std::vector<double> gy{1.0, -2.0, 3.0, 4.0};
  const std::vector<uint8_t> mask{1, 0, 1, 0};
  std::vector<double> gx(4, 99.0);
  ste_backward<double>(gy, mask, gx);
  EXPECT_EQ(gx, (std::vector<double>{1.0, 0.0, 3.0, 0.0}));
}

class OddFormat final : public RowFormat {
 public:
  const FormatTraits& traits() const override { return traits_; }

 protected:
  void quantize_row(const float*, int64_t, const float*, std::byte*) const override {}
  void dequantize_row(const std::byte*, int64_t, float*) const override {}

 private:
  FormatTraits traits_{.name = "odd8", .family = "odd", .block_size = 1, .block_bytes = 1};
};

TEST(FakeQuant, AFormatWithoutAPathIsAnErrorNamingIt) {
  ThreadPool pool(1);
  const OddFormat odd;
  EXPECT_FALSE(has_fake_quant(odd));
  const std::vector<float> w(8, 0.5f);
  try {
    FakeQuantizer fq(pool, odd, w.data(), 1, 8);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("'odd8'"), std::string::npos) << e.what();
  }
}

// spacing(): on the uniform grids, a quantized value plus its spacing rounds to itself plus the
// spacing (the next representable value; except at a block's top), and nothing lies between; formats
// without frozen parameters refuse it.
TEST(FakeQuant, SpacingIsTheGridStepWhereParametersAreFrozen) {
  ThreadPool pool(2);
  const auto w0 = gaussian(static_cast<size_t>(kRows * kCols), 13);
  int frozen = 0;
  for (const Format* f : all_formats()) {
    SCOPED_TRACE(f->name());
    FakeQuantizer fq(pool, *f, w0.data(), kRows, kCols, {.tensor_name = "blk.1.attn_k"});
    const bool has_params = is_int_format(*f) || f->grid_codec() != nullptr;
    if (!has_params) {
      try {
        fq.spacing(pool);
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
        EXPECT_NE(std::string(e.what()).find("blk.1.attn_k"), std::string::npos) << e.what();
      }
      continue;
    }
    ++frozen;
    const std::vector<float> sp = fq.spacing(pool);
    std::vector<float> w_hat(w0.size()), up(w0.size()), next(w0.size());
    fq.forward(pool, w0.data(), w_hat.data(), nullptr);
    for (size_t i = 0; i < w0.size(); ++i) up[i] = w_hat[i] + sp[i];
    fq.forward(pool, up.data(), next.data(), nullptr);
    if (f->name().rfind("iq4", 0) == 0) {  // a table, not a uniform grid: a mean spacing > 0
      for (float v : sp) EXPECT_GT(v, 0.0f);
      continue;
    }
    size_t stepped = 0;
    for (size_t i = 0; i < w0.size(); ++i) {
      ASSERT_GT(sp[i], 0.0f) << i;
      const float tol = 1e-4f * sp[i];
      if (std::fabs(next[i] - up[i]) <= tol) {
        ++stepped;
      } else {
        EXPECT_LE(std::fabs(next[i] - w_hat[i]), tol) << i << ": between two values";  // at the top
      }
    }
    EXPECT_GT(stepped, w0.size() * 3 / 4);
  }
  EXPECT_GT(frozen, 100);
}

TEST(FakeQuant, NonFiniteWeightsAreErrorsNamingTheTensor) {
  ThreadPool pool(2);
  auto w0 = gaussian(static_cast<size_t>(kRows * kCols), 3);
  for (const char* name : {"int4-g128-asym", "q4_k", "nf4"}) {
    const Format& f = format_by_name(name);
    FakeQuantizer fq(pool, f, w0.data(), kRows, kCols, {.tensor_name = "blk.0.ffn_up"});
    auto w = w0;
    w[300] = std::nanf("");
    std::vector<float> out(w.size());
    try {
      fq.forward(pool, w.data(), out.data(), nullptr);
      ADD_FAILURE() << name << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.0.ffn_up"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace calq::grad
