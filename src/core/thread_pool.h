// ThreadPool — the one pool of worker threads in calq; every parallel loop goes through it.
//
// Contract:
//  * parallel_for(begin, end, grain, fn) calls fn(chunk_begin, chunk_end) over disjoint chunks that
//    cover [begin, end) exactly once, and returns when all are done. The chunking depends only on
//    (begin, end, grain, num_threads()), never on timing, so work that writes disjoint outputs
//    per chunk is deterministic; results that must not depend on the thread count must not reduce
//    across chunks in chunk-dependent order.
//  * The calling thread takes part in the work. Nested parallel_for runs the inner loop inline.
//  * The first exception thrown by fn is rethrown in the caller after all chunks finish.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace calq {

// The smallest number of iterations worth handing to one thread; name it at the call site,
// e.g. Grain{.min_items = 16}.
struct Grain {
  size_t min_items = 1;
};

class ThreadPool {
 public:
  // num_threads == 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(size_t num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t num_threads() const { return workers_.size() + 1; }

  using RangeFn = std::function<void(size_t, size_t)>;
  void parallel_for(size_t begin, size_t end, Grain grain, const RangeFn& fn);

 private:
  struct Job {
    const RangeFn* fn = nullptr;
    size_t begin = 0, end = 0, chunk = 0, num_chunks = 0;
  };
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  Job job_;
  size_t next_chunk_ = 0;
  size_t chunks_done_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace calq
