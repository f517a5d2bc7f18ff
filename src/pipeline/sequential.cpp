#include "pipeline/sequential.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/stopwatch.h"
#include "core/error.h"
#include "model/block_topology.h"
#include "model/forward.h"

namespace calq::pipeline {
namespace {

// One sample's input rows of a site whose Hessian is added after the sample's other statistics.
struct HessianRows {
  bool expert = false;  // an expert site (where.expert, where.site) or a block site (where.site)
  calib::CalibrationStats::ExpertSite where;
  int64_t rows = 0;
  std::vector<float> x;  // [rows, cols]
};

// Runs fn(sample, slot) for every sample, one per worker at a time; `slot` (< batch) indexes
// per-worker buffers. Returns after all ran; after each batch, after_batch(b0, b1) runs on the
// calling thread (to merge per-sample results in sample order).
void for_each_sample(ThreadPool& pool, int64_t n, const std::function<void(int64_t, size_t)>& fn,
                     const std::function<void(int64_t, int64_t)>& after_batch) {
  const auto batch = static_cast<int64_t>(pool.num_threads());
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t b1 = std::min(n, b0 + batch);
    pool.parallel_for(static_cast<size_t>(b0), static_cast<size_t>(b1), Grain{.min_items = 1},
                      [&](size_t s0, size_t s1) {
                        for (size_t s = s0; s < s1; ++s) fn(static_cast<int64_t>(s), s - static_cast<size_t>(b0));
                      });
    if (after_batch) after_batch(b0, b1);
  }
}

}  // namespace

