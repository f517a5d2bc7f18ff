#include "calib/calibration.h"

#include <mutex>

#include "core/error.h"

namespace calq::calib {

std::vector<int64_t> calibration_windows(int64_t n_tokens, int64_t ctx, int64_t samples) {
  if (ctx < 2) fail(ErrorKind::kInvalidArgument, "ctx must be at least 2, got {}", ctx);
  if (samples < 1) fail(ErrorKind::kInvalidArgument, "samples must be at least 1, got {}", samples);
  const int64_t available = n_tokens / ctx;
  if (available == 0) {
    fail(ErrorKind::kInvalidArgument, "the text has {} tokens, fewer than one window of ctx {}", n_tokens, ctx);
  }
  if (samples > available) {
    fail(ErrorKind::kInvalidArgument,
         "the text has {} tokens, only {} windows of ctx {}; samples {} asks for more", n_tokens, available,
         ctx, samples);
  }
  std::vector<int64_t> starts;
  starts.reserve(static_cast<size_t>(samples));
  for (int64_t i = 0; i < samples; ++i) starts.push_back((i * available / samples) * ctx);
  return starts;
}

void run_linear_inputs(const model::Model& m, std::span<const int32_t> ids, const model::LinearHook& hook,
                       ThreadPool& pool) {
  const auto seq_len = static_cast<int64_t>(ids.size());
  const int64_t hs = m.config.hidden_size;
  std::vector<float> hidden(static_cast<size_t>(seq_len * hs));
  model::embed_tokens(m, ids, hidden.data());
  model::LayerScratch scratch(m.config, seq_len);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    model::decoder_layer_forward(m.config, m.layers[i], static_cast<int64_t>(i), hidden.data(), seq_len, scratch,
                                 pool, &hook);
  }
  // The output head's input, as model::output_logits() forms it (a test checks they agree).
  std::vector<float> normed(hidden.size());
  model::final_norm_rows(m, hidden.data(), seq_len, normed.data(), pool);
  if (hook) hook(model::LinearInput{-1, model::TensorRole::kOutput, normed.data(), seq_len, hs});
}

ActivationObserver observe_activations(const model::Model& m, std::span<const int32_t> ids,
                                       const ActivationPassOptions& options, ThreadPool& pool) {
  const std::vector<int64_t> starts =
      calibration_windows(static_cast<int64_t>(ids.size()), options.ctx, options.samples);
  const auto n = static_cast<int64_t>(starts.size());
  ActivationObserver total(options.threshold);

  // Windows go in batches of one per thread; each batch's observers are merged in window order.
  const auto batch = static_cast<int64_t>(pool.num_threads());
  std::mutex progress_mutex;
  int64_t done = 0;
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t b1 = std::min(n, b0 + batch);
    std::vector<ActivationObserver> partial(static_cast<size_t>(b1 - b0), ActivationObserver(options.threshold));
    const auto run_window = [&](size_t w) {
      const auto window = ids.subspan(static_cast<size_t>(starts[w]), static_cast<size_t>(options.ctx));
      run_linear_inputs(m, window, partial[w - static_cast<size_t>(b0)].hook(), pool);
      if (options.on_progress) {
        std::lock_guard lock(progress_mutex);
        options.on_progress(++done, n);
      }
    };
    pool.parallel_for(static_cast<size_t>(b0), static_cast<size_t>(b1), Grain{.min_items = 1},
                      [&](size_t w0, size_t w1) {
                        for (size_t w = w0; w < w1; ++w) run_window(w);
                      });
    for (const ActivationObserver& p : partial) total.merge(p);
  }
  return total;
}

}  // namespace calq::calib
