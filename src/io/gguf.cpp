// GGUF reading: every count, length and offset is checked against the bytes that remain before
// anything is allocated for it, so a hostile file gets a calq::Error, never a crash or a huge
// allocation. (Writing lives in gguf_writer.cpp, the ggml type table in gguf_types.cpp.)
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/gguf.h"

namespace calq::io {

namespace {

constexpr uint32_t kMinVersion = 2;  // version 1 used 32-bit counts; nothing writes it any more
constexpr uint32_t kMaxVersion = 3;

// Smallest encodings, used to bound counts by the bytes left: a metadata entry is a key length,
// a value type and at least one value byte; a tensor info is a name length, n_dims, one dim, the
// type and the offset.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

// Counts are bounded by the bytes left, but one parsed entry can take more memory than its
// smallest encoding (a nested array header is 12 bytes, its GgufValue much more), so capacity is
// reserved only up to this many and otherwise grows with what is actually parsed.
constexpr uint64_t kMaxReserve = 1 << 16;
size_t reserve_count(uint64_t n) { return static_cast<size_t>(std::min(n, kMaxReserve)); }

// A cursor over the raw bytes. Every read checks the remaining length first; `what` says what
// was being read so a truncation error points at the key or tensor.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& origin)
      : bytes_(bytes), origin_(origin) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      fail(ErrorKind::kFormat, "{}: {}: truncated at byte {}: needs {} bytes, {} remain", origin_,
           what, pos_, n, remaining());
    }
  }

  uint64_t read_le(size_t n, std::string_view what) {
    need(n, what);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      v |= static_cast<uint64_t>(std::to_integer<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    }
    pos_ += n;
    return v;
  }
  uint32_t u32(std::string_view what) { return static_cast<uint32_t>(read_le(4, what)); }
  uint64_t u64(std::string_view what) { return read_le(8, what); }

  std::string string(std::string_view what) {
    const uint64_t len = u64(what);
    if (len > remaining()) {
      fail(ErrorKind::kFormat, "{}: {}: string length {} at byte {} exceeds the {} bytes left",
           origin_, what, len, pos_ - 8, remaining());
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

 private:
  std::span<const std::byte> bytes_;
  const std::string& origin_;
  uint64_t pos_ = 0;
};

int64_t sign_extend(uint64_t v, int bits) {
  const uint64_t m = uint64_t{1} << (bits - 1);
  return static_cast<int64_t>((v ^ m) - m);
}

double bits_to_f32(uint64_t v) {
  const auto bits = static_cast<uint32_t>(v);
  float f = 0;
  std::memcpy(&f, &bits, 4);
  return f;
}
double bits_to_f64(uint64_t v) {
  double d = 0;
  std::memcpy(&d, &v, 8);
  return d;
}

class Parser {
 public:
  Parser(std::span<const std::byte> bytes, const std::string& origin)
      : cur_(bytes, origin), origin_(origin) {}

  void parse(GgufFile::Impl& out);

 private:
  GgufValueType value_type(std::string_view what) {
    const uint32_t t = cur_.u32(what);
    if (!gguf_is_value_type(t)) {
      fail(ErrorKind::kFormat, "{}: {}: unknown value type {}", origin_, what, t);
    }
    return static_cast<GgufValueType>(t);
  }

  // Reads one scalar or string of `type` into `v`'s scalar field.
  void scalar(GgufValueType type, GgufValue& v, std::string_view what) {
    switch (type) {
      case GgufValueType::kUint8: v.u = cur_.read_le(1, what); break;
      case GgufValueType::kUint16: v.u = cur_.read_le(2, what); break;
      case GgufValueType::kUint32: v.u = cur_.read_le(4, what); break;
      case GgufValueType::kUint64: v.u = cur_.read_le(8, what); break;
      case GgufValueType::kInt8: v.i = sign_extend(cur_.read_le(1, what), 8); break;
      case GgufValueType::kInt16: v.i = sign_extend(cur_.read_le(2, what), 16); break;
      case GgufValueType::kInt32: v.i = sign_extend(cur_.read_le(4, what), 32); break;
      case GgufValueType::kInt64: v.i = static_cast<int64_t>(cur_.read_le(8, what)); break;
      case GgufValueType::kFloat32: v.f = bits_to_f32(cur_.read_le(4, what)); break;
      case GgufValueType::kFloat64: v.f = bits_to_f64(cur_.read_le(8, what)); break;
      case GgufValueType::kBool: v.u = read_bool(what); break;
      case GgufValueType::kString: v.s = cur_.string(what); break;
      case GgufValueType::kArray: break;  // handled by value()
    }
  }

  uint64_t read_bool(std::string_view what) {
    const uint64_t b = cur_.read_le(1, what);
    if (b > 1) fail(ErrorKind::kFormat, "{}: {}: bool value {} is not 0 or 1", origin_, what, b);
    return b;
  }

  GgufValue value(GgufValueType type, std::string_view what, int depth) {
    GgufValue v;
    v.type = type;
    if (type != GgufValueType::kArray) {
      scalar(type, v, what);
      return v;
    }
    if (depth >= kGgufMaxArrayDepth) {
      fail(ErrorKind::kUnsupported, "{}: {}: arrays nested deeper than {} levels", origin_, what,
           kGgufMaxArrayDepth);
    }
    v.array_type = value_type(what);
    const uint64_t n = cur_.u64(what);
    const uint64_t each = gguf_value_min_bytes(v.array_type);
    if (n > cur_.remaining() / each) {
      fail(ErrorKind::kFormat,
           "{}: {}: array of {} {} values cannot fit in the {} bytes left (each needs {})", origin_,
           what, n, gguf_value_type_name(v.array_type), cur_.remaining(), each);
    }
    const auto count = static_cast<size_t>(n);
    switch (v.array_type) {
      case GgufValueType::kUint8:
      case GgufValueType::kUint16:
      case GgufValueType::kUint32:
      case GgufValueType::kUint64:
      case GgufValueType::kBool: {
        v.uints.reserve(reserve_count(n));
        const auto bytes = static_cast<size_t>(each);
        for (size_t k = 0; k < count; ++k) {
          v.uints.push_back(v.array_type == GgufValueType::kBool ? read_bool(what)
                                                                 : cur_.read_le(bytes, what));
        }
        break;
      }
      case GgufValueType::kInt8:
      case GgufValueType::kInt16:
      case GgufValueType::kInt32:
      case GgufValueType::kInt64: {
        v.ints.reserve(reserve_count(n));
        const auto bytes = static_cast<size_t>(each);
        for (size_t k = 0; k < count; ++k) {
          v.ints.push_back(sign_extend(cur_.read_le(bytes, what), static_cast<int>(8 * bytes)));
        }
        break;
      }
      case GgufValueType::kFloat32:
      case GgufValueType::kFloat64: {
        v.floats.reserve(reserve_count(n));
        const bool f32 = v.array_type == GgufValueType::kFloat32;
        for (size_t k = 0; k < count; ++k) {
          v.floats.push_back(f32 ? bits_to_f32(cur_.read_le(4, what))
                                 : bits_to_f64(cur_.read_le(8, what)));
        }
        break;
      }
      case GgufValueType::kString:
        v.strings.reserve(reserve_count(n));
        for (size_t k = 0; k < count; ++k) v.strings.push_back(cur_.string(what));
        break;
      case GgufValueType::kArray:
        v.arrays.reserve(reserve_count(n));
        for (size_t k = 0; k < count; ++k) {
          v.arrays.push_back(value(GgufValueType::kArray, what, depth + 1));
        }
        break;
    }
    return v;
  }

  GgufTensorInfo tensor_info(uint64_t index, uint64_t alignment);

  Cursor cur_;
  const std::string& origin_;
};

}  // namespace

