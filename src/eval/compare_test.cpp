#include "eval/compare.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "eval/perplexity.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::eval {
namespace {

// Naive KL(P‖Q) of two logit rows in long double: softmax without shifting, then Σ p·log(p/q).
long double naive_kl(const std::vector<float>& a, const std::vector<float>& b) {
  long double za = 0, zb = 0;
  for (size_t v = 0; v < a.size(); ++v) {
    za += std::exp(static_cast<long double>(a[v]));
    zb += std::exp(static_cast<long double>(b[v]));
  }
  long double kl = 0;
  for (size_t v = 0; v < a.size(); ++v) {
    const long double p = std::exp(static_cast<long double>(a[v])) / za;
    const long double q = std::exp(static_cast<long double>(b[v])) / zb;
    kl += p * std::log(p / q);
  }
  return kl;
}

TEST(CompareRows, KlMatchesNaiveFormula) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 3.0f), noise(0.0f, 0.2f);
  for (const int64_t vocab : {2, 5, 1001}) {
    std::vector<float> a(static_cast<size_t>(vocab)), b(a.size());
    for (size_t v = 0; v < a.size(); ++v) {
      a[v] = d(rng);
      b[v] = a[v] + noise(rng);
    }
    const double kl = kl_divergence_row(a.data(), log_sum_exp(a.data(), vocab), b.data(), log_sum_exp(b.data(), vocab), vocab);
    const long double naive = naive_kl(a, b);
    EXPECT_GT(naive, 0.0L);
    EXPECT_NEAR(kl, static_cast<double>(naive), 1e-12 * static_cast<double>(naive) + 1e-15) << vocab;
    // Identical rows: exactly zero.
    EXPECT_EQ(kl_divergence_row(a.data(), log_sum_exp(a.data(), vocab), a.data(), log_sum_exp(a.data(), vocab), vocab), 0.0);
  }
  // A hand-made pair: P = softmax(0, log 3) = (1/4, 3/4), Q = (1/2, 1/2).
  const std::vector<float> p = {0.0f, static_cast<float>(std::log(3.0))}, q = {1.0f, 1.0f};
  const double expect = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
  EXPECT_NEAR(kl_divergence_row(p.data(), log_sum_exp(p.data(), 2), q.data(), log_sum_exp(q.data(), 2), 2), expect, 1e-7);
  EXPECT_NEAR(log_sum_exp(q.data(), 2), 1.0 + std::log(2.0), 1e-15);
}

TEST(CompareRows, ArgmaxTiesGoToLowestIndex) {
  const std::vector<float> r = {1.0f, 3.0f, -2.0f, 3.0f, 3.0f};
  EXPECT_EQ(argmax_row(r.data(), 5), 1);
  EXPECT_EQ(argmax_row(r.data() + 2, 3), 1);  // {-2, 3, 3}
  EXPECT_EQ(argmax_row(r.data(), 1), 0);
}

TEST(ComparePercentiles, Type7OnHandMadeVectors) {
  // 1..10 shuffled: h = 9q.
  const KldPercentiles a = kld_percentiles({7, 3, 10, 1, 5, 9, 2, 8, 6, 4});
  EXPECT_DOUBLE_EQ(a.median, 5.5);   // h = 4.5
  EXPECT_DOUBLE_EQ(a.p90, 9.1);      // h = 8.1
  EXPECT_DOUBLE_EQ(a.p99, 9.91);     // h = 8.91
  EXPECT_DOUBLE_EQ(a.p999, 9.991);   // h = 8.991
  EXPECT_EQ(a.max, 10.0);
  const KldPercentiles b = kld_percentiles({100, 0, 0, 0});  // h = 3q
  EXPECT_EQ(b.median, 0.0);          // h = 1.5 between two zeros
  EXPECT_DOUBLE_EQ(b.p90, 70.0);     // h = 2.7: 0 + 0.7·100
  EXPECT_DOUBLE_EQ(b.p99, 97.0);     // h = 2.97
  EXPECT_EQ(b.max, 100.0);
  const KldPercentiles c = kld_percentiles({0.25});
  EXPECT_EQ(c.median, 0.25);
  EXPECT_EQ(c.p999, 0.25);
  EXPECT_EQ(c.max, 0.25);
}

