// MappedFile — a read-only memory map of a whole file (zero-copy tensor access).
// Errors (missing file, unreadable, mmap failure) throw calq::Error naming the path.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace calq {

class MappedFile {
 public:
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(data_), size_}; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile(std::filesystem::path path, void* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::filesystem::path path_;
  void* data_;
  size_t size_;
};

// Drops the pages of `bytes` from this process's resident set when they lie inside a live
// MappedFile (madvise MADV_DONTNEED on the whole pages inside the span; the next read faults them
// in again from the file), and does nothing for any other memory, whose contents it never touches.
// For code that streams through a memory-mapped model (a layer at a time, a tensor written out) and
// must not let the pages it has finished with count as its memory: resident file pages are
// reclaimable, but they are in the process's RSS all the same. Thread-safe.
void release_mapped_pages(std::span<const std::byte> bytes);

// Reads a whole (small) file into a string; throws calq::Error naming the path.
std::string read_text_file(const std::filesystem::path& path);

// Writes `bytes` to `path` atomically: a temp file beside it, fsync, then rename.
// Never leaves a half-written `path` behind.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes);
// The same for a file made of `parts` written one after another (no copy into one buffer: a
// multi-gigabyte safetensors shard is written straight from its tensors).
void write_file_atomic_parts(const std::filesystem::path& path, std::span<const std::span<const std::byte>> parts);
// The same for a file whose pieces are made while it is written: `body` calls `put` with each
// piece in turn (a buffer it may reuse once `put` returns). When `body` throws, or a write fails,
// the temporary is removed and the error propagates: no `path` appears.
using PutBytes = std::function<void(std::span<const std::byte>)>;
void write_file_atomic_stream(const std::filesystem::path& path, const std::function<void(const PutBytes& put)>& body);

}  // namespace calq
