#include "core/mapped_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

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

}  // namespace
}  // namespace calq
