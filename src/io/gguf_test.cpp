// GGUF reader/writer: the ggml type table, every metadata value type through a write/read round
// trip, llama.cpp's layout, writer argument checks, and the real files in ../shared (byte-identical
// write-back, quantized files' tensor types and shapes, zero-copy data against safetensors).
#include "io/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

template <typename Fn>
std::string expect_error(Fn&& fn, ErrorKind kind, std::initializer_list<std::string_view> needles) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(e.kind(), kind) << message;
    for (std::string_view n : needles) {
      EXPECT_NE(message.find(n), std::string::npos) << "'" << n << "' not in: " << message;
    }
    return message;
  }
  ADD_FAILURE() << "no calq::Error thrown";
  return {};
}

std::vector<std::byte> pattern_bytes(size_t n, uint32_t seed) {
  std::vector<std::byte> out(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::byte>(x & 0xffu);
  }
  return out;
}

std::vector<std::byte> file_bytes(const std::filesystem::path& path) {
  const auto m = MappedFile::open(path);
  return {m->bytes().begin(), m->bytes().end()};
}

bool same_file_bytes(const std::filesystem::path& a, const std::filesystem::path& b) {
  const auto ma = MappedFile::open(a);
  const auto mb = MappedFile::open(b);
  return ma->size() == mb->size() &&
         (ma->size() == 0 || std::memcmp(ma->bytes().data(), mb->bytes().data(), ma->size()) == 0);
}

GgufValue scalar(GgufValueType type, uint64_t u, int64_t i = 0, double f = 0) {
  GgufValue v;
  v.type = type;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}

GgufValue array_of(GgufValueType element) {
  GgufValue v;
  v.type = GgufValueType::kArray;
  v.array_type = element;
  return v;
}

void expect_same_value(const GgufValue& a, const GgufValue& b, const std::string& key) {
  SCOPED_TRACE(key);
  ASSERT_EQ(a.type, b.type);
  EXPECT_EQ(a.u, b.u);
  EXPECT_EQ(a.i, b.i);
  if (std::isnan(a.f)) {
    EXPECT_TRUE(std::isnan(b.f));
  } else {
    EXPECT_EQ(a.f, b.f);
  }
  EXPECT_EQ(a.s, b.s);
  if (a.type != GgufValueType::kArray) return;
  EXPECT_EQ(a.array_type, b.array_type);
  EXPECT_EQ(a.uints, b.uints);
  EXPECT_EQ(a.ints, b.ints);
  EXPECT_EQ(a.floats, b.floats);
  EXPECT_EQ(a.strings, b.strings);
  ASSERT_EQ(a.arrays.size(), b.arrays.size());
  for (size_t k = 0; k < a.arrays.size(); ++k) expect_same_value(a.arrays[k], b.arrays[k], key);
}

// ---- the type table ----

TEST(GgmlTypes, KnownLayouts) {
  struct Row {
    uint32_t id;
    std::string_view name;
    int64_t block, bytes;
  };
  // Block layouts from llama.cpp's ggml-common.h block structs.
  const Row rows[] = {{0, "F32", 1, 4},        {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},
                      {3, "Q4_1", 32, 20},     {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},
                      {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},     {10, "Q2_K", 256, 84},
                      {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
                      {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},  {16, "IQ2_XXS", 256, 66},
                      {17, "IQ2_XS", 256, 74}, {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
                      {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110}, {22, "IQ2_S", 256, 82},
                      {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
                      {26, "I32", 1, 4},       {27, "I64", 1, 8},       {28, "F64", 1, 8},
                      {29, "IQ1_M", 256, 56},  {30, "BF16", 1, 2},      {34, "TQ1_0", 256, 54},
                      {35, "TQ2_0", 256, 66},  {39, "MXFP4", 32, 17},   {40, "NVFP4", 64, 36},
                      {41, "Q1_0", 128, 18},   {42, "Q2_0", 64, 18}};
  for (const Row& r : rows) {
    SCOPED_TRACE(r.name);
    const GgmlTypeInfo* info = ggml_type_info(r.id);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->id, r.id);
    EXPECT_EQ(info->name, r.name);
    EXPECT_EQ(info->block_size, r.block);
    EXPECT_EQ(info->type_size, r.bytes);
    EXPECT_EQ(ggml_type_by_name(r.name), info);
  }
  EXPECT_EQ(ggml_type_info(kGgmlBF16)->name, "BF16");
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 1000u, 0xffffffffu}) {
    EXPECT_EQ(ggml_type_info(removed), nullptr) << removed;
  }
  EXPECT_EQ(ggml_type_by_name("Q4_2"), nullptr);
}

