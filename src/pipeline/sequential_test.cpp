#include "pipeline/sequential.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "calib/calibration.h"
#include "core/error.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::pipeline {
namespace {

using model::testutil::load_tiny_model;
using model::testutil::test_token_ids;

std::vector<std::vector<int32_t>> make_samples(int64_t n, int64_t seq, int64_t vocab) {
  const std::vector<int32_t> ids = test_token_ids(n * seq, vocab);
  std::vector<std::vector<int32_t>> out;
  for (int64_t s = 0; s < n; ++s) out.emplace_back(ids.begin() + s * seq, ids.begin() + (s + 1) * seq);
  return out;
}

model::Model tiny(const std::string& tag, ThreadPool& pool, int64_t layers = 3) {
  return load_tiny_model(testing::temp_dir(tag), {.seed = 5, .layers = layers}, pool);
}

// Rounds every linear weight of the layer to int8 per channel (an easy, visible change).
const LayerQuantizer& int8_quantizer(ThreadPool& pool) {
  static const Format& f = format_by_name("int8-pc-sym");
  static LayerQuantizer q;
  q = [&pool](int64_t, model::LayerWeights& w, calib::CalibrationStats&, const LayerStreams&) {
    for (const auto role : {model::TensorRole::kAttnQ, model::TensorRole::kAttnK, model::TensorRole::kAttnV,
                            model::TensorRole::kAttnOut, model::TensorRole::kMlpGate, model::TensorRole::kMlpUp,
                            model::TensorRole::kMlpDown}) {
      model::LinearWeight& lw = w.linear(role);
      const Tensor d = lw.to_dense(pool);
      lw = QuantizedTensor::quantize(pool, f, d.f32(), lw.rows(), lw.cols());
    }
  };
  return q;
}

TEST(LayerSequential, StatisticsEqualAWholeModelPass) {
  ThreadPool pool(2);
  model::Model m = tiny("seq_whole", pool);
  const auto samples = make_samples(5, 12, m.config.vocab_size);
  const SequentialResult r = run_layer_sequential(m, samples, {.stats = calib::StatSet::all()}, nullptr, pool);
  EXPECT_EQ(r.samples, 5);
  EXPECT_EQ(r.seq_len, 12);
  EXPECT_EQ(r.stats.samples, 5);
  EXPECT_EQ(r.activation_bytes, 5 * 12 * m.config.hidden_size * 4);

  // The same statistics from the whole-model forward pass, sample by sample, merged in order.
  calib::CalibrationStats want(calib::StatSet::all());
  for (const auto& s : samples) {
    calib::CalibrationStats one(calib::StatSet::all());
    calib::run_linear_inputs(
        m, s,
        [&](const model::LinearInput& in) {
          const model::InputSite site = calib::input_site(in.role);
          if (calib::site_roles(site).front() == in.role) one.observe(in.layer, site, in.x, in.rows, in.cols);
        },
        pool);
    want.merge(one);
  }
  ASSERT_EQ(r.stats.site_count(), want.site_count());
  EXPECT_EQ(r.stats.site_count(), static_cast<size_t>(4 * m.config.num_layers + 1));
  for (const auto& [layer, site] : want.sites()) {
    const calib::SiteStats* got = r.stats.find(layer, site);
    ASSERT_NE(got, nullptr) << layer << " " << model::site_name(site);
    EXPECT_TRUE(*got == *want.find(layer, site)) << layer << " " << model::site_name(site);
  }
}

TEST(LayerSequential, IdenticalForAnyThreadCount) {
  std::vector<calib::CalibrationStats> stats;
  std::vector<std::vector<std::byte>> bytes;
  for (const size_t threads : {1u, 2u, 3u}) {
    ThreadPool pool(threads);
    model::Model m = tiny("seq_threads", pool);
    const auto samples = make_samples(7, 10, m.config.vocab_size);
    const SequentialResult r =
        run_layer_sequential(m, samples, {.stats = calib::StatSet::all()}, &int8_quantizer(pool), pool);
    stats.push_back(r.stats);
    const auto& q = m.layers.back().w_down.quantized();
    bytes.emplace_back(q.bytes.begin(), q.bytes.end());
  }
  EXPECT_TRUE(stats[0] == stats[1]);
  EXPECT_TRUE(stats[0] == stats[2]);
  EXPECT_EQ(bytes[0], bytes[1]);
  EXPECT_EQ(bytes[0], bytes[2]);
}

// keep_layer_stats = false: the same quantized weights and head statistics, no layer's statistics
// kept (each layer's quantizer still sees its own).
TEST(LayerSequential, DroppingLayerStatisticsKeepsTheHeadsAndTheWeights) {
  ThreadPool pool(2);
  std::vector<calib::CalibrationStats> stats;
  std::vector<std::vector<std::byte>> bytes;
  for (const bool keep : {true, false}) {
    model::Model m = tiny("seq_keep", pool);
    const auto samples = make_samples(5, 10, m.config.vocab_size);
    int64_t seen = 0;
    const LayerQuantizer& int8 = int8_quantizer(pool);
    const LayerQuantizer check = [&](int64_t layer, model::LayerWeights& w, calib::CalibrationStats& layer_stats,
                                     const LayerStreams& streams) {
      EXPECT_NE(layer_stats.find(layer, model::InputSite::kAttnIn), nullptr);
      ++seen;
      int8(layer, w, layer_stats, streams);
    };
    const SequentialResult r =
        run_layer_sequential(m, samples, {.stats = calib::StatSet::all(), .keep_layer_stats = keep}, &check, pool);
    EXPECT_EQ(seen, m.config.num_layers);
    ASSERT_NE(r.stats.find(-1, model::InputSite::kHeadIn), nullptr);
    for (const auto& [layer, site] : r.stats.sites()) EXPECT_TRUE(keep || layer == -1) << layer;
    EXPECT_EQ(r.stats.site_count() > 1, keep);
    stats.push_back(r.stats);
    const auto& q = m.layers.back().w_down.quantized();
    bytes.emplace_back(q.bytes.begin(), q.bytes.end());
  }
  EXPECT_TRUE(*stats[0].find(-1, model::InputSite::kHeadIn) == *stats[1].find(-1, model::InputSite::kHeadIn));
  EXPECT_EQ(bytes[0], bytes[1]);
}

TEST(LayerSequential, TrueSequentialSeesQuantizedOutputs) {
  ThreadPool pool(2);
  const auto run = [&](bool true_sequential, bool quantize) {
    model::Model m = tiny("seq_true", pool);
    const auto samples = make_samples(4, 9, m.config.vocab_size);
    return run_layer_sequential(m, samples, {.true_sequential = true_sequential},
                                quantize ? &int8_quantizer(pool) : nullptr, pool)
        .stats;
  };
  const calib::CalibrationStats plain = run(true, false);
  const calib::CalibrationStats float_inputs = run(false, true);
  const calib::CalibrationStats true_seq = run(true, true);
  // Layer 0's input is the embedding either way; its later sites already see quantized q/k/v...
  // only in true-sequential mode is layer 1 fed by the quantized layer 0.
  EXPECT_TRUE(*plain.find(0, model::InputSite::kAttnIn) == *true_seq.find(0, model::InputSite::kAttnIn));
  EXPECT_TRUE(plain == float_inputs);
  EXPECT_FALSE(*plain.find(1, model::InputSite::kAttnIn) == *true_seq.find(1, model::InputSite::kAttnIn));
  EXPECT_FALSE(*plain.find(-1, model::InputSite::kHeadIn) == *true_seq.find(-1, model::InputSite::kHeadIn));
}

TEST(LayerSequential, QuantizedLayersGiveTheQuantizedModelsActivations) {
  // After a true-sequential run, the head input statistics are those of the quantized model.
  ThreadPool pool(2);
  model::Model m = tiny("seq_final", pool);
  const auto samples = make_samples(3, 8, m.config.vocab_size);
  const SequentialResult r = run_layer_sequential(m, samples, {}, &int8_quantizer(pool), pool);
  calib::CalibrationStats want;
  for (const auto& s : samples) {
    calib::CalibrationStats one;
    calib::run_linear_inputs(
        m, s,
        [&](const model::LinearInput& in) {
          if (in.layer == -1) one.observe(-1, model::InputSite::kHeadIn, in.x, in.rows, in.cols);
        },
        pool);
    want.merge(one);
  }
  EXPECT_TRUE(*r.stats.find(-1, model::InputSite::kHeadIn) == *want.find(-1, model::InputSite::kHeadIn));
}

TEST(LayerSequential, NonFiniteActivationsAreNamed) {
  ThreadPool pool(2);
  model::Model m = tiny("seq_nan", pool);
  // A NaN in layer 1's MLP norm: the first non-finite value is the input of layer 1's gate/up.
  m.layers[1].mlp_norm.mutable_f32()[3] = std::numeric_limits<float>::quiet_NaN();
  const auto samples = make_samples(2, 6, m.config.vocab_size);
  try {
    run_layer_sequential(m, samples, {}, nullptr, pool);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mlp_in"), std::string::npos) << msg;
  }
}

TEST(LayerSequential, BadSamples) {
  ThreadPool pool(1);
  model::Model m = tiny("seq_bad", pool, 1);
  EXPECT_THROW(run_layer_sequential(m, {}, {}, nullptr, pool), Error);
  std::vector<std::vector<int32_t>> uneven = {{1, 2, 3}, {1, 2}};
  EXPECT_THROW(run_layer_sequential(m, uneven, {}, nullptr, pool), Error);
  std::vector<std::vector<int32_t>> outside = {{1, 2, static_cast<int32_t>(m.config.vocab_size)}};
  EXPECT_THROW(run_layer_sequential(m, outside, {}, nullptr, pool), Error);
}

}  // namespace
}  // namespace calq::pipeline