TEST(CompareIntervals, StudentTAgainstTables) {
  // Published 0.975 quantiles of Student's t.
  EXPECT_NEAR(student_t975(1), 12.7062047, 1e-6);
  EXPECT_NEAR(student_t975(2), 4.30265273, 1e-7);
  EXPECT_NEAR(student_t975(3), 3.18244631, 3.18244631 * 2e-3);
  EXPECT_NEAR(student_t975(5), 2.57058184, 2.57058184 * 2e-4);
  EXPECT_NEAR(student_t975(10), 2.22813885, 2.22813885 * 1e-5);
  EXPECT_NEAR(student_t975(30), 2.04227246, 2.04227246 * 1e-6);
  EXPECT_NEAR(student_t975(100), 1.98397152, 1.98397152 * 1e-7);
  // Mean ± t·s/√n by hand: {1, 2, 3, 6}: mean 3, s² = (4 + 1 + 0 + 9)/3.
  const std::vector<double> v = {1, 2, 3, 6};
  const Interval i = mean_interval(v);
  const double half = student_t975(3) * std::sqrt(14.0 / 3.0) / 2.0;
  EXPECT_NEAR(i.lo, 3.0 - half, 1e-12);
  EXPECT_NEAR(i.hi, 3.0 + half, 1e-12);
  const Interval one = mean_interval(std::vector<double>{5.0});
  EXPECT_TRUE(std::isnan(one.lo) && std::isnan(one.hi));
}

TEST(CompareEce, HandMadeProbabilities) {
  // Bins are (b/15, (b+1)/15]: the edges belong to the lower bin.
  EXPECT_EQ(EceBins::bin_of(0.0), 0);
  EXPECT_EQ(EceBins::bin_of(1.0 / 15.0), 0);
  EXPECT_EQ(EceBins::bin_of(1.0 / 15.0 + 1e-9), 1);
  EXPECT_EQ(EceBins::bin_of(0.5), 7);
  EXPECT_EQ(EceBins::bin_of(1.0), 14);
  EceBins e;
  EXPECT_EQ(e.ece(), 0.0);
  // Bin 14: 0.95 twice, one right (|0.5 − 0.95| = 0.45); bin 5: 0.35 three times, one right
  // (|1/3 − 0.35| = 1/60); bin 0: 0.05 wrong (0.05). ECE = (2·0.45 + 3/60 + 0.05) / 6 = 1/6.
  for (const auto& [p, ok] : std::vector<std::pair<double, bool>>{
           {0.95, true}, {0.95, false}, {0.35, true}, {0.35, false}, {0.35, false}, {0.05, false}}) {
    e.add(p, ok);
  }
  EXPECT_EQ(e.total(), 6);
  EXPECT_EQ(e.count[14], 2);
  EXPECT_EQ(e.count[5], 3);
  EXPECT_EQ(e.correct[5], 1);
  EXPECT_NEAR(e.ece(), 1.0 / 6.0, 1e-12);
  // Perfectly calibrated: confidence 0.7, 7 of 10 right.
  EceBins calibrated;
  for (int i = 0; i < 10; ++i) calibrated.add(0.7, i < 7);
  EXPECT_NEAR(calibrated.ece(), 0.0, 1e-12);
  // Always right at confidence 0.2: ECE 0.8. Merging weighs the bins by their counts.
  EceBins under;
  for (int i = 0; i < 4; ++i) under.add(0.2, true);
  EXPECT_NEAR(under.ece(), 0.8, 1e-12);
  EceBins merged = calibrated;
  merged.merge(under);
  EXPECT_EQ(merged.total(), 14);
  EXPECT_NEAR(merged.ece(), 4.0 / 14.0 * 0.8, 1e-12);
}

