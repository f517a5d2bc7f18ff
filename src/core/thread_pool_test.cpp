#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace calq {
namespace {

TEST(ThreadPool, CoversRangeExactlyOnce) {
  for (size_t threads : {1u, 2u, 5u}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (size_t n : {0u, 1u, 7u, 1000u}) {
      std::vector<std::atomic<int>> hits(n + 3);
      pool.parallel_for(3, 3 + n, Grain{.min_items = 2}, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) hits[i]++;
      });
      for (size_t i = 0; i < hits.size(); ++i) EXPECT_EQ(hits[i].load(), i >= 3 ? 1 : 0);
    }
  }
}

TEST(ThreadPool, ChunkingIsDeterministic) {
  ThreadPool pool(3);
  auto chunks = [&] {
    std::vector<std::pair<size_t, size_t>> seen(100, {0, 0});
    pool.parallel_for(0, 100, Grain{.min_items = 10}, [&](size_t b, size_t e) { seen[b] = {b, e}; });
    return seen;
  };
  EXPECT_EQ(chunks(), chunks());
}

TEST(ThreadPool, PropagatesExceptions) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(0, 10, Grain{}, [](size_t b, size_t) {
    if (b == 0) throw std::runtime_error("boom");
  }), std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int> sum{0};
  pool.parallel_for(0, 10, Grain{}, [&](size_t b, size_t e) { sum += static_cast<int>(e - b); });
  EXPECT_EQ(sum.load(), 10);
}

TEST(ThreadPool, NestedLoopsRunInline) {
  ThreadPool pool(2);
  std::atomic<int> sum{0};
  pool.parallel_for(0, 4, Grain{}, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      pool.parallel_for(0, 10, Grain{}, [&](size_t ib, size_t ie) { sum += static_cast<int>(ie - ib); });
    }
  });
  EXPECT_EQ(sum.load(), 40);
}

}  // namespace
}  // namespace calq
