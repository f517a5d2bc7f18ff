// A text file split into a training part and a validation part (calq finetune's own split).
//
// Modes:
//  * kArticle — WikiText's articles: an article starts at a top-level heading, a line that is
//    " = Title = " (after trimming spaces, tabs and CR: starts with "= ", ends with " =", and is not
//    a sub-heading " = = Section = = ", which starts with "= ="). Lines before the first heading
//    belong to the first article. The last round(n · val_fraction) articles (at least 1, at most
//    n − 1) are the validation part, the articles before them the training part.
//  * kFraction — lines: the last round(n · val_fraction) lines (at least 1, at most n − 1) are the
//    validation part.
// Each part is its lines joined with '\n' (a final newline after the last line), in file order.
//
// Errors (calq::Error kInvalidArgument, naming `origin` and the option): val_fraction outside
// (0, 1); an empty or blank text; fewer than two articles (kArticle: says how many headings it
// found and to use split 'fraction') or lines (kFraction).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace calq::io {

enum class TextSplit { kArticle, kFraction };

// "article" or "fraction"; anything else is an Error naming option `split`.
TextSplit parse_text_split(std::string_view name);

struct SplitText {
  std::string train, validation;
  int64_t train_units = 0, validation_units = 0;  // articles or lines
};

SplitText split_text(std::string_view text, TextSplit mode, double val_fraction, std::string_view origin);

// Whether `line` is a top-level WikiText heading (" = Title = ", the rule above).
bool is_article_heading(std::string_view line);

}  // namespace calq::io
