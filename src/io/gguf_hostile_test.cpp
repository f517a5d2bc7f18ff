// Malformed and hostile GGUF input, built byte by byte. Every case checks the error kind, that the
// message names the file and the key or tensor, and that no large allocation happened on the way
// (this binary replaces the global operator new to record the largest request).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "support/shared_dir.h"

namespace {
std::atomic<size_t> g_largest_alloc{0};
}  // namespace

// GCC sees malloc in the replacement new and free in the replacement delete and warns of a
// mismatch; they are a matched pair by construction.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  size_t seen = g_largest_alloc.load(std::memory_order_relaxed);
  while (n > seen && !g_largest_alloc.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace calq::io {
namespace {

constexpr uint64_t kHuge = uint64_t{1} << 60;

// Little-endian byte builder.
class Bytes {
 public:
  Bytes& u8(uint64_t v) { return le(v, 1); }
  Bytes& u32(uint64_t v) { return le(v, 4); }
  Bytes& u64(uint64_t v) { return le(v, 8); }
  Bytes& str(std::string_view s) {
    u64(s.size());
    return raw(s);
  }
  Bytes& raw(std::string_view s) {
    for (char c : s) out.push_back(static_cast<std::byte>(c));
    return *this;
  }
  Bytes& append(const Bytes& other) {
    out.insert(out.end(), other.out.begin(), other.out.end());
    return *this;
  }
  Bytes& zeros(size_t n) {
    out.resize(out.size() + n, std::byte{0});
    return *this;
  }
  Bytes& le(uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
    return *this;
  }
  std::vector<std::byte> out;
};

Bytes kv_u32(std::string_view key, uint32_t v) { return std::move(Bytes().str(key).u32(4).u32(v)); }
Bytes kv_str(std::string_view key, std::string_view v) {
  return std::move(Bytes().str(key).u32(8).str(v));
}

struct RawTensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = 0;
  uint64_t offset = 0;
  std::optional<uint32_t> n_dims;  // overrides ne.size()
};

// A GGUF file from parts; counts can lie. The default is valid: two tensors whose data exactly
// fills 64 bytes, so the file has no trailing padding and every strict prefix is invalid.
struct RawFile {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors;
  std::optional<uint64_t> n_kv;
  std::vector<Bytes> kvs = {kv_str("general.architecture", "llama"), kv_u32("n", 7)};
  std::vector<RawTensor> tensors = {{"a", {8}, 0, 0}, {"b", {2, 8}, 1, 32}};
  uint64_t data_bytes = 64;
  bool pad_header = true;

  std::vector<std::byte> build() const {
    Bytes b;
    b.raw(magic).u32(version);
    b.u64(n_tensors.value_or(tensors.size())).u64(n_kv.value_or(kvs.size()));
    for (const Bytes& kv : kvs) b.append(kv);
    for (const RawTensor& t : tensors) {
      b.str(t.name).u32(t.n_dims.value_or(static_cast<uint32_t>(t.ne.size())));
      for (uint64_t d : t.ne) b.u64(d);
      b.u32(t.type).u64(t.offset);
    }
    if (pad_header && !tensors.empty()) b.zeros((32 - b.out.size() % 32) % 32);
    b.zeros(data_bytes);
    return b.out;
  }
};

constexpr const char* kOrigin = "hostile.gguf";

// Parses `bytes`, expecting a calq::Error of `kind` naming the file and every needle, and no
// allocation beyond a small multiple of the input (from_bytes keeps one copy of it).
std::string expect_bad(const std::vector<std::byte>& bytes, calq::ErrorKind kind,
                       std::initializer_list<std::string_view> needles) {
  g_largest_alloc = 0;
  std::string message;
  try {
    GgufFile::from_bytes(bytes, kOrigin);
    ADD_FAILURE() << "no calq::Error thrown";
  } catch (const calq::Error& e) {
    message = e.what();
    EXPECT_EQ(e.kind(), kind) << message;
    EXPECT_EQ(message.rfind(kOrigin, 0), 0u) << message;
    for (std::string_view n : needles) {
      EXPECT_NE(message.find(n), std::string::npos) << "'" << n << "' not in: " << message;
    }
  }
  EXPECT_LT(g_largest_alloc.load(), 16 * bytes.size() + 65536) << message;
  return message;
}

// The allocation check below can fail: the tracker sees a large request.
TEST(GgufHostile, AllocationTrackerSeesLargeRequests) {
  g_largest_alloc = 0;
  std::vector<char> big(size_t{8} << 20);
  EXPECT_GE(g_largest_alloc.load(), big.size());
}

TEST(GgufHostile, TheBaseFileIsValid) {
  const GgufFile f = GgufFile::from_bytes(RawFile{}.build(), kOrigin);
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.data_offset() + 64, f.file_size());
}

TEST(GgufHostile, BadMagic) {
  RawFile f;
  f.magic = "GGUX";
  expect_bad(f.build(), ErrorKind::kFormat, {"not a GGUF file"});
  f.magic = "FUGG";  // byte-swapped
  expect_bad(f.build(), ErrorKind::kFormat, {"not a GGUF file"});
  expect_bad({}, ErrorKind::kFormat, {"not a GGUF file"});
  expect_bad(Bytes().raw("GGU").out, ErrorKind::kFormat, {"not a GGUF file"});
}

TEST(GgufHostile, UnsupportedVersions) {
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u, 0xffffffffu}) {
    RawFile f;
    f.version = v;
    expect_bad(f.build(), ErrorKind::kUnsupported,
               {"GGUF version " + std::to_string(v), "only 2 and 3"});
  }
  RawFile v2;
  v2.version = 2;
  EXPECT_EQ(GgufFile::from_bytes(v2.build(), kOrigin).version(), 2u);
}

