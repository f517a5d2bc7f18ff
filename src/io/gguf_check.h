// A GGUF layout checker: whether llama.cpp's loader (for the architectures calq writes: llama
// with or without experts (Mixtral), qwen2, qwen3, qwen2moe, qwen3moe) would accept a file, as a
// list of findings instead of a first error.
//
// Rules checked (errors unless said otherwise):
//  * the GGUF container as llama.cpp's gguf reader wants it: magic, version 2/3, every tensor type
//    a ggml type with rows a multiple of its block size, data offsets aligned to general.alignment
//    (default 32), data inside the file and not overlapping (io::GgufFile::open's validation; a
//    file it refuses gives one error with its message);
//  * general.architecture present and one of llama, qwen2, qwen3, qwen2moe, qwen3moe;
//  * the "<arch>." hyper-parameters llama.cpp requires, with the value types it requires:
//    context_length, embedding_length, block_count, feed_forward_length, attention.head_count
//    (uint32; feed_forward_length / head counts may be per-layer uint32/int32 arrays),
//    attention.layer_norm_rms_epsilon (float32); the optional ones (attention.head_count_kv,
//    key_length, value_length, rope.dimension_count, vocab_size: uint32; rope.freq_base: float32)
//    typed right when present; head counts that divide; rope.dimension_count <= the head dimension;
//    expert_count / expert_used_count (required for qwen2moe/qwen3moe, the used count in [1, count])
//    and the expert widths (expert_feed_forward_length, expert_shared_feed_forward_length);
//  * the tokenizer: tokenizer.ggml.model (a model llama.cpp knows), tokenizer.ggml.tokens (a string
//    array), merges for "gpt2", scores / token_type arrays as long as tokens, special-token ids
//    inside the vocabulary (warning: llama.cpp ignores them), tokenizer.ggml.pre for gpt2 (warning
//    when absent);
//  * the tensors: every one llama.cpp's loader requires for the architecture with its expected ne
//    (token_embd, output_norm, per layer attn_norm/q/k/v/output, ffn_norm/gate/up/down — or, with
//    experts, ffn_gate_inp and the stacked ffn_{gate,up,down}_exps [+ qwen2moe's shared expert
//    ffn_*_shexp and ffn_gate_inp_shexp], qwen3's attn_q_norm/attn_k_norm), the optional ones
//    (output — required for qwen2moe —, rope_freqs, q/k/v/output biases) with theirs, and no tensor
//    it would not use;
//  * no calq-specific tensors (calq.qtensor.* / calq.requires_calq, see model/gguf_export.h): such
//    a file gets the error "calq-only file: llama.cpp cannot load it" and one error per tensor;
//    the factors of calq's online input transforms (blk.L.calq_kron.*) and LoRA adapter tensors in
//    the model file (<weight>.lora_a / .lora_b, model/gguf_lora.h) get one error each saying so.
//
// Contract: never throws for file contents (only kIo-free findings); pure reads.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace calq::io {

enum class GgufFindingLevel { kError, kWarning };

struct GgufFinding {
  GgufFindingLevel level = GgufFindingLevel::kError;
  std::string where;    // the key or tensor concerned ("" for the file as a whole)
  std::string message;  // one sentence
};

struct GgufCheckReport {
  std::string file;
  std::vector<GgufFinding> findings;  // in the order checked
  bool calq_only = false;             // has calq-specific tensors

  size_t errors() const;
  size_t warnings() const;
  bool ok() const { return errors() == 0; }
};

// Opens and checks `path` (a file GgufFile::open refuses gives one error finding).
GgufCheckReport check_gguf_file(const std::filesystem::path& path);
// Checks an already opened file.
GgufCheckReport check_gguf(const GgufFile& file);

}  // namespace calq::io
