#include "io/tokenizer/pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <optional>

#include "core/error.h"

namespace calq::io::tok {

class Pattern::Compiled {
 public:
  explicit Compiled(pcre2_code* code) : code_(code) {
    // JIT is an optimisation only; matching falls back to the interpreter if it is unavailable.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Compiled() { pcre2_code_free(code_); }
  Compiled(const Compiled&) = delete;
  Compiled& operator=(const Compiled&) = delete;

  pcre2_code* code() const { return code_; }

 private:
  pcre2_code* code_;
};

namespace {

// Finds the leftmost match at or after `from`; nullopt when there is none.
std::optional<std::pair<size_t, size_t>> search_regex(const Pattern::Compiled& re,
                                                      pcre2_match_data* data,
                                                      std::string_view subject, size_t from) {
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = pcre2_match(re.code(), text, subject.size(), from, PCRE2_NO_UTF_CHECK, data, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    rc = pcre2_match(re.code(), text, subject.size(), from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data,
                     nullptr);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return std::nullopt;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof(message));
    fail(ErrorKind::kInvalidArgument, "tokenizer: regex matching failed: {}",
         reinterpret_cast<const char*>(message));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
  return std::make_pair(static_cast<size_t>(ovector[0]), static_cast<size_t>(ovector[1]));
}

}  // namespace

Pattern Pattern::literal(std::string text) {
  Pattern p;
  p.literal_ = std::move(text);
  return p;
}

Pattern Pattern::regex(std::string_view pattern, const JsonPath& at) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    at.format_error(fmt::format("invalid regex '{}': {}", pattern,
                                reinterpret_cast<const char*>(message)));
  }
  Pattern p;
  p.regex_ = std::make_shared<const Compiled>(code);
  return p;
}

Pattern Pattern::from_json(const Json& value, const JsonPath& at) {
  require_object(value, at);
  if (value.contains("String")) return literal(require_string(value, at, "String"));
  if (value.contains("Regex")) return regex(require_string(value, at, "Regex"), at.key("Regex"));
  at.format_error("expected a pattern {\"String\": ...} or {\"Regex\": ...}");
}

std::vector<std::pair<size_t, size_t>> Pattern::find_all(std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> out;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(nullptr,
                                                                           &pcre2_match_data_free);
  if (regex_) data.reset(pcre2_match_data_create_from_pattern(regex_->code(), nullptr));
  if (!regex_ && !literal_.empty()) {
    // A non-empty literal can never match empty: a plain substring scan suffices.
    size_t pos = subject.find(literal_);
    while (pos != std::string_view::npos) {
      out.emplace_back(pos, pos + literal_.size());
      pos = subject.find(literal_, pos + literal_.size());
    }
    return out;
  }
  size_t last_end = 0;
  std::optional<size_t> last_match_end;
  while (last_end <= subject.size()) {
    std::optional<std::pair<size_t, size_t>> m;
    if (regex_) {
      m = search_regex(*regex_, data.get(), subject, last_end);
    } else {
      m = std::make_pair(last_end, last_end);  // the empty literal matches everywhere
    }
    if (!m) break;
    const auto [start, end] = *m;
    if (start == end && last_match_end == end) {
      // Oniguruma skips an empty match right after the previous one and retries one char on.
      last_end += last_end < subject.size()
                      ? utf8_sequence_length(static_cast<unsigned char>(subject[last_end]))
                      : 1;
      continue;
    }
    last_end = end;
    last_match_end = end;
    out.emplace_back(start, end);
  }
  return out;
}

std::vector<Span> Pattern::find_matches(std::string_view subject) const {
  std::vector<Span> spans;
  if (subject.empty()) {
    spans.push_back({0, 0, false});
    return spans;
  }
  size_t prev = 0;
  for (const auto& [start, end] : find_all(subject)) {
    if (prev != start) spans.push_back({prev, start, false});
    spans.push_back({start, end, true});
    prev = end;
  }
  if (prev != subject.size()) spans.push_back({prev, subject.size(), false});
  return spans;
}

std::string Pattern::replace_all(std::string_view subject, std::string_view content) const {
  std::string out;
  out.reserve(subject.size());
  for (const Span& span : find_matches(subject)) {
    if (span.is_match) {
      out += content;
    } else {
      out.append(subject.substr(span.start, span.end - span.start));
    }
  }
  return out;
}

}  // namespace calq::io::tok
