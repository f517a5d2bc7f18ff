// The AVX-512 float matmul (float_gemm.h) against its scalar twin, bit for bit, for every weight
// type (the 4-bit lookup-table formats included), and against OpenBLAS's product within float
// rounding.
#include "formats/float_gemm.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/matmul.h"
#include "formats/format.h"
#include "formats/int_dot.h"
#include "formats/qtensor.h"
#include "support/random_data.h"

namespace calq {
namespace {

using ::calq::testing::gaussian;

// float_gemm on each pool gives float_gemm_reference's bytes (a.y is set here; y starts at 0.25 so
// that accumulate is seen, and has a row stride of a.ldy).
void expect_equals_twin(FloatGemmArgs a, std::initializer_list<ThreadPool*> pools, const std::string& what) {
  std::vector<float> ref(static_cast<size_t>(a.m * a.ldy), 0.25f);
  a.y = ref.data();
  float_gemm_reference(a);
  for (ThreadPool* pool : pools) {
    std::vector<float> y(ref.size(), 0.25f);
    a.y = y.data();
    float_gemm(*pool, a);
    ASSERT_EQ(0, std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)))
        << what << " threads " << pool->num_threads();
  }
}

TEST(FloatGemm, EqualsTheScalarTwinForEveryWeightType) {
  if (!float_gemm_available()) GTEST_SKIP() << "no AVX-512 on this machine (kernel level " << kernel_level_name(kernel_level()) << ")";
  // Rows past one block of kMatmulColumnBlock and not a multiple of a panel; token counts around
  // the 12-token tile; a row stride larger than k; accumulate on and off.
  const int64_t n = kMatmulColumnBlock + 37, k = 70, ldw = 75;
  const std::vector<float> wf = gaussian(n * ldw, 3);
  std::vector<uint16_t> wh(wf.size()), wb(wf.size());
  for (size_t i = 0; i < wf.size(); ++i) {
    wh[i] = f32_to_f16(wf[i]);
    wb[i] = f32_to_bf16(wf[i]);
  }
  ThreadPool one(1), three(3);
  for (const FloatWeight type : {FloatWeight::kF32, FloatWeight::kF16, FloatWeight::kBF16}) {
    const void* w = type == FloatWeight::kF32 ? static_cast<const void*>(wf.data())
                                              : type == FloatWeight::kF16 ? static_cast<const void*>(wh.data())
                                                                          : static_cast<const void*>(wb.data());
    for (int64_t m : {1, 11, 12, 25}) {
      const std::vector<float> x = gaussian(m * (k + 3), 5 + m);
      for (bool acc : {false, true}) {
        ASSERT_NO_FATAL_FAILURE(expect_equals_twin(
            {.x = x.data(), .ldx = k + 3, .w = w, .ldw = ldw, .type = type, .y = nullptr, .ldy = n + 2, .m = m,
             .n = n, .k = k, .accumulate = acc},
            {&one, &three}, fmt::format("type {} m {} accumulate {}", static_cast<int>(type), m, acc)));
      }
    }
  }
}

TEST(FloatGemm, AgreesWithOpenBlasWithinRounding) {
  if (!float_gemm_available()) GTEST_SKIP() << "no AVX-512 on this machine";
  const int64_t m = 40, n = 300, k = 512;
  const std::vector<float> x = gaussian(m * k, 1), w = gaussian(n * k, 2);
  std::vector<float> a(m * n), b(m * n);
  ThreadPool pool(2);
  float_gemm(pool, FloatGemmArgs{.x = x.data(), .ldx = k, .w = w.data(), .ldw = k, .type = FloatWeight::kF32,
                                 .y = a.data(), .ldy = n, .m = m, .n = n, .k = k});
  matmul_nt(pool, MatmulArgs{.x = x.data(), .ldx = k, .w = w.data(), .ldw = k, .y = b.data(), .ldy = n, .m = m, .n = n,
                             .k = k});
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4f * std::sqrt(float(k))) << i;
}

std::vector<const Format*> lut_formats() {
  std::vector<const Format*> out;
  for (const Format* f : all_formats()) {
    if (f->lut_row_codec() != nullptr) out.push_back(f);
  }
  return out;
}

TEST(FloatGemmLut, EverySixteenLevelFormatHasAFastPath) {
  // Float levels: the float kernel's table decode. Integer levels (iq4's grid): the integer kernels.
  for (const char* name : {"nf4", "nf4-dq", "fp4", "fp4-dq", "mxfp4", "nvfp4"}) {
    ASSERT_NE(find_format(name), nullptr) << name;
    EXPECT_NE(find_format(name)->lut_row_codec(), nullptr) << name;
  }
  for (const char* name : {"iq4_nl", "iq4_xs"}) {
    ASSERT_NE(find_format(name), nullptr) << name;
    EXPECT_NE(find_format(name)->int_row_codec(), nullptr) << name;
  }
}

class FloatGemmLutFormat : public ::testing::TestWithParam<const Format*> {};

