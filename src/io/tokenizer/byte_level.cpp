#include "io/tokenizer/byte_level.h"

#include "io/tokenizer/unicode.h"

namespace calq::io::tok {
namespace {

bool maps_to_itself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<std::string, 256> chars;
  std::array<int, 512> bytes{};  // indexed by code point; every alphabet character is < U+0200

  Tables() {
    bytes.fill(-1);
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = maps_to_itself(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
      chars[static_cast<size_t>(b)] = utf8_encode(c);
      bytes[c] = b;
    }
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

}  // namespace

const std::array<std::string, 256>& byte_level_chars() { return tables().chars; }

int byte_level_byte(char32_t c) { return c < 512 ? tables().bytes[c] : -1; }

}  // namespace calq::io::tok
