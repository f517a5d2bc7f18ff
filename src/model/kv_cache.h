// KV-cache quantization, simulated in the full-sequence forward pass: the keys (after RoPE, as a
// runtime caches them) and the values of every token are stored in a number format and read
// back before attention, so attention runs on what a quantized cache would return.
//
// Contract:
//  * Each token is quantized on its own, as a [num_kv_heads, head_dim] matrix (one row per head):
//    a token's cached values never depend on other tokens, so quantizing the whole sequence at
//    once equals filling a cache token by token (every query attends to keys it could have read
//    from the cache, its own included, as llama.cpp does). Per-row formats give per-head, per-token
//    scales (int8-pc-sym, fp8-e4m3); blocked ones groups inside a head (q8_0, q4_0, int4-g32-sym);
//    per-tensor ones one scale per token.
//  * Any registered format whose shape rules accept [num_kv_heads, head_dim] works; others are an
//    ErrorKind::kInvalidArgument error from check_kv_cache_format naming the format and the shape.
//  * Deterministic, and independent of the thread count (each token's bytes are the format's
//    deterministic encoding of that token).
//  * Runtime only: set on a loaded model (KvCache in ModelConfig), never written to a file.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/thread_pool.h"
#include "formats/format.h"
#include "model/config.h"

namespace calq::model {

// Throws Error(kInvalidArgument) when `format` cannot hold one token's keys or values of `config`.
void check_kv_cache_format(const Format& format, const ModelConfig& config);

// The format a --kv-cache name stands for: "f32"/"none" → nullptr (no quantization), aliases
// int8 → int8-pc-sym, int4 → int4-g32-sym, fp8 → fp8-e4m3, otherwise any registered format name
// (unknown names: the registry's error listing close names).
const Format* kv_cache_format_by_name(std::string_view name);

// x[seq_len, num_kv_heads·head_dim] := dequantize(quantize(x)) token by token, in place.
void quantize_kv_rows(const Format& format, float* x, int64_t seq_len, int64_t num_kv_heads, int64_t head_dim,
                      ThreadPool& pool);

}  // namespace calq::model