SequentialResult run_layer_sequential(model::Model& m, std::span<const std::vector<int32_t>> samples,
                                      const SequentialOptions& o, const LayerQuantizer* quantize, ThreadPool& pool) {
  const auto t_start = std::chrono::steady_clock::now();
  if (samples.empty()) fail(ErrorKind::kInvalidArgument, "calibration: no samples to run");
  const auto seq = static_cast<int64_t>(samples[0].size());
  for (const auto& s : samples) {
    if (static_cast<int64_t>(s.size()) != seq || seq < 1) {
      fail(ErrorKind::kInvalidArgument, "calibration: samples must all have the same non-zero length");
    }
  }
  const auto n = static_cast<int64_t>(samples.size());
  const int64_t hs = m.config.hidden_size;
  const size_t stride = static_cast<size_t>(seq * hs);
  const auto batch = static_cast<size_t>(pool.num_threads());

  const bool second_pass = quantize != nullptr && o.true_sequential;
  if (o.float_stream && !second_pass)
    fail(ErrorKind::kInvalidArgument, "calibration: the full-precision stream (block reconstruction) needs "
         "true-sequential quantization");

  SequentialResult r;
  r.samples = n;
  r.seq_len = seq;
  r.stats = calib::CalibrationStats(o.stats);
  r.activation_bytes = (o.float_stream ? 2 : 1) * n * seq * hs * static_cast<int64_t>(sizeof(float));
  std::vector<float> hidden(static_cast<size_t>(n) * stride);
  for_each_sample(
      pool, n, [&](int64_t s, size_t) { model::embed_tokens(m, samples[static_cast<size_t>(s)], &hidden[s * stride]); },
      nullptr);
  // The float model's hidden states (float_stream): the same embedding to start with.
  std::vector<float> fp_hidden;
  if (o.float_stream) fp_hidden = hidden;
  std::vector<model::LayerScratch> scratch;
  scratch.reserve(batch);
  for (size_t i = 0; i < batch; ++i) scratch.emplace_back(m.config, seq);
  std::vector<std::vector<float>> copies(second_pass ? batch : 0, std::vector<float>(second_pass ? stride : 0));
  // Per-sample statistics without the Hessian; each sample's Hessian rows are stashed and added to
  // the one total in sample order, tiles over the pool (collectors.h: one Hessian per site, not one
  // per worker).
  const bool deferred = o.stats.contains(calib::StatKind::kHessian);
  const calib::StatSet sample_kinds = o.stats.without(calib::StatKind::kHessian);
  std::vector<calib::CalibrationStats> partial(batch, calib::CalibrationStats(sample_kinds));
  std::vector<std::vector<HessianRows>> stash(batch);
  const auto merge_sample = [&](calib::CalibrationStats& into, size_t slot) {
    into.merge(partial[slot]);
    for (const HessianRows& e : stash[slot]) {
      if (e.expert) {
        into.add_expert_hessian(e.where, e.x.data(), e.rows, &pool);
      } else {
        into.add_hessian(e.where.layer, e.where.site, e.x.data(), e.rows, &pool);
      }
    }
    stash[slot].clear();
  };

  // A hook observing each site of the model's block once (the first role that reads it), after a
  // finiteness check; a MoE layer's router input (moe_in) and each expert's inputs (expert_in,
  // expert_down) go to the expert statistics with the router's token counts.
  const model::BlockTopology& block = model::block_topology(m.config);
  const auto make_hook = [&block, deferred](calib::CalibrationStats& into, std::vector<HessianRows>& rows_of) {
    return model::LinearHook([&into, &rows_of, &block, deferred](const model::LinearInput& in) {
      using model::TensorRole;
      const auto keep = [&](bool expert, calib::CalibrationStats::ExpertSite where) {
        if (deferred && in.rows > 0) {
          rows_of.push_back({.expert = expert, .where = where, .rows = in.rows,
                             .x = std::vector<float>(in.x, in.x + in.rows * in.cols)});
        }
      };
      if (in.role == TensorRole::kMoeRouter) {
        calib::check_finite_activations(in.x, in.rows, in.cols, in.layer, model::InputSite::kMoeIn);
        into.observe_expert({in.layer, -1, model::InputSite::kMoeIn}, in.x, in.rows, in.cols);
        keep(true, {in.layer, -1, model::InputSite::kMoeIn});
        return;
      }
      if (in.expert >= 0) {
        if (in.role == TensorRole::kExpertUp) return;  // the gate's input
        const model::InputSite site =
            in.role == TensorRole::kExpertGate ? model::InputSite::kExpertIn : model::InputSite::kExpertDown;
        calib::check_finite_activations(in.x, in.rows, in.cols, in.layer, site);
        into.observe_expert({in.layer, in.expert, site}, in.x, in.rows, in.cols);
        keep(true, {in.layer, in.expert, site});
        if (in.role == TensorRole::kExpertGate) {
          std::vector<int64_t> one(static_cast<size_t>(in.expert + 1), 0);
          one.back() = in.routed_rows >= 0 ? in.routed_rows : in.rows;
          into.add_routed(in.layer, one);
        }
        return;
      }
      if (model::site_of(block, in.role) == nullptr) return;  // the shared expert's gate: no site
      const model::InputSite site = calib::input_site(in.role, block);
      if (calib::site_roles(site, block).front() != in.role) return;
      calib::check_finite_activations(in.x, in.rows, in.cols, in.layer, site);
      into.observe(in.layer, site, in.x, in.rows, in.cols);
      keep(false, {in.layer, -1, site});
    });
  };

  // Statistics pass config: MoE statistics of every expert on every token when asked.
  model::ModelConfig stats_config = m.config;
  stats_config.moe_hook_all_experts = o.all_experts;
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    LayerProgress progress{.layer = l, .n_layers = m.config.num_layers};
    model::LayerWeights& weights = m.layers[static_cast<size_t>(l)];
    calib::CalibrationStats layer_stats(o.stats);

    auto t0 = std::chrono::steady_clock::now();
    for_each_sample(
        pool, n,
        [&](int64_t s, size_t slot) {
          partial[slot] = calib::CalibrationStats(sample_kinds);
          const model::LinearHook hook = make_hook(partial[slot], stash[slot]);
          float* h = &hidden[s * stride];
          if (second_pass) {
            std::memcpy(copies[slot].data(), h, stride * sizeof(float));
            h = copies[slot].data();
          }
          model::decoder_layer_forward(stats_config, weights, l, h, seq, scratch[slot], pool, &hook);
        },
        [&](int64_t b0, int64_t b1) {
          for (int64_t s = b0; s < b1; ++s) merge_sample(layer_stats, static_cast<size_t>(s - b0));
        });
    progress.seconds_stats = seconds_since(t0);

    if (quantize != nullptr) {
      t0 = std::chrono::steady_clock::now();
      if (o.float_stream) {
        // The float layer on the float stream, before its weights are replaced: the targets.
        for_each_sample(
            pool, n,
            [&](int64_t s, size_t slot) {
              model::decoder_layer_forward(m.config, weights, l, &fp_hidden[s * stride], seq, scratch[slot], pool,
                                           nullptr);
            },
            nullptr);
      }
      // Without the second pass, pass 1 already advanced `hidden` past this layer: no inputs then.
      const LayerStreams streams{.samples = n, .seq_len = seq,
                                 .inputs = second_pass ? std::span<const float>(hidden) : std::span<const float>(),
                                 .targets = o.float_stream ? std::span<const float>(fp_hidden)
                                                           : std::span<const float>()};
      (*quantize)(l, weights, layer_stats, streams);
      progress.seconds_quantize = seconds_since(t0);
    }
    if (second_pass) {
      t0 = std::chrono::steady_clock::now();
      for_each_sample(
          pool, n,
          [&](int64_t s, size_t slot) {
            model::decoder_layer_forward(m.config, weights, l, &hidden[s * stride], seq, scratch[slot], pool, nullptr);
          },
          nullptr);
      progress.seconds_outputs = seconds_since(t0);
    }
    r.seconds_forward += progress.seconds_stats + progress.seconds_outputs;
    if (o.keep_layer_stats) r.stats.merge(layer_stats);
    if (o.on_layer) o.on_layer(progress);
  }

  // The output head's input: the final norm of every sample's last hidden state.
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> normed(batch, std::vector<float>(stride));
  for_each_sample(
      pool, n,
      [&](int64_t s, size_t slot) {
        partial[slot] = calib::CalibrationStats(sample_kinds);
        model::final_norm_rows(m, &hidden[s * stride], seq, normed[slot].data(), pool);
        const model::LinearHook hook = make_hook(partial[slot], stash[slot]);
        hook(model::LinearInput{-1, model::TensorRole::kOutput, normed[slot].data(), seq, hs});
      },
      [&](int64_t b0, int64_t b1) {
        for (int64_t s = b0; s < b1; ++s) merge_sample(r.stats, static_cast<size_t>(s - b0));
      });
  r.seconds_forward += seconds_since(t0);
  r.stats.samples = n;
  r.stats.seq_len = seq;
  r.seconds = seconds_since(t_start);
  return r;
}

}  // namespace calq::pipeline
