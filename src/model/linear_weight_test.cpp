// Quantized weights in the runtime, for every registered format: the on-the-fly dequantizing
// product gives the same bits as dequantizing the whole weight first and taking the float path,
// for any thread count; it agrees with the scalar reference twin within the float rounding bound
// of a length-k dot product; row gathers move whole rows; LinearWeight's dense path is matmul_nt.
#include "model/linear_weight.h"

#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "core/matmul.h"
#include "formats/float_gemm.h"
#include "formats/format.h"
#include "formats/int_dot.h"
#include "formats/qtensor.h"
#include "support/random_data.h"

namespace calq::model {
namespace {

using ::calq::testing::gaussian;

// 600 rows = blocks of 256, 256 and 88: a partial last block. Columns: at least 512, a multiple
// of the format's block size.
constexpr int64_t kRows = 600;
int64_t cols_for(const Format& f) {
  const int64_t b = f.traits().block_size;
  return (512 + b - 1) / b * b;
}
constexpr int64_t kTokens = 9;

struct Case {
  QuantizedTensor w;
  std::vector<float> x;  // [kTokens, ldx], ldx = cols + 3 (a row stride wider than the row)
  int64_t ldx;
};

Case make_case(const Format& f, ThreadPool& pool) {
  const int64_t cols = cols_for(f);
  const auto src = gaussian(static_cast<size_t>(kRows * cols), 11, 0.05f);
  Case c{.w = QuantizedTensor::quantize(pool, f, src.data(), kRows, cols, {.tensor_name = "w"}),
         .x = gaussian(static_cast<size_t>(kTokens * (cols + 3)), 12),
         .ldx = cols + 3};
  return c;
}

std::string param_name(const ::testing::TestParamInfo<const Format*>& info) {
  std::string s = info.param->name();
  for (char& ch : s) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return s;
}

class QuantMatmul : public ::testing::TestWithParam<const Format*> {};

TEST_P(QuantMatmul, SameBitsAsDequantizingFirstThenTheFloatPath) {
  const Format& f = *GetParam();
  ThreadPool pool(4);
  const Case c = make_case(f, pool);
  const int64_t ldy = kRows + 5;
  for (const bool accumulate : {false, true}) {
    const auto init = gaussian(static_cast<size_t>(kTokens * ldy), 13);
    std::vector<float> y = init, want = init;
    linear_nt(pool, c.x.data(), c.ldx, kTokens, LinearWeight(c.w), y.data(), ldy, accumulate);

    Tensor dense = Tensor::zeros(DType::kF32, {c.w.rows, c.w.cols});
    c.w.dequantize(pool, dense.mutable_f32());
    matmul_nt(pool, MatmulArgs{.x = c.x.data(), .ldx = c.ldx, .w = dense.f32(), .ldw = c.w.cols, .y = want.data(),
                               .ldy = ldy, .m = kTokens, .n = kRows, .k = c.w.cols, .accumulate = accumulate});
    EXPECT_EQ(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)), 0) << "accumulate " << accumulate;
    // The dense LinearWeight takes the same path.
    std::vector<float> via_dense = init;
    linear_nt(pool, c.x.data(), c.ldx, kTokens, LinearWeight(dense), via_dense.data(), ldy, accumulate);
    EXPECT_EQ(std::memcmp(via_dense.data(), want.data(), want.size() * sizeof(float)), 0);
  }
}

TEST_P(QuantMatmul, ThreadCountDoesNotChangeBits) {
  const Format& f = *GetParam();
  ThreadPool one(1), three(3);
  const Case c = make_case(f, one);
  std::vector<float> y1(static_cast<size_t>(kTokens * kRows)), y3(y1.size());
  const QuantMatmulArgs a{.x = c.x.data(), .ldx = c.ldx, .w = &c.w, .y = y1.data(), .ldy = kRows, .m = kTokens};
  matmul_nt_quantized(one, a);
  QuantMatmulArgs b = a;
  b.y = y3.data();
  matmul_nt_quantized(three, b);
  EXPECT_EQ(std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)), 0);
}