class CompareModels : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("compare");
    ThreadPool pool(1);
    ref_ = model::testutil::load_tiny_model(dir_ / "a", {.tied = false}, pool);
    // The same model with one weight matrix perturbed by ±10 %.
    pert_ = model::testutil::load_tiny_model(dir_ / "b", {.tied = false}, pool);
    Tensor up = pert_.layers[0].w_up.dense().to_f32();
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(0.9f, 1.1f);
    for (int64_t i = 0; i < up.numel(); ++i) up.mutable_f32()[i] *= u(rng);
    pert_.layers[0].w_up = up;
    for (size_t i = 0; i < ids_.size(); ++i) ids_[i] = static_cast<int32_t>((i * i + 3 * i) % 61);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  model::Model ref_, pert_;
  std::vector<int32_t> ids_ = std::vector<int32_t>(5 * 64 + 10);  // 5 windows of 64, tail dropped
};

TEST_F(CompareModels, ModelAgainstItselfIsExactlyZero) {
  ThreadPool pool(2);
  const model::Model* cands[] = {&ref_};
  const CompareReport rep = compare_models(ref_, cands, ids_, {.ctx = 64}, pool);
  ASSERT_EQ(rep.candidates.size(), 1u);
  const CompareResult& r = rep.candidates[0];
  EXPECT_EQ(r.n_windows, 5);
  EXPECT_EQ(r.n_predicted, 5 * 63);
  EXPECT_EQ(r.kld_mean, 0.0);
  EXPECT_EQ(r.kld.max, 0.0);
  EXPECT_EQ(r.top1_agreement, 1.0);
  EXPECT_EQ(r.delta_ppl, 0.0);
  EXPECT_EQ(r.ppl, r.ppl_ref);
  EXPECT_EQ(r.kld_mean_ci.lo, 0.0);
  EXPECT_EQ(r.kld_mean_ci.hi, 0.0);
  EXPECT_EQ(r.delta_ppl_ci.lo, 0.0);
  EXPECT_EQ(r.delta_ppl_ci.hi, 0.0);
  EXPECT_EQ(r.top1_agreement_ci.lo, 1.0);
  EXPECT_EQ(r.top1_agreement_ci.hi, 1.0);
  for (const double k : r.kld_per_token) ASSERT_EQ(k, 0.0);
  EXPECT_EQ(r.flips_lost, 0);
  EXPECT_EQ(r.flips_gained, 0);
  EXPECT_EQ(r.accuracy, rep.ref_accuracy);
  EXPECT_EQ(r.ece, rep.ref_ece);
  EXPECT_EQ(r.ece_delta, 0.0);
  EXPECT_EQ(rep.ref_ece_bins.total(), 5 * 63);
}

