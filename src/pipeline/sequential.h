// The layer-sequential calibration pipeline: run calibration samples through a model one decoder
// layer at a time, collecting statistics of every linear layer's input and (optionally)
// quantizing each layer before the next one sees its outputs.
//
// Per layer i (all samples):
//  1. statistics pass — layer i runs on every sample's hidden state; the hook feeds the input of
//     each site (q/k/v share one, gate/up another; calib/collectors.h) to a per-sample
//     CalibrationStats after checking it is finite (a NaN/Inf is an Error naming layer, site,
//     token and channel); the per-sample stats are merged into the total in sample order.
//  2. quantize — the LayerQuantizer (if any) replaces layer i's linear weights, given the
//     statistics of layer i's sites and the layer's input for every sample (LayerStreams). With
//     float_stream, the full-precision stream is carried too: layer i, still float, first runs on
//     the float model's own hidden states, and those outputs are the quantizer's targets (and the
//     float stream's input to layer i+1) — what block reconstruction (qat-block) trains against.
//  3. outputs — "true sequential" (the default when quantizing): layer i runs again, now with its
//     quantized weights, and those outputs are layer i+1's inputs, so every layer is calibrated on
//     the activations the quantized model will really produce. With true_sequential = false (or
//     no quantizer) the float outputs of pass 1 are kept and no second pass runs.
// After the last layer the final norm runs and the output head's input (site head_in, layer -1)
// is observed; the head itself is left to the caller.
//
// Memory: the statistics of the layers so far (of one layer without keep_layer_stats; a layer's
// Hessians are columns² doubles per site, one per site: each worker keeps only its sample's
// inputs of the sites until the Hessians are added in sample order — calib/collectors.h), the
// hidden states of all samples (samples × seq_len × hidden float32; twice that with float_stream,
// whose hidden states are as many) plus, per worker, one sample's copy and the layer's scratch,
// plus one layer's weights in float32 while the quantizer converts them; the model's weights may
// stay in their stored dtype (HfLoadOptions).
//
// Determinism: samples run in parallel, one per worker, each forward pass single-threaded inside;
// statistics are merged in sample order; the quantizer is called on the calling thread. So the
// statistics and the quantized weights are bitwise identical for any thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "calib/collectors.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::pipeline {

// The hidden states a LayerQuantizer sees for its layer: [samples · seq_len, hidden] float32,
// sample after sample.
struct LayerStreams {
  int64_t samples = 0, seq_len = 0;
  std::span<const float> inputs;   // true sequential: the layer's input (the quantized layers' outputs); else empty
  std::span<const float> targets;  // float_stream: the float layer's output on the float stream; else empty
};

// Quantizes (replaces) the linear weights of `layer` given the statistics of its sites
// (`layer_stats` holds only layer `layer`) and its streams. Called on the calling thread; may use
// the pool. It may move Hessians out of `layer_stats` (SiteStats::take_hessian) rather than copy
// them; with keep_layer_stats, what it leaves is what is kept.
using LayerQuantizer = std::function<void(int64_t layer, model::LayerWeights& weights,
                                          calib::CalibrationStats& layer_stats, const LayerStreams& streams)>;

struct LayerProgress {
  int64_t layer = 0;
  int64_t n_layers = 0;
  double seconds_stats = 0;     // pass 1
  double seconds_quantize = 0;  // step 2
  double seconds_outputs = 0;   // pass 3 (0 when not run)
};

struct SequentialOptions {
  calib::StatSet stats = calib::StatSet::defaults();
  bool true_sequential = true;
  // Carry the full-precision stream (LayerStreams::targets). Needs a quantizer and true_sequential
  // (else a kInvalidArgument Error).
  bool float_stream = false;
  // Keep every layer's statistics in SequentialResult::stats (a statistics file needs them). false:
  // each layer's are dropped once its quantizer has run, and stats holds the head's input site only
  // — a quantizing run then holds one layer's Hessians at a time, not the whole model's (an 8B
  // model's would be tens of GB).
  bool keep_layer_stats = true;
  // Mixture-of-experts models: gather each expert's statistics on every calibration token, not
  // only the tokens the router sends it ("all experts"; outputs still follow the router, and
  // CalibrationStats::routed_tokens keeps the natural counts). Costs num_experts / top-k times the
  // MLP work of the statistics pass.
  bool all_experts = false;
  std::function<void(const LayerProgress&)> on_layer;  // after each layer, on the calling thread
};

struct SequentialResult {
  calib::CalibrationStats stats;
  int64_t samples = 0;
  int64_t seq_len = 0;
  int64_t activation_bytes = 0;  // the hidden states held for all samples (both streams with float_stream)
  double seconds = 0;
  double seconds_forward = 0;    // passes 1 and 3 (statistics included)
};

// `samples`: equal-length token sequences (at least one; ids inside the vocabulary, else Error).
// `quantize` may be null (statistics only).
SequentialResult run_layer_sequential(model::Model& model, std::span<const std::vector<int32_t>> samples,
                                      const SequentialOptions& options, const LayerQuantizer* quantize,
                                      ThreadPool& pool);

}  // namespace calq::pipeline
