// llama.cpp's gpt2-model pre-tokenizer table — see gguf_pre_table.h. The regex strings are
// llama.cpp's run-time strings (after C++ unescaping), written again here as C++ literals.
#include "io/tokenizer/gguf_pre_table.h"

#include <algorithm>
#include <set>

#include "io/tokenizer/llama_pretokenize.h"

namespace calq::io {

namespace {

constexpr std::string_view kLlama3[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kJais2[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
};
constexpr std::string_view kDeepseekLlm[] = {
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}+",
};
constexpr std::string_view kDeepseek3Llm[] = {
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kSpark25[] = {
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
    "\\p{N}",
};
constexpr std::string_view kYoutu[] = {
    "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kDeepseekCoder[] = {
    "[\r\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}",
};
constexpr std::string_view kFalcon[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|`]+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    "[0-9][0-9][0-9]",
};
constexpr std::string_view kStarcoder[] = {
    "\\p{N}",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
};
constexpr std::string_view kGpt2[] = {
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
};
constexpr std::string_view kStablelm2[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kQwen35[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kPoro[] = {
    " ?[^(\\s|.,!?…。，、।۔،)]+",
};
constexpr std::string_view kViking[] = {
    " ?[^(\\s|.,!?…。，、।۔،)]+",
    "\\p{N}",
};
constexpr std::string_view kTekken[] = {
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kChameleon[] = {
    "<sentinel:[0-9]+>",
    "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
    "([\\t\\n]|    |  )",
    "\\p{N}",
    "[\\p{P}!-/:-@\\[-`{-~]",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
};
constexpr std::string_view kGpt4o[] = {
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kGraniteEmbMulti[] = {
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kTinyAya[] = {
    "\\d{1,3}(?=(?:\\d{3})*\\b)",
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kKimiK2[] = {
    "\\p{Han}+",
};
constexpr std::string_view kSuperbpe[] = {
    "\\p{N}+",
    "(?=(\\d{3})+(?!\\d))",
};
constexpr std::string_view kBailingmoe[] = {
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kSeedCoder[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kUfakzeka[] = {
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kAfmoe[] = {
    "\\p{AFMoE_digits}",
    "[一-鿿㐀-䶿豈-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kLaguna[] = {
    "[^\\n]+|[\\n]+",
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kExaoneMoe[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kGemma4[] = {
    "[^\\n]+|[\\n]+",
};
constexpr std::string_view kMinicpm5[] = {
    "\\p{N}{1,3}",
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
constexpr std::string_view kWhitespace[] = {
    "\\S+",
};
constexpr std::string_view kDefault[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    "\\p{N}+",
    "[0-9][0-9][0-9]",
};

constexpr std::string_view kKimiRefusal =
    "llama.cpp splits it with a hand-written Kimi-K2 matcher (Han runs, letter words with contractions) "
    "that calq does not implement";
constexpr std::string_view kSuperBpeRefusal =
    "its second regex matches the empty string, where llama.cpp's std::regex splitting emits empty pieces; "
    "calq does not emulate that";
constexpr std::string_view kSpmStyleRefusal =
    "llama.cpp tokenizes it SentencePiece-style (spaces as U+2581, no byte-level encoding, <0xHH> byte "
    "tokens), which calq does not implement for gpt2-model vocabularies";

constexpr GgufPreSpec kTable[] = {
    GgufPreSpec{.name = "default", .regexes = kDefault},
    GgufPreSpec{.name = "minicpm5", .regexes = kMinicpm5, .ignore_merges = true},
    GgufPreSpec{.name = "llama3", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "llama-v3", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "llama-bpe", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "falcon3", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "falcon-h1", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "pixtral", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "midm-2.0", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "lfm2", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "jina-v5-nano", .regexes = kLlama3, .ignore_merges = true, .add_bos = true},
    GgufPreSpec{.name = "deepseek-llm", .regexes = kDeepseekLlm, .clean_spaces = false},
    GgufPreSpec{.name = "deepseek-coder", .regexes = kDeepseekCoder, .clean_spaces = false},
    GgufPreSpec{.name = "deepseek-v3", .regexes = kDeepseek3Llm, .clean_spaces = false},
    GgufPreSpec{.name = "spark2_5", .regexes = kSpark25, .clean_spaces = false},
    GgufPreSpec{.name = "youtu", .regexes = kYoutu, .ignore_merges = true, .clean_spaces = false},
    GgufPreSpec{.name = "falcon", .regexes = kFalcon},
    GgufPreSpec{.name = "mpt", .regexes = kGpt2},
    GgufPreSpec{.name = "starcoder", .regexes = kStarcoder},
    GgufPreSpec{.name = "gpt-2", .regexes = kGpt2},
    GgufPreSpec{.name = "phi-2", .regexes = kGpt2},
    GgufPreSpec{.name = "jina-es", .regexes = kGpt2},
    GgufPreSpec{.name = "jina-de", .regexes = kGpt2},
    GgufPreSpec{.name = "gigachat", .regexes = kGpt2},
    GgufPreSpec{.name = "jina-v2-es", .regexes = kGpt2},
    GgufPreSpec{.name = "jina-v2-de", .regexes = kGpt2},
    GgufPreSpec{.name = "a.x-4.0", .regexes = kGpt2},
    GgufPreSpec{.name = "mellum", .regexes = kGpt2},
    GgufPreSpec{.name = "modern-bert", .regexes = kGpt2},
    GgufPreSpec{.name = "jais-2", .regexes = kJais2},
    GgufPreSpec{.name = "gemma4", .regexes = kGemma4, .refused = kSpmStyleRefusal},
    GgufPreSpec{.name = "granite-embed-multi-311m", .regexes = kGemma4, .refused = kSpmStyleRefusal},
    GgufPreSpec{.name = "sarvam-moe", .regexes = kGemma4, .clean_spaces = false, .refused = kSpmStyleRefusal},
    GgufPreSpec{.name = "jina-v1-en", .regexes = kGpt2},
    GgufPreSpec{.name = "jina-v2-code", .regexes = kGpt2},
    GgufPreSpec{.name = "roberta-bpe", .regexes = kGpt2},
    GgufPreSpec{.name = "whitespace", .regexes = kWhitespace, .refused = kSpmStyleRefusal},
    GgufPreSpec{.name = "refact", .regexes = kStarcoder},
    GgufPreSpec{.name = "command-r", .regexes = kStarcoder, .clean_spaces = false},
    GgufPreSpec{.name = "qwen2", .regexes = kStablelm2, .clean_spaces = false},
    GgufPreSpec{.name = "deepseek-r1-qwen", .regexes = kStablelm2, .clean_spaces = false},
    GgufPreSpec{.name = "kormo", .regexes = kStablelm2, .clean_spaces = false},
    GgufPreSpec{.name = "f2llmv2", .regexes = kStablelm2, .clean_spaces = false},
    GgufPreSpec{.name = "qwen35", .regexes = kQwen35, .clean_spaces = false},
    GgufPreSpec{.name = "stablelm2", .regexes = kStablelm2},
    GgufPreSpec{.name = "olmo", .regexes = kGpt2},
    GgufPreSpec{.name = "dbrx", .regexes = kLlama3},
    GgufPreSpec{.name = "smaug-bpe", .regexes = kLlama3},
    GgufPreSpec{.name = "poro-chat", .regexes = kPoro, .clean_spaces = false},
    GgufPreSpec{.name = "glm4", .regexes = kLlama3, .drop_bos = true},
    GgufPreSpec{.name = "chatglm-bpe", .regexes = kLlama3, .drop_bos = true},
    GgufPreSpec{.name = "viking", .regexes = kViking, .clean_spaces = false},
    GgufPreSpec{.name = "jais", .regexes = kGpt2},
    GgufPreSpec{.name = "tekken", .regexes = kTekken, .ignore_merges = true, .add_bos = true, .clean_spaces = false},
    GgufPreSpec{.name = "smollm", .regexes = kStarcoder, .clean_spaces = false},
    GgufPreSpec{.name = "codeshell", .regexes = kStarcoder},
    GgufPreSpec{.name = "bloom", .regexes = kPoro},
    GgufPreSpec{.name = "gpt3-finnish", .regexes = kPoro},
    GgufPreSpec{.name = "exaone", .regexes = kStarcoder},
    GgufPreSpec{.name = "exaone4", .regexes = kGpt2},
    GgufPreSpec{.name = "exaone-moe", .regexes = kExaoneMoe},
    GgufPreSpec{.name = "chameleon", .regexes = kChameleon, .add_bos = true, .clean_spaces = false},
    GgufPreSpec{.name = "minerva-7b", .regexes = kStarcoder},
    GgufPreSpec{.name = "megrez", .regexes = kStablelm2},
    GgufPreSpec{.name = "gpt-4o", .regexes = kGpt4o, .clean_spaces = false},
    GgufPreSpec{.name = "llama4", .regexes = kGpt4o, .clean_spaces = false},
    GgufPreSpec{.name = "kanana2", .regexes = kGpt4o, .clean_spaces = false},
    GgufPreSpec{.name = "talkie", .regexes = kGpt4o, .clean_spaces = false},
    GgufPreSpec{.name = "granite-embed-multi-97m", .regexes = kGraniteEmbMulti, .ignore_merges = true, .clean_spaces = false},
    GgufPreSpec{.name = "tiny_aya", .regexes = kTinyAya, .clean_spaces = false},
    GgufPreSpec{.name = "cohere2moe", .regexes = kTinyAya, .clean_spaces = false},
    GgufPreSpec{.name = "superbpe", .regexes = kSuperbpe, .clean_spaces = false, .refused = kSuperBpeRefusal},
    GgufPreSpec{.name = "trillion", .regexes = kGpt2, .clean_spaces = false},
    GgufPreSpec{.name = "granite-docling", .regexes = kGpt2, .clean_spaces = false},
    GgufPreSpec{.name = "bailingmoe", .regexes = kBailingmoe, .clean_spaces = false},
    GgufPreSpec{.name = "bailingmoe2", .regexes = kBailingmoe, .clean_spaces = false},
    GgufPreSpec{.name = "llada-moe", .regexes = kBailingmoe, .clean_spaces = false},
    GgufPreSpec{.name = "seed-coder", .regexes = kSeedCoder, .clean_spaces = false},
    GgufPreSpec{.name = "hunyuan", .regexes = kStablelm2, .clean_spaces = false},
    GgufPreSpec{.name = "hunyuan-dense", .regexes = kDeepseek3Llm, .clean_spaces = false},
    GgufPreSpec{.name = "hy_v4", .regexes = kDeepseek3Llm, .clean_spaces = false},
    GgufPreSpec{.name = "joyai-llm", .regexes = kDeepseek3Llm, .clean_spaces = false},
    GgufPreSpec{.name = "kimi-k2", .regexes = kKimiK2, .clean_spaces = false, .refused = kKimiRefusal},
    GgufPreSpec{.name = "ufakzeka", .regexes = kUfakzeka, .clean_spaces = false},
    GgufPreSpec{.name = "grok-2", .regexes = kStablelm2, .clean_spaces = false},
    GgufPreSpec{.name = "afmoe", .regexes = kAfmoe, .clean_spaces = false},
    GgufPreSpec{.name = "laguna", .regexes = kLaguna, .clean_spaces = false},
    GgufPreSpec{.name = "minimax-m2", .regexes = kGpt4o, .clean_spaces = false},
    GgufPreSpec{.name = "solar-open", .regexes = kStablelm2, .clean_spaces = false},
    GgufPreSpec{.name = "mellum2", .regexes = kStarcoder},
};

}  // namespace

std::span<const GgufPreSpec> gguf_pre_table() { return kTable; }

const GgufPreSpec* find_gguf_pre(std::string_view name) {
  const auto it = std::find_if(std::begin(kTable), std::end(kTable), [&](const GgufPreSpec& s) { return s.name == name; });
  return it == std::end(kTable) ? nullptr : &*it;
}

}  // namespace calq::io

namespace calq::io::tok {

std::vector<std::string> gguf_pre_table_generic_regexes() {
  std::set<std::string> seen;
  std::vector<std::string> out;
  for (const io::GgufPreSpec& spec : io::gguf_pre_table()) {
    if (!spec.refused.empty()) continue;
    for (const std::string_view re : spec.regexes) {
      if (!is_custom_split(re) && seen.insert(std::string(re)).second) out.emplace_back(re);
    }
  }
  return out;
}

}  // namespace calq::io::tok
