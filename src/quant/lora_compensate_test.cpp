// lora-compensate: the SVD compensation against known optima (Eckart–Young on a matrix of known
// spectrum, exact recovery at full rank, the weighted error measured independently on the
// inputs), and the method's errors (rank above a layer's, role lists, recipe order).
#include "quant/lora_compensate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "quant/method.h"
#include "quant/recipe.h"
#include "support/error_of.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;

// k orthonormal columns of length n (Gram–Schmidt on Gaussian vectors), column-major [k][n].
std::vector<std::vector<double>> orthonormal(int64_t n, int64_t k, std::mt19937& rng) {
  std::normal_distribution<double> g;
  std::vector<std::vector<double>> q;
  while (static_cast<int64_t>(q.size()) < k) {
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = g(rng);
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& u : q) {
        double d = 0;
        for (int64_t i = 0; i < n; ++i) d += u[i] * v[i];
        for (int64_t i = 0; i < n; ++i) v[i] -= d * u[i];
      }
    }
    double norm = 0;
    for (const double x : v) norm += x * x;
    for (double& x : v) x /= std::sqrt(norm);
    q.push_back(std::move(v));
  }
  return q;
}

// A [rows, cols] error E = U diag(σ) Vᵀ with σ = 2^-i (known spectrum), as float.
std::vector<float> known_spectrum(int64_t rows, int64_t cols, std::vector<double>& sigma) {
  std::mt19937 rng(7);
  const int64_t k = std::min(rows, cols);
  const auto u = orthonormal(rows, k, rng), v = orthonormal(cols, k, rng);
  sigma.resize(static_cast<size_t>(k));
  std::vector<float> e(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < k; ++i) sigma[i] = std::ldexp(3.0, static_cast<int>(-i));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double s = 0;
      for (int64_t i = 0; i < k; ++i) s += u[i][r] * sigma[i] * v[i][c];
      e[r * cols + c] = static_cast<float>(s);
    }
  return e;
}

// Statistics of `n` inputs of width `cols` with very different channel scales.
InputStats input_stats(int64_t n, int64_t cols, std::vector<double>& x) {
  std::mt19937 rng(11);
  std::normal_distribution<double> g;
  x.assign(static_cast<size_t>(n * cols), 0.0);
  std::vector<double> common(static_cast<size_t>(n));
  for (double& c : common) c = g(rng);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < cols; ++j) x[t * cols + j] = (g(rng) + 0.5 * common[t]) * (j % 5 == 0 ? 8.0 : 0.5);
  InputStats s;
  s.rows = n;
  s.cols = cols;
  s.hessian.assign(static_cast<size_t>(cols * cols), 0.0);
  s.mean_sq.assign(static_cast<size_t>(cols), 0.0f);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) s.hessian[i * cols + j] += x[t * cols + i] * x[t * cols + j];
      s.mean_sq[i] += static_cast<float>(x[t * cols + i] * x[t * cols + i] / static_cast<double>(n));
    }
  return s;
}

// Mean over the inputs of ‖(W − Ŵ − B·A)·x‖², computed directly from the inputs.
double output_error(const std::vector<float>& e, const ErrorCompensation& c, int64_t rows, int64_t cols, int64_t rank,
                    const std::vector<double>& x) {
  const int64_t n = static_cast<int64_t>(x.size()) / cols;
  std::vector<double> d(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      double ba = 0;
      for (int64_t i = 0; i < rank; ++i) ba += static_cast<double>(c.b[r * rank + i]) * c.a[i * cols + j];
      d[r * cols + j] = e[r * cols + j] - ba;
    }
  double total = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double y = 0;
      for (int64_t j = 0; j < cols; ++j) y += d[r * cols + j] * x[t * cols + j];
      total += y * y;
    }
  return total / static_cast<double>(n);
}