TEST_P(QuantMatmul, AgreesWithScalarReference) {
  const Format& f = *GetParam();
  ThreadPool pool(2);
  const Case c = make_case(f, pool);
  const int64_t k = c.w.cols;
  std::vector<float> y(static_cast<size_t>(kTokens * kRows)), ref(y.size());
  matmul_nt_quantized(pool, {.x = c.x.data(), .ldx = c.ldx, .w = &c.w, .y = y.data(), .ldy = kRows, .m = kTokens});
  matmul_nt_quantized_reference({.x = c.x.data(), .ldx = c.ldx, .w = &c.w, .y = ref.data(), .ldy = kRows, .m = kTokens});
  // Both sides multiply the same dequantized values (the format contract makes the fast and
  // reference dequantizers equal bit for bit), so they differ only by float32 accumulation:
  // |Δ| <= γ_k Σ|x_p w_p| (γ_k = k u / (1 − k u), u = 2^-24) plus the rounding of the result.
  std::vector<float> w(static_cast<size_t>(kRows * k));
  c.w.dequantize_rows_reference(0, kRows, w.data());
  const double u = std::ldexp(1.0, -24);
  const double gamma = static_cast<double>(k) * u / (1.0 - static_cast<double>(k) * u);
  int64_t bad = 0;
  for (int64_t i = 0; i < kTokens; ++i) {
    for (int64_t j = 0; j < kRows; ++j) {
      double abs_sum = 0;
      for (int64_t p = 0; p < k; ++p) abs_sum += std::abs(double(c.x[i * c.ldx + p]) * w[j * k + p]);
      const double r = ref[i * kRows + j];
      const double bound = gamma * abs_sum + u * std::abs(r);
      if (std::abs(y[i * kRows + j] - r) > bound) ++bad;
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_P(QuantMatmul, RowsOfAQuantizedWeightDequantizeAsTheWhole) {
  const Format& f = *GetParam();
  ThreadPool pool(2);
  const Case c = make_case(f, pool);
  const LinearWeight w(c.w);
  EXPECT_TRUE(w.is_quantized());
  EXPECT_EQ(w.shape(), Shape({kRows, c.w.cols}));
  EXPECT_EQ(w.format_name(), f.name());
  const Tensor whole = w.to_dense(pool);
  std::vector<float> row(static_cast<size_t>(c.w.cols));
  for (const int64_t r : {int64_t{0}, int64_t{257}, kRows - 1}) {
    w.rows_f32(r, r + 1, row.data());
    EXPECT_EQ(std::memcmp(row.data(), whole.f32() + r * c.w.cols, row.size() * sizeof(float)), 0) << r;
  }
}

TEST_P(QuantMatmul, GatherRowsMovesWholeRows) {
  const Format& f = *GetParam();
  if (f.trailer_bytes(kRows, cols_for(f)) != 0) GTEST_SKIP() << f.name() << " has a tensor trailer";
  ThreadPool pool(2);
  const Case c = make_case(f, pool);
  std::vector<int64_t> order(kRows);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(5));
  const QuantizedTensor g = gather_rows(c.w, order);
  EXPECT_NE(g.bytes.data(), c.w.bytes.data());
  const int64_t k = c.w.cols;
  std::vector<float> all(static_cast<size_t>(kRows * k)), moved(all.size());
  c.w.dequantize(pool, all.data());
  g.dequantize(pool, moved.data());
  int64_t bad = 0;
  for (int64_t r = 0; r < kRows; ++r) {
    bad += std::memcmp(moved.data() + r * k, all.data() + order[static_cast<size_t>(r)] * k, k * sizeof(float)) != 0;
  }
  EXPECT_EQ(bad, 0);
}

INSTANTIATE_TEST_SUITE_P(AllFormats, QuantMatmul, ::testing::ValuesIn(all_formats()), param_name);

TEST(LinearWeight, DenseSharesItsTensor) {
  Tensor t = Tensor::zeros(DType::kF32, {3, 4});
  for (int64_t i = 0; i < 12; ++i) t.mutable_f32()[i] = static_cast<float>(i);
  const LinearWeight w(t);
  EXPECT_FALSE(w.is_quantized());
  EXPECT_EQ(w.dense().data(), t.data());
  EXPECT_EQ(w.shape(), Shape({3, 4}));
  EXPECT_EQ(w.format_name(), "f32");
  const LinearWeight copy = w;
  EXPECT_TRUE(copy.same_storage(w));
  EXPECT_FALSE(LinearWeight(t.to_f32()).same_storage(w));
  ThreadPool pool(1);
  EXPECT_EQ(w.to_dense(pool).data(), t.data());
  float row[4];
  w.rows_f32(2, 3, row);
  EXPECT_EQ(row[0], 8.0f);
  EXPECT_EQ(row[3], 11.0f);
}

// The fast kernels through linear_nt: a GGUF block type on the integer kernels, a float weight and
// an nf4 weight (decoded through its 16 levels) on the float kernel, and real W8A8 — an int8-pc-sym weight with per-token and static int8 activations
// multiplied as integers — each against the exact path (the W8A8 simulation for the latter), with
// the kernel report naming what ran.
TEST(LinearWeight, FastKernelsAgreeWithTheExactPath) {
  ThreadPool pool(2);
  const int64_t rows = 64, cols = 256, m = 9;
  const auto wf = gaussian(static_cast<size_t>(rows * cols), 31, 0.05f);
  const auto x = gaussian(static_cast<size_t>(m * cols), 32);
  Tensor dense = Tensor::zeros(DType::kF32, {rows, cols});
  std::copy(wf.begin(), wf.end(), dense.mutable_f32());
  struct FastCase {
    LinearWeight w;
    ActivationQuant act;
    std::string kernel;  // a key kernel_counts() must list after the fast call
    double bound;        // relative RMS difference from the exact path
  };
  const auto int8pc = QuantizedTensor::quantize(pool, format_by_name("int8-pc-sym"), wf.data(), rows, cols);
  std::vector<FastCase> cases = {
      {LinearWeight(QuantizedTensor::quantize(pool, format_by_name("q4_k"), wf.data(), rows, cols)), {}, "/q4_k", 1e-2},
      {LinearWeight(dense), {}, "f32", 1e-6},
      {LinearWeight(QuantizedTensor::quantize(pool, format_by_name("nf4"), wf.data(), rows, cols)), {}, "nf4", 1e-6},
      {LinearWeight(int8pc), {.kind = ActivationQuant::Kind::kInt8PerToken}, "/int8-pc-sym", 1e-5},
      {LinearWeight(int8pc), {.kind = ActivationQuant::Kind::kInt8PerTensor, .scale = 0.02f}, "/int8-pc-sym", 1e-5},
  };
  for (FastCase& c : cases) {
    if (c.act.enabled()) c.w.set_act_quant(c.act);
    std::vector<float> exact(m * rows), fast(m * rows);
    linear_nt(pool, x.data(), cols, m, c.w, exact.data(), rows);
    reset_kernel_counts();
    c.w.set_fast_kernels(true);
    linear_nt(pool, x.data(), cols, m, c.w, fast.data(), rows);
    double num = 0, den = 0;
    for (size_t i = 0; i < fast.size(); ++i) {
      num += (fast[i] - exact[i]) * double(fast[i] - exact[i]);
      den += double(exact[i]) * exact[i];
    }
    EXPECT_LE(std::sqrt(num / den), c.bound) << c.w.format_name();
    const auto counts = kernel_counts();
    ASSERT_EQ(counts.size(), 1u) << c.w.format_name();
    const bool float_kernel = counts[0].key.rfind("float", 0) == 0;
    if (c.kernel == "f32" || c.kernel == "nf4") {
      // The AVX-512 float kernel where the CPU has it, the exact path otherwise.
      EXPECT_EQ(counts[0].key, (float_gemm_available() ? "float-avx512/" : "float/") + c.kernel);
    } else {
      EXPECT_FALSE(float_kernel) << counts[0].key;
      EXPECT_NE(counts[0].key.find(c.kernel), std::string::npos) << counts[0].key;
    }
  }
}

}  // namespace
}  // namespace calq::model
