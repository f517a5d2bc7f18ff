#include "io/dataset/calib_data.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cassert>
#include <random>
#include <string_view>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sha256.h"

namespace calq::io {
namespace {

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

std::vector<std::string> split_plain(std::string_view text) {
  std::vector<std::string> docs;
  std::string current;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    if (is_blank(line)) {
      if (!current.empty()) docs.push_back(std::move(current));
      current.clear();
    } else {
      if (!current.empty()) current += '\n';
      current += line;
    }
    pos = end + 1;
  }
  if (!current.empty()) docs.push_back(std::move(current));
  return docs;
}

std::vector<std::string> split_jsonl(std::string_view text, const std::filesystem::path& path) {
  std::vector<std::string> docs;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    ++line_no;
    pos = end + 1;
    if (is_blank(line)) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      fail(ErrorKind::kFormat, "{}: line {}: not a JSON object (a JSONL calibration file has one object with a "
           "string field \"text\" per line)", path.string(), line_no);
    }
    const auto it = j.find("text");
    if (it == j.end() || !it->is_string()) {
      fail(ErrorKind::kFormat, "{}: line {}: no string field \"text\"", path.string(), line_no);
    }
    std::string doc = it->get<std::string>();
    if (!doc.empty()) docs.push_back(std::move(doc));
  }
  return docs;
}

// Unbiased draw in [0, bound) from raw 64-bit outputs (rejection of the short top range).
uint64_t bounded(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % bound + 1) % bound;
  uint64_t v = rng();
  while (v > limit) v = rng();
  return v % bound;
}

bool is_byte_fallback_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return hex(t[3]) && hex(t[4]);
}

}  // namespace

std::vector<std::string> read_calibration_documents(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) {
    fail(ErrorKind::kInvalidArgument, "{}: the calibration file is empty (give a calibration text or JSONL file with "
         "representative documents)", path.string());
  }
  return text[first] == '{' ? split_jsonl(text, path) : split_plain(text);
}

std::vector<int64_t> sample_without_replacement(int64_t n, int64_t k, uint64_t seed) {
  assert(k >= 0 && k <= n);
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed);
  // Partial Fisher–Yates: the first k slots become a uniform k-subset.
  for (int64_t i = 0; i < k; ++i) {
    const auto j = i + static_cast<int64_t>(bounded(rng, static_cast<uint64_t>(n - i)));
    std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(j)]);
  }
  all.resize(static_cast<size_t>(k));
  std::sort(all.begin(), all.end());
  return all;
}

CalibrationSet load_calibration_set(const std::filesystem::path& path, const Tokenizer& tokenizer,
                                    const CalibrationOptions& o) {
  if (o.samples < 1) fail(ErrorKind::kInvalidArgument, "calibration samples must be at least 1 (got {})", o.samples);
  if (o.seq_len < 2) fail(ErrorKind::kInvalidArgument, "calibration seq_len must be at least 2 (got {})", o.seq_len);
  CalibrationSet set;
  set.file_sha256 = sha256_hex(read_text_file(path));
  const std::vector<std::string> docs = read_calibration_documents(path);
  if (docs.empty()) {
    fail(ErrorKind::kInvalidArgument, "{}: the calibration file holds no document", path.string());
  }
  set.n_documents = static_cast<int64_t>(docs.size());

  std::vector<int32_t> stream;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (d > 0 && o.separator) stream.push_back(*o.separator);
    const std::vector<int32_t> ids = tokenizer.encode(docs[d], /*add_special_tokens=*/false);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  set.n_tokens = static_cast<int64_t>(stream.size());

  // Unknown-token share: classify each vocabulary entry once.
  std::vector<uint8_t> unknown(tokenizer.vocab_size(), 0);
  for (size_t id = 0; id < unknown.size(); ++id) {
    const std::optional<std::string> t = tokenizer.id_to_token(static_cast<int32_t>(id));
    if (t && (*t == "<unk>" || is_byte_fallback_token(*t))) unknown[id] = 1;
  }
  int64_t n_unknown = 0;
  for (const int32_t id : stream) {
    if (id >= 0 && static_cast<size_t>(id) < unknown.size() && unknown[static_cast<size_t>(id)]) ++n_unknown;
  }
  set.unknown_share = set.n_tokens > 0 ? static_cast<double>(n_unknown) / static_cast<double>(set.n_tokens) : 0.0;
  if (set.n_tokens > 0 && set.unknown_share > o.max_unknown_share) {
    fail(ErrorKind::kInvalidArgument,
         "{}: {:.1f} % of its {} tokens are unknown or byte-fallback tokens for this tokenizer: the text is not in "
         "the model's language (or not text); calibrate with representative text", path.string(),
         100.0 * set.unknown_share, set.n_tokens);
  }

  set.n_windows = set.n_tokens / o.seq_len;
  if (set.n_windows < o.samples) {
    fail(ErrorKind::kInvalidArgument,
         "{}: too short: {} tokens make {} windows of seq_len {}, fewer than samples {} (give more text, fewer "
         "samples or a shorter seq_len)", path.string(), set.n_tokens, set.n_windows, o.seq_len, o.samples);
  }
  set.window_index = sample_without_replacement(set.n_windows, o.samples, o.seed);
  set.samples.reserve(set.window_index.size());
  for (const int64_t w : set.window_index) {
    const auto begin = stream.begin() + w * o.seq_len;
    set.samples.emplace_back(begin, begin + o.seq_len);
  }
  return set;
}

}  // namespace calq::io