TEST(GgmlTypes, NamesForMessages) {
  EXPECT_EQ(ggml_type_name(12), "Q4_K");
  EXPECT_EQ(ggml_type_name(kGgmlF32), "F32");
  EXPECT_EQ(ggml_type_name(4), "type 4");  // Q4_2, removed from ggml
  EXPECT_EQ(ggml_type_name(0xffffffffu), "type 4294967295");
}

// ggml itself reported these numbers when the conformance vectors were made.
TEST(GgmlTypes, MatchGgmlQuantVectorsIndex) {
  CALQ_REQUIRE_SHARED("peer-tests/ggml-quant-vectors/index.json");
  std::ifstream in(calq::testing::shared_dir() / "peer-tests/ggml-quant-vectors/index.json");
  const auto index = nlohmann::json::parse(in);
  size_t checked = 0;
  for (const auto& t : index.at("types")) {
    const GgmlTypeInfo* info = ggml_type_info(t.at("ggml_type_id").get<uint32_t>());
    ASSERT_NE(info, nullptr) << t.dump();
    EXPECT_EQ(info->block_size, t.at("block_size").get<int64_t>()) << t.dump();
    EXPECT_EQ(info->type_size, t.at("type_size").get<int64_t>()) << t.dump();
    ++checked;
  }
  EXPECT_GE(checked, 10u);
}

// ---- values ----

TEST(GgufValue, TypedReads) {
  EXPECT_EQ(GgufValue::of_uint32(7).as_int("k"), 7);
  EXPECT_EQ(GgufValue::of_int32(-7).as_int("k"), -7);
  EXPECT_EQ(GgufValue::of_int32(-7).as_float("k"), -7.0);
  EXPECT_EQ(GgufValue::of_float32(0.1f).as_float("k"), static_cast<double>(0.1f));
  EXPECT_TRUE(GgufValue::of_bool(true).as_bool("k"));
  EXPECT_EQ(GgufValue::of_string("x").as_string("k"), "x");
  EXPECT_EQ(GgufValue::of_uint64(uint64_t{1} << 63).as_float("k"), std::ldexp(1.0, 63));
  expect_error([] { GgufValue::of_uint64(uint64_t{1} << 63).as_int("f.gguf: key 'n'"); },
               ErrorKind::kFormat, {"f.gguf: key 'n'", "does not fit"});
  expect_error([] { GgufValue::of_uint32(1).as_string("f.gguf: key 's'"); }, ErrorKind::kFormat,
               {"f.gguf: key 's'", "expected a string, got uint32"});
  expect_error([] { GgufValue::of_string("1").as_int("k"); }, ErrorKind::kFormat,
               {"expected an integer, got string"});
  expect_error([] { GgufValue::of_float32(1).as_bool("k"); }, ErrorKind::kFormat,
               {"expected a bool, got float32"});
  expect_error([] { GgufValue::of_strings({}).as_float("k"); }, ErrorKind::kFormat,
               {"expected a number, got array"});
  EXPECT_EQ(GgufValue::of_strings({"a", "b"}).array_size(), 2u);
  EXPECT_EQ(GgufValue::of_int32s({1, 2, 3}).array_size(), 3u);
  EXPECT_EQ(GgufValue::of_float32s({1.5}).array_size(), 1u);
  EXPECT_EQ(GgufValue::of_uint32(3).array_size(), 0u);
}