// table[c]·scale is the format's own dequantized value, bit for bit (what makes the fast path's
// weights exact). Two rows of 320 columns with a double-quantization group spanning rows.
TEST_P(FloatGemmLutFormat, CodecReproducesDequantizeBitForBit) {
  const Format& f = *GetParam();
  const LutRowCodec& c = *f.lut_row_codec();
  const int64_t rows = 70, cols = 320;
  ThreadPool pool(1);
  std::vector<float> x = gaussian(rows * cols, 5);
  for (int64_t j = 0; j < 64; ++j) x[cols + j] = 0;  // an all-zero block
  const QuantizedTensor w = QuantizedTensor::quantize(pool, f, x.data(), rows, cols);
  std::vector<float> deq(rows * cols);
  w.dequantize_rows_reference(0, rows, deq.data());
  std::vector<uint8_t> codes(cols);
  std::vector<float> scale(cols / c.block());
  for (int64_t r = 0; r < rows; ++r) {
    c.decode_row(w.bytes.data(), rows, cols, r, codes.data(), scale.data());
    for (int64_t j = 0; j < cols; ++j) {
      ASSERT_LT(codes[j], 16);
      const float v = c.table()[codes[j]] * scale[j / c.block()];
      ASSERT_EQ(0, std::memcmp(&v, &deq[r * cols + j], sizeof v)) << f.name() << " row " << r << " col " << j;
    }
  }
}

// The kernel equals the scalar twin bit for bit at every kernel level that runs it (the float
// kernel is AVX-512's; below it float_gemm_available() is false and callers take the exact path),
// for one and three threads, rows past one block of kMatmulColumnBlock, token counts around the
// tile, accumulate on and off.
TEST_P(FloatGemmLutFormat, EveryLevelEqualsTheScalarTwin) {
  const Format& f = *GetParam();
  const int64_t n = kMatmulColumnBlock + 37, k = 128;
  ThreadPool one(1), three(3);
  const std::vector<float> wf = gaussian(n * k, 3, 0.05f);
  const QuantizedTensor w = QuantizedTensor::quantize(one, f, wf.data(), n, k);
  bool ran = false;
  for (const KernelLevel level : supported_kernel_levels()) {
    set_kernel_level_cap(level);
    const bool available = float_gemm_available();
    EXPECT_EQ(available, level == KernelLevel::kAvx512Vnni) << kernel_level_name(level);
    if (!available) continue;
    ran = true;
    for (int64_t m : {1, 12, 25}) {
      const std::vector<float> x = gaussian(m * (k + 3), 5 + m);
      for (bool acc : {false, true}) {
        ASSERT_NO_FATAL_FAILURE(expect_equals_twin(
            {.x = x.data(), .ldx = k + 3, .type = FloatWeight::kLut4, .lut = &w, .y = nullptr, .ldy = n + 2,
             .m = m, .n = n, .k = k, .accumulate = acc},
            {&one, &three}, fmt::format("{} m {} accumulate {}", f.name(), m, acc)));
      }
    }
  }
  set_kernel_level_cap(std::nullopt);
  if (!ran) GTEST_SKIP() << "no AVX-512 on this machine: the float kernel never runs";
}

// Against the exact path (dequantize, then OpenBLAS): the same weights, so only the summation order
// differs; each element within 1e-5 of Σ|x_j·w_j| (a wrong level or scale is off by far more).
TEST_P(FloatGemmLutFormat, CloseToTheExactPath) {
  if (!float_gemm_available()) GTEST_SKIP() << "no AVX-512 on this machine";
  const Format& f = *GetParam();
  const int64_t m = 13, n = 96, k = 512;
  ThreadPool pool(2);
  const std::vector<float> wf = gaussian(n * k, 8, 0.05f), x = gaussian(m * k, 9);
  const QuantizedTensor w = QuantizedTensor::quantize(pool, f, wf.data(), n, k);
  std::vector<float> fast(m * n), exact(m * n), deq(n * k);
  float_gemm(pool, FloatGemmArgs{.x = x.data(), .ldx = k, .type = FloatWeight::kLut4, .lut = &w, .y = fast.data(),
                                 .ldy = n, .m = m, .n = n, .k = k});
  matmul_nt_quantized(pool, QuantMatmulArgs{.x = x.data(), .ldx = k, .w = &w, .y = exact.data(), .ldy = n, .m = m});
  w.dequantize_rows_reference(0, n, deq.data());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double mag = 0;
      for (int64_t j = 0; j < k; ++j) mag += std::fabs(double(x[i * k + j]) * deq[r * k + j]);
      ASSERT_NEAR(fast[i * n + r], exact[i * n + r], 1e-5 * mag) << f.name() << " " << i << "," << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(LutFormats, FloatGemmLutFormat, ::testing::ValuesIn(lut_formats()),
                         [](const auto& param_info) {
                           std::string n = param_info.param->name();
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

TEST(FloatGemm, ScalarLevelTurnsItOff) {
  set_kernel_level_cap(KernelLevel::kScalar);
  EXPECT_FALSE(float_gemm_available());
  set_kernel_level_cap(std::nullopt);
  EXPECT_EQ(float_gemm_available(), detected_kernel_level() == KernelLevel::kAvx512Vnni);
}

}  // namespace
}  // namespace calq
