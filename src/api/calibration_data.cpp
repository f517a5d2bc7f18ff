#include "api/calibration_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/mapped_file.h"
#include "eval/synthetic.h"

namespace calq::api {
namespace {

void warn_few(int64_t samples, Reporter& reporter) {
  if (samples < 128) {
    reporter.warn(fmt::format("{} calibration samples is below 128; GPTQ/AWQ-style calibration is usually done with "
                              "128-512 samples, and fewer give noisier statistics",
                              samples));
  }
}

// Generation ran the whole model: the pages of its memory-mapped weights leave the resident set
// again (core/mapped_file.h), so that a layer-by-layer run afterwards holds one layer's.
void release_weight_pages(const model::Model& m) {
  const auto release = [](const model::LinearWeight& w) {
    if (w.is_quantized()) release_mapped_pages(w.quantized().bytes);
  };
  release(m.embedding);
  release(m.output);
  for (const model::LayerWeights& l : m.layers) {
    for (const model::TensorRole role : model::kLayerLinearRoles) release(l.linear(role));
    for (const model::ExpertWeights& e : l.experts) {
      release(e.w_gate);
      release(e.w_up);
      release(e.w_down);
    }
  }
}

}  // namespace

std::optional<io::CalibrationSet> generate_calibration(const CalibrationData& data, const io::Tokenizer& tokenizer,
                                                       const model::Model& model, ThreadPool& pool,
                                                       Reporter& reporter) {
  const std::optional<eval::SyntheticSpec> parsed = eval::parse_synthetic_spec(data.text);
  if (!parsed) return std::nullopt;
  const eval::SyntheticSpec& spec = *parsed;
  const eval::SyntheticOptions options{
      .sequences = spec.sequences, .seq_len = data.seq_len, .seed = data.seed, .greedy = spec.greedy,
      .top_k = spec.top_k, .bos = eval::default_start_token(model.config),
      // The tokenizer's ids only: rows of a padded embedding past it are no tokens.
      .first_token_vocab = std::min<int64_t>(static_cast<int64_t>(tokenizer.vocab_size()), model.config.vocab_size)};
  const std::string provenance = eval::synthetic_provenance(options);
  reporter("generate", 0, spec.sequences,
           fmt::format("sampling {} sequences x {} tokens from the model ({})", spec.sequences, data.seq_len,
                       provenance));
  const auto t0 = std::chrono::steady_clock::now();
  io::CalibrationSet set;
  set.samples = eval::generate_synthetic(model, options, pool, [&](int64_t done, int64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    reporter("generate", done, total, fmt::format("{}/{} sequences  {:.1f} s", done, total, s));
  });
  set.generated = provenance;
  set.n_tokens = spec.sequences * data.seq_len;
  release_weight_pages(model);
  return set;
}

io::CalibrationSet load_calibration(const CalibrationData& data, const io::Tokenizer& tokenizer,
                                    const model::Model& model, ThreadPool& pool, Reporter& reporter) {
  if (std::optional<io::CalibrationSet> set = generate_calibration(data, tokenizer, model, pool, reporter)) {
    warn_few(static_cast<int64_t>(set->samples.size()), reporter);
    return std::move(*set);
  }
  warn_few(data.samples, reporter);
  const model::ModelConfig& config = model.config;
  io::CalibrationSet set = io::load_calibration_set(
      data.text, tokenizer,
      {.samples = data.samples, .seq_len = data.seq_len, .seed = data.seed, .separator = config.eos_token_id});
  for (const auto& s : set.samples) {
    for (const int32_t id : s) {
      if (id < 0 || id >= config.vocab_size) {
        fail(ErrorKind::kInvalidArgument,
             "{}: token id {} is outside the model's vocabulary of {} (wrong calibration tokenizer?)", data.text, id,
             config.vocab_size);
      }
    }
  }
  return set;
}

}  // namespace calq::api
