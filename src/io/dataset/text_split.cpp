#include "io/dataset/text_split.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace calq::io {
namespace {

std::string_view trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string join(const std::vector<std::string_view>& lines, size_t begin, size_t end) {
  std::string s;
  for (size_t i = begin; i < end; ++i) {
    s += lines[i];
    s += '\n';
  }
  return s;
}

// round(n · f) clamped to [1, n − 1].
size_t validation_count(size_t n, double f) {
  const auto k = static_cast<size_t>(std::llround(static_cast<double>(n) * f));
  return std::min(std::max<size_t>(k, 1), n - 1);
}

}  // namespace

TextSplit parse_text_split(std::string_view name) {
  if (name == "article") return TextSplit::kArticle;
  if (name == "fraction") return TextSplit::kFraction;
  fail(ErrorKind::kInvalidArgument, "option 'split' must be 'article' or 'fraction', got '{}'", name);
}

bool is_article_heading(std::string_view line) {
  const std::string_view t = trim(line);
  return t.size() >= 5 && t.starts_with("= ") && t.ends_with(" =") && !t.starts_with("= =");
}

SplitText split_text(std::string_view text, TextSplit mode, double val_fraction, std::string_view origin) {
  if (!(val_fraction > 0 && val_fraction < 1))
    fail(ErrorKind::kInvalidArgument, "{}: option 'val_fraction' must be in (0, 1), got {}", origin, val_fraction);
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    fail(ErrorKind::kInvalidArgument, "{}: the text is empty", origin);
  const std::vector<std::string_view> lines = lines_of(text);
  SplitText out;
  if (mode == TextSplit::kFraction) {
    if (lines.size() < 2)
      fail(ErrorKind::kInvalidArgument, "{}: split 'fraction' needs at least 2 lines, the text has {}", origin,
           lines.size());
    const size_t val = validation_count(lines.size(), val_fraction);
    out.train = join(lines, 0, lines.size() - val);
    out.validation = join(lines, lines.size() - val, lines.size());
    out.train_units = static_cast<int64_t>(lines.size() - val);
    out.validation_units = static_cast<int64_t>(val);
    return out;
  }
  // The first line of every article (the first article also takes the lines before its heading).
  std::vector<size_t> starts;
  for (size_t i = 0; i < lines.size(); ++i)
    if (is_article_heading(lines[i])) starts.push_back(i);
  if (starts.size() < 2)
    fail(ErrorKind::kInvalidArgument,
         "{}: split 'article' needs at least 2 articles (top-level headings ' = Title = '), the text has {}; use "
         "split 'fraction'", origin, starts.size());
  starts[0] = 0;
  const size_t val = validation_count(starts.size(), val_fraction);
  const size_t cut = starts[starts.size() - val];
  out.train = join(lines, 0, cut);
  out.validation = join(lines, cut, lines.size());
  out.train_units = static_cast<int64_t>(starts.size() - val);
  out.validation_units = static_cast<int64_t>(val);
  return out;
}

}  // namespace calq::io
