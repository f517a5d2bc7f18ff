// write_gguf_model against llama.cpp's own conversion of the reference model, round trips through
// load_gguf_model (GGUF-native and calq-specific formats), and the layout checker on the output.
#include "model/gguf_export.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "io/gguf_check.h"
#include "io/tokenizer.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

std::filesystem::path shared(const char* rel) { return calq::testing::shared_dir() / rel; }

bool same_value(const io::GgufValue& a, const io::GgufValue& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case io::GgufValueType::kString: return a.s == b.s;
    case io::GgufValueType::kFloat32:
    case io::GgufValueType::kFloat64: return a.f == b.f;
    case io::GgufValueType::kInt8:
    case io::GgufValueType::kInt16:
    case io::GgufValueType::kInt32:
    case io::GgufValueType::kInt64: return a.i == b.i;
    case io::GgufValueType::kArray:
      return a.array_type == b.array_type && a.uints == b.uints && a.ints == b.ints && a.floats == b.floats &&
             a.strings == b.strings && a.arrays.size() == b.arrays.size();
    default: return a.u == b.u;
  }
}

std::string describe(const io::GgufValue& v) {
  if (v.type == io::GgufValueType::kString) return "\"" + v.s + "\"";
  if (v.type == io::GgufValueType::kArray) return "array of " + std::to_string(v.array_size());
  return std::to_string(v.u) + "/" + std::to_string(v.i) + "/" + std::to_string(v.f);
}

// Every linear weight of `m` (layers, embedding; the output head follows the embedding when tied)
// re-encoded with `pick(role)`'s format (nullptr: left dense).
template <typename Pick>
void quantize_model(Model& m, ThreadPool& pool, Pick pick) {
  const auto convert = [&](LinearWeight& w, TensorRole role) {
    const Format* f = pick(role);
    if (f == nullptr) return;
    const Tensor dense = w.to_dense(pool);
    w = QuantizedTensor::quantize(pool, *f, dense.f32(), w.rows(), w.cols(), {.tensor_name = role_name(role)});
  };
  const bool tied = m.output.same_storage(m.embedding);
  convert(m.embedding, TensorRole::kTokenEmbedding);
  if (tied) {
    m.output = m.embedding;
  } else {
    convert(m.output, TensorRole::kOutput);
  }
  for (LayerWeights& l : m.layers) {
    for (TensorRole r : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut,
                         TensorRole::kMlpGate, TensorRole::kMlpUp, TensorRole::kMlpDown}) {
      convert(l.linear(r), r);
    }
  }
}

// HF folder -> every weight in "f16" -> GGUF: the same tensor bytes, names, order and types as
// llama.cpp's convert_hf_to_gguf.py output, and the same metadata except for these keys:
//  * general.name: the converter derives it from where it was run ("Model"); calq writes the
//    source folder's name ("calq-ref-llama").
//  * llama.rope.freq_base: calq always writes the model's rope theta (10000); this converter
//    missed it in transformers 5's `rope_parameters` and relies on llama.cpp's default of 10000.
TEST(GgufExport, HfFolderAsF16MatchesLlamaCppConverter) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  ThreadPool pool(2);
  Model m = load_hf_model(shared("models/calq-ref-llama"), pool);
  const Format& f16 = format_by_name("f16");
  quantize_model(m, pool, [&](TensorRole) { return &f16; });
  const auto dir = calq::testing::temp_dir("gguf_export_f16");
  const auto out = dir / "model-f16.gguf";
  write_gguf_model(m, out, {}, pool);

  const io::GgufFile ours = io::GgufFile::open(out);
  const io::GgufFile ref = io::GgufFile::open(shared("models/calq-ref-llama-f16.gguf"));
  ASSERT_EQ(ours.tensors().size(), ref.tensors().size());
  for (size_t i = 0; i < ref.tensors().size(); ++i) {
    const io::GgufTensorInfo& a = ours.tensors()[i];
    const io::GgufTensorInfo& b = ref.tensors()[i];
    ASSERT_EQ(a.name, b.name) << "tensor #" << i;
    EXPECT_EQ(a.type, b.type) << a.name;
    EXPECT_EQ(a.ne, b.ne) << a.name;
    EXPECT_EQ(a.offset, b.offset) << a.name;
    const auto da = ours.tensor_data(a);
    const auto db = ref.tensor_data(b);
    ASSERT_EQ(da.size(), db.size()) << a.name;
    EXPECT_EQ(std::memcmp(da.data(), db.data(), da.size()), 0) << a.name << " differs";
  }

  const std::set<std::string> differ = {"general.name", "llama.rope.freq_base"};
  std::vector<std::string> our_keys, ref_keys;
  for (const auto& [k, v] : ours.metadata()) {
    if (differ.count(k) == 0) our_keys.push_back(k);
  }
  for (const auto& [k, v] : ref.metadata()) {
    if (differ.count(k) == 0) ref_keys.push_back(k);
    const io::GgufValue* mine = ours.find(k);
    ASSERT_NE(mine, nullptr) << k;
    if (differ.count(k) == 0) {
      EXPECT_TRUE(same_value(*mine, v)) << k << ": " << describe(*mine) << " vs " << describe(v);
    }
  }
  EXPECT_EQ(our_keys, ref_keys);  // same keys in the same order
  EXPECT_EQ(ours.get("general.name").s, "calq-ref-llama");
  EXPECT_EQ(ours.get("llama.rope.freq_base").f, 10000.0);

  // llama.cpp's loader rules hold, and the tokenizer tokenizes like llama.cpp's file.
  const io::GgufCheckReport check = io::check_gguf(ours);
  EXPECT_TRUE(check.ok() && check.findings.empty()) << (check.findings.empty() ? "" : check.findings[0].message);
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  std::ifstream in(shared("data/heldout.txt"), std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::vector<int32_t> ids_ours = io::Tokenizer::from_gguf(ours).encode(text);
  const std::vector<int32_t> ids_ref = io::Tokenizer::from_gguf(ref).encode(text);
  EXPECT_GT(ids_ref.size(), 1000u);
  EXPECT_EQ(ids_ours, ids_ref);
  std::filesystem::remove_all(dir);
}

