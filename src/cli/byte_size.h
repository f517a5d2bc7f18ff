// Sizes given on the command line ("6G", "512M", "1.5GiB", "1000000"), for --max-memory.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace calq::cli {

// A plain byte count, or a number with the suffix K, M, G or T (powers of 1024; "KB", "KiB" and a
// trailing "B" are accepted, any case). Anything else, zero or a size past 2^64 is a
// kInvalidArgument Error naming `flag` and the text.
uint64_t parse_byte_size(const std::string& text, std::string_view flag);

}  // namespace calq::cli
