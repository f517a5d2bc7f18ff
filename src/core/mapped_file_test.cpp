#include "core/mapped_file.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"

namespace calq {
namespace {

TEST(MappedFile, AtomicWriteThenMap) {
  const auto dir = std::filesystem::temp_directory_path() / "calq_mapped_file_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "x.bin";
  const char text[] = "hello calq";
  write_file_atomic(path, std::as_bytes(std::span(text, sizeof text - 1)));
  auto f = MappedFile::open(path);
  ASSERT_EQ(f->size(), sizeof text - 1);
  EXPECT_EQ(std::memcmp(f->bytes().data(), text, f->size()), 0);
  EXPECT_EQ(read_text_file(path), "hello calq");
  // No temp file left behind.
  size_t entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 1u);
  std::filesystem::remove_all(dir);
}

TEST(MappedFile, MissingFileNamesPath) {
  try {
    MappedFile::open("/nonexistent/calq/file.bin");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/calq/file.bin"), std::string::npos);
  }
}

TEST(MappedFile, AtomicWriteIntoMissingDirFails) {
  const char text[] = "x";
  EXPECT_THROW(write_file_atomic("/nonexistent/calq/out.bin", std::as_bytes(std::span(text, 1))), Error);
}

// Resident pages of this process (/proc/self/statm, second field).
long resident_pages() {
  std::ifstream in("/proc/self/statm");
  long size = 0, resident = 0;
  in >> size >> resident;
  return resident;
}

TEST(MappedFile, ReleasedPagesLeaveTheResidentSetAndReadBackIntact) {
  const auto dir = std::filesystem::temp_directory_path() / "calq_mapped_release_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "x.bin";
  std::vector<std::byte> data(size_t{32} << 20);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>((i * 131) >> 7);
  write_file_atomic(path, data);
  {
    auto f = MappedFile::open(path);
    const std::span<const std::byte> b = f->bytes();
    const long before = resident_pages();
    unsigned sum = 0;
    for (size_t i = 0; i < b.size(); i += 4096) sum += static_cast<unsigned>(b[i]);
    const long touched = resident_pages();
    const long pages = static_cast<long>(b.size()) / ::sysconf(_SC_PAGESIZE);
    EXPECT_GE(touched - before, pages * 9 / 10) << sum;
    release_mapped_pages(b.subspan(100, b.size() - 200));
    EXPECT_LE(resident_pages(), touched - pages * 9 / 10);
    EXPECT_EQ(std::memcmp(b.data(), data.data(), data.size()), 0);  // read again from the file
  }
  // Heap memory is left alone (MADV_DONTNEED would zero it).
  std::vector<std::byte> heap(data.begin(), data.begin() + (1 << 20));
  release_mapped_pages(heap);
  EXPECT_EQ(std::memcmp(heap.data(), data.data(), heap.size()), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq
