// `calq check`: llama.cpp's own file passes with status 0; a hand-broken copy gives status 2 and
// findings naming the key and tensor, as text and as JSON.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "cli/cli_test_util.h"
#include "io/gguf.h"
#include "support/shared_dir.h"

namespace calq::testing {
namespace {

TEST(CliCheck, LlamaCppFilePasses) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  const auto r = run_calq("check " + (shared_dir() / "models/calq-ref-llama-f16.gguf").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("llama.cpp's loader rules hold (0 errors, 0 warnings)"), std::string::npos) << r.output;
}

TEST(CliCheck, BrokenFileFails) {
  CALQ_REQUIRE_SHARED("peer-tests/llama.cpp-quants/calq-ref-llama-Q8_0.gguf");
  const io::GgufFile src = io::GgufFile::open(shared_dir() / "peer-tests/llama.cpp-quants/calq-ref-llama-Q8_0.gguf");
  io::GgufMetadata meta;
  for (const auto& kv : src.metadata()) {
    if (kv.first != "llama.context_length") meta.push_back(kv);
  }
  std::vector<io::GgufWriteTensor> tensors = io::gguf_write_tensors(src);
  std::erase_if(tensors, [](const io::GgufWriteTensor& t) { return t.name == "blk.2.attn_v.weight"; });
  const auto dir = temp_dir("cli_check");
  const auto path = dir / "broken.gguf";
  io::write_gguf(path, meta, tensors, io::gguf_write_options(src));

  const auto text = run_calq("check " + path.string());
  EXPECT_EQ(text.status, 2) << text.output;
  EXPECT_NE(text.output.find("error: llama.context_length: missing: llama.cpp requires it"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("error: blk.2.attn_v.weight: missing"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("(2 errors, 0 warnings)"), std::string::npos) << text.output;

  const auto json = run_calq("check --json " + path.string());
  EXPECT_EQ(json.status, 2);
  const nlohmann::json j = nlohmann::json::parse(json.output);
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_EQ(j["errors"].get<int>(), 2);
  ASSERT_EQ(j["findings"].size(), 2u);
  EXPECT_EQ(j["findings"][0]["where"], "llama.context_length");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::testing
