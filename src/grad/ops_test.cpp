// Each op's backward against central finite differences in double (the loss Σ r ⊙ output with a
// random r), on small random shapes.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "core/error.h"
#include "grad/grad_check_testutil.h"
#include "grad/ops_attention.h"
#include "grad/ops_basic.h"

namespace calq::grad {
namespace {

using testutil::check_entries;
using testutil::numeric_grad;
using testutil::pick;
using testutil::project;
using testutil::random_values;
using testutil::rel_error;

constexpr double kTol = 1e-6;

// Checks an analytic gradient of `loss` with respect to x (all entries).
void expect_grad(std::vector<double>& x, const std::vector<double>& analytic, const std::function<double()>& loss,
                 const char* what) {
  const auto entries = check_entries(x.size(), x.size());
  const auto fd = numeric_grad(x, entries, loss);
  EXPECT_GT(testutil::norm(fd), 1e-3) << what << ": the gradient should not vanish";
  EXPECT_LT(rel_error(fd, analytic), kTol) << what;
}

TEST(GradOps, LinearWithAndWithoutBias) {
  ThreadPool pool(2);
  const int64_t rows = 5, in = 7, out = 4;
  for (const bool with_bias : {false, true}) {
    auto x = random_values(rows * in, 1), w = random_values(out * in, 2), b = random_values(out, 3);
    const auto r = random_values(rows * out, 4);
    auto loss = [&] {
      std::vector<double> y(rows * out);
      linear_forward(pool, x.data(), rows, in, w.data(), out, with_bias ? b.data() : nullptr, y.data());
      return project(y, r);
    };
    std::vector<double> dx(rows * in, 0.5), dw(out * in, 0.0), db(out, 0.0);
    linear_backward(pool, x.data(), rows, in, w.data(), out, r.data(), dx.data(), false, dw.data(),
                    with_bias ? db.data() : nullptr);
    expect_grad(x, dx, loss, "dx");
    expect_grad(w, dw, loss, "dw");
    if (with_bias) expect_grad(b, db, loss, "db");
    // Parameter gradients add up over calls; dx accumulates on request.
    std::vector<double> dx2(dx), dw2(dw);
    linear_backward(pool, x.data(), rows, in, w.data(), out, r.data(), dx2.data(), true, dw2.data(), static_cast<double*>(nullptr));
    for (size_t i = 0; i < dw.size(); ++i) EXPECT_DOUBLE_EQ(dw2[i], 2 * dw[i]);
    for (size_t i = 0; i < dx.size(); ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx[i]);
  }
}

TEST(GradOps, EmbeddingScatterAddsRepeatedTokens) {
  ThreadPool pool(2);
  const int64_t vocab = 6, cols = 5;
  auto table = random_values(vocab * cols, 5);
  const std::vector<int32_t> ids = {1, 3, 1, 5, 1};
  const auto r = random_values(ids.size() * cols, 6);
  auto loss = [&] {
    std::vector<double> h(ids.size() * cols);
    embedding_forward(table.data(), vocab, cols, ids, h.data());
    return project(h, r);
  };
  std::vector<double> dtable(table.size(), 0.0);
  embedding_backward(pool, vocab, cols, ids, r.data(), dtable.data());
  expect_grad(table, dtable, loss, "dtable");
  const std::vector<int32_t> bad = {1, 6};
  std::vector<double> h(bad.size() * cols);
  EXPECT_THROW(embedding_forward(table.data(), vocab, cols, bad, h.data()), Error);
  EXPECT_THROW(embedding_backward(pool, vocab, cols, bad, h.data(), dtable.data()), Error);
}

TEST(GradOps, RmsNorm) {
  ThreadPool pool(2);
  const int64_t rows = 4, cols = 9;
  auto x = random_values(rows * cols, 7), w = random_values(cols, 8);
  const auto r = random_values(rows * cols, 9);
  const double eps = 1e-5;
  auto loss = [&] {
    std::vector<double> y(rows * cols);
    rms_norm_forward(pool, x.data(), w.data(), rows, cols, eps, y.data());
    return project(y, r);
  };
  std::vector<double> dx(x.size()), dw(cols, 0.0);
  rms_norm_backward(pool, x.data(), w.data(), rows, cols, eps, r.data(), dx.data(), false, dw.data());
  expect_grad(x, dx, loss, "dx");
  expect_grad(w, dw, loss, "dweight");
}

TEST(GradOps, RotaryEmbeddingIsItsTransposeBackward) {
  ThreadPool pool(2);
  const int64_t batch = 2, seq = 5, heads = 3, hd = 8, ld = heads * hd + 2;  // padded rows
  std::vector<double> cos_t(seq * hd / 2), sin_t(cos_t.size());
  rope_tables_t(seq, hd, 100.0, cos_t.data(), sin_t.data());
  auto x = random_values(batch * seq * ld, 10);
  const auto r = random_values(x.size(), 11);
  auto loss = [&] {
    std::vector<double> y(x);
    rope_forward(pool, y.data(), ld, batch, seq, heads, hd, cos_t.data(), sin_t.data());
    return project(y, r);
  };
  std::vector<double> dx(r);
  rope_backward(pool, dx.data(), ld, batch, seq, heads, hd, cos_t.data(), sin_t.data());
  expect_grad(x, dx, loss, "dx");
  // Position 0 is the identity; later positions are not.
  std::vector<double> y(x);
  rope_forward(pool, y.data(), ld, batch, seq, heads, hd, cos_t.data(), sin_t.data());
  for (int64_t i = 0; i < heads * hd; ++i) EXPECT_EQ(y[i], x[i]);
  EXPECT_NE(y[ld + 1], x[ld + 1]);
}

TEST(GradOps, SwiGlu) {
  ThreadPool pool(2);
  const int64_t n = 23;
  auto g = random_values(n, 12, 2.0), u = random_values(n, 13);
  const auto r = random_values(n, 14);
  auto loss = [&] {
    std::vector<double> h(n);
    swiglu_forward(pool, g.data(), u.data(), n, h.data());
    return project(h, r);
  };
  std::vector<double> dg(n), du(n);
  swiglu_backward(pool, g.data(), u.data(), r.data(), n, dg.data(), du.data());
  expect_grad(g, dg, loss, "dgate");
  expect_grad(u, du, loss, "dup");
}

// GQA with 2 query heads per kv head, two sequences, with and without a window shorter than them.
TEST(GradOps, GroupedQueryAttentionWithSlidingWindow) {
  ThreadPool pool(2);
  for (const int64_t window : {0, 3}) {
    const AttentionShape s{.batch = 2, .seq_len = 6, .num_heads = 4, .num_kv_heads = 2, .head_dim = 4,
                           .window = window};
    const int64_t n = s.batch * s.seq_len;
    auto q = random_values(n * s.q_dim(), 15), k = random_values(n * s.kv_dim(), 16),
         v = random_values(n * s.kv_dim(), 17);
    const auto r = random_values(n * s.q_dim(), 18);
    std::vector<double> probs(s.probs_size());
    auto loss = [&] {
      std::vector<double> out(n * s.q_dim());
      attention_forward(pool, s, q.data(), k.data(), v.data(), probs.data(), out.data());
      return project(out, r);
    };
    loss();
    std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
    attention_backward(pool, s, q.data(), k.data(), v.data(), probs.data(), r.data(), dq.data(), dk.data(), dv.data());
    expect_grad(q, dq, loss, window ? "dq (window)" : "dq");
    expect_grad(k, dk, loss, window ? "dk (window)" : "dk");
    expect_grad(v, dv, loss, window ? "dv (window)" : "dv");
    // The mask: with a window of 3 the query at 5 gives key 2 no weight, and the first query only
    // sees itself.
    const double* p0 = probs.data();
    EXPECT_EQ(p0[0], 1.0);
    EXPECT_EQ(p0[5 * s.seq_len + 2] == 0.0, window == 3);
    EXPECT_EQ(p0[5 * s.seq_len + 3] == 0.0, false);
  }
}

// Longer than one 64-row query block, so the blocked products and a window that starts a block
// past key 0 are covered (a sample of the entries: the sequence is long).
TEST(GradOps, AttentionAcrossQueryBlocks) {
  ThreadPool pool(2);
  for (const int64_t window : {0, 20}) {
    const AttentionShape s{.batch = 1, .seq_len = 70, .num_heads = 2, .num_kv_heads = 1, .head_dim = 4,
                           .window = window};
    const int64_t n = s.seq_len;
    auto q = random_values(n * s.q_dim(), 21), k = random_values(n * s.kv_dim(), 22),
         v = random_values(n * s.kv_dim(), 23);
    const auto r = random_values(n * s.q_dim(), 24);
    std::vector<double> probs(s.probs_size());
    auto loss = [&] {
      std::vector<double> out(n * s.q_dim());
      attention_forward(pool, s, q.data(), k.data(), v.data(), probs.data(), out.data());
      return project(out, r);
    };
    loss();
    // Row 69 of head 1: with the window, keys 50..69 only; rows sum to 1.
    const double* row = probs.data() + (n + 69) * n;
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += row[j];
    EXPECT_NEAR(sum, 1.0, 1e-12);
    EXPECT_EQ(row[49] == 0.0, window == 20);
    EXPECT_NE(row[50], 0.0);
    std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
    attention_backward(pool, s, q.data(), k.data(), v.data(), probs.data(), r.data(), dq.data(), dk.data(), dv.data());
    for (auto [x, d, name] : {std::tuple{&q, &dq, "dq"}, {&k, &dk, "dk"}, {&v, &dv, "dv"}}) {
      const auto entries = check_entries(x->size(), 48, 5);
      EXPECT_LT(rel_error(numeric_grad(*x, entries, loss), pick(*d, entries)), kTol) << name << " window " << window;
    }
  }
}

}  // namespace
}  // namespace calq::grad