TEST(GgufHostile, TruncatedAnywhere) {
  const auto full = RawFile{}.build();
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    const std::vector<std::byte> prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    expect_bad(prefix, ErrorKind::kFormat, {});
  }
  // A few positions with the message they must give.
  expect_bad(std::vector<std::byte>(full.begin(), full.begin() + 6), ErrorKind::kFormat,
             {"version", "truncated at byte 4"});
  expect_bad(std::vector<std::byte>(full.begin(), full.end() - 1), ErrorKind::kFormat,
             {"tensor 'b'", "outside the 63-byte data section"});
}

TEST(GgufHostile, DataSectionMissing) {
  RawFile f;
  f.kvs.push_back(kv_u32("x", 1));  // the header no longer ends on a multiple of 32
  f.pad_header = false;
  f.data_bytes = 0;
  expect_bad(f.build(), ErrorKind::kFormat, {"data section starts at byte", "past the end"});
}

TEST(GgufHostile, AbsurdCounts) {
  RawFile f;
  f.n_tensors = kHuge;
  expect_bad(f.build(), ErrorKind::kFormat, {"1152921504606846976 tensor infos cannot fit"});
  f.n_tensors = std::numeric_limits<uint64_t>::max();
  expect_bad(f.build(), ErrorKind::kFormat, {"cannot fit"});
  f = RawFile{};
  f.n_kv = kHuge;
  expect_bad(f.build(), ErrorKind::kFormat, {"1152921504606846976 metadata entries"});
  f = RawFile{};
  f.n_kv = 3;  // one more than present: the third "key" is read from tensor-info bytes
  expect_bad(f.build(), ErrorKind::kFormat, {});
  f = RawFile{};
  f.n_tensors = 3;
  expect_bad(f.build(), ErrorKind::kFormat, {});
}

TEST(GgufHostile, AbsurdStringLengths) {
  RawFile f;
  f.kvs = {std::move(Bytes().u64(uint64_t{1} << 63).raw("key").u32(4).u32(1))};
  expect_bad(f.build(), ErrorKind::kFormat,
             {"metadata entry 0: key", "string length 9223372036854775808"});
  f.kvs = {std::move(Bytes().str("name").u32(8).u64(uint64_t{1} << 63).raw("v"))};
  expect_bad(f.build(), ErrorKind::kFormat, {"key 'name'", "string length 9223372036854775808"});
  f = RawFile{};
  f.kvs = {std::move(Bytes().str("k").u32(8).u64(std::numeric_limits<uint64_t>::max()))};
  expect_bad(f.build(), ErrorKind::kFormat, {"key 'k'", "string length 18446744073709551615"});
  f = RawFile{};
  f.tensors[0].name = std::string(64, 'x');
  expect_bad(f.build(), ErrorKind::kFormat, {"name is 64 bytes, the limit is 63"});
}

TEST(GgufHostile, AbsurdArrayLengths) {
  for (uint32_t element : {0u, 4u, 8u, 9u, 12u}) {
    RawFile f;
    f.kvs = {std::move(Bytes().str("arr").u32(9).u32(element).u64(kHuge).u64(0))};
    expect_bad(f.build(), ErrorKind::kFormat, {"key 'arr'", "array of 1152921504606846976"});
  }
  RawFile f;  // three strings announced, two present, nothing after them
  f.kvs = {std::move(Bytes().str("arr").u32(9).u32(8).u64(3).str("a").str("b"))};
  f.tensors = {};
  f.data_bytes = 0;
  expect_bad(f.build(), ErrorKind::kFormat, {"key 'arr'"});
}

TEST(GgufHostile, DeepArrayNesting) {
  // 100000 nested array headers: rejected at the depth limit, not by exhausting the stack.
  Bytes b;
  b.str("deep").u32(9);
  for (int k = 0; k < 100000; ++k) b.u32(9).u64(1);
  b.u32(4).u64(0);
  RawFile f;
  f.kvs = {b};
  expect_bad(f.build(), ErrorKind::kUnsupported, {"key 'deep'", "nested deeper than 4"});
  // Depth 4 is fine.
  Bytes ok;
  ok.str("ok").u32(9).u32(9).u64(1).u32(9).u64(1).u32(9).u64(1).u32(5).u64(1).u32(42);
  f.kvs = {ok};
  const GgufFile g = GgufFile::from_bytes(f.build(), kOrigin);
  EXPECT_EQ(g.get("ok").arrays.at(0).arrays.at(0).arrays.at(0).ints.at(0), 42);
}

