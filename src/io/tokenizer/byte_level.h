// The GPT-2 byte-to-unicode alphabet used by ByteLevel pre-tokenizers and decoders: printable
// Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order.
#pragma once

#include <array>
#include <string>

namespace calq::io::tok {

// UTF-8 of the alphabet character for each byte.
const std::array<std::string, 256>& byte_level_chars();
// The byte a character stands for, or -1 if it is not in the alphabet.
int byte_level_byte(char32_t c);

}  // namespace calq::io::tok