// ---- synthetic round trips ----

class GgufRoundTrip : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = calq::testing::temp_dir("gguf"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

GgufMetadata every_value_type() {
  GgufMetadata md;
  md.emplace_back("u8", scalar(GgufValueType::kUint8, 255));
  md.emplace_back("i8", scalar(GgufValueType::kInt8, 0, -128));
  md.emplace_back("u16", scalar(GgufValueType::kUint16, 65535));
  md.emplace_back("i16", scalar(GgufValueType::kInt16, 0, -32768));
  md.emplace_back("u32", GgufValue::of_uint32(0xffffffffu));
  md.emplace_back("i32", GgufValue::of_int32(std::numeric_limits<int32_t>::min()));
  md.emplace_back("f32", GgufValue::of_float32(-1.25e-7f));
  md.emplace_back("f32.nan", GgufValue::of_float32(std::numeric_limits<float>::quiet_NaN()));
  md.emplace_back("bool", GgufValue::of_bool(true));
  md.emplace_back("str", GgufValue::of_string(std::string("a\0b\xff\xfe", 5)));
  md.emplace_back("str.empty", GgufValue::of_string(""));
  md.emplace_back("u64", GgufValue::of_uint64(std::numeric_limits<uint64_t>::max()));
  md.emplace_back("i64", scalar(GgufValueType::kInt64, 0, std::numeric_limits<int64_t>::min()));
  md.emplace_back("f64", scalar(GgufValueType::kFloat64, 0, 0, 1.0 / 3.0));
  GgufValue a = array_of(GgufValueType::kUint8);
  a.uints = {0, 1, 255};
  md.emplace_back("arr.u8", a);
  a = array_of(GgufValueType::kInt16);
  a.ints = {-32768, 0, 32767};
  md.emplace_back("arr.i16", a);
  a = array_of(GgufValueType::kUint64);
  a.uints = {std::numeric_limits<uint64_t>::max()};
  md.emplace_back("arr.u64", a);
  a = array_of(GgufValueType::kInt64);
  a.ints = {std::numeric_limits<int64_t>::min(), 5};
  md.emplace_back("arr.i64", a);
  a = array_of(GgufValueType::kBool);
  a.uints = {1, 0, 1};
  md.emplace_back("arr.bool", a);
  a = array_of(GgufValueType::kFloat64);
  a.floats = {0.1, -2.5e300};
  md.emplace_back("arr.f64", a);
  md.emplace_back("arr.f32", GgufValue::of_float32s({0.5, -3.0, 1e-30f}));
  md.emplace_back("arr.i32", GgufValue::of_int32s({-1, 2147483647}));
  md.emplace_back("arr.str", GgufValue::of_strings({"", "tok", std::string("\0", 1)}));
  md.emplace_back("arr.empty", array_of(GgufValueType::kUint16));
  GgufValue nested = array_of(GgufValueType::kArray);
  nested.arrays = {GgufValue::of_int32s({1, 2}), GgufValue::of_strings({"x"}),
                   array_of(GgufValueType::kFloat32)};
  md.emplace_back("arr.nested", nested);
  return md;
}

TEST_F(GgufRoundTrip, EveryValueTypeAndTensorType) {
  const GgufMetadata md = every_value_type();
  struct Spec {
    std::string name;
    std::vector<int64_t> ne;
    uint32_t type;
  };
  const std::vector<Spec> specs = {{"a.f32", {3, 2}, kGgmlF32},
                                   {"b.f16", {5}, kGgmlF16},
                                   {"c.bf16", {4, 1, 2}, kGgmlBF16},
                                   {"d.q8_0", {64, 2}, 8},
                                   {"e.q4_k", {256, 1, 1, 3}, 12},
                                   {"f.empty", {0, 4}, kGgmlF32},
                                   {"g.aligned", {8}, kGgmlF32}};
  std::vector<std::vector<std::byte>> data;
  std::vector<GgufWriteTensor> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    const GgmlTypeInfo* info = ggml_type_info(specs[i].type);
    int64_t n = 1;
    for (int64_t d : specs[i].ne) n *= d;
    data.push_back(pattern_bytes(static_cast<size_t>(n / info->block_size * info->type_size),
                                 static_cast<uint32_t>(i)));
    tensors.push_back({specs[i].name, specs[i].ne, specs[i].type, data.back()});
  }
  const auto path = dir_ / "all.gguf";
  write_gguf(path, md, tensors);

  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  ASSERT_EQ(f.metadata().size(), md.size());
  for (size_t k = 0; k < md.size(); ++k) {
    EXPECT_EQ(f.metadata()[k].first, md[k].first);
    expect_same_value(f.metadata()[k].second, md[k].second, md[k].first);
  }
  EXPECT_EQ(f.get("u32").as_int("u32"), 0xffffffffLL);
  EXPECT_EQ(f.find("missing"), nullptr);
  ASSERT_EQ(f.tensors().size(), specs.size());
  uint64_t expect_offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.ne, specs[i].ne);
    EXPECT_EQ(t.type, specs[i].type);
    EXPECT_EQ(t.offset, expect_offset);  // tensor-info order, each padded to 32
    EXPECT_EQ(t.size_bytes, data[i].size());
    const auto view = f.tensor_data(t);
    ASSERT_EQ(view.size(), data[i].size());
    EXPECT_TRUE(std::equal(view.begin(), view.end(), data[i].begin()));
    EXPECT_EQ(f.find_tensor(specs[i].name), &t);
    expect_offset += (data[i].size() + 31) / 32 * 32;
  }
  EXPECT_EQ(f.file_size(), f.data_offset() + expect_offset);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);

  // Reading and writing back gives the same bytes, through a file and in memory.
  const auto again = dir_ / "again.gguf";
  write_gguf(again, f.metadata(), gguf_write_tensors(f), gguf_write_options(f));
  EXPECT_TRUE(same_file_bytes(path, again));
  EXPECT_EQ(gguf_to_bytes(md, tensors), file_bytes(path));
  const GgufFile g = GgufFile::from_bytes(file_bytes(path), "<memory>");
  EXPECT_EQ(g.path(), "<memory>");
  EXPECT_EQ(g.tensors().size(), specs.size());
  EXPECT_EQ(g.metadata().size(), md.size());
}

