// The AVX-512 float matmul (float_gemm.h) against its scalar twin, bit for bit, for every weight
// type, and against OpenBLAS's product within float rounding.
#include "formats/float_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/matmul.h"
#include "support/random_data.h"

namespace calq {
namespace {

using ::calq::testing::gaussian;

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
        FloatGemmArgs a{.x = x.data(), .ldx = k + 3, .w = w, .ldw = ldw, .type = type, .y = nullptr, .ldy = n + 2,
                        .m = m, .n = n, .k = k, .accumulate = acc};
        std::vector<float> ref(m * (n + 2), 0.25f);
        a.y = ref.data();
        float_gemm_reference(a);
        for (ThreadPool* pool : {&one, &three}) {
          std::vector<float> y(m * (n + 2), 0.25f);
          a.y = y.data();
          float_gemm(*pool, a);
          ASSERT_EQ(0, std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)))
              << "type " << static_cast<int>(type) << " m " << m << " accumulate " << acc;
        }
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

TEST(FloatGemm, ScalarLevelTurnsItOff) {
  set_kernel_level_cap(KernelLevel::kScalar);
  EXPECT_FALSE(float_gemm_available());
  set_kernel_level_cap(std::nullopt);
  EXPECT_EQ(float_gemm_available(), detected_kernel_level() == KernelLevel::kAvx512Vnni);
}

}  // namespace
}  // namespace calq
