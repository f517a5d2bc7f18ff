// Model — a loaded decoder-only transformer: config plus float32 weights, by role.
//
// Contract: load_hf_model() reads a Hugging Face folder (config.json + safetensors, sharded or
// not), checks every tensor the architecture needs exists with the expected shape and finite
// values, and converts it to float32 (bf16/f16 are widened exactly). Errors name the folder/file
// and the tensor. Tied embeddings share one buffer for embedding and output head.
// load_gguf_model() (gguf_model.h) gives the same Model from a GGUF file; load_model() picks by
// what the path is.
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
  Tensor bq;         // [q_dim] when config.qkv_bias, else empty
  Tensor bk;         // [kv_dim] when config.qkv_bias, else empty
  Tensor bv;         // [kv_dim] when config.qkv_bias, else empty

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

// Whether a model with this config holds a tensor for `role` (biases only when qkv_bias; the
// output head always, shared with the embedding when tied).
bool has_role(const ModelConfig& config, TensorRole role);

Model load_hf_model(const std::filesystem::path& folder, ThreadPool& pool);

// A folder is read as Hugging Face, a file as GGUF (gguf_model.h); anything else is an Error
// naming the path.
Model load_model(const std::filesystem::path& path, ThreadPool& pool);

// Reads only config.json and the safetensors headers (no weights) — for `calq inspect`.
// inspect_gguf_model() (gguf_model.h) gives the same summary for a GGUF file.
struct ModelSummary {
  ModelConfig config;
  std::vector<SourceTensor> tensors;
  int64_t parameter_count = 0;
};
ModelSummary inspect_hf_model(const std::filesystem::path& folder);

}  // namespace calq::model
