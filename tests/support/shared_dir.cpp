#include "support/shared_dir.h"

#include <unistd.h>

#include <cstdlib>

namespace calq::testing {

std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("CALQ_SHARED_DIR"); env != nullptr && *env != '\0') return env;
  return std::filesystem::path(CALQ_SOURCE_DIR) / ".." / "shared";
}

std::filesystem::path npm_dir() {
  if (const char* env = std::getenv("CALQ_NPM_DIR"); env != nullptr && *env != '\0') return env;
  return CALQ_NPM_DIR_DEFAULT;
}

bool shared_required() {
  const char* env = std::getenv("CALQ_REQUIRE_SHARED");
  return env != nullptr && std::string(env) == "1";
}

std::filesystem::path temp_dir(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = tag;
  if (info != nullptr) name += std::string("_") + info->test_suite_name() + "_" + info->name();
  auto dir = std::filesystem::temp_directory_path() / ("calq_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace calq::testing
