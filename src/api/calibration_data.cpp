#include "api/calibration_data.h"

#include <fmt/format.h>

#include "core/error.h"

namespace calq::api {

io::CalibrationSet load_calibration(const CalibrationData& data, const io::Tokenizer& tokenizer,
                                    const model::ModelConfig& config, Reporter& reporter) {
  if (data.samples < 128) {
    reporter.warn(fmt::format("{} calibration samples is below 128; GPTQ/AWQ-style calibration is usually done with "
                              "128-512 samples, and fewer give noisier statistics",
                              data.samples));
  }
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
