// Where tests find ../shared: env CALQ_SHARED_DIR (set by CTest from the CMake cache entry of the
// same name), else ../shared relative to the source tree.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>

namespace calq::testing {

std::filesystem::path shared_dir();

// The npm prefix holding the test tokenizer packages: env CALQ_NPM_DIR, else the CMake cache
// entry of the same name (scripts/fetch-test-tokenizers.sh fills it).
std::filesystem::path npm_dir();

// A fresh, empty temporary directory unique to the running test; removed by the caller if wanted.
std::filesystem::path temp_dir(const std::string& tag);

// True when env CALQ_REQUIRE_SHARED=1 (CI sets it): missing shared data then fails the test
// instead of skipping it, so a misplaced ../shared cannot turn CI green by skipping.
bool shared_required();

}  // namespace calq::testing

// Skips the current test (with a message) when the shared reference data is absent, or fails it
// when shared_required().
#define CALQ_REQUIRE_SHARED(relpath)                                                          \
  do {                                                                                        \
    const auto calq_shared_path_ = ::calq::testing::shared_dir() / (relpath);                 \
    if (!std::filesystem::exists(calq_shared_path_)) {                                        \
      if (::calq::testing::shared_required()) FAIL() << "shared data missing: " << calq_shared_path_; \
      GTEST_SKIP() << "shared data missing: " << calq_shared_path_;                           \
    }                                                                                         \
  } while (0)