class GgufFile::Impl {
 public:
  std::filesystem::path path;
  std::string origin;
  std::shared_ptr<const MappedFile> mapping;  // open()
  std::vector<std::byte> owned;               // from_bytes()
  std::span<const std::byte> bytes;

  uint32_t version = 0;
  uint64_t alignment = kGgufDefaultAlignment;
  uint64_t data_offset = 0;
  GgufMetadata metadata;
  std::vector<GgufTensorInfo> tensors;
  std::map<std::string, size_t, std::less<>> key_index;
  std::map<std::string, size_t, std::less<>> tensor_index;
};

namespace {

GgufTensorInfo Parser::tensor_info(uint64_t index, uint64_t alignment) {
  GgufTensorInfo t;
  const std::string at = fmt::format("tensor info {}", index);
  t.name = cur_.string(at + ": name");
  const std::string what = fmt::format("tensor '{}'", t.name);
  if (t.name.size() > kGgufMaxTensorName) {
    fail(ErrorKind::kFormat, "{}: {}: name is {} bytes, the limit is {}", origin_, what,
         t.name.size(), kGgufMaxTensorName);
  }
  const uint32_t n_dims = cur_.u32(what);
  if (n_dims < 1 || n_dims > 4) {
    fail(ErrorKind::kFormat, "{}: {}: n_dims {} is outside 1..4", origin_, what, n_dims);
  }
  int64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = cur_.u64(what);
    if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(ErrorKind::kFormat, "{}: {}: ne[{}] = {} is negative", origin_, what, d,
           static_cast<int64_t>(ne));
    }
    t.ne.push_back(static_cast<int64_t>(ne));
    if (__builtin_mul_overflow(elements, t.ne.back(), &elements)) {
      fail(ErrorKind::kFormat, "{}: {}: element count overflows 64 bits", origin_, what);
    }
  }
  t.type = cur_.u32(what);
  const GgmlTypeInfo* info = ggml_type_info(t.type);
  if (info == nullptr) {
    fail(ErrorKind::kUnsupported, "{}: {}: unknown or removed ggml type id {}", origin_, what,
         t.type);
  }
  if (t.ne[0] % info->block_size != 0) {
    fail(ErrorKind::kFormat, "{}: {}: row of {} elements is not a multiple of the {} block size {}",
         origin_, what, t.ne[0], info->name, info->block_size);
  }
  const auto blocks = static_cast<uint64_t>(elements / info->block_size);
  if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(info->type_size), &t.size_bytes)) {
    fail(ErrorKind::kFormat, "{}: {}: byte size overflows 64 bits", origin_, what);
  }
  t.offset = cur_.u64(what);
  if (t.offset % alignment != 0) {
    fail(ErrorKind::kFormat, "{}: {}: data offset {} is not a multiple of the alignment {}",
         origin_, what, t.offset, alignment);
  }
  return t;
}