TEST(GgufHostile, TensorDataOutsideTheFile) {
  RawFile f;
  f.tensors[1].offset = uint64_t{1} << 40;
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'b'", "outside the 64-byte data section"});
  f.tensors[1].offset = std::numeric_limits<uint64_t>::max() - 31;  // offset + size wraps
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'b'", "outside"});
  f = RawFile{};
  f.tensors[0].ne = {uint64_t{1} << 40};  // 4 TiB of F32
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "outside"});
  f.tensors[0].ne = {uint64_t{1} << 62};  // 2^64 bytes of F32
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "byte size overflows"});
  f.tensors[0].ne = {uint64_t{1} << 32, uint64_t{1} << 32};
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "element count overflows"});
}

TEST(GgufHostile, MisalignedOffsets) {
  RawFile f;
  f.tensors[1].offset = 40;
  expect_bad(f.build(), ErrorKind::kFormat,
             {"tensor 'b'", "data offset 40 is not a multiple of the alignment 32"});
  f = RawFile{};
  f.kvs.push_back(kv_u32("general.alignment", 64));
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'b'", "alignment 64"});
}

TEST(GgufHostile, OverlappingTensors) {
  RawFile f;
  f.tensors[1].offset = 0;
  expect_bad(f.build(), ErrorKind::kFormat, {"data overlaps tensor"});
}

TEST(GgufHostile, UnknownTypeIds) {
  for (uint32_t type : {4u, 5u, 31u, 33u, 36u, 38u, 43u, 1000u, 0xffffffffu}) {
    RawFile f;
    f.tensors[0].type = type;
    expect_bad(f.build(), ErrorKind::kUnsupported,
               {"tensor 'a'", "unknown or removed ggml type id " + std::to_string(type)});
  }
  for (uint32_t vtype : {13u, 0xffffffffu}) {
    RawFile f;
    f.kvs = {std::move(Bytes().str("v").u32(vtype).u32(0))};
    expect_bad(f.build(), ErrorKind::kFormat, {"key 'v'", "unknown value type"});
    f.kvs = {std::move(Bytes().str("v").u32(9).u32(vtype).u64(0))};
    expect_bad(f.build(), ErrorKind::kFormat, {"key 'v'", "unknown value type"});
  }
}

TEST(GgufHostile, BadShapes) {
  RawFile f;
  f.tensors[0].ne = {};
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "n_dims 0"});
  f.tensors[0].ne = {1, 1, 1, 1, 8};
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "n_dims 5"});
  f.tensors[0].ne = {8};
  f.tensors[0].n_dims = 0xffffffffu;
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "n_dims 4294967295"});
  f = RawFile{};
  f.tensors[0].ne = {static_cast<uint64_t>(-8)};
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "ne[0] = -8 is negative"});
  f.tensors[0].ne = {33};
  f.tensors[0].type = 8;  // Q8_0: blocks of 32
  expect_bad(f.build(), ErrorKind::kFormat,
             {"tensor 'a'", "row of 33 elements is not a multiple of the Q8_0 block size 32"});
}

TEST(GgufHostile, Duplicates) {
  RawFile f;
  f.kvs.push_back(kv_u32("n", 8));
  expect_bad(f.build(), ErrorKind::kFormat, {"key 'n'", "more than once"});
  f = RawFile{};
  f.tensors[1].name = "a";
  expect_bad(f.build(), ErrorKind::kFormat, {"tensor 'a'", "more than once"});
}

TEST(GgufHostile, BadAlignmentKey) {
  RawFile f;
  f.kvs.push_back(kv_str("general.alignment", "32"));
  expect_bad(f.build(), ErrorKind::kFormat, {"general.alignment", "expected uint32, got string"});
  for (uint32_t a : {0u, 48u, 0xffffffffu}) {
    f = RawFile{};
    f.kvs.push_back(kv_u32("general.alignment", a));
    expect_bad(f.build(), ErrorKind::kFormat, {"general.alignment", "not a power of two"});
  }
}

TEST(GgufHostile, BoolMustBeZeroOrOne) {
  RawFile f;
  f.kvs = {std::move(Bytes().str("flag").u32(7).u8(2))};
  expect_bad(f.build(), ErrorKind::kFormat, {"key 'flag'", "bool value 2"});
  f.kvs = {std::move(Bytes().str("flags").u32(9).u32(7).u64(2).u8(1).u8(255))};
  expect_bad(f.build(), ErrorKind::kFormat, {"key 'flags'", "bool value 255"});
}

TEST(GgufHostile, OpenNamesThePath) {
  const auto dir = calq::testing::temp_dir("gguf_hostile");
  const auto path = dir / "lying.gguf";
  RawFile f;
  f.tensors[0].type = 31;
  write_file_atomic(path, f.build());
  try {
    GgufFile::open(path);
    ADD_FAILURE() << "no error";
  } catch (const calq::Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find(path.string() + ": tensor 'a'"), std::string::npos)
        << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::io
