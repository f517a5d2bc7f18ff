// Flags and steps shared by the commands that run calibration (`calq calibrate`, `calq quantize
// --format`): the calibration set, the model's tokenizer, loading a model for layer-by-layer work.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "cli/model_paths.h"
#include "core/thread_pool.h"
#include "io/dataset/calib_data.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace calq::cli {

struct CalibFlags {
  std::string calib;      // --calib FILE
  int64_t samples = 128;  // --samples
  int64_t seq_len = 512;  // --seq-len
  uint64_t seed = 0;      // --seed
  std::string tokenizer;  // --tokenizer tokenizer.json (overrides the model's own)
};

void add_calib_flags(CLI::App* cmd, CalibFlags& flags);

// A model ready for the layer-sequential pipeline: a Hugging Face folder keeps its bf16/f16
// weights as views of the mapped files (one layer at a time is widened to float32); a GGUF file is
// mapped (quantized tensors stay views).
struct LoadedModel {
  ModelLocation location;
  std::shared_ptr<const io::GgufFile> gguf;  // when the model is a GGUF file
  model::Model model;
};
LoadedModel load_model_for_calibration(const std::string& path, ThreadPool& pool);

// The calibration samples (io::load_calibration_set with the model's EOS between documents).
// Warns on stderr (unless quiet) below 128 samples, the smallest count the literature advises.
io::CalibrationSet load_calibration(const CalibFlags& flags, const io::Tokenizer& tokenizer,
                                    const model::ModelConfig& config, bool quiet);

// Peak resident memory of this process so far, in MiB (getrusage).
double peak_rss_mib();

// Refuses before any work: an existing output without --force (or one that is a folder or the
// input), an output folder that does not exist or is not writable.
void check_output_path(const std::string& out, const std::filesystem::path& input, bool force);

}  // namespace calq::cli