void Parser::parse(GgufFile::Impl& out) {
  // "GGUF" read as a little-endian u32.
  if (cur_.remaining() < 4 || cur_.read_le(4, "magic") != 0x46554747u) {
    fail(ErrorKind::kFormat, "{}: not a GGUF file (magic is not \"GGUF\")", origin_);
  }
  out.version = cur_.u32("version");
  if (out.version < kMinVersion || out.version > kMaxVersion) {
    fail(ErrorKind::kUnsupported, "{}: GGUF version {} is not supported (only 2 and 3)", origin_,
         out.version);
  }
  const uint64_t n_tensors = cur_.u64("tensor count");
  const uint64_t n_kv = cur_.u64("metadata count");
  if (n_kv > cur_.remaining() / kMinKvBytes ||
      n_tensors > (cur_.remaining() - n_kv * kMinKvBytes) / kMinTensorInfoBytes) {
    fail(ErrorKind::kFormat,
         "{}: {} metadata entries and {} tensor infos cannot fit in the {} bytes left", origin_,
         n_kv, n_tensors, cur_.remaining());
  }

  out.metadata.reserve(reserve_count(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = cur_.string(fmt::format("metadata entry {}: key", k));
    const std::string what = fmt::format("key '{}'", key);
    const GgufValueType type = value_type(what);
    GgufValue v = value(type, what, 0);
    if (!out.key_index.emplace(key, out.metadata.size()).second) {
      fail(ErrorKind::kFormat, "{}: {}: appears more than once", origin_, what);
    }
    out.metadata.emplace_back(std::move(key), std::move(v));
  }

  if (const auto it = out.key_index.find("general.alignment"); it != out.key_index.end()) {
    const GgufValue& a = out.metadata[it->second].second;
    if (a.type != GgufValueType::kUint32) {
      fail(ErrorKind::kFormat, "{}: key 'general.alignment': expected uint32, got {}", origin_,
           gguf_value_type_name(a.type));
    }
    if (a.u == 0 || (a.u & (a.u - 1)) != 0) {
      fail(ErrorKind::kFormat, "{}: key 'general.alignment': {} is not a power of two", origin_,
           a.u);
    }
    out.alignment = a.u;
  }

  out.tensors.reserve(reserve_count(n_tensors));
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensorInfo info = tensor_info(t, out.alignment);
    if (!out.tensor_index.emplace(info.name, out.tensors.size()).second) {
      fail(ErrorKind::kFormat, "{}: tensor '{}': appears more than once", origin_, info.name);
    }
    out.tensors.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment (alignment <= 2^31, pos < 2^63:
  // no overflow).
  out.data_offset = (cur_.pos() + out.alignment - 1) / out.alignment * out.alignment;
  const uint64_t file_size = out.bytes.size();
  if (out.tensors.empty()) return;
  if (out.data_offset > file_size) {
    fail(ErrorKind::kFormat, "{}: truncated: the data section starts at byte {}, past the end ({})",
         origin_, out.data_offset, file_size);
  }
  const uint64_t data_size = file_size - out.data_offset;
  for (const GgufTensorInfo& t : out.tensors) {
    if (t.offset > data_size || t.size_bytes > data_size - t.offset) {
      fail(ErrorKind::kFormat,
           "{}: tensor '{}': data [{}, +{}) lies outside the {}-byte data section", origin_,
           t.name, t.offset, t.size_bytes, data_size);
    }
  }
  std::vector<size_t> order(out.tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return out.tensors[a].offset < out.tensors[b].offset;
  });
  const GgufTensorInfo* prev = nullptr;
  for (size_t i : order) {
    const GgufTensorInfo& t = out.tensors[i];
    if (t.size_bytes == 0) continue;
    if (prev != nullptr && t.offset < prev->offset + prev->size_bytes) {
      fail(ErrorKind::kFormat, "{}: tensor '{}': data overlaps tensor '{}'", origin_, t.name,
           prev->name);
    }
    prev = &t;
  }
}

}  // namespace

