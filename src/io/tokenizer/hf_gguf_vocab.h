// A Hugging Face tokenizer folder (tokenizer.json, with tokenizer_config.json and config.json when
// present) converted to llama.cpp's tokenizer.ggml.* metadata, the keys and values llama.cpp's
// convert_hf_to_gguf.py writes for the two families calq loads:
//
//  * SentencePiece-style BPE (model BPE with byte_fallback, Metaspace pre-tokenizer, a Sequence
//    decoder) — the converter's "llama HF vocab" path:
//      model "llama", pre "default", tokens (vocabulary order), scores (-1000 for every token, the
//      converter's placeholder), token_type (BYTE for <0xNN>, CONTROL for special tokens, NORMAL
//      otherwise; USER_DEFINED for non-special added tokens past the model vocabulary); no merges.
//  * Byte-level BPE (ByteLevel pre-tokenizer, possibly after a regex Split) — the "gpt2" path:
//      model "gpt2", pre named after the split regex (GPT-2's -> "gpt-2", Llama-3's -> "llama-bpe",
//      Qwen2's -> "qwen2"; another regex is kUnsupported), tokens padded to config.json's
//      vocab_size with "[PAD<id>]" (UNUSED), token_type (CONTROL for special added tokens,
//      USER_DEFINED for other added tokens, NORMAL otherwise), merges "left right".
//  then, for both, the special-token ids (bos, eos, unknown, seperator, padding, cls, mask: from
//  tokenizer_config.json's "<kind>_token" looked up in the vocabulary, else config.json's
//  "<kind>_token_id"), add_bos_token / add_eos_token (tokenizer_config.json's flags, else read off
//  a TemplateProcessing post-processor), and chat_template when tokenizer_config.json has one.
//
// Contract: pure function of the folder's files. Errors are calq::Error naming the file: kNotFound
// for a missing tokenizer.json, kFormat for malformed JSON, kUnsupported for a tokenizer model or
// pre-tokenizer that is neither family (the message says which component).
#pragma once

#include <filesystem>

#include "io/gguf.h"

namespace calq::io {

// The tokenizer.ggml.* entries, in the order llama.cpp's converter writes them.
GgufMetadata hf_tokenizer_to_gguf(const std::filesystem::path& folder);

}  // namespace calq::io