TEST_F(GgufRoundTrip, HeaderAndPaddingBytesAreLlamaCppLayout) {
  const std::vector<std::byte> d(8, std::byte{0x11});  // 2 x F32
  const std::vector<GgufWriteTensor> tensors = {{"t", {2}, kGgmlF32, d}};
  GgufMetadata md;
  md.emplace_back("k", GgufValue::of_uint32(5));
  const auto bytes = gguf_to_bytes(md, tensors, {.version = 2});
  // magic, version, counts, key "k", type 4, value 5, tensor info, zero padding, data, padding.
  std::vector<uint8_t> head = {'G', 'G', 'U', 'F', 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                               1,   0,   0,   0,   0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                               'k', 4,   0,   0,   0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                               0,   't', 1,   0,   0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                               0,   0,   0,   0,   0, 0, 0, 0, 0, 0};
  ASSERT_EQ(bytes.size(), 96u + 32u);
  for (size_t k = 0; k < head.size(); ++k) {
    EXPECT_EQ(std::to_integer<uint8_t>(bytes[k]), head[k]) << k;
  }
  for (size_t k = head.size(); k < 96; ++k) EXPECT_EQ(bytes[k], std::byte{0}) << k;
  for (size_t k = 96; k < 104; ++k) EXPECT_EQ(bytes[k], std::byte{0x11}) << k;
  for (size_t k = 104; k < 128; ++k) EXPECT_EQ(bytes[k], std::byte{0}) << k;
  EXPECT_EQ(GgufFile::from_bytes(bytes, "v2").version(), 2u);
}

