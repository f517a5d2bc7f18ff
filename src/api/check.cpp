// calq::check (calq/check.h): io/gguf_check.h's findings as plain data and JSON.
#include "calq/check.h"

#include <nlohmann/json.hpp>

#include "io/gguf_check.h"

namespace calq {

CheckReport check(const std::string& path) {
  const io::GgufCheckReport r = io::check_gguf_file(path);
  CheckReport out{.file = r.file, .ok = r.ok(), .calq_only = r.calq_only,
                  .errors = static_cast<int64_t>(r.errors()), .warnings = static_cast<int64_t>(r.warnings())};
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