int64_t GgufTensorInfo::element_count() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // the reader and writer reject shapes whose product overflows
  return n;
}

// ---- GgufFile ----

GgufFile GgufFile::open(const std::filesystem::path& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->origin = path.string();
  impl->mapping = MappedFile::open(path);
  impl->bytes = impl->mapping->bytes();
  Parser(impl->bytes, impl->origin).parse(*impl);
  return GgufFile(std::move(impl));
}

GgufFile GgufFile::from_bytes(std::span<const std::byte> bytes, std::string origin) {
  auto impl = std::make_unique<Impl>();
  impl->path = origin;
  impl->origin = std::move(origin);
  impl->owned.assign(bytes.begin(), bytes.end());
  impl->bytes = impl->owned;
  Parser(impl->bytes, impl->origin).parse(*impl);
  return GgufFile(std::move(impl));
}

GgufFile::GgufFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

const std::filesystem::path& GgufFile::path() const { return impl_->path; }
uint32_t GgufFile::version() const { return impl_->version; }
uint64_t GgufFile::alignment() const { return impl_->alignment; }
uint64_t GgufFile::data_offset() const { return impl_->data_offset; }
uint64_t GgufFile::file_size() const { return impl_->bytes.size(); }
const GgufMetadata& GgufFile::metadata() const { return impl_->metadata; }
const std::vector<GgufTensorInfo>& GgufFile::tensors() const { return impl_->tensors; }

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = impl_->key_index.find(key);
  return it == impl_->key_index.end() ? nullptr : &impl_->metadata[it->second].second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) fail(ErrorKind::kNotFound, "{}: key '{}' is missing", impl_->origin, key);
  return *v;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

std::span<const std::byte> GgufFile::tensor_data(const GgufTensorInfo& tensor) const {
  // Bounds were checked at open() for this file's tensors; the check here catches an info taken
  // from another file (a programming error that must not turn into an out-of-bounds view).
  const uint64_t size = impl_->bytes.size();
  if (tensor.size_bytes == 0) return {};
  if (impl_->data_offset > size || tensor.offset > size - impl_->data_offset ||
      tensor.size_bytes > size - impl_->data_offset - tensor.offset) {
    fail(ErrorKind::kInvalidArgument, "{}: tensor '{}' is not a tensor of this file",
         impl_->origin, tensor.name);
  }
  return impl_->bytes.subspan(static_cast<size_t>(impl_->data_offset + tensor.offset),
                              static_cast<size_t>(tensor.size_bytes));
}

}  // namespace calq::io
