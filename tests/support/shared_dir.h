// Where tests find ../shared: env CALQ_SHARED_DIR (set by CTest from the CMake cache entry of the
// same name), else ../shared relative to the source tree.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>

namespace calq::testing {

std::filesystem::path shared_dir();

// A fresh, empty temporary directory unique to the running test; removed by the caller if wanted.
std::filesystem::path temp_dir(const std::string& tag);

}  // namespace calq::testing

// Skips the current test (with a message) when the shared reference data is absent.
#define CALQ_REQUIRE_SHARED(relpath)                                                       \
  do {                                                                                     \
    if (!std::filesystem::exists(::calq::testing::shared_dir() / (relpath)))               \
      GTEST_SKIP() << "shared data missing: " << (::calq::testing::shared_dir() / (relpath)); \
  } while (0)
