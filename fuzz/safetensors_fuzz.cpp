// Fuzzes the safetensors reader (header length, JSON header, dtypes, shapes, offsets). The reader
// opens files by path, so each input goes into an in-memory file (memfd) opened through
// /proc/self/fd: no disk traffic, and the reader's real mmap path is what gets fuzzed.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "io/safetensors.h"

namespace {

int memfd() {
  static const int fd = [] {
    const int f = ::memfd_create("calq-fuzz-safetensors", MFD_CLOEXEC);
    if (f < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return f;
  }();
  return fd;
}

void store(const uint8_t* data, size_t size) {
  const int fd = memfd();
  if (::ftruncate(fd, 0) != 0) std::abort();
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  store(data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(memfd());
  try {
    const calq::io::SafetensorsFile f = calq::io::SafetensorsFile::open(path);
    size_t metadata_bytes = 0;
    for (const auto& [key, value] : f.metadata()) metadata_bytes += key.size() + value.size();
    CALQ_FUZZ_CHECK(metadata_bytes <= size);  // decoded JSON strings never outgrow their source
    float sum = 0;
    for (const calq::io::TensorInfo& t : f.tensors()) {
      CALQ_FUZZ_CHECK(f.find(t.name) == &t);
      CALQ_FUZZ_CHECK(t.begin <= t.end && t.end <= size);
      const calq::Tensor view = f.tensor(t.name);
      CALQ_FUZZ_CHECK(view.nbytes() == t.end - t.begin);
      const calq::Tensor widened = view.to_f32();
      for (int64_t k = 0; k < widened.numel(); ++k) sum += widened.f32()[k];
    }
    (void)sum;
  } catch (const calq::Error& e) {
    calq::fuzz::report(e);
  }
  return 0;
}
