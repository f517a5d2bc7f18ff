// GGUF writing in llama.cpp's layout: header (magic, version, counts, metadata, tensor infos)
// padded with zeros to the alignment, then each tensor's bytes padded with zeros to the
// alignment, in the order given. The header is built in memory; tensor data is streamed from the
// caller's spans to a temporary file that is renamed into place.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/gguf.h"

namespace calq::io {
namespace {

uint64_t align_up(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

class HeaderBuilder {
 public:
  void le(uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) out_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
  }
  void u32(uint32_t v) { le(v, 4); }
  void u64(uint64_t v) { le(v, 8); }
  void string(std::string_view s) {
    u64(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + s.size());
  }
  void f32(double v) {
    const auto f = static_cast<float>(v);
    uint32_t bits = 0;
    std::memcpy(&bits, &f, 4);
    u32(bits);
  }
  void f64(double v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, 8);
    u64(bits);
  }
  void pad_to(uint64_t alignment) { out_.resize(align_up(out_.size(), alignment), std::byte{0}); }
  std::vector<std::byte>& bytes() { return out_; }

 private:
  std::vector<std::byte> out_;
};

// Writes values after checking they are representable in their declared type.
class ValueWriter {
 public:
  ValueWriter(HeaderBuilder& out, const std::string& key) : out_(out), key_(key) {}

