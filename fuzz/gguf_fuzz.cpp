// Fuzzes the GGUF reader: any input either parses or gives a calq::Error. What parses must also
// survive every accessor, write back through the writer, parse again to the same structure, and
// write back to the same bytes a second time.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "io/gguf.h"

namespace {

using calq::io::GgufFile;
using calq::io::GgufValue;

void touch(const GgufValue& v, const std::string& key) {
  (void)v.array_size();
  for (auto fn : {+[](const GgufValue& x, const std::string& k) { (void)x.as_int(k); },
                  +[](const GgufValue& x, const std::string& k) { (void)x.as_float(k); },
                  +[](const GgufValue& x, const std::string& k) { (void)x.as_bool(k); },
                  +[](const GgufValue& x, const std::string& k) { (void)x.as_string(k); }}) {
    try {
      fn(v, key);
    } catch (const calq::Error&) {
    }
  }
  for (const GgufValue& inner : v.arrays) touch(inner, key);
}

void same_structure(const GgufFile& a, const GgufFile& b) {
  CALQ_FUZZ_CHECK(a.metadata().size() == b.metadata().size());
  for (size_t k = 0; k < a.metadata().size(); ++k) {
    const auto& [ka, va] = a.metadata()[k];
    const auto& [kb, vb] = b.metadata()[k];
    CALQ_FUZZ_CHECK(ka == kb && va.type == vb.type && va.array_size() == vb.array_size());
  }
  CALQ_FUZZ_CHECK(a.tensors().size() == b.tensors().size());
  for (size_t k = 0; k < a.tensors().size(); ++k) {
    const auto& ta = a.tensors()[k];
    const auto& tb = b.tensors()[k];
    CALQ_FUZZ_CHECK(ta.name == tb.name && ta.ne == tb.ne && ta.type == tb.type &&
                    ta.size_bytes == tb.size_bytes);
    const auto da = a.tensor_data(ta);
    const auto db = b.tensor_data(tb);
    CALQ_FUZZ_CHECK(da.size() == db.size() && std::equal(da.begin(), da.end(), db.begin()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::optional<GgufFile> file;
  try {
    file.emplace(GgufFile::from_bytes(bytes, "<fuzz>"));
  } catch (const calq::Error& e) {
    calq::fuzz::report(e);
    return 0;
  }
  const GgufFile& f = *file;
  for (const auto& [key, value] : f.metadata()) {
    touch(value, key);
    CALQ_FUZZ_CHECK(f.find(key) == &value);
  }
  uint64_t sum = 0;
  for (const auto& t : f.tensors()) {
    CALQ_FUZZ_CHECK(f.find_tensor(t.name) == &t);
    CALQ_FUZZ_CHECK(t.offset % f.alignment() == 0);
    const auto view = f.tensor_data(t);
    CALQ_FUZZ_CHECK(view.size() == t.size_bytes);
    for (std::byte b : view) sum += std::to_integer<uint8_t>(b);
  }
  CALQ_FUZZ_CHECK(sum <= 255 * static_cast<uint64_t>(size));

  // Whatever the reader accepts, the writer accepts, and the result reads back the same.
  const auto tensors = calq::io::gguf_write_tensors(f);
  const auto options = calq::io::gguf_write_options(f);
  std::vector<std::byte> written;
  try {
    written = calq::io::gguf_to_bytes(f.metadata(), tensors, options);
  } catch (const calq::Error& e) {
    std::fprintf(stderr, "writer rejected a file the reader accepted: %s\n", e.what());
    std::abort();
  }
  const GgufFile again = GgufFile::from_bytes(written, "<fuzz rewrite>");
  same_structure(f, again);
  const auto twice = calq::io::gguf_to_bytes(again.metadata(), calq::io::gguf_write_tensors(again),
                                             calq::io::gguf_write_options(again));
  CALQ_FUZZ_CHECK(twice == written);
  return 0;
}