TEST_F(CompareModels, PerturbedModelAgainstPerplexityAndNaiveMetrics) {
  ThreadPool pool(2);
  const model::Model* cands[] = {&pert_};
  const CompareReport rep = compare_models(ref_, cands, ids_, {.ctx = 64}, pool);
  const CompareResult& r = rep.candidates[0];
  const PerplexityResult pr = evaluate_perplexity(ref_, ids_, {.ctx = 64}, pool);
  const PerplexityResult pp = evaluate_perplexity(pert_, ids_, {.ctx = 64}, pool);
  EXPECT_EQ(r.ppl_ref, pr.ppl);
  EXPECT_EQ(r.ppl, pp.ppl);
  EXPECT_EQ(r.nll_ref_per_window, pr.nll_per_window);
  EXPECT_EQ(r.nll_per_window, pp.nll_per_window);
  EXPECT_EQ(r.delta_ppl, pp.ppl - pr.ppl);
  EXPECT_NE(r.delta_ppl, 0.0);
  EXPECT_GT(r.kld_mean, 0.0);
  EXPECT_LE(r.kld.median, r.kld.p90);
  EXPECT_LE(r.kld.p99, r.kld.p999);
  EXPECT_LE(r.kld.p999, r.kld.max);
  EXPECT_LT(r.kld_mean_ci.lo, r.kld_mean);
  EXPECT_GT(r.kld_mean_ci.hi, r.kld_mean);
  EXPECT_LT(r.delta_ppl_ci.lo, r.delta_ppl);
  EXPECT_GT(r.delta_ppl_ci.hi, r.delta_ppl);
  EXPECT_NEAR(r.ppl_ratio, std::exp((std::log(pp.ppl) - std::log(pr.ppl))), 1e-12);

  // Every per-token KL and the agreement count, recomputed naively from the two models' logits.
  long double kl_total = 0;
  int64_t agree = 0, right_ref = 0, right = 0, lost = 0, gained = 0;
  EceBins ece_ref, ece;
  const int64_t vocab = ref_.config.vocab_size;
  for (int64_t w = 0; w < 5; ++w) {
    const std::span<const int32_t> win(ids_.data() + w * 64, 64);
    const Tensor a = model::forward(ref_, win, pool), b = model::forward(pert_, win, pool);
    double window_kl = 0;
    int64_t window_agree = 0;
    for (int64_t t = 0; t < 63; ++t) {
      const std::vector<float> ra(a.f32() + t * vocab, a.f32() + (t + 1) * vocab);
      const std::vector<float> rb(b.f32() + t * vocab, b.f32() + (t + 1) * vocab);
      const long double kl = naive_kl(ra, rb);
      EXPECT_NEAR(r.kld_per_token[static_cast<size_t>(w * 63 + t)], static_cast<double>(kl), 1e-12 + 1e-9 * static_cast<double>(kl));
      kl_total += kl;
      window_kl += static_cast<double>(kl);
      size_t ia = 0, ib = 0;
      for (size_t v = 1; v < ra.size(); ++v) {
        if (ra[v] > ra[ia]) ia = v;
        if (rb[v] > rb[ib]) ib = v;
      }
      window_agree += ia == ib ? 1 : 0;
      const auto target = static_cast<size_t>(win[static_cast<size_t>(t + 1)]);
      right_ref += ia == target;
      right += ib == target;
      lost += ia == target && ib != target;
      gained += ia != target && ib == target;
      long double za = 0, zb = 0;
      for (size_t v = 0; v < ra.size(); ++v) {
        za += std::exp(static_cast<long double>(ra[v]) - ra[ia]);
        zb += std::exp(static_cast<long double>(rb[v]) - rb[ib]);
      }
      ece_ref.add(static_cast<double>(1 / za), ia == target);
      ece.add(static_cast<double>(1 / zb), ib == target);
    }
    EXPECT_NEAR(r.kld_per_window[static_cast<size_t>(w)], window_kl, 1e-9 * window_kl);
    EXPECT_EQ(r.top1_per_window[static_cast<size_t>(w)], window_agree);
    agree += window_agree;
  }
  EXPECT_NEAR(r.kld_mean, static_cast<double>(kl_total / (5 * 63)), 1e-9 * r.kld_mean);
  EXPECT_EQ(r.top1_agreement, static_cast<double>(agree) / (5 * 63));
  EXPECT_LT(agree, 5 * 63);  // the perturbation flips some argmaxes on this tiny model
  EXPECT_EQ(rep.ref_accuracy, static_cast<double>(right_ref) / (5 * 63));
  EXPECT_EQ(r.accuracy, static_cast<double>(right) / (5 * 63));
  EXPECT_EQ(r.flips_lost, lost);
  EXPECT_EQ(r.flips_gained, gained);
  EXPECT_EQ(r.ece_bins.count, ece.count);  // same bins; the sums to rounding
  EXPECT_NEAR(rep.ref_ece, ece_ref.ece(), 1e-9);
  EXPECT_NEAR(r.ece, ece.ece(), 1e-9);
  EXPECT_NEAR(r.ece_delta, ece.ece() - ece_ref.ece(), 1e-9);
  EXPECT_GT(right_ref, 0);
}

