// `calq inspect`: architecture, hyper-parameters and tensor list of a model, from headers only.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_paths.h"
#include "core/mapped_file.h"
#include "model/model.h"

namespace calq::cli {
namespace {

struct InspectFlags {
  std::string model;
  std::string json_out;
};

void run_inspect(const InspectFlags& f) {
  const auto folder = require_hf_folder(f.model);
  const model::ModelSummary s = model::inspect_hf_model(folder);
  const auto& c = s.config;
  fmt::print("model          {}\n", f.model);
  fmt::print("architecture   {}\n", c.model_type);
  fmt::print("layers         {}\n", c.num_layers);
  fmt::print("hidden         {}\n", c.hidden_size);
  fmt::print("intermediate   {}\n", c.intermediate_size);
  fmt::print("heads          {} (kv heads {}, head dim {})\n", c.num_heads, c.num_kv_heads, c.head_dim);
  fmt::print("vocab          {}\n", c.vocab_size);
  fmt::print("rope theta     {}\n", c.rope_theta);
  fmt::print("rms norm eps   {}\n", c.rms_norm_eps);
  fmt::print("tied embedding {}\n", c.tie_word_embeddings ? "yes" : "no");
  fmt::print("parameters     {} ({:.1f} M)\n\n", s.parameter_count, static_cast<double>(s.parameter_count) / 1e6);
  size_t width = 4;
  for (const auto& t : s.tensors) width = std::max(width, t.name.size());
  fmt::print("{:<{}}  {:<5}  {}\n", "name", width, "dtype", "shape");
  for (const auto& t : s.tensors) fmt::print("{:<{}}  {:<5}  {}\n", t.name, width, t.dtype, shape_string(t.shape));

  if (!f.json_out.empty()) {
    nlohmann::ordered_json j;
    j["model"] = f.model;
    j["architecture"] = c.model_type;
    j["num_layers"] = c.num_layers;
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_heads"] = c.num_heads;
    j["num_kv_heads"] = c.num_kv_heads;
    j["head_dim"] = c.head_dim;
    j["vocab_size"] = c.vocab_size;
    j["rope_theta"] = c.rope_theta;
    j["rms_norm_eps"] = c.rms_norm_eps;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["parameter_count"] = s.parameter_count;
    auto& tensors = j["tensors"] = nlohmann::ordered_json::array();
    for (const auto& t : s.tensors) tensors.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
    const std::string out = j.dump(1) + "\n";
    write_file_atomic(f.json_out, std::as_bytes(std::span(out.data(), out.size())));
  }
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show a model's architecture, hyper-parameters and tensors");
  cmd->add_option("model", flags->model, "Hugging Face model folder")->required();
  cmd->add_option("--json", flags->json_out, "Also write the summary as JSON to this file");
  cmd->callback([flags] { run_inspect(*flags); });
}

}  // namespace calq::cli