  void value(const GgufValue& v, int depth) {
    if (const auto t = static_cast<uint32_t>(v.type); !gguf_is_value_type(t)) {
      bad("value type {} is not a GGUF type", t);
    }
    if (v.type != GgufValueType::kArray) {
      scalar(v.type, v.u, v.i, v.f, v.s);
      return;
    }
    if (depth >= kGgufMaxArrayDepth) bad("arrays nested deeper than {} levels", kGgufMaxArrayDepth);
    const GgufValueType at = v.array_type;
    if (const auto t = static_cast<uint32_t>(at); !gguf_is_value_type(t)) {
      bad("array element type {} is not a GGUF type", t);
    }
    // Exactly the vector array_type selects may be filled; anything else would be dropped.
    const size_t filled = !v.uints.empty() + !v.ints.empty() + !v.floats.empty() +
                          !v.strings.empty() + !v.arrays.empty();
    const size_t n = v.array_size();
    if (filled > (n > 0 ? 1u : 0u)) {
      bad("array of {} has values in a vector that does not match its element type",
          gguf_value_type_name(at));
    }
    out_.u32(static_cast<uint32_t>(at));
    out_.u64(n);
    static const std::string kNone;
    for (size_t k = 0; k < n; ++k) {
      switch (at) {
        case GgufValueType::kString: scalar(at, 0, 0, 0, v.strings[k]); break;
        case GgufValueType::kArray:
          if (v.arrays[k].type != GgufValueType::kArray) {
            bad("element {} of an array of arrays is a {}", k,
                gguf_value_type_name(v.arrays[k].type));
          }
          value(v.arrays[k], depth + 1);
          break;
        case GgufValueType::kFloat32:
        case GgufValueType::kFloat64: scalar(at, 0, 0, v.floats[k], kNone); break;
        case GgufValueType::kInt8:
        case GgufValueType::kInt16:
        case GgufValueType::kInt32:
        case GgufValueType::kInt64: scalar(at, 0, v.ints[k], 0, kNone); break;
        default: scalar(at, v.uints[k], 0, 0, kNone); break;
      }
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void bad(fmt::format_string<Args...> format, Args&&... args) {
    fail(ErrorKind::kInvalidArgument, "GGUF metadata key '{}': {}", key_,
         fmt::format(format, std::forward<Args>(args)...));
  }

  void scalar(GgufValueType t, uint64_t u, int64_t i, double f, const std::string& s) {
    const uint64_t n = gguf_value_min_bytes(t);
    switch (t) {
      case GgufValueType::kString: out_.string(s); return;
      case GgufValueType::kFloat32:
        // float32 values must narrow exactly (NaN payloads aside), or the file would silently
        // hold a different number than the caller's.
        if (f == f && static_cast<double>(static_cast<float>(f)) != f) {
          bad("{} is not exactly representable as float32", f);
        }
        out_.f32(f);
        return;
      case GgufValueType::kFloat64: out_.f64(f); return;
      case GgufValueType::kBool:
        if (u > 1) bad("bool value {} is not 0 or 1", u);
        out_.le(u, 1);
        return;
      case GgufValueType::kInt8:
      case GgufValueType::kInt16:
      case GgufValueType::kInt32:
      case GgufValueType::kInt64: {
        const int bits = static_cast<int>(8 * n);
        if (bits < 64 && (i < -(int64_t{1} << (bits - 1)) || i >= (int64_t{1} << (bits - 1)))) {
          bad("{} does not fit in {}", i, gguf_value_type_name(t));
        }
        out_.le(static_cast<uint64_t>(i), n);
        return;
      }
      default: {
        const int bits = static_cast<int>(8 * n);
        if (bits < 64 && u >> bits != 0) bad("{} does not fit in {}", u, gguf_value_type_name(t));
        out_.le(u, n);
        return;
      }
    }
  }

  HeaderBuilder& out_;
  const std::string& key_;
};

struct Plan {
  std::vector<std::byte> header;  // padded to the alignment when there are tensors
  std::vector<uint64_t> padded_sizes;
};

Plan plan(const GgufMetadata& metadata, std::span<const GgufWriteTensor> tensors,
          const GgufWriteOptions& options) {
  if (options.version < 2 || options.version > 3) {
    fail(ErrorKind::kInvalidArgument, "GGUF version {} cannot be written (only 2 and 3)",
         options.version);
  }
  const uint64_t alignment = options.alignment;
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 ||
      alignment > std::numeric_limits<uint32_t>::max()) {
    fail(ErrorKind::kInvalidArgument, "GGUF alignment {} is not a power of two below 2^32",
         alignment);
  }
  std::set<std::string_view> keys;
  bool has_alignment_key = false;
  for (const auto& [key, value] : metadata) {
    if (!keys.insert(key).second) {
      fail(ErrorKind::kInvalidArgument, "GGUF metadata key '{}' appears more than once", key);
    }
    if (key == "general.alignment") {
      has_alignment_key = true;
      if (value.type != GgufValueType::kUint32 || value.u != alignment) {
        fail(ErrorKind::kInvalidArgument,
             "GGUF metadata key 'general.alignment' must be a uint32 equal to the alignment {}",
             alignment);
      }
    }
  }
  if (!has_alignment_key && alignment != kGgufDefaultAlignment) {
    fail(ErrorKind::kInvalidArgument,
         "GGUF alignment {} needs the metadata key 'general.alignment' (readers assume {})",
         alignment, kGgufDefaultAlignment);
  }

  HeaderBuilder out;
  out.u32(0x46554747u);  // "GGUF"
  out.u32(options.version);
  out.u64(tensors.size());
  out.u64(metadata.size());
  for (const auto& [key, value] : metadata) {
    out.string(key);
    out.u32(static_cast<uint32_t>(value.type));
    ValueWriter(out, key).value(value, 0);
  }

  Plan p;
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const GgufWriteTensor& t : tensors) {
    const auto bad = [&](std::string_view why) {
      fail(ErrorKind::kInvalidArgument, "GGUF tensor '{}': {}", t.name, why);
    };
    if (!names.insert(t.name).second) bad("appears more than once");
    if (t.name.size() > kGgufMaxTensorName) {
      bad(fmt::format("name is longer than {} bytes", kGgufMaxTensorName));
    }
    if (t.ne.empty() || t.ne.size() > 4) bad(fmt::format("{} dimensions (1..4)", t.ne.size()));
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    if (info == nullptr) bad(fmt::format("unknown ggml type id {}", t.type));
    int64_t elements = 1;
    for (int64_t d : t.ne) {
      if (d < 0) bad("negative dimension");
      if (__builtin_mul_overflow(elements, d, &elements)) bad("element count overflows");
    }
    if (t.ne[0] % info->block_size != 0) {
      bad(fmt::format("row of {} elements is not a multiple of the {} block size {}", t.ne[0],
                      info->name, info->block_size));
    }
    uint64_t size = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(elements / info->block_size),
                               static_cast<uint64_t>(info->type_size), &size)) {
      bad("byte size overflows");
    }
    if (t.data.size() != size) {
      bad(fmt::format("{} bytes of data, but shape and {} need {}", t.data.size(), info->name,
                      size));
    }
    out.string(t.name);
    out.u32(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) out.u64(static_cast<uint64_t>(d));
    out.u32(t.type);
    out.u64(offset);
    p.padded_sizes.push_back(align_up(size, alignment));
    offset += p.padded_sizes.back();
  }
  if (!tensors.empty()) out.pad_to(alignment);
  p.header = std::move(out.bytes());
  return p;
}

