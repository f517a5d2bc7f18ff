// Where a model comes from and the one way calq loads it: a Hugging Face folder (config.json +
// *.safetensors + tokenizer.json) or a GGUF file, with its tokenizer; and the output-path checks
// every writing operation makes before any work.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace calq::api {

enum class ModelFormat { kHfFolder, kGguf };

struct ModelLocation {
  std::filesystem::path path;
  ModelFormat format;
};
std::string_view format_name(ModelFormat format);  // "hf", "gguf"

// A folder with config.json is a Hugging Face model; a file starting with the GGUF magic is a
// GGUF model. Anything else throws calq::Error naming the path and saying what was expected.
ModelLocation resolve_model(const std::filesystem::path& path);

// Checks that `path` is a Hugging Face model folder (has config.json); throws calq::Error
// naming the path and saying what was expected otherwise.
std::filesystem::path require_hf_folder(const std::filesystem::path& path);

// The tokenizer a model is run with: `override_path` (a tokenizer.json) when not empty, else the
// vocabulary embedded in `gguf` (the opened file of a GGUF model; llama.cpp's segmentation), else
// tokenizer.json beside a Hugging Face model. `source` receives a description for reports.
io::Tokenizer load_model_tokenizer(const ModelLocation& loc, const io::GgufFile* gguf, const std::string& override_path,
                                   std::string& source);

struct LoadOptions {
  // bf16/f16 weights (Hugging Face safetensors, GGUF F16/BF16) stay views of the mapped files, in
  // the "bf16"/"f16" formats (the forward pass gives the same bits; the fast float kernel reads them
  // as stored); false widens them to float32 at load.
  bool keep_source_dtype = false;
  const Format* kv_cache = nullptr;  // KV-cache format for the forward pass (nullptr: float)
};

// A loaded model and what keeps its weights alive: a GGUF file stays mapped (quantized tensors
// are views of it).
struct LoadedModel {
  std::string arg;  // the path as given
  ModelLocation location;
  std::shared_ptr<const io::GgufFile> gguf;  // when the model is a GGUF file
  model::Model model;
};
LoadedModel load_model(const std::string& path, ThreadPool& pool, const LoadOptions& options = {});

// Refuses before any work: an existing output file unless `force`, the input as output, and what
// check_output_folder refuses. Messages name `out` and say which option allows overwriting ("force").
void check_output_path(const std::string& out, const std::filesystem::path& input, bool force);

// For outputs written beside the main one (JSON reports, heat-maps) and by check_output_path: a
// `path` that is a folder, a folder of `path` that does not exist or is not writable (probed by
// creating a file); "" passes. Checked before any work.
void check_output_folder(const std::string& path);

// Writes `text` atomically (temporary file + rename).
void write_text_atomic(const std::string& path, const std::string& text);

// The token ids of a text file to evaluate on; an empty or blank file is an Error.
std::vector<int32_t> load_eval_ids(const std::string& path, const io::Tokenizer& tokenizer);

// Peak resident memory of this process so far, in MiB (getrusage).
double peak_rss_mib();

// Refuses before any work (kIo) when the file system that will hold `out` has fewer than `need`
// bytes free, naming the folder and both sizes in GiB; `what` says what needs them.
void check_disk_space(const std::filesystem::path& out, uint64_t need, std::string_view what);

}  // namespace calq::api
