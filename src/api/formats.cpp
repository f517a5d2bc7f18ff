// calq::formats (calq/formats.h): the format registry (formats/format.h) on plain arrays.
#include "calq/formats.h"

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/format.h"

namespace calq::formats {
namespace {

FormatInfo info_of(const Format& f) {
  const FormatTraits& t = f.traits();
  return {.name = t.name, .bits_per_weight = t.bits_per_weight, .block = t.block_size,
          .gguf_native = t.ggml_type.has_value()};
}

void check_shape(const std::string& format, int64_t rows, int64_t cols, size_t elements, const char* what) {
  if (rows < 1 || cols < 1) fail(ErrorKind::kInvalidArgument, "{}: shape [{}, {}] is empty or negative", format, rows, cols);
  if (static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) != elements) {
    fail(ErrorKind::kInvalidArgument, "{}: {} holds {} elements, not rows x cols = {} x {}", format, what, elements,
         rows, cols);
  }
}

}  // namespace

std::vector<FormatInfo> list() {
  std::vector<FormatInfo> r;
  for (const Format* f : all_formats()) r.push_back(info_of(*f));
  return r;
}

FormatInfo info(const std::string& name) { return info_of(format_by_name(name)); }

std::vector<std::byte> quantize(const std::string& format, std::span<const float> values, int64_t rows, int64_t cols,
                                std::span<const float> importance) {
  const Format& f = format_by_name(format);
  check_shape(format, rows, cols, values.size(), "the input");
  if (!f.can_store(rows, cols)) {
    fail(ErrorKind::kInvalidArgument, "{} cannot store a [{}, {}] tensor (rows must be a multiple of {} elements)",
         format, rows, cols, f.traits().block_size);
  }
  if (!importance.empty() && static_cast<int64_t>(importance.size()) != cols) {
    fail(ErrorKind::kInvalidArgument, "{}: importance has {} values, the matrix {} columns", format, importance.size(),
         cols);
  }
  std::vector<std::byte> out(f.tensor_bytes(rows, cols));
  // Single-threaded: results are the same bytes for any thread count, and arrays from Python are small.
  ThreadPool pool(1);
  f.quantize(pool, values.data(), rows, cols, out,
             {.tensor_name = "array", .importance = importance.empty() ? nullptr : importance.data()});
  return out;
}

std::vector<float> dequantize(const std::string& format, std::span<const std::byte> bytes, int64_t rows,
                              int64_t cols) {
  const Format& f = format_by_name(format);
  if (rows < 1 || cols < 1) fail(ErrorKind::kInvalidArgument, "{}: shape [{}, {}] is empty or negative", format, rows, cols);
  if (!f.can_store(rows, cols)) {
    fail(ErrorKind::kInvalidArgument, "{} cannot store a [{}, {}] tensor (rows must be a multiple of {} elements)",
         format, rows, cols, f.traits().block_size);
  }
  if (bytes.size() != f.tensor_bytes(rows, cols)) {
    fail(ErrorKind::kInvalidArgument, "{}: {} bytes given, a [{}, {}] tensor takes {}", format, bytes.size(), rows,
         cols, f.tensor_bytes(rows, cols));
  }
  std::vector<float> out(static_cast<size_t>(rows * cols));
  ThreadPool pool(1);
  f.dequantize(pool, bytes.data(), rows, cols, out.data());
  return out;
}

}  // namespace calq::formats