// q4_k attention, int4-g128-asym MLP, dense embedding: load_gguf_model gives the same bytes and the
// same logits; the calq-specific tensors are marked, and the checker calls the file calq-only.
TEST(GgufExport, MixedFormatsRoundTrip) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  ThreadPool pool(2);
  Model m = load_hf_model(shared("models/calq-ref-llama"), pool);
  const Format& q4k = format_by_name("q4_k");
  const Format& int4 = format_by_name("int4-g128-asym");
  ASSERT_FALSE(int4.traits().ggml_type.has_value());
  quantize_model(m, pool, [&](TensorRole r) -> const Format* {
    if (r == TensorRole::kTokenEmbedding) return nullptr;
    const bool attn = r == TensorRole::kAttnQ || r == TensorRole::kAttnK || r == TensorRole::kAttnV ||
                      r == TensorRole::kAttnOut;
    return attn ? &q4k : &int4;
  });
  const auto dir = calq::testing::temp_dir("gguf_export_mixed");
  const auto out = dir / "mixed.gguf";
  GgufExportOptions opt{.extra_metadata = {{"calq.recipe", io::GgufValue::of_string("test")}}, .file_type = 15};
  write_gguf_model(m, out, opt, pool);

  const io::GgufFile file = io::GgufFile::open(out);
  EXPECT_TRUE(file.get(std::string(kCalqRequiresCalqKey)).as_bool("requires"));
  EXPECT_EQ(file.get("general.file_type").u, 15u);
  EXPECT_EQ(file.metadata().back().first, "calq.recipe");
  const io::GgufTensorInfo* up = file.find_tensor("blk.0.ffn_up.weight");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->type, 24u);
  EXPECT_EQ(up->ne, (std::vector<int64_t>{static_cast<int64_t>(int4.tensor_bytes(1536, 512))}));
  EXPECT_EQ(file.get(calq_qtensor_format_key("blk.0.ffn_up.weight")).s, "int4-g128-asym");
  EXPECT_EQ(file.get(calq_qtensor_shape_key("blk.0.ffn_up.weight")).uints, (std::vector<uint64_t>{1536, 512}));
  EXPECT_EQ(file.find_tensor("blk.0.attn_q.weight")->type, *q4k.traits().ggml_type);
  const io::GgufCheckReport check = io::check_gguf(file);
  EXPECT_TRUE(check.calq_only);
  EXPECT_FALSE(check.ok());

  const Model back = load_gguf_model(out, pool);
  ASSERT_EQ(back.layers.size(), m.layers.size());
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (TensorRole r : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut,
                         TensorRole::kMlpGate, TensorRole::kMlpUp, TensorRole::kMlpDown}) {
      const QuantizedTensor& a = m.layers[l].linear(r).quantized();
      const QuantizedTensor& b = back.layers[l].linear(r).quantized();
      EXPECT_EQ(a.format, b.format) << l << " " << role_name(r);
      ASSERT_EQ(a.bytes.size(), b.bytes.size());
      EXPECT_EQ(std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()), 0) << l << " " << role_name(r);
    }
    const Tensor& norm = m.layers[l].attn_norm;
    EXPECT_EQ(std::memcmp(norm.f32(), back.layers[l].attn_norm.f32(), norm.nbytes()), 0);
  }
  EXPECT_TRUE(back.output.same_storage(back.embedding));
  const std::vector<int32_t> ids = {1, 450, 3121, 17, 9000, 2, 77, 16383};
  const Tensor a = forward(m, ids, pool);
  const Tensor b = forward(back, ids, pool);
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.f32(), b.f32(), a.nbytes()), 0);
  std::filesystem::remove_all(dir);
}

// GGUF-native types only (q8_0 embedding, q4_k / q6_k weights): llama.cpp's layout rules hold,
// the tensors are in llama-quantize's order and file_type comes last.
TEST(GgufExport, NativeQuantizedFilePassesChecker) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  ThreadPool pool(2);
  Model m = load_hf_model(shared("models/calq-ref-llama"), pool);
  const Format& q8 = format_by_name("q8_0");
  const Format& q4k = format_by_name("q4_k");
  const Format& q6k = format_by_name("q6_k");
  quantize_model(m, pool, [&](TensorRole r) -> const Format* {
    if (r == TensorRole::kTokenEmbedding) return &q8;
    return r == TensorRole::kMlpDown ? &q6k : &q4k;
  });
  const auto dir = calq::testing::temp_dir("gguf_export_native");
  const auto out = dir / "q4k.gguf";
  write_gguf_model(m, out, {}, pool);
  const io::GgufFile file = io::GgufFile::open(out);
  const io::GgufCheckReport check = io::check_gguf(file);
  EXPECT_TRUE(check.ok());
  EXPECT_TRUE(check.findings.empty()) << check.findings.front().where << ": " << check.findings.front().message;
  EXPECT_EQ(file.find(std::string(kCalqRequiresCalqKey)), nullptr);
  EXPECT_EQ(file.metadata().back().first, "general.file_type");
  EXPECT_EQ(file.get("general.file_type").u, 15u);  // mostly Q4_K: llama.cpp's guess is Q4_K_M
  EXPECT_EQ(file.tensors().front().name, "output_norm.weight");
  EXPECT_EQ(file.tensors()[1].name, "token_embd.weight");
  EXPECT_EQ(file.tensors()[2].name, "blk.0.attn_k.weight");

  const Model back = load_gguf_model(out, pool);
  const std::vector<int32_t> ids = {1, 450, 3121, 17, 9000};
  const Tensor a = forward(m, ids, pool);
  const Tensor b = forward(back, ids, pool);
  EXPECT_EQ(std::memcmp(a.f32(), b.f32(), a.nbytes()), 0);
  std::filesystem::remove_all(dir);
}