// Writes spans to a file descriptor, reporting errors against the temporary path.
class FdSink {
 public:
  FdSink(int fd, const std::filesystem::path& path) : fd_(fd), path_(path) {}
  void write(std::span<const std::byte> bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail(ErrorKind::kIo, "{}: write failed: {}", path_.string(), std::strerror(errno));
      }
      done += static_cast<size_t>(n);
    }
  }

 private:
  int fd_;
  const std::filesystem::path& path_;
};

template <typename Sink>
void emit(Sink& sink, const Plan& p, std::span<const GgufWriteTensor> tensors) {
  static constexpr std::array<std::byte, 4096> kZeros{};
  sink.write(p.header);
  for (size_t i = 0; i < tensors.size(); ++i) {
    sink.write(tensors[i].data);
    release_mapped_pages(tensors[i].data);  // a view of a mapped file is done with (core/mapped_file.h)
    uint64_t pad = p.padded_sizes[i] - tensors[i].data.size();
    while (pad > 0) {
      const auto n = static_cast<size_t>(std::min<uint64_t>(pad, kZeros.size()));
      sink.write(std::span(kZeros).first(n));
      pad -= n;
    }
  }
}

}  // namespace

void write_gguf(const std::filesystem::path& path, const GgufMetadata& metadata,
                std::span<const GgufWriteTensor> tensors, const GgufWriteOptions& options) {
  const Plan p = plan(metadata, tensors, options);
  std::filesystem::path tmp = path;
  tmp += fmt::format(".tmp.{}", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(ErrorKind::kIo, "{}: cannot create: {}", tmp.string(), std::strerror(errno));
  try {
    FdSink sink(fd, tmp);
    emit(sink, p, tensors);
    if (::fsync(fd) != 0) {
      fail(ErrorKind::kIo, "{}: cannot flush: {}", tmp.string(), std::strerror(errno));
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::kIo, "{}: cannot close: {}", tmp.string(), std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::kIo, "{}: cannot rename into place: {}", path.string(), std::strerror(err));
  }
}

std::vector<std::byte> gguf_to_bytes(const GgufMetadata& metadata,
                                     std::span<const GgufWriteTensor> tensors,
                                     const GgufWriteOptions& options) {
  struct VectorSink {
    std::vector<std::byte> out;
    void write(std::span<const std::byte> b) { out.insert(out.end(), b.begin(), b.end()); }
  };
  const Plan p = plan(metadata, tensors, options);
  VectorSink sink;
  uint64_t total = p.header.size();
  for (uint64_t s : p.padded_sizes) total += s;
  sink.out.reserve(static_cast<size_t>(total));
  emit(sink, p, tensors);
  return std::move(sink.out);
}

std::vector<GgufWriteTensor> gguf_write_tensors(const GgufFile& file) {
  std::vector<GgufWriteTensor> out;
  out.reserve(file.tensors().size());
  for (const GgufTensorInfo& t : file.tensors()) {
    out.push_back({.name = t.name, .ne = t.ne, .type = t.type, .data = file.tensor_data(t)});
  }
  return out;
}

GgufWriteOptions gguf_write_options(const GgufFile& file) {
  return {.version = file.version(), .alignment = file.alignment()};
}

}  // namespace calq::io
