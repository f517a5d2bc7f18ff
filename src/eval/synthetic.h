// Data-free calibration samples: token sequences sampled from the model itself, for quantizing a
// model when no text is at hand (LLM-QAT, Liu et al. 2023, arXiv 2305.17888).
//
// What is implemented (each sequence, seq_len tokens in all):
//  1. position 0: the start token `bos` (default_start_token: the model's BOS; a model without
//     one starts from its EOS, the document separator GPT-2-style models use; a model with
//     neither has no start token and position 0 is step 2's random token);
//  2. the next token drawn uniformly from [0, first_token_vocab) without the BOS and EOS ids —
//     LLM-QAT's random first token, which spreads the sequences over the vocabulary;
//  3. the next `greedy` tokens (default 3; LLM-QAT uses 3-5) the argmax of the model's logits
//     (lowest id on ties) — a deterministic opening that puts the model on a likely path;
//  4. the rest sampled from softmax(logits) at temperature 1, among the `top_k` most likely
//     tokens when top_k > 0 (ties ordered by id). An EOS sampled here is kept and generation
//     goes on (the model starts a new document, as packed training windows do), so every
//     sequence has exactly seq_len tokens.
// LLM-QAT starts from the random token itself (no BOS); with `bos` unset this is that scheme.
//
// Decoding runs on model::DecodeCache (a key/value cache, one token per step): a batch of
// sequences advances together, so a step costs batch × one-token products. Batches hold
// min(max_batch, sequences) sequences, fewer when their cache would exceed cache_budget_bytes.
//
// Deterministic: sequence i draws from its own std::mt19937_64 seeded from (seed, i) with our own
// bounded and [0, 1) draws (the same on every platform); the logits are the same for any thread
// count (decode.h), so the sequences are too. The batch size is part of the arithmetic: changing
// max_batch or the budget may change the bits of the logits and therefore the samples.
//
// Errors (kInvalidArgument): sequences < 1, seq_len < 2, greedy < 0, top_k < 0, a start token or
// first_token_vocab outside the model's vocabulary.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::eval {

struct SyntheticOptions {
  int64_t sequences = 32;
  int64_t seq_len = 512;
  uint64_t seed = 0;
  int64_t greedy = 3;               // argmax tokens after the random first token
  int64_t top_k = 0;                // 0 = sample from the whole vocabulary
  std::optional<int32_t> bos;       // start token; none: sequences begin with the random token
  int64_t first_token_vocab = 0;    // random first token from [0, this); 0 = the model's vocab_size
  int64_t max_batch = 32;           // sequences decoded together
  int64_t cache_budget_bytes = int64_t{1} << 30;  // key/value cache of one batch at most
};

// The model's BOS, else its EOS, else none (see 1. above).
std::optional<int32_t> default_start_token(const model::ModelConfig& config);

// Called after each batch with the sequences finished so far and the total.
using SyntheticProgress = std::function<void(int64_t done, int64_t total)>;

std::vector<std::vector<int32_t>> generate_synthetic(const model::Model& model, const SyntheticOptions& options,
                                                     ThreadPool& pool, const SyntheticProgress& progress = {});

// The calibration-text spelling "generate:N[,greedy=G][,top_k=K]" (the API's CalibrationData::text).
struct SyntheticSpec {
  int64_t sequences = 0;
  int64_t greedy = 3;
  int64_t top_k = 0;
};
// nullopt when `text` does not start with "generate:"; otherwise the spec, or a kInvalidArgument
// error naming the text and the bad part (N not a whole number >= 1, unknown key, bad value).
std::optional<SyntheticSpec> parse_synthetic_spec(std::string_view text);

// What a statistics file records instead of a file hash, e.g.
// "generated:n=32,seq_len=512,seed=0,bos=1,greedy=3,top_k=0".
std::string synthetic_provenance(const SyntheticOptions& options);

}  // namespace calq::eval
