// llama.cpp's tokenizer test files (test-tokenizer-0): inputs in `<vocab>.inp` separated by
// "\n__ggml_vocab_test__\n" (the file ends with one), expected ids in `<vocab>.out`, one line per
// input, space-separated. Shared by the GGUF vocab tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace calq::io::testing_vocab {

struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

inline std::vector<VocabCase> read_vocab_cases(const std::filesystem::path& inp, const std::filesystem::path& out) {
  const std::string raw = read_bytes(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<VocabCase> cases;
  std::istringstream lines(read_bytes(out));
  size_t i = 0;
  for (std::string line; std::getline(lines, line); ++i) {
    EXPECT_LT(i, inputs.size()) << "more output lines than inputs";
    if (i >= inputs.size()) break;
    VocabCase c{inputs[i], {}};
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  EXPECT_EQ(cases.size(), inputs.size()) << "inputs and outputs differ in number";
  return cases;
}

inline std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (const int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

}  // namespace calq::io::testing_vocab
