// Fuzzes tokenizer.json loading (Tokenizer::from_json_text): any input either loads or gives a
// calq::Error. A tokenizer that loads must also encode and decode a fixed short text. The same JSON
// also goes through quantized checkpoints' config parsing (io/hf_quant_config.h).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_util.h"
#include "io/hf_quant_config.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // The same JSON as a quantized checkpoint's config.json and as GPTQ's quantize_config.json.
  for (const bool quantize_config : {false, true}) {
    try {
      (void)calq::io::parse_hf_quant_config(text, "<fuzz>", quantize_config);
    } catch (const calq::Error& e) {
      calq::fuzz::report(e);
    }
  }
  try {
    const calq::io::Tokenizer tok = calq::io::Tokenizer::from_json_text(text, "<fuzz>");
    for (bool special : {false, true}) {
      const auto ids = tok.encode("Hello, world! 123  caf\xc3\xa9 \xf0\x9f\x98\x80 <s>", special);
      (void)tok.decode(ids, false);
      (void)tok.decode(ids, true);
    }
    (void)tok.vocab_size();
    (void)tok.token_to_id("Hello");
    (void)tok.id_to_token(0);
  } catch (const calq::Error& e) {
    calq::fuzz::report(e);
  }
  return 0;
}
