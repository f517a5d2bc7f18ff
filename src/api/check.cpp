// calq::check (calq/check.h): io/gguf_check.h's findings as plain data and JSON.
#include "calq/check.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/thread_pool.h"
#include "io/gguf_check.h"
#include "model/hf_quant.h"
#include "model/model.h"

namespace calq {
namespace {

// A Hugging Face folder (check.h): loaded whole by calq's reader, then vLLM's kernel rules as warnings.
std::vector<CheckFinding> check_hf_folder(const std::filesystem::path& folder, std::string& summary) {
  std::vector<CheckFinding> out;
  try {
    const std::optional<model::HfQuantSpec> spec = model::hf_quant_spec(folder);
    ThreadPool pool(1);
    const model::Model m = model::load_hf_model(folder, pool, {.keep_source_dtype = true});
    std::error_code ec;
    if (!std::filesystem::exists(folder / "tokenizer.json", ec) && !std::filesystem::exists(folder / "tokenizer.model", ec)) {
      out.push_back({"warning", "", "no tokenizer.json or tokenizer.model: runtimes need the tokenizer beside the model"});
    }
    if (!spec) {
      summary = "calq reads the model (not a quantized checkpoint)";
      return out;
    }
    if (spec->kind == model::HfQuantSpec::Kind::kGptq) {
      if ((spec->bits != 4 && spec->bits != 8) || !spec->symmetric) {
        out.push_back({"warning", "quantization_config",
                       fmt::format("vLLM's GPTQ Marlin kernels take 4/8-bit symmetric checkpoints; this one ({}-bit, {}) "
                                   "runs on its slower GPTQ kernels, if its build has them",
                                   spec->bits, spec->symmetric ? "symmetric" : "asymmetric")});
      }
      if (spec->group != -1 && spec->group != 32 && spec->group != 64 && spec->group != 128) {
        out.push_back({"warning", "quantization_config",
                       fmt::format("vLLM's GPTQ Marlin kernels take group sizes -1, 32, 64 and 128, not {}", spec->group)});
      }
      for (int64_t l = 0; l < m.config.num_layers; ++l) {
        for (const model::TensorRole role : model::layer_linear_roles(m.config)) {
          const model::LinearWeight& w = m.layers[static_cast<size_t>(l)].linear(role);
          if (w.rows() % 64 != 0 || w.cols() % 128 != 0) {
            out.push_back({"warning", model::hf_tensor_name(*m.arch, role, l),
                           fmt::format("[{}, {}]: vLLM's GPTQ Marlin kernels need outputs a multiple of 64 and inputs of "
                                       "128 (per tensor-parallel shard)", w.rows(), w.cols())});
          }
        }
      }
    }
    const model::LinearWeight& first = m.layers.at(0).linear(model::layer_linear_roles(m.config).at(0));
    summary = fmt::format("calq reads the checkpoint whole ({} in {})", first.format_name(), spec->origin);
  } catch (const Error& e) {
    out.push_back({"error", "", e.what()});
    summary = "calq cannot read this model folder";
  }
  return out;
}

}  // namespace

CheckReport check(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    CheckReport out{.file = path};
    out.findings = check_hf_folder(path, out.summary);
    nlohmann::json j;
    j["file"] = path;
    j["findings"] = nlohmann::json::array();
    for (const CheckFinding& f : out.findings) {
      (f.level == "error" ? out.errors : out.warnings) += 1;
      j["findings"].push_back({{"level", f.level}, {"where", f.where}, {"message", f.message}});
    }
    out.ok = out.errors == 0;
    j["ok"] = out.ok;
    j["errors"] = out.errors;
    j["warnings"] = out.warnings;
    j["summary"] = out.summary;
    out.json = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    return out;
  }
  const io::GgufCheckReport r = io::check_gguf_file(path);
  CheckReport out{.file = r.file, .ok = r.ok(), .calq_only = r.calq_only,
                  .errors = static_cast<int64_t>(r.errors()), .warnings = static_cast<int64_t>(r.warnings())};
  out.summary = out.ok ? "llama.cpp's loader rules hold" : "llama.cpp would refuse this file";
  nlohmann::json j;
  j["file"] = out.file;
  j["ok"] = out.ok;
  j["calq_only"] = out.calq_only;
  j["errors"] = out.errors;
  j["warnings"] = out.warnings;
  j["findings"] = nlohmann::json::array();
  for (const io::GgufFinding& x : r.findings) {
    CheckFinding f{.level = x.level == io::GgufFindingLevel::kError ? "error" : "warning", .where = x.where,
                   .message = x.message};
    j["findings"].push_back({{"level", f.level}, {"where", f.where}, {"message", f.message}});
    out.findings.push_back(std::move(f));
  }
  // Names and messages may quote bytes of a hostile file: invalid UTF-8 is replaced.
  out.json = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  return out;
}

}  // namespace calq
