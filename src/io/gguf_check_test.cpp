// The GGUF layout checker: llama.cpp's own files pass; hand-broken copies of the reference F16
// file are flagged with findings that name the key or tensor.
#include "io/gguf_check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

std::filesystem::path f16_path() { return calq::testing::shared_dir() / "models/calq-ref-llama-f16.gguf"; }

std::string dump(const GgufCheckReport& r) {
  std::string s;
  for (const GgufFinding& f : r.findings) {
    s += (f.level == GgufFindingLevel::kError ? "error: " : "warning: ") + f.where + ": " + f.message + "\n";
  }
  return s;
}

// The finding about `where` whose message contains `text`, or nullptr.
const GgufFinding* find(const GgufCheckReport& r, std::string_view where, std::string_view text) {
  for (const GgufFinding& f : r.findings) {
    if (f.where == where && f.message.find(text) != std::string::npos) return &f;
  }
  return nullptr;
}

// A copy of the F16 reference file with `edit` applied to its metadata and tensor list, checked.
template <typename Edit>
GgufCheckReport check_edited(Edit edit) {
  const GgufFile src = GgufFile::open(f16_path());
  GgufMetadata meta = src.metadata();
  std::vector<GgufWriteTensor> tensors = gguf_write_tensors(src);
  edit(meta, tensors);
  const std::vector<std::byte> bytes = gguf_to_bytes(meta, tensors, gguf_write_options(src));
  return check_gguf(GgufFile::from_bytes(bytes, "edited.gguf"));
}

TEST(GgufCheck, LlamaCppFilesPass) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  CALQ_REQUIRE_SHARED("peer-tests/llama.cpp-quants");
  std::vector<std::filesystem::path> files = {f16_path()};
  const auto quants = calq::testing::shared_dir() / "peer-tests/llama.cpp-quants";
  for (const auto& e : std::filesystem::directory_iterator(quants)) {
    if (e.path().extension() == ".gguf") files.push_back(e.path());
  }
  ASSERT_GE(files.size(), 6u);
  for (const auto& f : files) {
    const GgufCheckReport r = check_gguf_file(f);
    EXPECT_TRUE(r.ok()) << f << "\n" << dump(r);
    EXPECT_FALSE(r.calq_only) << f;
    EXPECT_EQ(r.findings.size(), 0u) << f << "\n" << dump(r);
  }
}

TEST(GgufCheck, MissingRequiredKey) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  const GgufCheckReport r = check_edited([](GgufMetadata& meta, std::vector<GgufWriteTensor>&) {
    std::erase_if(meta, [](const auto& kv) { return kv.first == "llama.attention.layer_norm_rms_epsilon"; });
  });
  EXPECT_FALSE(r.ok());
  EXPECT_NE(find(r, "llama.attention.layer_norm_rms_epsilon", "missing"), nullptr) << dump(r);
  EXPECT_EQ(r.errors(), 1u) << dump(r);
}

TEST(GgufCheck, MistypedKeyAndTokenizerArrays) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  const GgufCheckReport r = check_edited([](GgufMetadata& meta, std::vector<GgufWriteTensor>&) {
    for (auto& [k, v] : meta) {
      if (k == "llama.block_count") v = GgufValue::of_uint64(6);
      if (k == "tokenizer.ggml.token_type") v.ints.pop_back();
    }
  });
  EXPECT_NE(find(r, "llama.block_count", "llama.cpp reads it as uint32"), nullptr) << dump(r);
  EXPECT_NE(find(r, "tokenizer.ggml.token_type", "16383 entries for 16384 tokens"), nullptr) << dump(r);
}

TEST(GgufCheck, GptTokenizerWithoutMerges) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  const GgufCheckReport r = check_edited([](GgufMetadata& meta, std::vector<GgufWriteTensor>&) {
    for (auto& [k, v] : meta) {
      if (k == "tokenizer.ggml.model") v = GgufValue::of_string("gpt2");
    }
  });
  EXPECT_NE(find(r, "tokenizer.ggml.merges", "missing"), nullptr) << dump(r);
}

