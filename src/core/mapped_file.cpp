#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace calq {

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
  return std::shared_ptr<const MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
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
