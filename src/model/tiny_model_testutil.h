// Test-only helpers: tiny random models (Llama, Mistral, Qwen2) written with calq's own
// safetensors and GGUF writers, and a naive double-precision scalar implementation of the same
// math (biases and sliding windows included) to check the runtime against.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::model::testutil {

struct TinyModelOptions {
  bool tied = true;
  size_t shards = 1;
  DType dtype = DType::kF32;
  uint32_t seed = 1;
  int64_t layers = 2;
  std::string model_type = "llama";  // "llama", "mistral" or "qwen2"
  // mistral: config.json sliding_window (0 writes null). qwen2: 0 writes use_sliding_window
  // false; W > 0 writes use_sliding_window true, sliding_window W and max_window_layers below.
  int64_t sliding_window = 0;
  int64_t max_window_layers = 0;
  int64_t vocab_size = 0;  // 0: tiny_config's 61 (a real tokenizer needs its own size)
  // MoE types ("mixtral", "qwen2_moe", "qwen3_moe"): 4 experts, 2 per token, experts of width 32
  // (Mixtral: 64, its intermediate_size), Qwen2-MoE's shared expert 64 wide.
  int64_t num_experts = 4;
  int64_t experts_per_token = 2;
  bool norm_topk_prob = true;  // Qwen types (Mixtral always renormalises)
  // "", "linear" (factor 2) or "llama3" (factor 8, low 1, high 4, original context 64).
  std::string rope_type;
};

ModelConfig tiny_config(bool tied);

// Writes config.json and safetensors (sharded if shards > 1) into `folder`. Qwen2 gets q/k/v
// biases drawn larger than the weights so that a dropped bias cannot go unnoticed. Any registered
// model type: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe.
void write_tiny_model(const std::filesystem::path& folder, const TinyModelOptions& options);

// Writes `model` as a GGUF file the way llama.cpp's convert_hf_to_gguf.py would: its tensor
// names and keys, Q/K rows permuted where the converter permutes them (done here literally as
// its reshape(n_head, 2, d/2, ...).swapaxes(1, 2)), norms and biases in F32, other weights in
// `dtype` (F32/F16/BF16). A Mistral window is written as llama.attention.sliding_window.
void write_tiny_gguf(const Model& model, const std::filesystem::path& path, DType dtype);

// Writes a tiny model into `folder` (created by the caller, removed here after loading) and loads it
// with load_hf_model.
Model load_tiny_model(const std::filesystem::path& folder, const TinyModelOptions& options, ThreadPool& pool);

// n deterministic token ids spread over [0, vocab).
std::vector<int32_t> test_token_ids(int64_t n, int64_t vocab);

// hidden[t, h] updated in place by decoder layer number `layer` (which selects its window),
// computed naively in double (q/k head norms, rotary scaling and experts included).
void naive_decoder_layer(const ModelConfig& c, const LayerWeights& w, std::vector<double>& hidden, int64_t seq_len,
                         int64_t layer = 0);

// Full naive forward: logits [ids.size(), vocab].
std::vector<double> naive_forward(const Model& m, const std::vector<int32_t>& ids);

}  // namespace calq::model::testutil
