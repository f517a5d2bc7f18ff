// Test-only helpers: a tiny random Llama written with calq's own safetensors writer, and a naive
// double-precision scalar implementation of the same math to check the runtime against.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "core/dtype.h"
#include "model/model.h"

namespace calq::model::testutil {

struct TinyModelOptions {
  bool tied = true;
  size_t shards = 1;
  DType dtype = DType::kF32;
  uint32_t seed = 1;
  int64_t layers = 2;
};

ModelConfig tiny_config(bool tied);

// Writes config.json and safetensors (sharded if shards > 1) into `folder`.
void write_tiny_model(const std::filesystem::path& folder, const TinyModelOptions& options);

// hidden[t, h] updated in place by one decoder layer, computed naively in double.
void naive_decoder_layer(const ModelConfig& c, const LayerWeights& w, std::vector<double>& hidden, int64_t seq_len);

// Full naive forward: logits [ids.size(), vocab].
std::vector<double> naive_forward(const Model& m, const std::vector<int32_t>& ids);

}  // namespace calq::model::testutil
