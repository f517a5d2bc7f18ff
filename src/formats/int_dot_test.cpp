// The integer matmul (int_dot.h): every format with an integer codec, every kernel level this
// machine has, against the scalar twin bit for bit, and against the float product.
#include "formats/int_dot.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/matmul.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "support/random_data.h"

namespace calq {
namespace {

using ::calq::testing::gaussian;

std::vector<const Format*> int_formats() {
  std::vector<const Format*> out;
  for (const Format* f : all_formats()) {
    if (f->int_row_codec() != nullptr) out.push_back(f);
  }
  return out;
}

// Every level this machine has (on an AMD Zen 5 or Intel Sapphire Rapids: scalar, avx2, avx-vnni,
// avx512-vnni).
std::vector<KernelLevel> available_levels() { return supported_kernel_levels(); }

TEST(IntDot, TheGgufBlockTypesAndIntFormatsHaveCodecs) {
  // The formats the runtime's fast path is for: every legacy, k-quant and iq4 GGUF type, and calq's
  // int formats (grouped, per channel, per tensor).
  for (const char* name : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
                           "iq4_nl", "iq4_xs", "int4-g128-asym", "int3-g64-sym", "int8-pc-sym", "int2-pt-asym-f32"}) {
    const Format* f = find_format(name);
    ASSERT_NE(f, nullptr) << name;
    EXPECT_NE(f->int_row_codec(), nullptr) << name;
  }
}

class IntDotFormat : public ::testing::TestWithParam<const Format*> {};

// scale·u + offset is the format's own dequantized value, up to the float rounding of its two terms.
TEST_P(IntDotFormat, CodecReproducesDequantize) {
  const Format& f = *GetParam();
  const IntRowCodec& c = *f.int_row_codec();
  const int64_t rows = 3, cols = 512;
  ThreadPool pool(1);
  const std::vector<float> x = gaussian(rows * cols, 5);
  const QuantizedTensor w = QuantizedTensor::quantize(pool, f, x.data(), rows, cols);
  std::vector<float> deq(rows * cols);
  w.dequantize_rows_reference(0, rows, deq.data());
  std::vector<uint8_t> u(cols);
  std::vector<float> sc(cols / c.block()), of(cols / c.block());
  for (int64_t r = 0; r < rows; ++r) {
    c.decode_row(w.bytes.data(), rows, cols, r, u.data(), sc.data(), of.data());
    for (int64_t j = 0; j < cols; ++j) {
      ASSERT_LE(u[j], c.max_code());
      const float su = sc[j / c.block()] * float(u[j]), o = of[j / c.block()];
      const float ref = deq[r * cols + j];
      ASSERT_NEAR(su + o, ref, 1e-6f * (1.0f + std::fabs(su) + std::fabs(o))) << f.name() << " row " << r << " col " << j;
    }
  }
}

// Every level and thread count gives the scalar twin's bits; rows not a multiple of a panel and
// more than one block of kMatmulColumnBlock rows (so several threads share a product), token counts
// not a multiple of a tile, accumulate on and off.
TEST_P(IntDotFormat, EveryLevelEqualsTheScalarTwin) {
  const Format& f = *GetParam();
  const int64_t cols = 256, rows = kMatmulColumnBlock + 45;
  const std::vector<float> wf = gaussian(rows * cols, 7, 0.05f);
  ThreadPool one(1), three(3);
  const QuantizedTensor w = QuantizedTensor::quantize(one, f, wf.data(), rows, cols);
  for (int64_t m : {1, 7, 13}) {
    std::vector<float> x = gaussian(m * cols, 9 + m);
    x[3] = 0;  // a zero block somewhere: all-zero activations must stay exact
    for (int j = 0; j < 32; ++j) x[cols * (m - 1) + j] = 0;
    for (bool acc : {false, true}) {
      std::vector<float> ref(m * rows, 0.5f);
      int_matmul_reference(QuantMatmulArgs{.x = x.data(), .ldx = cols, .w = &w, .y = ref.data(), .ldy = rows, .m = m,
                                           .accumulate = acc});
      for (KernelLevel level : available_levels()) {
        for (ThreadPool* pool : {&one, &three}) {
          std::vector<float> y(m * rows, 0.5f);
          int_matmul_at(*pool, QuantMatmulArgs{.x = x.data(), .ldx = cols, .w = &w, .y = y.data(), .ldy = rows,
                                               .m = m, .accumulate = acc},
                        level);
          ASSERT_EQ(0, std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)))
              << f.name() << " level " << kernel_level_name(level) << " m " << m << " accumulate " << acc
              << " threads " << pool->num_threads();
        }
      }
    }
  }
}

// The integer product is the float product up to the activations' 8-bit rounding.
TEST_P(IntDotFormat, CloseToTheFloatProduct) {
  const Format& f = *GetParam();
  const int64_t cols = 512, rows = 64, m = 9;
  ThreadPool pool(2);
  const std::vector<float> wf = gaussian(rows * cols, 21, 0.05f);
  const QuantizedTensor w = QuantizedTensor::quantize(pool, f, wf.data(), rows, cols);
  const std::vector<float> x = gaussian(m * cols, 23);
  std::vector<float> yi(m * rows), yf(m * rows);
  int_matmul(pool, QuantMatmulArgs{.x = x.data(), .ldx = cols, .w = &w, .y = yi.data(), .ldy = rows, .m = m});
  matmul_nt_quantized_reference(QuantMatmulArgs{.x = x.data(), .ldx = cols, .w = &w, .y = yf.data(), .ldy = rows, .m = m});
  double num = 0, den = 0;
  for (size_t i = 0; i < yi.size(); ++i) {
    num += (yi[i] - yf[i]) * double(yi[i] - yf[i]);
    den += double(yf[i]) * yf[i];
  }
  // Gaussian activations in blocks of 16–32: the 8-bit rounding's relative RMS error is ~0.5 %.
  EXPECT_LT(std::sqrt(num / den), 0.01) << f.name();
}

