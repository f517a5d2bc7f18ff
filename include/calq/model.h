// A model opened for inspection and tokenization: a Hugging Face folder (config.json +
// *.safetensors + tokenizer.json) or a GGUF file, with its tokenizer.
//
// The operations (calibrate, quantize, evaluate) take model paths, not Model objects: each loads
// the weights it needs in the form it needs (memory-mapped views, one layer widened at a time).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace calq {

struct OpenOptions {
  std::string tokenizer;  // a tokenizer.json to use instead of the model's own ("" = the model's)
  size_t threads = 0;     // worker threads for loading (0 = all cores)
};

struct ModelInfo {
  std::string path;
  std::string format;        // "hf" or "gguf"
  std::string architecture;  // config model_type: "llama", "mistral", "qwen2"
  int64_t n_layers = 0;
  int64_t hidden_size = 0;
  int64_t vocab_size = 0;
  int64_t n_params = 0;          // elements of every weight tensor, norms included
  double bits_per_weight = 0;    // storage bits over n_params
  std::string tokenizer_source;  // which tokenizer: the file, or "<path> (GGUF metadata)"
};

class Model {
 public:
  // Errors (missing files, unknown architectures, hostile headers) throw calq::Error naming the
  // file and what was expected.
  static Model open(const std::string& path, const OpenOptions& options = {});
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelInfo& info() const;
  // Token ids of `text` with the model's tokenizer (no special tokens added).
  std::vector<int32_t> tokenize(std::string_view text) const;
  std::string detokenize(const std::vector<int32_t>& ids) const;

  struct Impl;  // the library's side (src/api/model_handle.h)
  const Impl& impl() const { return *impl_; }

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace calq
