// Loading errors: unsupported component types are kUnsupported naming the file and the JSON path;
// malformed JSON and missing keys are kFormat naming the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

using nlohmann::json;

json minimal_tokenizer() {
  return json::parse(R"({
    "version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
    "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}
  })");
}

// Loads `doc` and returns the error it raises (fails the test if none).
Error load_error(const json& doc, std::string_view origin = "my/tokenizer.json") {
  try {
    (void)Tokenizer::from_json_text(doc.dump(), origin);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << doc.dump();
  return Error(ErrorKind::kIo, "");
}

void expect_error(const Error& e, ErrorKind kind, std::initializer_list<std::string_view> parts) {
  EXPECT_EQ(e.kind(), kind) << e.what();
  for (const auto part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
}

TEST(TokenizerErrors, MinimalTokenizerLoads) {
  const Tokenizer t = Tokenizer::from_json_text(minimal_tokenizer().dump(), "<memory>");
  EXPECT_EQ(t.encode("ab"), (std::vector<int32_t>{2}));
}

TEST(TokenizerErrors, UnknownNormalizer) {
  json doc = minimal_tokenizer();
  doc["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Precompiled"}]})");
  expect_error(load_error(doc), ErrorKind::kUnsupported,
               {"my/tokenizer.json", "normalizer.normalizers[1]", "unsupported normalizer type 'Precompiled'"});
}

TEST(TokenizerErrors, UnknownPreTokenizer) {
  json doc = minimal_tokenizer();
  doc["pre_tokenizer"] = json::parse(
      R"({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "Foo"}]})");
  expect_error(load_error(doc), ErrorKind::kUnsupported,
               {"my/tokenizer.json: pre_tokenizer.pretokenizers[1]: unsupported pre-tokenizer type 'Foo'"});
}

TEST(TokenizerErrors, UnknownModel) {
  json doc = minimal_tokenizer();
  doc["model"] = json::parse(R"({"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0})");
  expect_error(load_error(doc), ErrorKind::kUnsupported, {"my/tokenizer.json", "model", "'Unigram'"});
}

TEST(TokenizerErrors, UnknownDecoder) {
  json doc = minimal_tokenizer();
  doc["decoder"] = json::parse(R"({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "CTC"}]})");
  expect_error(load_error(doc), ErrorKind::kUnsupported,
               {"my/tokenizer.json", "decoder.decoders[1]", "unsupported decoder type 'CTC'"});
}

TEST(TokenizerErrors, UnknownPostProcessor) {
  json doc = minimal_tokenizer();
  doc["post_processor"] = json::parse(R"({"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "Bar"}]})");
  expect_error(load_error(doc), ErrorKind::kUnsupported,
               {"my/tokenizer.json", "post_processor.processors[1]", "unsupported post-processor type 'Bar'"});
}

// Found by fuzz_tokenizer: one huge id made the dense id table allocate gigabytes.
TEST(TokenizerErrors, SparseTokenIdsAreRefused) {
  json doc = minimal_tokenizer();
  doc["model"]["vocab"]["ab"] = 300000000;
  expect_error(load_error(doc), ErrorKind::kUnsupported, {"my/tokenizer.json", "model.vocab", "sparse", "300000000"});
}

TEST(TokenizerErrors, MalformedJson) {
  std::string text = minimal_tokenizer().dump();
  text.pop_back();  // drop the closing brace
  try {
    (void)Tokenizer::from_json_text(text, "broken/tokenizer.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    expect_error(e, ErrorKind::kFormat, {"broken/tokenizer.json", "malformed JSON"});
  }
}

TEST(TokenizerErrors, MissingRequiredKeys) {
  json no_model = minimal_tokenizer();
  no_model.erase("model");
  expect_error(load_error(no_model), ErrorKind::kFormat, {"my/tokenizer.json", "'model'"});

  json no_merges = minimal_tokenizer();
  no_merges["model"].erase("merges");
  no_merges["model"]["type"] = "BPE";
  expect_error(load_error(no_merges), ErrorKind::kFormat, {"my/tokenizer.json", "model", "'merges'"});

  json bad_merge = minimal_tokenizer();
  bad_merge["model"]["merges"] = json::parse(R"(["a b", "a c"])");
  expect_error(load_error(bad_merge), ErrorKind::kFormat, {"model.merges[1]"});

  json no_pattern = minimal_tokenizer();
  no_pattern["pre_tokenizer"] = json::parse(R"({"type": "Split", "behavior": "Isolated"})");
  expect_error(load_error(no_pattern), ErrorKind::kFormat, {"pre_tokenizer", "'pattern'"});

  json bad_regex = minimal_tokenizer();
  bad_regex["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"})");
  expect_error(load_error(bad_regex), ErrorKind::kFormat, {"pre_tokenizer.pattern.Regex", "invalid regex"});
}

TEST(TokenizerErrors, MissingFileIsIo) {
  try {
    (void)Tokenizer::from_file(testing::temp_dir("tok") / "absent.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    expect_error(e, ErrorKind::kIo, {"absent.json"});
  }
}

}  // namespace
}  // namespace calq::io
