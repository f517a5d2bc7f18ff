#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"

namespace calq {
namespace {

// The live mappings (start address -> size), so that release_mapped_pages can tell a mapped span
// from heap memory, which MADV_DONTNEED would zero.
struct Mappings {
  std::mutex mutex;
  std::map<uintptr_t, size_t> live;
};
Mappings& mappings() {
  static Mappings m;
  return m;
}

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::kIo, "{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorKind::kIo, "{}: not a regular file", path.string());
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* data = nullptr;
  if (size > 0) {
    data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(ErrorKind::kIo, "{}: mmap failed: {}", path.string(), std::strerror(err));
    }
  }
  ::close(fd);
  if (data != nullptr) {
    Mappings& m = mappings();
    const std::lock_guard lock(m.mutex);
    m.live.emplace(reinterpret_cast<uintptr_t>(data), size);
  }
  return std::shared_ptr<const MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  {
    Mappings& m = mappings();
    const std::lock_guard lock(m.mutex);
    m.live.erase(reinterpret_cast<uintptr_t>(data_));
  }
  ::munmap(data_, size_);
}

void release_mapped_pages(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  const auto begin = reinterpret_cast<uintptr_t>(bytes.data());
  const uintptr_t end = begin + bytes.size();
  Mappings& m = mappings();
  // Held across madvise so that the mapping cannot be unmapped (and the range reused) meanwhile.
  const std::lock_guard lock(m.mutex);
  auto it = m.live.upper_bound(begin);
  if (it == m.live.begin()) return;
  --it;
  if (end > it->first + it->second) return;  // not (wholly) inside this mapping
  // Whole pages around the span, within the mapping: a read-only private file mapping loses
  // nothing to MADV_DONTNEED (the pages come back from the file), so a neighbour's share of an
  // edge page is safe to drop too.
  static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = begin / page * page;  // mmap starts on a page
  const uintptr_t last = std::min((end + page - 1) / page * page, (it->first + it->second + page - 1) / page * page);
  // Advisory: a failure only leaves the pages resident.
  ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::kIo, "{}: cannot open: {}", path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(ErrorKind::kIo, "{}: read error", path.string());
  return std::move(ss).str();
}

void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const std::span<const std::byte> parts[] = {bytes};
  write_file_atomic_parts(path, parts);
}

void write_file_atomic_parts(const std::filesystem::path& path, std::span<const std::span<const std::byte>> parts) {
  write_file_atomic_stream(path, [&](const PutBytes& put) {
    for (const std::span<const std::byte> bytes : parts) put(bytes);
  });
}

void write_file_atomic_stream(const std::filesystem::path& path, const std::function<void(const PutBytes& put)>& body) {
  std::filesystem::path tmp = path;
  tmp += fmt::format(".tmp.{}", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(ErrorKind::kIo, "{}: cannot create: {}", tmp.string(), std::strerror(errno));
  const auto put = [&](std::span<const std::byte> bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail(ErrorKind::kIo, "{}: write failed: {}", tmp.string(), std::strerror(errno));
      }
      done += static_cast<size_t>(n);
    }
    release_mapped_pages(bytes);  // a part read from a mapped file is done with (a model streamed out)
  };
  try {
    body(put);
  } catch (...) {  // a failed write or the caller's own error: no partial file stays
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  const int synced = ::fsync(fd) == 0 ? 0 : errno;
  const int closed = ::close(fd) == 0 ? 0 : errno;
  if (synced != 0 || closed != 0) {
    ::unlink(tmp.c_str());
    fail(ErrorKind::kIo, "{}: cannot flush: {}", tmp.string(), std::strerror(synced != 0 ? synced : closed));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::kIo, "{}: cannot rename into place: {}", path.string(), std::strerror(err));
  }
}

}  // namespace calq