TEST_F(GgufRoundTrip, NoTensorsMeansNoPadding) {
  GgufMetadata md;
  md.emplace_back("general.architecture", GgufValue::of_string("llama"));
  const auto bytes = gguf_to_bytes(md, {});
  EXPECT_EQ(bytes.size(), 24u + 8 + 20 + 4 + 8 + 5);
  const GgufFile f = GgufFile::from_bytes(bytes, "vocab");
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.get("general.architecture").as_string("arch"), "llama");
}

TEST_F(GgufRoundTrip, CustomAlignment) {
  GgufMetadata md;
  md.emplace_back("general.alignment", GgufValue::of_uint32(64));
  const auto d = pattern_bytes(12, 3);
  const std::vector<GgufWriteTensor> tensors = {{"x", {3}, kGgmlF32, d}, {"y", {3}, kGgmlF32, d}};
  const auto path = dir_ / "a64.gguf";
  write_gguf(path, md, tensors, {.alignment = 64});
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.tensors()[1].offset, 64u);
  EXPECT_EQ(f.file_size(), f.data_offset() + 128);
}

TEST_F(GgufRoundTrip, ReplacesExistingFileAtomically) {
  const auto path = dir_ / "x.gguf";
  GgufMetadata md;
  md.emplace_back("n", GgufValue::of_uint32(1));
  write_gguf(path, md, {});
  md[0].second = GgufValue::of_uint32(2);
  {
    const GgufFile old = GgufFile::open(path);  // a live mapping of the file being replaced
    write_gguf(path, md, {});
    EXPECT_EQ(old.get("n").as_int("n"), 1);
  }
  EXPECT_EQ(GgufFile::open(path).get("n").as_int("n"), 2);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1u);  // no temporary left behind
}

TEST_F(GgufRoundTrip, WriterRejectsInvalidInput) {
  const auto d = pattern_bytes(16, 1);
  const auto path = dir_ / "bad.gguf";
  const auto expect_invalid = [&](const GgufMetadata& md, std::vector<GgufWriteTensor> tensors,
                                  std::initializer_list<std::string_view> needles,
                                  GgufWriteOptions options = {}) {
    expect_error([&] { write_gguf(path, md, tensors, options); }, ErrorKind::kInvalidArgument,
                 needles);
    EXPECT_FALSE(std::filesystem::exists(path));
  };
  GgufMetadata ok;
  ok.emplace_back("a", GgufValue::of_uint32(1));
  expect_invalid(ok, {{"t", {3}, kGgmlF32, d}}, {"tensor 't'", "16 bytes of data", "need 12"});
  expect_invalid(ok, {{"t", {4}, kGgmlF32, d}, {"t", {4}, kGgmlF32, d}},
                 {"tensor 't'", "more than once"});
  expect_invalid(ok, {{"t", {4}, 31, d}}, {"tensor 't'", "unknown ggml type id 31"});
  expect_invalid(ok, {{"t", {16}, 8, d}}, {"tensor 't'", "not a multiple of the Q8_0 block size"});
  expect_invalid(ok, {{"t", {}, kGgmlF32, d}}, {"tensor 't'", "0 dimensions"});
  expect_invalid(ok, {{"t", {1, 1, 1, 1, 4}, kGgmlF32, d}}, {"5 dimensions"});
  expect_invalid(ok, {{"t", {-4}, kGgmlF32, d}}, {"negative dimension"});
  expect_invalid(ok, {{std::string(64, 'n'), {4}, kGgmlF32, d}}, {"longer than 63 bytes"});
  expect_invalid(ok, {}, {"version 1"}, {.version = 1});
  expect_invalid(ok, {}, {"alignment 48"}, {.alignment = 48});
  expect_invalid(ok, {}, {"needs the metadata key 'general.alignment'"}, {.alignment = 64});
  GgufMetadata md = ok;
  md.emplace_back("a", GgufValue::of_uint32(2));
  expect_invalid(md, {}, {"key 'a'", "more than once"});
  md = ok;
  md.emplace_back("general.alignment", GgufValue::of_uint64(32));
  expect_invalid(md, {}, {"general.alignment", "uint32"});
  md = ok;
  md.emplace_back("small", scalar(GgufValueType::kUint8, 256));
  expect_invalid(md, {}, {"key 'small'", "256 does not fit in uint8"});
  md = ok;
  md.emplace_back("neg", scalar(GgufValueType::kInt16, 0, -40000));
  expect_invalid(md, {}, {"key 'neg'", "does not fit in int16"});
  md = ok;
  md.emplace_back("b", scalar(GgufValueType::kBool, 2));
  expect_invalid(md, {}, {"key 'b'", "bool value 2"});
  md = ok;
  md.emplace_back("f", GgufValue::of_float32s({0.1}));
  expect_invalid(md, {}, {"key 'f'", "not exactly representable as float32"});
  md = ok;
  GgufValue mixed = array_of(GgufValueType::kUint32);
  mixed.ints = {1};
  md.emplace_back("mixed", mixed);
  expect_invalid(md, {}, {"key 'mixed'", "does not match its element type"});
  md = ok;
  GgufValue deep = GgufValue::of_int32s({1});
  for (int k = 0; k < kGgufMaxArrayDepth; ++k) {
    GgufValue outer = array_of(GgufValueType::kArray);
    outer.arrays.push_back(deep);
    deep = outer;
  }
  md.emplace_back("deep", deep);
  expect_invalid(md, {}, {"key 'deep'", "nested deeper"});
}