// A Model loaded from a GGUF file keeps that file's general.* and tokenizer.* keys, in order.
TEST(GgufExport, GgufSourceKeepsTokenizerKeys) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  ThreadPool pool(2);
  const auto src_path = shared("models/calq-ref-llama-f16.gguf");
  const Model m = load_gguf_model(src_path, pool);
  const auto dir = calq::testing::temp_dir("gguf_export_from_gguf");
  const auto out = dir / "copy.gguf";
  write_gguf_model(m, out, {}, pool);
  const io::GgufFile src = io::GgufFile::open(src_path);
  const io::GgufFile file = io::GgufFile::open(out);
  std::vector<std::string> src_keys, out_keys;
  for (const auto& [k, v] : src.metadata()) {
    if (k.rfind("tokenizer.", 0) == 0 || (k.rfind("general.", 0) == 0 && k != "general.file_type" &&
                                          k != "general.quantization_version")) {
      src_keys.push_back(k);
      const io::GgufValue* mine = file.find(k);
      ASSERT_NE(mine, nullptr) << k;
      EXPECT_TRUE(same_value(*mine, v)) << k;
    }
  }
  for (const auto& [k, v] : file.metadata()) {
    if (k.rfind("tokenizer.", 0) == 0 || (k.rfind("general.", 0) == 0 && k != "general.file_type" &&
                                          k != "general.quantization_version")) {
      out_keys.push_back(k);
    }
  }
  EXPECT_EQ(out_keys, src_keys);
  EXPECT_EQ(file.get("general.file_type").u, 0u);  // dense float32 weights: ALL_F32
  std::filesystem::remove_all(dir);
}

TEST(GgufExport, ErrorsLeaveNoOutput) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  ThreadPool pool(2);
  const Model m = load_gguf_model(shared("models/calq-ref-llama-f16.gguf"), pool);
  const auto dir = calq::testing::temp_dir("gguf_export_errors");
  // A key the export writes itself cannot come again from the caller.
  GgufExportOptions dup{.extra_metadata = {{"general.architecture", io::GgufValue::of_string("x")}}};
  EXPECT_THROW(write_gguf_model(m, dir / "a.gguf", dup, pool), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "a.gguf"));
  EXPECT_THROW(write_gguf_model(m, dir / "no/such/dir/b.gguf", {}, pool), Error);
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(dir);
}

