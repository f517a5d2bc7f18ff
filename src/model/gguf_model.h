// Models from GGUF files as llama.cpp's convert_hf_to_gguf.py and llama-quantize write them.
//
// Contract:
//  * `general.architecture` selects the architecture table (architecture.h): "llama" (which is
//    also how the converter writes Mistral) or "qwen2"; anything else is kUnsupported, listing
//    the supported names. Hyper-parameters come from the "<arch>." keys in the table
//    (block_count, embedding_length, feed_forward_length, attention.head_count[_kv],
//    attention.key_length, attention.layer_norm_rms_epsilon, rope.freq_base (default 10000, as
//    llama.cpp), context_length, attention.sliding_window); the vocabulary size from
//    `<arch>.vocab_size`, else the length of tokenizer.ggml.tokens, else token_embd's rows.
//    Partial rotary, rope scaling and per-layer head counts are refused (kUnsupported).
//  * Every tensor the table needs must exist with ne = the reverse of the Hugging Face shape
//    (ne[0] is the contiguous dimension, so a [out, in] weight has ne = {in, out}). F32, F16 and
//    BF16 tensors are widened to float32 (as ever). Linear weights, the embedding and the output
//    head may also have any ggml type that has a registered format (format_by_ggml_type): they stay
//    in it (a LinearWeight holding a QuantizedTensor) and are multiplied in that format; norms
//    and biases must be float. Another type is kUnsupported naming the file, tensor and type and
//    listing the decodable ones. A quantized tensor that decodes to a NaN/Inf is kFormat. Tensors
//    the table does not know are refused; a missing output.weight means tied embeddings.
//  * calq-specific tensors (gguf_export.h: a 1-D I8 tensor with calq.qtensor.<name>.format/.shape)
//    are read back into a QuantizedTensor of that format, rows as stored (never Q/K-permuted): the
//    format must be registered and have no ggml type, the shape must be the one the metadata
//    implies and the byte count format->tensor_bytes(rows, cols); else an Error naming file and
//    tensor.
//  * calq.act_quant.<name> keys (gguf_export.h) set the activation quantization of that linear
//    weight (LinearWeight::set_act_quant; a tied head's under "output.weight"); malformed ones and
//    keys naming no linear weight are kFormat Errors naming file and key.
//  * Online input transforms (gguf_export.h: F32 tensors blk.L.calq_kron.S.a / .b) are read into
//    LayerWeights::transforms. Any tensor whose name contains "calq_kron" must be one: a name of
//    that form, a layer below block_count, S a layer site of the block, a square F32 matrix of
//    finite values, its partner present, n1·n2 = the site's width; else kFormat naming the file
//    and the tensor.
//  * LoRA adapters (gguf_lora.h: F32 tensors <weight>.lora_a / .lora_b and calq.lora.alpha) are
//    read into LayerWeights::adapters; malformed ones are kFormat Errors naming the file and the
//    tensor or key.
//  * Where the table says the converter permuted Q/K rows for llama.cpp's interleaved rotary
//    embedding, the loader undoes it (for a quantized weight by moving whole rows of bytes: rows
//    of GGUF block types are independent), so the Model is the one load_hf_model() gives for the
//    source folder up to the file's rounding, and runs with the same forward pass.
//  * Quantized bytes: load_gguf_model(shared_ptr) and load_gguf_model(path) keep views of the
//    file's (memory-mapped) bytes, the Model holding the file open; load_gguf_model(const&) copies
//    them, so that Model does not depend on the file's lifetime. Only the Q/K weights are copied
//    (their rows are reordered) either way.
//  * Errors are calq::Error naming the file and the key or tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "core/thread_pool.h"
#include "formats/qtensor.h"
#include "io/gguf.h"
#include "model/model.h"

namespace calq::model {

// The config the metadata of `file` describes (reads no tensor data).
ModelConfig gguf_model_config(const io::GgufFile& file);

struct GgufLoadOptions {
  // F16/BF16 linear weights, the embedding and the head stay in the file as views in the registered
  // "f16"/"bf16" formats (as HfLoadOptions::keep_source_dtype) instead of float32 copies; the
  // forward pass gives the same bits. Only with the shared_ptr overload (the views need the file).
  bool keep_source_dtype = false;
};

Model load_gguf_model(const io::GgufFile& file, ThreadPool& pool);
Model load_gguf_model(std::shared_ptr<const io::GgufFile> file, ThreadPool& pool, const GgufLoadOptions& options = {});
Model load_gguf_model(const std::filesystem::path& path, ThreadPool& pool);

// Metadata and tensor infos only, for `calq inspect`: tensors carry their GGUF names, ggml type
// names ("F16", "Q4_K") and shapes in row-major order (the reverse of ne).
ModelSummary inspect_gguf_model(const std::filesystem::path& path);

// llama.cpp's converter reorders the rows of each head of Q/K from Hugging Face's rotate_half
// layout (pairs (i, i + d/2)) to interleaved pairs (2i, 2i + 1):
//   permuted row h*d + 2*i + s  =  original row h*d + s*(d/2) + i      (s in {0, 1}, i < d/2)
// for `n_heads` heads of `head_dim` rows of `cols` values (cols = 1 for a bias). These apply the
// permutation and its inverse from `src` to `dst` (distinct buffers).
void permute_qk_rows(const float* src, float* dst, int64_t n_heads, int64_t head_dim, int64_t cols);
void unpermute_qk_rows(const float* src, float* dst, int64_t n_heads, int64_t head_dim, int64_t cols);
// The same on the rows of a quantized [n_heads × head_dim, cols] weight (whole rows of bytes;
// asserts the row count and a trailer-free format); the result owns its bytes.
QuantizedTensor permute_qk_rows(const QuantizedTensor& t, int64_t n_heads, int64_t head_dim);
QuantizedTensor unpermute_qk_rows(const QuantizedTensor& t, int64_t n_heads, int64_t head_dim);

}  // namespace calq::model
