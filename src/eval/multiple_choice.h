// Multiple-choice scoring in the manner of lm-evaluation-harness (HellaSwag): every ending of an
// item is scored by the log-likelihood the model gives it after the context, and the model "chooses"
// the best-scoring ending. Several models are scored on identical tokens in one pass and compared.
//
// Tokens (tokenize_choices), per ending e with continuation " " + e:
//  * like lm-eval's _encode_pair, trailing whitespace of the context is moved to the front of the
//    continuation; then ctx_ids = encode(context), whole = encode(context + continuation), both
//    without special tokens;
//  * when `whole` starts with ctx_ids and is longer, the continuation's tokens are the rest of
//    `whole` (the usual case: the model sees exactly the tokens of the joined text);
//  * otherwise — the tokenizer merged across the boundary — the continuation is encoded on its own
//    and appended to ctx_ids (`fallback` is set, McReport counts such endings). lm-eval slices
//    `whole` blindly instead; the fallback keeps the context identical across endings.
// Score (loglik) = Σ over continuation tokens of log p(token | every token before it), from one
// forward pass over ctx_ids + continuation per ending (logits row t predicts token t + 1); log-softmax
// in double via log_sum_exp (compare.h).
// Choice: acc picks argmax of loglik; acc_norm picks argmax of loglik / (UTF-8 bytes of the ending,
// without the " " delimiter). lm-eval's acc_norm divides by len(choice) in Python characters, its
// acc_bytes by UTF-8 bytes; both are the same for ASCII endings (all of HellaSwag's English text).
// Ties go to the lowest index.
// Intervals: 95% Student-t intervals of the mean over items (mean_interval of compare.h over 0/1
// per-item values, i.e. ≈ the binomial normal approximation with an n − 1 variance); NaN ends with
// fewer than 2 items, and a zero-width interval when all items agree.
//
// Contract: items are spread over the pool one item per worker (each forward pass single-threaded
// inside, as compare_models does); every per-item value is stored by item index and reduced in item
// order, so every result except the timings is identical for any thread count. Models whose
// vocabulary sizes differ are an ErrorKind::kInvalidArgument error, as are no models, no items, an
// item without endings or with an out-of-range label, and a context or ending that tokenizes to
// nothing. Reading errors: see read_hellaswag_jsonl.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "eval/compare.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace calq::eval {

struct McItem {
  std::string ctx;
  std::vector<std::string> endings;
  int64_t label = 0;  // index of the correct ending
};

// Reads HellaSwag JSONL: one JSON object per line with "ctx" (string), "endings" (array of exactly 4
// non-empty strings) and "label" (integer in [0, 4)); other keys are ignored, blank lines skipped.
// A bad line (malformed JSON, not an object, a missing key, a wrong type, a label out of range) is
// an ErrorKind::kInvalidArgument error "<path>: line <n>: ..."; a file without items is one too.
// An unreadable file is ErrorKind::kIo (read_text_file).
std::vector<McItem> read_hellaswag_jsonl(const std::filesystem::path& path);

struct McOptions {
  int64_t max_items = 0;  // 0 = all items
  // Called after each finished item (all models) with (items done, items total); may run on any
  // thread but never concurrently with itself.
  std::function<void(int64_t, int64_t)> on_progress;
};

// One model's answers.
struct McModelResult {
  int64_t n_items = 0;
  int64_t correct = 0;       // items whose acc choice is the label
  int64_t correct_norm = 0;  // items whose acc_norm choice is the label
  double acc = 0.0;
  Interval acc_ci;
  double acc_norm = 0.0;
  Interval acc_norm_ci;
  std::vector<int64_t> chosen;       // per item: argmax of loglik
  std::vector<int64_t> chosen_norm;  // per item: argmax of loglik / ending bytes
  std::vector<std::vector<double>> loglik;  // per item, per ending
  double forward_seconds = 0.0;             // this model's forward passes, summed over workers
};

// Candidate model i (i ≥ 1) against model 0, the reference.
struct McAgreement {
  size_t model = 0;                 // index into McReport::models
  double chosen_agreement = 0.0;    // share of items with the same acc choice as model 0
  Interval chosen_agreement_ci;
  double chosen_norm_agreement = 0.0;  // the same for acc_norm choices
  Interval chosen_norm_agreement_ci;
};

struct McReport {
  int64_t n_items = 0;
  int64_t n_fallback_endings = 0;  // endings tokenized on their own (see the header comment)
  size_t workers = 0;              // min(threads, items): items scored at once
  double seconds = 0.0;            // wall time of the whole run
  std::vector<McModelResult> models;    // in the order given
  std::vector<McAgreement> agreement;   // models 1.. against model 0
};

McReport score_multiple_choice(std::span<const model::Model* const> models, const io::Tokenizer& tokenizer,
                               std::span<const McItem> items, const McOptions& options, ThreadPool& pool);

// Building blocks, exposed for tests.

// The token sequences of one item: ctx_ids, and per ending its continuation tokens (see above).
struct McTokens {
  std::vector<int32_t> ctx_ids;
  std::vector<std::vector<int32_t>> continuations;
  std::vector<bool> fallback;  // per ending: continuation encoded on its own
};
McTokens tokenize_choices(const McItem& item, const io::Tokenizer& tokenizer);

// Σ_{t ≥ n_ctx} log_softmax(logits row t − 1)[ids[t]] for logits [ids.size(), vocab] of `ids`
// (1 ≤ n_ctx ≤ ids.size()), in double.
double continuation_loglik(const float* logits, int64_t vocab, std::span<const int32_t> ids, int64_t n_ctx);

// Index of the largest of scores[i] / divisors[i] (divisors empty: of scores[i]); the lowest
// index on ties. scores is not empty; divisors, when given, are positive and as many as scores.
int64_t choose_best(std::span<const double> scores, std::span<const double> divisors = {});

}  // namespace calq::eval