TEST_F(GgufRoundTrip, MissingKeyIsNotFound) {
  GgufMetadata md;
  md.emplace_back("a", GgufValue::of_uint32(1));
  const auto path = dir_ / "m.gguf";
  write_gguf(path, md, {});
  const GgufFile f = GgufFile::open(path);
  expect_error([&] { f.get("llama.block_count"); }, ErrorKind::kNotFound,
               {path.string(), "key 'llama.block_count'"});
}

TEST_F(GgufRoundTrip, MissingFileIsIoError) {
  expect_error([&] { GgufFile::open(dir_ / "none.gguf"); }, ErrorKind::kIo, {"none.gguf"});
}

// ---- the real files ----

class GgufSharedFiles : public GgufRoundTrip {};

void expect_byte_identical_round_trip(const std::filesystem::path& src,
                                      const std::filesystem::path& dir) {
  const GgufFile f = GgufFile::open(src);
  const auto out = dir / src.filename();
  write_gguf(out, f.metadata(), gguf_write_tensors(f), gguf_write_options(f));
  EXPECT_TRUE(same_file_bytes(src, out)) << src;
  std::filesystem::remove(out);
}

TEST_F(GgufSharedFiles, F16ModelRoundTripsByteForByte) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  const auto src = calq::testing::shared_dir() / "models/calq-ref-llama-f16.gguf";
  const GgufFile f = GgufFile::open(src);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensors().size(), 56u);
  EXPECT_EQ(f.get("general.architecture").as_string("arch"), "llama");
  EXPECT_EQ(f.get("llama.block_count").as_int("n"), 6);
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").array_size(), 16384u);
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").strings[1], "<s>");
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->ne, (std::vector<int64_t>{512, 16384}));
  EXPECT_EQ(emb->type, kGgmlF16);
  EXPECT_EQ(emb->size_bytes, 512u * 16384 * 2);
  expect_byte_identical_round_trip(src, dir_);
}

TEST_F(GgufSharedFiles, VocabFilesRoundTripByteForByte) {
  CALQ_REQUIRE_SHARED("peer-tests/llama.cpp-vocab/ggml-vocab-llama-spm.gguf");
  for (const char* name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"}) {
    const auto src = calq::testing::shared_dir() / "peer-tests/llama.cpp-vocab" / name;
    const GgufFile f = GgufFile::open(src);
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_GT(f.get("tokenizer.ggml.tokens").array_size(), 30000u);
    expect_byte_identical_round_trip(src, dir_);
  }
}

