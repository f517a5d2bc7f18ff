// Helpers shared by the safetensors tests: hand-built files and error assertions.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"

namespace calq::io::test {

// Writes [u64 LE header length][header][data] to `path`. `header_len` overrides the stored length
// (for lying headers); by default it is header.size().
inline void write_raw(const std::filesystem::path& path, std::string_view header,
                      const std::vector<uint8_t>& data = {},
                      std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t n = header_len.value_or(header.size());
  std::vector<std::byte> out;
  for (size_t i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xffu));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  for (uint8_t b : data) out.push_back(static_cast<std::byte>(b));
  write_file_atomic(path, out);
}

// Runs `fn`, expecting a calq::Error of `kind` whose message contains every one of `needles`.
// Returns the message (empty if nothing was thrown).
template <typename Fn>
std::string expect_error(Fn&& fn, ErrorKind kind, std::initializer_list<std::string_view> needles) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(e.kind(), kind) << "message: " << message;
    for (std::string_view needle : needles) {
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message '" << message << "' does not mention '" << needle << "'";
    }
    return message;
  }
  ADD_FAILURE() << "expected a calq::Error (" << error_kind_name(kind) << ")";
  return {};
}

}  // namespace calq::io::test
