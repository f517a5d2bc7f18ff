#include "core/thread_pool.h"

#include <algorithm>
#include <utility>

namespace calq {
namespace {
thread_local bool t_inside_pool = false;
}

ThreadPool::ThreadPool(size_t num_threads) {
  if (num_threads == 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(num_threads - 1);
  for (size_t i = 0; i + 1 < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::parallel_for(size_t begin, size_t end, Grain grain, const RangeFn& fn) {
  if (end <= begin) return;
  const size_t n = end - begin;
  const size_t min_items = std::max<size_t>(1, grain.min_items);
  const size_t max_chunks = std::max<size_t>(1, n / min_items);
  const size_t num_chunks = std::min(num_threads(), max_chunks);
  if (num_chunks == 1 || t_inside_pool) {
    fn(begin, end);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    job_ = Job{.fn = &fn, .begin = begin, .end = end, .chunk = (n + num_chunks - 1) / num_chunks,
               .num_chunks = num_chunks};
    next_chunk_ = 0;
    chunks_done_ = 0;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  t_inside_pool = true;
  run_chunks();
  t_inside_pool = false;
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return chunks_done_ == job_.num_chunks; });
  job_.fn = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void ThreadPool::run_chunks() {
  for (;;) {
    size_t c;
    Job job;
    {
      std::lock_guard lock(mutex_);
      if (job_.fn == nullptr || next_chunk_ >= job_.num_chunks) return;
      c = next_chunk_++;
      job = job_;
    }
    const size_t b = job.begin + c * job.chunk;
    const size_t e = std::min(job.end, b + job.chunk);
    try {
      if (b < e) (*job.fn)(b, e);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    bool last;
    {
      std::lock_guard lock(mutex_);
      last = ++chunks_done_ == job.num_chunks;
    }
    if (last) done_.notify_all();
  }
}

void ThreadPool::worker_loop() {
  t_inside_pool = true;
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_chunks();
  }
}

}  // namespace calq