namespace calq::pipeline {
namespace {

// With float_stream the quantizer sees, for layer l, the quantized stream's input and, as targets,
// the float model's layer-l output (the float layers run on the float model's own hidden states).
TEST(LayerSequential, FloatStreamCarriesTheFloatModelsOutputs) {
  ThreadPool pool(2);
  const model::Model fp = tiny("seq_fp_stream", pool);
  model::Model m = fp;
  const auto samples = make_samples(3, 7, m.config.vocab_size);
  const int64_t hs = m.config.hidden_size, stride = 7 * hs;
  // The float model's hidden states after each layer, sample by sample.
  std::vector<std::vector<float>> expected(static_cast<size_t>(m.config.num_layers));
  std::vector<float> h(static_cast<size_t>(3 * stride));
  for (int64_t s = 0; s < 3; ++s) model::embed_tokens(fp, samples[static_cast<size_t>(s)], &h[s * stride]);
  model::LayerScratch scratch(fp.config, 7);
  for (int64_t l = 0; l < fp.config.num_layers; ++l) {
    for (int64_t s = 0; s < 3; ++s)
      model::decoder_layer_forward(fp.config, fp.layers[static_cast<size_t>(l)], l, &h[s * stride], 7, scratch, pool);
    expected[static_cast<size_t>(l)] = h;
  }
  const LayerQuantizer& int8 = int8_quantizer(pool);
  std::vector<float> previous_input;
  int64_t calls = 0;
  const LayerQuantizer check = [&](int64_t l, model::LayerWeights& w, calib::CalibrationStats& st,
                                   const LayerStreams& streams) {
    ++calls;
    EXPECT_EQ(streams.samples, 3);
    EXPECT_EQ(streams.seq_len, 7);
    ASSERT_EQ(streams.targets.size(), static_cast<size_t>(3 * stride));
    EXPECT_TRUE(std::equal(streams.targets.begin(), streams.targets.end(), expected[static_cast<size_t>(l)].begin()))
        << "layer " << l;
    ASSERT_EQ(streams.inputs.size(), streams.targets.size());
    // From layer 1 on, the input is the quantized stream: not the float model's.
    if (l > 0) {
      EXPECT_FALSE(std::equal(streams.inputs.begin(), streams.inputs.end(), expected[static_cast<size_t>(l - 1)].begin()));
    }
    int8(l, w, st, streams);
  };
  const SequentialResult r = run_layer_sequential(m, samples, {.float_stream = true}, &check, pool);
  EXPECT_EQ(calls, m.config.num_layers);
  EXPECT_EQ(r.activation_bytes, 2 * 3 * stride * static_cast<int64_t>(sizeof(float)));
  model::Model again = fp;
  EXPECT_THROW(run_layer_sequential(again, samples, {.true_sequential = false, .float_stream = true}, &check, pool),
               Error);
}

}  // namespace
}  // namespace calq::pipeline
