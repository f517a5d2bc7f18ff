// Test-only: runs the `calq` executable (path in the CALQ_BINARY compile definition of the test
// target) through the shell and captures its exit status and combined stdout + stderr.
#pragma once

#include "support/letter_tokenizer.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/mapped_file.h"

namespace calq::testing {

struct RunResult {
  int status = -1;
  std::string output;  // stdout + stderr
};

// Runs a shell command line, capturing stdout + stderr.
inline RunResult run_command(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  RunResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int raw = ::pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  return r;
}

inline RunResult run_calq(const std::string& args) {
  // Appended, not `std::string(CALQ_BINARY) + " " + args`: GCC 12 at -O3 takes that inlined chain for
  // an out-of-bounds copy (-Warray-bounds) in some callers.
  std::string cmd = CALQ_BINARY;
  cmd += ' ';
  cmd += args;
  return run_command(cmd);
}

// `calq eval --quiet ARGS --json OUT`: its JSON report, or {} (with a test failure) when it fails.
inline nlohmann::json eval_json(const std::string& args, const std::filesystem::path& out) {
  const RunResult r = run_calq("eval --quiet " + args + " --json " + out.string());
  EXPECT_EQ(r.status, 0) << r.output;
  if (r.status != 0) return {};
  return nlohmann::json::parse(read_text_file(out));
}

// True when `dir` holds no GGUF output and no temporary file: what a refused or failed command
// must leave behind.
inline bool no_outputs_in_dir(const std::filesystem::path& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".gguf") != std::string::npos || n.find(".tmp") != std::string::npos) return false;
  }
  return true;
}

}  // namespace calq::testing
