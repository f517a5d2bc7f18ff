// Synthetic models: a Model of any shape of any architecture with deterministic random weights,
// plus a small generated SentencePiece-style tokenizer — what reference checks against other
// implementations need (llama.cpp's logits on `calq synth` models, tests/fixtures/llama_cpp_logits)
// when no real model of an architecture is at hand, and what shape-only experiments need (memory,
// speed of a Llama-3-8B-shaped model).
//
// Contract of synth_config(spec): the ModelConfig of a config.json with these hyper-parameters
// (built by hf_config_json and read back by parse_hf_config_text, so it is exactly what loading
// the written folder gives: qkv_bias, layer windows and the rest follow the architecture table),
// bos 1 and eos 2 (the generated tokenizer's). A sliding window applies to every layer, and only
// to an architecture with a window rule; experts only to a mixture-of-experts architecture (every
// layer sparse). Bad values are kInvalidArgument naming the SynthSpec field (an unknown model_type
// is kUnsupported listing the supported ones).
//
// Contract of synth_model(config, seed, pool, dtype): every tensor the config calls for (the same
// set and shapes load_hf_model reads; no output head when tied), each row drawn from its own
// std::mt19937_64, seeded from (seed, role, layer, expert, row), uniformly with a mean and standard
// deviation by role, with exact IEEE arithmetic only (the same bits on every machine, compiler and
// thread count; no std::normal_distribution, whose algorithm the standard leaves open), then
// rounded to `dtype` (kF32, or kBF16: bf16 numbers held in float32, so a BF16 folder and an F32
// GGUF of the model hold the same values). Adding a role or a layer leaves the others' draws
// unchanged (o and down still scale with the depth, below). The scales keep the forward pass O(1)
// at any depth and width and make the logits spread (std of order 1–3), so that a relative
// comparison of logits means something:
//   norms (head norms too) 1 ± 0.3 (uniform); q/k/v biases std 0.5; embedding std 1 (2/√hidden
//   when tied, as it is then the head); q, k std 1.5/√hidden (attention scores of std ~2); v,
//   gate, up (experts' too), router, shared-expert gate std 1/√fan_in; o and down (experts' too)
//   std 1/√fan_in and 1.5/√fan_in, times 1/√layers (so the residual stream does not grow with
//   depth); head std 2/√hidden.
// `source` stays empty; write_hf_model then write_gguf_model with source = the folder gives files.
//
// Contract of synth_tokenizer_json(vocab): a Hugging Face tokenizer.json of exactly `vocab`
// tokens (>= kSynthMinVocab) in the SentencePiece-BPE layout of Llama-2-style models (Metaspace
// pre-tokenizer, byte_fallback, a Sequence decoder, a TemplateProcessing that prepends <s>):
// <unk> 0, <s> 1, </s> 2, the 256 byte tokens <0x00>..<0xFF> at 3..258, "▁" at 259, then single
// characters (letters by English frequency, digits, punctuation) and pieces made by merges
// (a piece + a character), in a fixed order, filling the rest. io::hf_tokenizer_to_gguf converts it
// to llama.cpp's "llama" vocabulary; calq's Tokenizer and llama.cpp load it.
// synth_tokenizer_config_json(): the tokenizer_config.json beside it (add_bos_token true,
// special tokens by name).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "model/model.h"

namespace calq::model {

inline constexpr int64_t kSynthMinVocab = 260;  // 3 specials, 256 bytes, "▁"

struct SynthSpec {
  std::string model_type = "llama";
  int64_t layers = 2;
  int64_t hidden = 64;
  int64_t heads = 4;
  int64_t kv_heads = 0;  // 0: heads
  int64_t head_dim = 0;  // 0: hidden / heads
  int64_t ffn = 128;     // intermediate_size
  int64_t vocab = 320;
  int64_t sliding_window = 0;  // 0: none
  bool tied = false;
  int64_t max_position = 4096;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  // Rotary scaling: "" (none), "linear" (rope_factor) or "llama3" (all four).
  std::string rope_scaling;
  double rope_factor = 8.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;
  // Mixture-of-experts architectures only (0 = the default, given for a dense one is an error):
  // experts per layer (default 4), picked per token (default 2), each expert's width (default
  // ffn), the shared expert's width where the architecture has one (default ffn).
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  int64_t expert_ffn = 0;
  int64_t shared_ffn = 0;
  // Renormalise the picked experts' weights; default: what llama.cpp does for the architecture
  // (so that the model can be written as GGUF).
  std::optional<bool> norm_topk_prob;
};

ModelConfig synth_config(const SynthSpec& spec);

Model synth_model(const ModelConfig& config, uint64_t seed, ThreadPool& pool, DType dtype = DType::kF32);

std::string synth_tokenizer_json(int64_t vocab);
std::string synth_tokenizer_config_json();

}  // namespace calq::model
