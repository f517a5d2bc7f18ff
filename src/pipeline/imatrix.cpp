// Importance-matrix readers (llama.cpp's legacy binary format and its GGUF format).
#include "pipeline/imatrix.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/gguf.h"

namespace calq::pipeline {
namespace {

// A name longer than this is certainly garbage (ggml caps tensor names at 63 bytes).
constexpr int32_t kMaxNameBytes = 4096;

class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::filesystem::path& origin) : bytes_(bytes), origin_(origin) {}

  size_t remaining() const { return bytes_.size() - pos_; }

  int32_t i32(std::string_view what) {
    need(4, what);
    int32_t v;
    std::memcpy(&v, bytes_.data() + pos_, 4);
    pos_ += 4;
    return v;
  }
  std::string str(size_t n, std::string_view what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  void floats(float* out, size_t n, std::string_view what) {
    need(n * sizeof(float), what);
    std::memcpy(out, bytes_.data() + pos_, n * sizeof(float));
    pos_ += n * sizeof(float);
  }

 private:
  void need(size_t n, std::string_view what) const {
    if (remaining() < n) {
      fail(ErrorKind::kFormat, "{}: truncated imatrix: {} needs {} bytes at offset {}, {} left", origin_.string(), what,
           n, pos_, remaining());
    }
  }
  std::span<const std::byte> bytes_;
  const std::filesystem::path& origin_;
  size_t pos_ = 0;
};

void check_values(const std::filesystem::path& origin, const std::string& name, const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i]) || v[i] < 0) {
      fail(ErrorKind::kFormat, "{}: imatrix entry {}: value {} at column {} is not a finite non-negative number",
           origin.string(), name, v[i], i);
    }
  }
}

Imatrix read_gguf_imatrix(const std::filesystem::path& path) {
  const io::GgufFile file = io::GgufFile::open(path);
  Imatrix im{.path = path};
  if (const io::GgufValue* d = file.find("imatrix.datasets"); d != nullptr && !d->strings.empty()) {
    im.dataset = d->strings.front();
  }
  if (const io::GgufValue* c = file.find("imatrix.chunk_count"); c != nullptr) {
    im.chunks = c->as_int(path.string() + ": imatrix.chunk_count");
  }
  constexpr std::string_view kSum = ".in_sum2", kCounts = ".counts";
  for (const io::GgufTensorInfo& t : file.tensors()) {
    if (t.name.size() <= kSum.size() || t.name.compare(t.name.size() - kSum.size(), kSum.size(), kSum) != 0) continue;
    const std::string name = t.name.substr(0, t.name.size() - kSum.size());
    const io::GgufTensorInfo* counts = file.find_tensor(name + std::string(kCounts));
    if (counts == nullptr) fail(ErrorKind::kFormat, "{}: imatrix entry {}: no {} tensor", path.string(), name, kCounts);
    if (t.type != io::kGgmlF32 || counts->type != io::kGgmlF32 || t.ne.empty()) {
      fail(ErrorKind::kFormat, "{}: imatrix entry {}: tensors must be F32", path.string(), name);
    }
    const int64_t n_per_row = t.ne[0];
    const int64_t n_mat = t.element_count() / std::max<int64_t>(1, n_per_row);
    if (counts->element_count() != n_mat) {
      fail(ErrorKind::kFormat, "{}: imatrix entry {}: {} counts for {} matrices", path.string(), name,
           counts->element_count(), n_mat);
    }
    std::vector<float> sums(static_cast<size_t>(t.element_count()));
    std::vector<float> cnt(static_cast<size_t>(n_mat));
    std::memcpy(sums.data(), file.tensor_data(t).data(), sums.size() * sizeof(float));
    std::memcpy(cnt.data(), file.tensor_data(*counts).data(), cnt.size() * sizeof(float));
    ImatrixEntry e;
    e.values.resize(sums.size());
    for (int64_t m = 0; m < n_mat; ++m) {
      const float c = cnt[static_cast<size_t>(m)];
      e.ncall = std::max<int64_t>(e.ncall, static_cast<int64_t>(c));
      for (int64_t j = 0; j < n_per_row; ++j) {
        const size_t k = static_cast<size_t>(m * n_per_row + j);
        e.values[k] = c > 0 ? sums[k] / c : 0.0f;
      }
    }
    check_values(path, name, e.values);
    im.entries.emplace(name, std::move(e));
  }
  if (im.entries.empty()) fail(ErrorKind::kFormat, "{}: GGUF file has no imatrix (*.in_sum2) tensors", path.string());
  return im;
}

}  // namespace

const ImatrixEntry* Imatrix::find(const std::string& tensor) const {
  auto it = entries.find(tensor);
  return it == entries.end() ? nullptr : &it->second;
}

Imatrix parse_legacy_imatrix(std::span<const std::byte> bytes, const std::filesystem::path& origin) {
  Cursor in(bytes, origin);
  Imatrix im{.path = origin};
  const int32_t n = in.i32("entry count");
  if (n <= 0) fail(ErrorKind::kFormat, "{}: imatrix entry count {} is not positive", origin.string(), n);
  for (int32_t k = 0; k < n; ++k) {
    const std::string where = "entry " + std::to_string(k);
    const int32_t len = in.i32(where + " name length");
    if (len <= 0 || len > kMaxNameBytes) {
      fail(ErrorKind::kFormat, "{}: imatrix {}: name length {} out of range", origin.string(), where, len);
    }
    const std::string name = in.str(static_cast<size_t>(len), where + " name");
    const int32_t ncall = in.i32(name + " ncall");
    const int32_t nval = in.i32(name + " value count");
    if (ncall < 0 || nval <= 0) {
      fail(ErrorKind::kFormat, "{}: imatrix entry {}: ncall {} / value count {} out of range", origin.string(), name,
           ncall, nval);
    }
    if (static_cast<size_t>(nval) > in.remaining() / sizeof(float)) {
      fail(ErrorKind::kFormat, "{}: truncated imatrix: entry {} has {} values, only {} bytes left", origin.string(),
           name, nval, in.remaining());
    }
    ImatrixEntry e{.ncall = ncall};
    e.values.resize(static_cast<size_t>(nval));
    in.floats(e.values.data(), e.values.size(), name + " values");
    // The file holds sums of per-chunk means; the importance is their mean.
    if (ncall > 0) {
      for (float& v : e.values) v /= static_cast<float>(ncall);
    }
    check_values(origin, name, e.values);
    if (!im.entries.emplace(name, std::move(e)).second) {
      fail(ErrorKind::kFormat, "{}: imatrix entry {} appears twice", origin.string(), name);
    }
  }
  // Optional trailer: the chunk count and the calibration file's name.
  if (in.remaining() > 0) {
    im.chunks = in.i32("last_call");
    const int32_t len = in.i32("dataset name length");
    if (len < 0 || len > kMaxNameBytes) {
      fail(ErrorKind::kFormat, "{}: imatrix dataset name length {} out of range", origin.string(), len);
    }
    im.dataset = in.str(static_cast<size_t>(len), "dataset name");
  }
  return im;
}

Imatrix read_imatrix(const std::filesystem::path& path) {
  const auto file = MappedFile::open(path);
  const std::span<const std::byte> bytes = file->bytes();
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0) return read_gguf_imatrix(path);
  return parse_legacy_imatrix(bytes, path);
}

}  // namespace calq::pipeline