INSTANTIATE_TEST_SUITE_P(IntFormats, IntDotFormat, ::testing::ValuesIn(int_formats()),
                         [](const auto& param_info) {
                           std::string n = param_info.param->name();
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

TEST(IntDot, ActivationQuantizationMatchesItsDefinition) {
  const int64_t m = 3, k = 64;
  std::vector<float> x = gaussian(m * k, 3);
  for (int j = 32; j < 64; ++j) x[j] = 0;  // row 0's second block is all zero
  ThreadPool pool(2);
  QuantizedActivations a, r;
  quantize_activations(pool, x.data(), k, m, k, 32, a);
  quantize_activations_reference(x.data(), k, m, k, 32, r);
  EXPECT_EQ(a.q, r.q);
  EXPECT_EQ(a.dx, r.dx);
  EXPECT_EQ(a.dsx, r.dsx);
  EXPECT_EQ(r.dx[1], 0.0f);
  EXPECT_EQ(r.sx[1], 0);
  for (int64_t i = 0; i < m; ++i) {
    for (int b = 0; b < 2; ++b) {
      float amax = 0;
      int sum = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[i * k + b * 32 + j]));
      for (int j = 0; j < 32; ++j) {
        const int q = r.q[i * k + b * 32 + j];
        ASSERT_LE(std::abs(q), 127);
        sum += q;
        if (amax > 0) {
          EXPECT_NEAR(q * (amax / 127.0f), x[i * k + b * 32 + j], 0.5f * amax / 127.0f * 1.0001f);
        }
      }
      EXPECT_EQ(r.sx[i * 2 + b], sum);
      if (amax > 0) {
        EXPECT_EQ(r.dx[i * 2 + b], amax / 127.0f);
      }
    }
  }
}

// What the integer kernels cannot block falls back (linear_nt then runs the exact path and the
// kernel report names it "float/<format>"): a per-channel int format whose rows are not a multiple
// of 32 columns, and a format without a codec.
TEST(IntDot, UnblockableWeightsAreNotSupported) {
  ThreadPool pool(1);
  const std::vector<float> wf = gaussian(8 * 40, 4, 0.05f);
  EXPECT_FALSE(int_matmul_supported(QuantizedTensor::quantize(pool, format_by_name("int4-pc-sym"), wf.data(), 8, 40)));
  EXPECT_TRUE(int_matmul_supported(QuantizedTensor::quantize(pool, format_by_name("int4-pc-sym"), wf.data(), 10, 32)));
  EXPECT_FALSE(int_matmul_supported(QuantizedTensor::quantize(pool, format_by_name("nf4"), wf.data(), 5, 64)));
}

TEST(IntDot, LevelCapLowersButNeverRaises) {
  set_kernel_level_cap(KernelLevel::kScalar);
  EXPECT_EQ(kernel_level(), KernelLevel::kScalar);
  set_kernel_level_cap(KernelLevel::kAvx512Vnni);
  EXPECT_EQ(kernel_level(), detected_kernel_level());  // never above what the CPU has
  // Each cap gives the best supported level at or below it: itself where the machine has it, a
  // lower one where it lacks it (AVX-512 VNNI without AVX-VNNI, as on Zen 4, runs avx2 when capped
  // at avx-vnni).
  for (const KernelLevel cap : all_kernel_levels()) {
    set_kernel_level_cap(cap);
    const KernelLevel got = kernel_level();
    EXPECT_TRUE(kernel_level_supported(got));
    EXPECT_LE(static_cast<int>(got), static_cast<int>(cap));
    if (kernel_level_supported(cap)) {
      EXPECT_EQ(got, cap);
    }
    for (int l = static_cast<int>(got) + 1; l <= static_cast<int>(cap); ++l) {
      EXPECT_FALSE(kernel_level_supported(static_cast<KernelLevel>(l))) << kernel_level_name(cap);
    }
  }
  set_kernel_level_cap(std::nullopt);
  EXPECT_TRUE(kernel_level_supported(KernelLevel::kScalar));
  EXPECT_EQ(supported_kernel_levels().back(), detected_kernel_level());
  for (const KernelLevel l : all_kernel_levels()) EXPECT_EQ(kernel_level_by_name(kernel_level_name(l)), l);
  EXPECT_EQ(kernel_level_by_name("avx-vnni"), KernelLevel::kAvxVnni);
  EXPECT_FALSE(kernel_level_by_name("avx9").has_value());
}

// A level above the machine's is run as the machine's best: forcing never executes missing
// instructions (int_matmul_at caps it).
TEST(IntDot, AskingForALevelAboveTheMachineRunsTheMachinesBest) {
  const Format& f = format_by_name("q4_0");
  ThreadPool pool(1);
  const std::vector<float> wf = gaussian(32 * 64, 1, 0.05f), x = gaussian(2 * 64, 2);
  const QuantizedTensor w = QuantizedTensor::quantize(pool, f, wf.data(), 32, 64);
  std::vector<float> y(2 * 32), ref(2 * 32);
  int_matmul_at(pool, QuantMatmulArgs{.x = x.data(), .ldx = 64, .w = &w, .y = y.data(), .ldy = 32, .m = 2},
                KernelLevel::kAvx512Vnni);
  int_matmul_reference(QuantMatmulArgs{.x = x.data(), .ldx = 64, .w = &w, .y = ref.data(), .ldy = 32, .m = 2});
  EXPECT_EQ(y, ref);
}

}  // namespace
}  // namespace calq