void expect_same(const CompareResult& a, const CompareResult& b) {
  EXPECT_EQ(a.ppl_ref, b.ppl_ref);
  EXPECT_EQ(a.ppl, b.ppl);
  EXPECT_EQ(a.delta_ppl_ci.lo, b.delta_ppl_ci.lo);
  EXPECT_EQ(a.delta_ppl_ci.hi, b.delta_ppl_ci.hi);
  EXPECT_EQ(a.kld_mean, b.kld_mean);
  EXPECT_EQ(a.kld_mean_ci.lo, b.kld_mean_ci.lo);
  EXPECT_EQ(a.kld_mean_ci.hi, b.kld_mean_ci.hi);
  EXPECT_EQ(a.kld.median, b.kld.median);
  EXPECT_EQ(a.kld.p999, b.kld.p999);
  EXPECT_EQ(a.kld.max, b.kld.max);
  EXPECT_EQ(a.top1_agreement, b.top1_agreement);
  EXPECT_EQ(a.top1_agreement_ci.lo, b.top1_agreement_ci.lo);
  EXPECT_EQ(a.nll_per_window, b.nll_per_window);
  EXPECT_EQ(a.kld_per_window, b.kld_per_window);
  EXPECT_EQ(a.top1_per_window, b.top1_per_window);
  EXPECT_EQ(a.kld_per_token, b.kld_per_token);
  EXPECT_EQ(a.ece, b.ece);
  EXPECT_EQ(a.accuracy, b.accuracy);
  EXPECT_EQ(a.flips_lost, b.flips_lost);
  EXPECT_EQ(a.flips_gained, b.flips_gained);
}

TEST_F(CompareModels, IdenticalForAnyThreadCountAndCandidateList) {
  ThreadPool one(1), three(3);
  const model::Model* both[] = {&pert_, &ref_};
  const model::Model* alone[] = {&pert_};
  int64_t calls = 0;
  const CompareReport a = compare_models(ref_, both, ids_, {.ctx = 64, .on_progress = [&](int64_t done, int64_t total) {
                                                              EXPECT_EQ(total, 5);
                                                              EXPECT_EQ(done, ++calls);
                                                            }},
                                         one);
  EXPECT_EQ(calls, 5);
  const CompareReport b = compare_models(ref_, both, ids_, {.ctx = 64}, three);
  const CompareReport c = compare_models(ref_, alone, ids_, {.ctx = 64}, three);
  ASSERT_EQ(a.candidates.size(), 2u);
  ASSERT_EQ(b.candidates.size(), 2u);
  expect_same(a.candidates[0], b.candidates[0]);
  expect_same(a.candidates[1], b.candidates[1]);
  expect_same(a.candidates[0], c.candidates[0]);
  EXPECT_EQ(b.workers, 3u);
  EXPECT_GT(a.candidates[0].tokens_per_second, 0.0);

  const CompareReport d = compare_models(ref_, alone, ids_, {.ctx = 64, .max_windows = 2}, three);
  EXPECT_EQ(d.n_windows, 2);
  EXPECT_EQ(d.candidates[0].kld_per_token.size(), 2u * 63);
  EXPECT_EQ(d.workers, 2u);
}

TEST_F(CompareModels, Errors) {
  ThreadPool pool(1);
  model::Model other = pert_;
  other.config.vocab_size = 60;
  other.source = "other-model";
  const model::Model* cands[] = {&ref_, &other};
  try {
    compare_models(ref_, cands, ids_, {.ctx = 64}, pool);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("other-model"), std::string::npos) << msg;
    EXPECT_NE(msg.find(ref_.source.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("60"), std::string::npos) << msg;
    EXPECT_NE(msg.find("61"), std::string::npos) << msg;
  }
  const model::Model* self[] = {&ref_};
  EXPECT_THROW(compare_models(ref_, self, std::span(ids_).first(10), {.ctx = 64}, pool), Error);
}

}  // namespace
}  // namespace calq::eval
