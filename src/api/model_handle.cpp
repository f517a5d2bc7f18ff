// calq::Model: api::load_model and the model's tokenizer behind the public handle.
#include "api/model_handle.h"

#include "core/thread_pool.h"

namespace calq {

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::open(const std::string& path, const OpenOptions& options) {
  ThreadPool pool(options.threads);
  api::LoadedModel loaded = api::load_model(path, pool, {.keep_source_dtype = true});
  std::string source;
  io::Tokenizer tokenizer = api::load_model_tokenizer(loaded.location, loaded.gguf.get(), options.tokenizer, source);
  const model::Model& m = loaded.model;
  ModelInfo info{.path = path,
                 .format = std::string(api::format_name(loaded.location.format)),
                 .architecture = m.config.model_type,
                 .n_layers = m.config.num_layers,
                 .hidden_size = m.config.hidden_size,
                 .vocab_size = m.config.vocab_size,
                 .n_params = m.parameter_count(),
                 .bits_per_weight = m.bits_per_weight(),
                 .tokenizer_source = source};
  return Model(std::make_unique<Impl>(Impl{.loaded = std::move(loaded), .tokenizer = std::move(tokenizer),
                                           .info = std::move(info)}));
}

const ModelInfo& Model::info() const { return impl_->info; }

std::vector<int32_t> Model::tokenize(std::string_view text) const {
  return impl_->tokenizer.encode(text, /*add_special_tokens=*/false);
}

std::string Model::detokenize(const std::vector<int32_t>& ids) const { return impl_->tokenizer.decode(ids); }

const char* version() { return CALQ_VERSION; }

}  // namespace calq
