// The losses' gradients against central finite differences in double, and their values against
// direct formulas.
#include "grad/loss.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "grad/grad_check_testutil.h"

namespace calq::grad {
namespace {

using testutil::check_entries;
using testutil::numeric_grad;
using testutil::random_values;
using testutil::rel_error;

constexpr double kTol = 1e-6;

TEST(GradLoss, NextTokenTargetsStopAtEachSequenceEnd) {
  const std::vector<int32_t> ids = {5, 6, 7, 8, 9, 10};
  EXPECT_EQ(next_token_targets(ids, 3), (std::vector<int32_t>{6, 7, -1, 9, 10, -1}));
  EXPECT_EQ(next_token_targets(ids, 6), (std::vector<int32_t>{6, 7, 8, 9, 10, -1}));
}

TEST(GradLoss, CrossEntropyMeanOverCountedRows) {
  ThreadPool pool(2);
  const int64_t rows = 4, vocab = 7;
  auto logits = random_values(rows * vocab, 1, 2.0);
  const std::vector<int32_t> targets = {3, -1, 0, 6};
  auto loss = [&] { return cross_entropy(pool, logits.data(), rows, vocab, targets, static_cast<double*>(nullptr)); };
  // The value: mean of −log softmax over the three counted rows.
  double expect = 0;
  for (const int64_t r : {0, 2, 3}) {
    double s = 0;
    for (int64_t i = 0; i < vocab; ++i) s += std::exp(logits[r * vocab + i]);
    expect += std::log(s) - logits[r * vocab + targets[static_cast<size_t>(r)]];
  }
  EXPECT_NEAR(loss(), expect / 3, 1e-12);
  std::vector<double> d(logits.size(), 9.0);
  cross_entropy(pool, logits.data(), rows, vocab, targets, d.data());
  for (int64_t i = 0; i < vocab; ++i) EXPECT_EQ(d[vocab + i], 0.0);  // the ignored row
  const auto entries = check_entries(logits.size(), logits.size());
  EXPECT_LT(rel_error(numeric_grad(logits, entries, loss), d), kTol);
  const std::vector<int32_t> bad = {3, 7, 0, 0};
  EXPECT_THROW(cross_entropy(pool, logits.data(), rows, vocab, bad, d.data()), Error);
}

TEST(GradLoss, KlDivergenceToTeacher) {
  ThreadPool pool(2);
  const int64_t rows = 3, vocab = 6;
  auto student = random_values(rows * vocab, 2, 2.0);
  const auto teacher = random_values(rows * vocab, 3, 2.0);
  auto loss = [&] { return kl_divergence(pool, student.data(), teacher.data(), rows, vocab, static_cast<double*>(nullptr)); };
  EXPECT_GT(loss(), 0.01);
  EXPECT_NEAR(kl_divergence(pool, teacher.data(), teacher.data(), rows, vocab, static_cast<double*>(nullptr)), 0.0,
              1e-14);
  std::vector<double> d(student.size());
  kl_divergence(pool, student.data(), teacher.data(), rows, vocab, d.data());
  const auto entries = check_entries(student.size(), student.size());
  EXPECT_LT(rel_error(numeric_grad(student, entries, loss), d), kTol);
}

TEST(GradLoss, MeanSquaredError) {
  ThreadPool pool(2);
  const int64_t n = 5000;  // more than one chunk
  auto a = random_values(n, 4);
  const auto b = random_values(n, 5);
  auto loss = [&] { return mse(pool, a.data(), b.data(), n, static_cast<double*>(nullptr)); };
  double expect = 0;
  for (int64_t i = 0; i < n; ++i) expect += (a[i] - b[i]) * (a[i] - b[i]);
  EXPECT_NEAR(loss(), expect / n, 1e-12);
  std::vector<double> d(n);
  mse(pool, a.data(), b.data(), n, d.data());
  const auto entries = check_entries(a.size(), 40);
  // A quadratic: central differences are exact up to rounding, so a wide step keeps that small.
  EXPECT_LT(rel_error(numeric_grad(a, entries, loss, 1e-3), testutil::pick(d, entries)), kTol);
}

}  // namespace
}  // namespace calq::grad
