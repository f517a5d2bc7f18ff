// Calibration data: documents from a file, tokenized with the model's tokenizer and cut into the
// fixed-length samples the calibration pipeline runs.
//
// File formats (chosen by content, not extension):
//  * JSONL — the first non-blank character of the file is '{': one JSON object per non-blank line,
//    each with a string field "text" (other fields ignored). A line that is not such an object is a
//    kFormat error naming the file and line.
//  * Plain text — anything else: documents are separated by one or more blank lines (lines that
//    are empty or hold only spaces/tabs/CR).
//
// Sampling (deterministic, documented in README): every document is tokenized without special
// tokens; documents are joined into one token stream with `separator` (the model's EOS, when the
// caller has one) between them — the way pretraining corpora are packed. The stream is cut into
// W = n_tokens / seq_len non-overlapping windows (tail dropped) and `samples` distinct windows are
// drawn without replacement by a seeded Fisher–Yates shuffle of 0..W-1 (std::mt19937_64, whose
// output the standard fixes, with our own bounded draw: identical on every platform), then kept in
// ascending window order.
//
// Errors (calq::Error, kInvalidArgument, naming the file and the flag to change): an empty file or
// one without any document; fewer than `samples` windows (says how many there are); a text whose
// tokens are mostly unknown to the tokenizer — more than `max_unknown_share` of the tokens are the
// unknown token or byte-fallback tokens (<0xNN>): the text is not in the tokenizer's language or
// not text at all, so statistics from it would not describe the model's real inputs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace calq::io {

// The documents of a calibration file (see the formats above), in file order.
std::vector<std::string> read_calibration_documents(const std::filesystem::path& path);

struct CalibrationOptions {
  int64_t samples = 128;
  int64_t seq_len = 512;
  uint64_t seed = 0;
  std::optional<int32_t> separator;  // token between documents (the model's EOS); none if empty
  double max_unknown_share = 0.5;
};

struct CalibrationSet {
  std::vector<std::vector<int32_t>> samples;  // `samples` windows of seq_len ids, ascending position
  std::vector<int64_t> window_index;          // which window of the stream each sample is
  std::string file_sha256;                    // of the file's bytes
  int64_t n_documents = 0;
  int64_t n_tokens = 0;                       // stream length, separators included
  int64_t n_windows = 0;                      // W
  double unknown_share = 0;                   // unknown + byte-fallback tokens / all tokens
  // Samples not from a file (the API's "generate:N", sampled from the model): how they were made,
  // recorded instead of file_sha256 (empty then); empty for a file.
  std::string generated;
};

CalibrationSet load_calibration_set(const std::filesystem::path& path, const Tokenizer& tokenizer,
                                    const CalibrationOptions& options);

// The seeded choice of `k` distinct values of 0..n-1, ascending (k <= n asserted).
std::vector<int64_t> sample_without_replacement(int64_t n, int64_t k, uint64_t seed);

}  // namespace calq::io