TEST(GgufCheck, WrongShapeAndMissingTensor) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  const GgufCheckReport r = check_edited([](GgufMetadata&, std::vector<GgufWriteTensor>& tensors) {
    for (auto& t : tensors) {
      if (t.name == "blk.0.ffn_up.weight") std::swap(t.ne[0], t.ne[1]);  // same bytes, transposed shape
    }
    std::erase_if(tensors, [](const GgufWriteTensor& t) { return t.name == "blk.3.ffn_gate.weight"; });
  });
  EXPECT_NE(find(r, "blk.0.ffn_up.weight", "has ne 1536, 512 but llama.cpp expects 512, 1536"), nullptr) << dump(r);
  EXPECT_NE(find(r, "blk.3.ffn_gate.weight", "missing"), nullptr) << dump(r);
  EXPECT_EQ(r.errors(), 2u) << dump(r);
}

TEST(GgufCheck, ExtraTensorAndUnknownArchitecture) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  static const std::vector<std::byte> extra(64);
  const GgufCheckReport r = check_edited([](GgufMetadata&, std::vector<GgufWriteTensor>& tensors) {
    tensors.push_back({.name = "blk.0.attn_sinks.weight", .ne = {16}, .type = kGgmlF32, .data = extra});
  });
  EXPECT_NE(find(r, "blk.0.attn_sinks.weight", "not a tensor llama.cpp's llama loader uses"), nullptr) << dump(r);

  const GgufCheckReport r2 = check_edited([](GgufMetadata& meta, std::vector<GgufWriteTensor>&) {
    for (auto& [k, v] : meta) {
      if (k == "general.architecture") v = GgufValue::of_string("llama4");
    }
  });
  EXPECT_NE(find(r2, "general.architecture", "'llama4' is not one of"), nullptr) << dump(r2);
}

TEST(GgufCheck, CalqSpecificTensors) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  static const std::vector<std::byte> bytes(1000);
  const GgufCheckReport r = check_edited([](GgufMetadata& meta, std::vector<GgufWriteTensor>& tensors) {
    for (auto& t : tensors) {
      if (t.name == "blk.0.attn_q.weight") t = {.name = t.name, .ne = {1000}, .type = 24, .data = bytes};
    }
    meta.emplace_back("calq.requires_calq", GgufValue::of_bool(true));
    meta.emplace_back("calq.qtensor.blk.0.attn_q.weight.format", GgufValue::of_string("int4-g128-asym"));
  });
  EXPECT_TRUE(r.calq_only);
  EXPECT_NE(find(r, "", "calq-only file: llama.cpp cannot load it"), nullptr) << dump(r);
  EXPECT_NE(find(r, "blk.0.attn_q.weight", "calq format 'int4-g128-asym'"), nullptr) << dump(r);
  EXPECT_EQ(r.errors(), 2u) << dump(r);  // no shape finding on top for the calq tensor
}

// A file the GGUF reader refuses (here: a data offset off the alignment) is one precise error.
TEST(GgufCheck, MisalignedOffset) {
  const std::vector<std::byte> a(16), b(16);
  const GgufMetadata meta = {{"general.architecture", GgufValue::of_string("llama")}};
  const std::vector<GgufWriteTensor> tensors = {{.name = "ta", .ne = {4}, .type = kGgmlF32, .data = a},
                                                {.name = "tb", .ne = {4}, .type = kGgmlF32, .data = b}};
  std::vector<std::byte> bytes = gguf_to_bytes(meta, tensors);
  // Tensor info of "tb": u64 name length 2, "tb", u32 n_dims, u64 ne, u32 type, u64 offset.
  const char needle[] = {2, 0, 0, 0, 0, 0, 0, 0, 't', 'b'};
  const auto* begin = reinterpret_cast<const char*>(bytes.data());
  const auto* hit = std::search(begin, begin + bytes.size(), needle, needle + sizeof(needle));
  ASSERT_NE(hit, begin + bytes.size());
  const size_t offset_pos = static_cast<size_t>(hit - begin) + sizeof(needle) + 4 + 8 + 4;
  uint64_t offset = 0;
  std::memcpy(&offset, bytes.data() + offset_pos, 8);
  ASSERT_EQ(offset, 32u);  // the first tensor padded to the alignment
  offset = 20;
  std::memcpy(bytes.data() + offset_pos, &offset, 8);
  const auto path = std::filesystem::temp_directory_path() / "calq_gguf_check_misaligned.gguf";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  const GgufCheckReport r = check_gguf_file(path);
  std::filesystem::remove(path);
  ASSERT_EQ(r.findings.size(), 1u) << dump(r);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.findings[0].message.find("tensor 'tb'"), std::string::npos) << dump(r);
  EXPECT_NE(r.findings[0].message.find("not a multiple of the alignment 32"), std::string::npos) << dump(r);
}

}  // namespace
}  // namespace calq::io