// The F16 file's F32 norm weights were widened from the checkpoint's bf16 values: the zero-copy
// view must hold exactly those numbers.
TEST_F(GgufSharedFiles, TensorDataMatchesTheSafetensorsCheckpoint) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
  const auto models = calq::testing::shared_dir() / "models";
  const GgufFile f = GgufFile::open(models / "calq-ref-llama-f16.gguf");
  const SafetensorsFile st = SafetensorsFile::open(models / "calq-ref-llama/model.safetensors");
  const GgufTensorInfo* norm = f.find_tensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  ASSERT_EQ(norm->type, kGgmlF32);
  const Tensor ref = st.tensor("model.norm.weight");
  ASSERT_EQ(ref.dtype(), DType::kBF16);
  ASSERT_EQ(ref.numel(), norm->element_count());
  const auto view = f.tensor_data(*norm);
  const Tensor ref32 = ref.to_f32();
  for (int64_t k = 0; k < ref.numel(); ++k) {
    float v = 0;
    std::memcpy(&v, view.data() + 4 * k, 4);
    ASSERT_EQ(v, ref32.f32()[k]) << k;
  }
}

TEST_F(GgufSharedFiles, LlamaCppQuantsOpenWithTheirTypesAndShapes) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  CALQ_REQUIRE_SHARED("peer-tests/llama.cpp-quants/calq-ref-llama-Q8_0.gguf");
  const GgufFile f16 =
      GgufFile::open(calq::testing::shared_dir() / "models/calq-ref-llama-f16.gguf");
  struct Case {
    const char* file;
    int64_t file_type;  // llama_ftype
    std::map<uint32_t, size_t> type_counts;  // ggml type -> tensors (F32 norms included)
  };
  const Case cases[] = {
      {"calq-ref-llama-Q8_0.gguf", 7, {{0, 13}, {8, 43}}},
      {"calq-ref-llama-Q4_K_M.gguf", 15, {{0, 13}, {12, 38}, {14, 5}}},
      {"calq-ref-llama-Q4_K_M-imatrix.gguf", 15, {{0, 13}, {12, 38}, {14, 5}}},
      {"calq-ref-llama-Q3_K_M-imatrix.gguf", 12, {{0, 13}, {11, 24}, {12, 16}, {13, 2}, {14, 1}}},
      {"calq-ref-llama-Q2_K-imatrix.gguf", 10, {{0, 13}, {10, 24}, {11, 12}, {12, 6}, {14, 1}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const auto path = calq::testing::shared_dir() / "peer-tests/llama.cpp-quants" / c.file;
    const GgufFile q = GgufFile::open(path);
    EXPECT_EQ(q.get("general.file_type").as_int("ftype"), c.file_type);
    ASSERT_EQ(q.tensors().size(), f16.tensors().size());
    std::map<uint32_t, size_t> counts;
    uint64_t end = 0;
    for (const GgufTensorInfo& t : q.tensors()) {
      SCOPED_TRACE(t.name);
      ++counts[t.type];
      const GgufTensorInfo* ref = f16.find_tensor(t.name);
      ASSERT_NE(ref, nullptr);
      EXPECT_EQ(t.ne, ref->ne);
      // 1-D tensors stay F32; matrices are quantized.
      EXPECT_EQ(t.ne.size() == 1, t.type == kGgmlF32);
      const GgmlTypeInfo* info = ggml_type_info(t.type);
      EXPECT_EQ(t.size_bytes,
                static_cast<uint64_t>(t.element_count() / info->block_size * info->type_size));
      EXPECT_EQ(q.tensor_data(t).size(), t.size_bytes);
      end = std::max(end, t.offset + (t.size_bytes + 31) / 32 * 32);
    }
    EXPECT_EQ(counts, c.type_counts);
    EXPECT_EQ(q.find_tensor("token_embd.weight")->type, c.file_type == 7 ? 8u : 14u);
    EXPECT_EQ(q.data_offset() + end, q.file_size());
    expect_byte_identical_round_trip(path, dir_);
  }
}

}  // namespace
}  // namespace calq::io
