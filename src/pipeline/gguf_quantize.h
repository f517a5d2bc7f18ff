// Whole-model GGUF -> GGUF quantization with a named mix (mix.h), the way llama-quantize does it.
//
// Contract:
//  * Input: a GGUF file whose tensors are F32, F16 or BF16 (a quantized input tensor that the mix
//    would convert is kUnsupported: calq does not requantize). Any architecture: the mix reads
//    only tensor names and <arch>.block_count / head counts / expert_count.
//    A file carrying LoRA adapter tensors (<weight>.lora_a / .lora_b) is kUnsupported.
//  * Each tensor gets the type assign_types() chooses; tensors that keep their type are copied
//    byte for byte. The encoders are the registered formats (format_by_ggml_type); a type with no
//    registered format is kUnsupported naming the tensor and type.
//  * Importance: when an imatrix is given, a tensor with an entry of ne[0] (× experts) values is
//    quantized with it; an entry of another length is kFormat (except for token_embd, which
//    llama.cpp also skips); a tensor without entry is quantized without (the result says which).
//  * Output: llama.cpp's layout — metadata copied in order, split.* keys dropped,
//    general.quantization_version (2) and general.file_type (the mix's llama_ftype) moved to the
//    end, then calq.version and calq.recipe; tensors in llama.cpp's order (non-block tensors,
//    then block by block, by name); version 3, the input's alignment. Written through
//    io::write_gguf (temp file + rename): on any error no output file appears.
//  * Memory: the encoded tensors are held until the file is written (about the output size),
//    plus one tensor in F32; the input is memory-mapped.
//  * Rows are quantized in parallel over the pool; the output bytes are the same for any thread
//    count (the formats' contract).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "io/gguf.h"
#include "pipeline/imatrix.h"
#include "pipeline/mix.h"

namespace calq::pipeline {

struct TensorPlan {
  size_t index = 0;     // in the input file's tensor list
  std::string name;
  std::vector<int64_t> ne;
  uint32_t from_type = 0;
  TypeChoice choice;
};

// The per-tensor types for `mix`, in output (llama.cpp) order. Reads metadata only.
std::vector<TensorPlan> plan_gguf_quantization(const io::GgufFile& in, const QuantMix& mix);

struct TensorDone {
  size_t done = 0, total = 0;  // tensors written so far / in all
  const TensorPlan* plan = nullptr;
  bool used_importance = false;
  double seconds = 0;          // converting + encoding this tensor
};

struct QuantizeGgufOptions {
  const QuantMix* mix = nullptr;       // required
  const Imatrix* imatrix = nullptr;    // optional importance
  std::string recipe;                  // calq.recipe; empty: "mix=<name>[;imatrix=<file name>]"
  std::function<void(const TensorDone&)> on_tensor;  // progress, called on the calling thread
};

struct QuantizeGgufResult {
  std::vector<TensorPlan> plan;      // output order
  size_t n_quantized = 0;            // tensors converted
  size_t n_with_importance = 0;      // of those, quantized with an imatrix entry
  size_t n_fallback = 0;
  uint64_t bytes_in = 0, bytes_out = 0;  // tensor data only
  double seconds_convert = 0;        // F16/BF16 -> F32
  double seconds_encode = 0;         // Format::quantize
  double seconds_write = 0;
};

// Metadata of the output file (see the contract).
io::GgufMetadata quantized_metadata(const io::GgufMetadata& in, const QuantMix& mix, const std::string& recipe);

QuantizeGgufResult quantize_gguf(const io::GgufFile& in, const std::filesystem::path& out,
                                 const QuantizeGgufOptions& options, ThreadPool& pool);

}  // namespace calq::pipeline
