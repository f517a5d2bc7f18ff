// The calibration samples of a job (calq::CalibrationData): io::load_calibration_set with the
// model's EOS between documents, checked against the model's vocabulary; or, for the text
// "generate:N[,greedy=G][,top_k=K]", N sequences of seq_len tokens sampled from the model itself
// (eval/synthetic.h, data-free calibration as in LLM-QAT) with data.seed, starting from the model's
// BOS (its EOS when it has no BOS), the random first token drawn from the tokenizer's vocabulary.
// data.samples is not used then: N is the count. The set's `generated` holds the provenance string
// (eval::synthetic_provenance) and its file_sha256 is empty.
#pragma once

#include <optional>
#include <string>

#include "api/reporter.h"
#include "calq/calibrate.h"
#include "core/thread_pool.h"
#include "io/dataset/calib_data.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace calq::api {

// Warns (reporter) below 128 samples, the smallest count the literature advises. `model` is
// only run for generated samples.
io::CalibrationSet load_calibration(const CalibrationData& data, const io::Tokenizer& tokenizer,
                                    const model::Model& model, ThreadPool& pool, Reporter& reporter);

// The generated samples alone: nullopt when data.text is not "generate:..." (no warning; the
// reporter sees a "generate" stage).
std::optional<io::CalibrationSet> generate_calibration(const CalibrationData& data, const io::Tokenizer& tokenizer,
                                                       const model::Model& model, ThreadPool& pool,
                                                       Reporter& reporter);

// What records where the samples came from: the file's SHA-256, or the generation's provenance.
inline const std::string& calibration_source_id(const io::CalibrationSet& set) {
  return set.generated.empty() ? set.file_sha256 : set.generated;
}

}  // namespace calq::api