TEST(LoraCompensate, UnweightedIsTheTruncatedSvdOptimum) {
  const int64_t rows = 12, cols = 20;
  std::vector<double> sigma;
  const std::vector<float> e = known_spectrum(rows, cols, sigma);
  const std::vector<float> zero(e.size(), 0.0f);
  const InputStats none;
  const std::vector<double> l = weighting_factor(none, cols, ErrorWeighting::kNone, 0.01, "t");
  double all = 0;
  for (const double s : sigma) all += s * s;
  for (const int64_t rank : {1, 3, 7}) {
    const ErrorCompensation c = compensate_error(e.data(), zero.data(), rows, cols, l, rank, "t");
    ASSERT_EQ(c.a.size(), static_cast<size_t>(rank * cols));
    ASSERT_EQ(c.b.size(), static_cast<size_t>(rows * rank));
    double left = 0;
    for (size_t i = static_cast<size_t>(rank); i < sigma.size(); ++i) left += sigma[i] * sigma[i];
    // E was rounded to float: its spectrum is σ up to ~1e-7 relative.
    for (size_t i = 0; i < sigma.size(); ++i) EXPECT_NEAR(c.singular_values[i], sigma[i], 1e-6 * sigma[0]) << i;
    EXPECT_NEAR(c.error_before, all, 1e-6 * all);
    EXPECT_NEAR(c.error_after, left, 1e-6 * all) << rank;
    // The factors share the spectrum evenly: ‖column j of B‖ = ‖row j of A‖ = √σ_j.
    for (int64_t j = 0; j < rank; ++j) {
      double nb = 0, na = 0;
      for (int64_t r = 0; r < rows; ++r) nb += static_cast<double>(c.b[r * rank + j]) * c.b[r * rank + j];
      for (int64_t k = 0; k < cols; ++k) na += static_cast<double>(c.a[j * cols + k]) * c.a[j * cols + k];
      EXPECT_NEAR(nb, sigma[j], 1e-5 * sigma[0]);
      EXPECT_NEAR(na, sigma[j], 1e-5 * sigma[0]);
    }
  }
}

TEST(LoraCompensate, FullRankRecoversTheWeight) {
  const int64_t rows = 9, cols = 16;
  std::vector<double> x;
  const InputStats stats = input_stats(64, cols, x);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  std::vector<float> w(static_cast<size_t>(rows * cols)), q(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = g(rng);
    q[i] = std::round(w[i] * 2) / 2;  // a coarse "quantizer"
  }
  for (const ErrorWeighting weighting : {ErrorWeighting::kHessian, ErrorWeighting::kDiagonal, ErrorWeighting::kNone}) {
    const std::vector<double> l = weighting_factor(stats, cols, weighting, 0.0, "t");
    const ErrorCompensation c = compensate_error(w.data(), q.data(), rows, cols, l, rows, "t");
    EXPECT_GT(c.error_before, 0.0);
    EXPECT_LT(c.error_after, 1e-10 * c.error_before);
    double worst = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) {
        double ba = 0;
        for (int64_t i = 0; i < rows; ++i) ba += static_cast<double>(c.b[r * rows + i]) * c.a[i * cols + j];
        worst = std::max(worst, std::abs(q[r * cols + j] + ba - w[r * cols + j]));
      }
    EXPECT_LT(worst, 1e-5);
  }
}

TEST(LoraCompensate, HessianWeightingMinimisesTheOutputError) {
  const int64_t rows = 10, cols = 15, rank = 3;
  std::vector<double> x;
  const InputStats stats = input_stats(80, cols, x);
  std::mt19937 rng(5);
  std::normal_distribution<float> g;
  std::vector<float> e(static_cast<size_t>(rows * cols)), zero(e.size(), 0.0f);
  for (float& v : e) v = g(rng);
  const auto run = [&](ErrorWeighting weighting) {
    return compensate_error(e.data(), zero.data(), rows, cols, weighting_factor(stats, cols, weighting, 0.0, "t"),
                            rank, "t");
  };
  const ErrorCompensation hessian = run(ErrorWeighting::kHessian);
  // Its reported errors are the mean output errors on the inputs themselves (damp 0: H = XᵀX/n).
  ErrorCompensation nothing;
  nothing.a.assign(static_cast<size_t>(rank * cols), 0.0f);
  nothing.b.assign(static_cast<size_t>(rows * rank), 0.0f);
  EXPECT_NEAR(hessian.error_before, output_error(e, nothing, rows, cols, rank, x), 1e-9 * hessian.error_before);
  const double measured = output_error(e, hessian, rows, cols, rank, x);
  EXPECT_NEAR(hessian.error_after, measured, 1e-6 * hessian.error_before);
  EXPECT_LT(measured, 0.9 * hessian.error_before);
  // The other weightings' adapters do worse on that measure; so does any nudge of the optimum.
  EXPECT_LT(measured, output_error(e, run(ErrorWeighting::kDiagonal), rows, cols, rank, x));
  EXPECT_LT(measured, output_error(e, run(ErrorWeighting::kNone), rows, cols, rank, x));
  std::uniform_int_distribution<size_t> pick_a(0, hessian.a.size() - 1), pick_b(0, hessian.b.size() - 1);
  for (int trial = 0; trial < 6; ++trial) {
    ErrorCompensation nudged = hessian;
    nudged.a[pick_a(rng)] += 0.01f;
    nudged.b[pick_b(rng)] -= 0.01f;
    EXPECT_GT(output_error(e, nudged, rows, cols, rank, x), measured) << trial;
  }
}

