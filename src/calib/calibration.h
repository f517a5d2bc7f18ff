// Calibration windows and the activation pass over them.
//
// Window choice (deterministic, documented in `calq inspect --help` and docs/OUTLIERS.md): the
// token stream is cut as the `gptq-windows` protocol cuts it — W = n_tokens / ctx non-overlapping
// windows of ctx tokens, tail dropped — and `samples` of them are taken evenly spaced over the
// whole text: window floor(i * W / samples) for i = 0..samples-1. Spreading the windows over the
// text samples every part of a calibration file made of many documents, not just its start.
//
// Contract: errors from bad options are ErrorKind::kInvalidArgument naming the flag: ctx < 2,
// samples < 1, a text shorter than one window, or fewer windows than samples. Windows run in
// parallel over the pool (one window per worker, each forward pass single-threaded inside) and
// their observers are merged in window order, so the statistics are bitwise identical for any
// thread count. Logits are not computed: the pass stops at the input of the output head.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "calib/activation_stats.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/model.h"

namespace calq::calib {

// Start offsets (in tokens) of the chosen windows, ascending.
std::vector<int64_t> calibration_windows(int64_t n_tokens, int64_t ctx, int64_t samples);

struct ActivationPassOptions {
  int64_t ctx = 512;
  int64_t samples = 128;
  double threshold = kLlmInt8Threshold;
  // Called after each finished window with (windows done, windows total); may run on any thread
  // but never concurrently with itself.
  std::function<void(int64_t, int64_t)> on_progress;
};

ActivationObserver observe_activations(const model::Model& model, std::span<const int32_t> ids,
                                       const ActivationPassOptions& options, ThreadPool& pool);

// Runs one sequence through every decoder layer and the final norm, calling `hook` with the input
// of every linear layer (the output head's with layer -1), exactly as model::forward() does, but
// without computing logits.
void run_linear_inputs(const model::Model& model, std::span<const int32_t> ids, const model::LinearHook& hook,
                       ThreadPool& pool);

}  // namespace calq::calib
