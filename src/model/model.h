// Model — a loaded decoder-only transformer: config plus float32 weights, by role.
//
// Contract: load_hf_model() reads a Hugging Face folder (config.json + safetensors, sharded or
// not), checks every tensor the architecture needs exists with the expected shape and finite
// values, and converts it to float32 (bf16/f16 are widened exactly). Errors name the folder/file
// and the tensor. Tied embeddings share one buffer for embedding and output head.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/architecture.h"
#include "model/config.h"

namespace calq::model {

struct LayerWeights {
  Tensor attn_norm;  // [hidden]
  Tensor wq;         // [q_dim, hidden]
  Tensor wk;         // [kv_dim, hidden]
  Tensor wv;         // [kv_dim, hidden]
  Tensor wo;         // [hidden, q_dim]
  Tensor mlp_norm;   // [hidden]
  Tensor w_gate;     // [intermediate, hidden]
  Tensor w_up;       // [intermediate, hidden]
  Tensor w_down;     // [hidden, intermediate]

  // The weight of a per-layer role (asserts the role is per-layer).
  const Tensor& get(TensorRole role) const;
  Tensor& get(TensorRole role);
};

// What a tensor looked like in the source file (for `calq inspect`).
struct SourceTensor {
  std::string name;
  std::string dtype;
  Shape shape;
};

struct Model {
  ModelConfig config;
  const Architecture* arch = nullptr;
  std::filesystem::path source;
  Tensor embedding;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Tensor output;      // [vocab, hidden]; same bytes as `embedding` when tied

  int64_t parameter_count() const;  // unique parameters (tied weights counted once)
};

// The shape the architecture expects for a role.
Shape expected_shape(const ModelConfig& config, TensorRole role);

Model load_hf_model(const std::filesystem::path& folder, ThreadPool& pool);

// Reads only config.json and the safetensors headers (no weights) — for `calq inspect`.
struct ModelSummary {
  ModelConfig config;
  std::vector<SourceTensor> tensors;
  int64_t parameter_count = 0;
};
ModelSummary inspect_hf_model(const std::filesystem::path& folder);

}  // namespace calq::model