// Tiny llama (untied head) and qwen2 (biases): Q/K in a calq format with a per-row trailer (rows kept
// in Hugging Face order), the rest q8_0 or dense; the loaded model is the written one, bit for bit.
TEST(GgufExport, TinyModelsRoundTrip) {
  ThreadPool pool(2);
  for (const std::string type : {"llama", "qwen2"}) {
    SCOPED_TRACE(type);
    const auto dir = calq::testing::temp_dir("gguf_export_tiny_" + type);
    Model m = testutil::load_tiny_model(dir / "hf", {.tied = false, .model_type = type}, pool);
    m.source.clear();  // no tokenizer to carry over
    const Format& calq_fmt = format_by_name("int4-pc-asym");
    const Format& q8 = format_by_name("q8_0");
    ASSERT_GT(calq_fmt.trailer_bytes(8, 32), 0u);
    quantize_model(m, pool, [&](TensorRole r) -> const Format* {
      if (r == TensorRole::kAttnQ || r == TensorRole::kAttnK) return &calq_fmt;
      if (r == TensorRole::kMlpDown || r == TensorRole::kTokenEmbedding) return nullptr;  // 48 columns; dense
      return &q8;
    });
    const auto out = dir / "tiny.gguf";
    write_gguf_model(m, out, {}, pool);
    const Model back = load_gguf_model(out, pool);
    EXPECT_FALSE(back.output.same_storage(back.embedding));
    for (size_t l = 0; l < m.layers.size(); ++l) {
      for (TensorRole r : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut}) {
        const QuantizedTensor& a = m.layers[l].linear(r).quantized();
        const QuantizedTensor& b = back.layers[l].linear(r).quantized();
        EXPECT_EQ(a.format, b.format);
        EXPECT_EQ(std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()), 0) << l << " " << role_name(r);
      }
      if (type == "qwen2") {
        EXPECT_EQ(std::memcmp(m.layers[l].bq.f32(), back.layers[l].bq.f32(), m.layers[l].bq.nbytes()), 0);
      }
    }
    const std::vector<int32_t> ids = testutil::test_token_ids(12, m.config.vocab_size);
    const Tensor a = forward(m, ids, pool);
    const Tensor b = forward(back, ids, pool);
    EXPECT_EQ(std::memcmp(a.f32(), b.f32(), a.nbytes()), 0);
    std::filesystem::remove_all(dir);
  }
}

// The loader refuses calq-specific tensors whose description does not add up, naming file and tensor.
TEST(GgufExport, LoaderValidatesCalqTensors) {
  ThreadPool pool(2);
  const auto dir = calq::testing::temp_dir("gguf_export_validate");
  Model m = testutil::load_tiny_model(dir / "hf", {.tied = true}, pool);
  m.source.clear();
  const Format& calq_fmt = format_by_name("int4-pc-asym");
  quantize_model(m, pool, [&](TensorRole r) -> const Format* { return r == TensorRole::kMlpUp ? &calq_fmt : nullptr; });
  const auto out = dir / "tiny.gguf";
  write_gguf_model(m, out, {}, pool);
  const io::GgufFile good = io::GgufFile::open(out);
  const std::string name = "blk.1.ffn_up.weight";
  const auto expect_refused = [&](auto edit, const std::string& text) {
    io::GgufMetadata meta = good.metadata();
    std::vector<io::GgufWriteTensor> tensors = io::gguf_write_tensors(good);
    edit(meta, tensors);
    const io::GgufFile bad = io::GgufFile::from_bytes(io::gguf_to_bytes(meta, tensors), "bad.gguf");
    try {
      load_gguf_model(bad, pool);
      ADD_FAILURE() << "accepted; expected: " << text;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
      EXPECT_NE(msg.find(name), std::string::npos) << msg;
      EXPECT_NE(msg.find(text), std::string::npos) << msg;
    }
  };
  const auto set = [&](const std::string& key, io::GgufValue v) {
    return [key, v](io::GgufMetadata& meta, std::vector<io::GgufWriteTensor>&) {
      for (auto& kv : meta) {
        if (kv.first == key) kv.second = v;
      }
    };
  };
  expect_refused(set(calq_qtensor_format_key(name), io::GgufValue::of_string("int4-nope")), "'int4-nope'");
  expect_refused(set(calq_qtensor_format_key(name), io::GgufValue::of_string("q8_0")), "has a ggml type");
  io::GgufValue swapped;
  swapped.type = io::GgufValueType::kArray;
  swapped.array_type = io::GgufValueType::kUint64;
  swapped.uints = {32, 48};
  expect_refused(set(calq_qtensor_shape_key(name), swapped), "metadata implies shape");
  static const std::vector<std::byte> short_bytes(100);
  expect_refused(
      [&](io::GgufMetadata&, std::vector<io::GgufWriteTensor>& tensors) {
        for (auto& t : tensors) {
          if (t.name == name) t = {.name = name, .ne = {100}, .type = 24, .data = short_bytes};
        }
      },
      "has 100 bytes");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