TEST(LoraCompensate, WeightingNeedsItsStatistic) {
  InputStats s;
  s.rows = 4;
  s.cols = 3;
  std::string e = error_of([&] { weighting_factor(s, 3, ErrorWeighting::kHessian, 0.01, "layer 2 blk.2.attn_q"); });
  EXPECT_NE(e.find("blk.2.attn_q"), std::string::npos) << e;
  EXPECT_NE(e.find("hessian"), std::string::npos) << e;
  e = error_of([&] { weighting_factor(s, 3, ErrorWeighting::kDiagonal, 0.01, "blk.2.attn_q"); });
  EXPECT_NE(e.find("mean_sq"), std::string::npos) << e;
  // An all-zero input is damped into a finite factor rather than refused.
  s.hessian.assign(9, 0.0);
  const std::vector<double> l = weighting_factor(s, 3, ErrorWeighting::kHessian, 0.01, "t");
  for (const double v : l) EXPECT_TRUE(std::isfinite(v));
}

// The method through its hook: a rank above a linear's is an Error naming the tensor and both
// numbers; the roles select the linears.
TEST(LoraCompensate, MethodRankAndRoles) {
  const Method& m = method_by_name("lora-compensate");
  EXPECT_EQ(m.stage(), MethodStage::kErrorCompensation);
  const int64_t rows = 6, cols = 8;
  std::vector<double> x;
  const InputStats stats = input_stats(32, cols, x);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(static_cast<float>(i));
  const model::LinearWeight q(Tensor::zeros(DType::kF32, {rows, cols}));
  std::vector<CompensationLinear> linears;
  for (const model::TensorRole role : {model::TensorRole::kAttnQ, model::TensorRole::kMlpDown})
    linears.push_back({.role = role, .name = role == model::TensorRole::kAttnQ ? "blk.4.attn_q.weight" : "blk.4.ffn_down.weight",
                       .rows = rows, .cols = cols, .original = w.data(), .quantized = &q, .stats = &stats});
  ThreadPool pool(2);
  const auto options = [&](const std::string& json) { return m.parse_options(nlohmann::json::parse(json), "test"); };
  std::string e = error_of([&] { m.compensate({.layer = 4, .linears = linears}, options(R"({"rank": 7})"), pool); });
  EXPECT_NE(e.find("blk.4.attn_q.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("rank"), std::string::npos) << e;
  EXPECT_NE(e.find("7"), std::string::npos) << e;
  EXPECT_NE(e.find("6 × 8"), std::string::npos) << e;
  // Roles: only down; rank 6 = min(rows, cols) is allowed.
  const LayerCompensation c =
      m.compensate({.layer = 4, .linears = linears}, options(R"({"rank": 6, "roles": "down"})"), pool);
  ASSERT_EQ(c.adapters.size(), 1u);
  EXPECT_EQ(c.adapters[0].role, model::TensorRole::kMlpDown);
  EXPECT_EQ(c.adapters[0].adapter.rank(), 6);
  EXPECT_EQ(c.adapters[0].adapter.scale(), 1.0f);
  EXPECT_LT(c.adapters[0].event.error_after, 1e-10 * c.adapters[0].event.error_before);
  // A kept-float linear (quantized nullptr) gets none.
  linears[1].quantized = nullptr;
  EXPECT_TRUE(m.compensate({.layer = 4, .linears = linears}, options(R"({"roles": "down", "rank": 2})"), pool)
                  .adapters.empty());
  for (const std::string bad : {R"({"roles": "q,qq"})", R"({"roles": "q,q"})", R"({"roles": ""})",
                                R"({"weighting": "full"})", R"({"rank": 0})"}) {
    e = error_of([&] { options(bad); });
    EXPECT_NE(e.find("lora-compensate"), std::string::npos) << bad << ": " << e;
  }
  e = error_of([&] { options(R"({"roles": "q,qq"})"); });
  EXPECT_NE(e.find("'roles'"), std::string::npos) << e;
  EXPECT_NE(e.find("q, k, v, o, gate, up, down"), std::string::npos) << e;
}

TEST(LoraCompensate, RecipeOrder) {
  EXPECT_EQ(parse_method_chain("lora-compensate").to_string(), "rtn+lora-compensate");
  EXPECT_EQ(parse_method_chain("gptq+qat-block+lora-compensate+int8-token").to_string(),
            "gptq+qat-block+lora-compensate+int8-token");
  std::string e = error_of([] { parse_method_chain("gptq+lora-compensate+qat-block"); });
  EXPECT_NE(e.find("error compensation"), std::string::npos) << e;
  e = error_of([] { parse_method_chain("gptq+lora-compensate+qat-e2e"); });
  EXPECT_NE(e.find("qat-e2e"), std::string::npos) << e;
  EXPECT_NE(e.find("lora-compensate"), std::string::npos) << e;
}

}  // namespace
}  // namespace calq::quant
