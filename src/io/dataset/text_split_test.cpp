// split_text (text_split.h): WikiText articles by their top-level headings, lines by fraction, and
// the errors; on the shared WikiText-2 test file, the article split's halves.
#include "io/dataset/text_split.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/mapped_file.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

using calq::testing::error_of;

TEST(TextSplit, HeadingRule) {
  EXPECT_TRUE(is_article_heading(" = Robert Boulter = "));
  EXPECT_TRUE(is_article_heading("= A =\r"));
  EXPECT_FALSE(is_article_heading(" = = Career = = "));
  EXPECT_FALSE(is_article_heading(" = = = 2000 – 2005 = = = "));
  EXPECT_FALSE(is_article_heading(" The = sign = "));
  EXPECT_FALSE(is_article_heading(" == "));
}

TEST(TextSplit, ArticlesAndFractions) {
  const std::string text =
      "preface\n = One = \n a\n = = Sub = = \n b\n = Two = \n c\n = Three = \n d\n = Four = \n e\n";
  const SplitText half = split_text(text, TextSplit::kArticle, 0.5, "t");
  EXPECT_EQ(half.train, "preface\n = One = \n a\n = = Sub = = \n b\n = Two = \n c\n");
  EXPECT_EQ(half.validation, " = Three = \n d\n = Four = \n e\n");
  EXPECT_EQ(half.train_units, 2);
  EXPECT_EQ(half.validation_units, 2);
  const SplitText small = split_text(text, TextSplit::kArticle, 0.01, "t");  // at least one article
  EXPECT_EQ(small.validation, " = Four = \n e\n");
  const SplitText most = split_text(text, TextSplit::kArticle, 0.99, "t");  // at most n − 1
  EXPECT_EQ(most.train_units, 1);
  const SplitText lines = split_text("1\n2\n3\n4", TextSplit::kFraction, 0.25, "t");
  EXPECT_EQ(lines.train, "1\n2\n3\n");
  EXPECT_EQ(lines.validation, "4\n");
}

TEST(TextSplit, Errors) {
  EXPECT_NE(error_of([] { split_text(" \n\n", TextSplit::kArticle, 0.5, "f.txt"); }).find("f.txt: the text is empty"),
            std::string::npos);
  EXPECT_NE(error_of([] { split_text(" = Only = \nx\n", TextSplit::kArticle, 0.5, "f.txt"); })
                .find("the text has 1; use split 'fraction'"),
            std::string::npos);
  EXPECT_NE(error_of([] { split_text("a\nb\n", TextSplit::kFraction, 1.0, "f.txt"); }).find("'val_fraction'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_text_split("words"); }).find("option 'split'"), std::string::npos);
}

TEST(TextSplit, WikiTextHalves) {
  CALQ_REQUIRE_SHARED("data/wikitext-2-test.txt");
  const auto path = calq::testing::shared_dir() / "data" / "wikitext-2-test.txt";
  const std::string text = read_text_file(path);
  const SplitText s = split_text(text, TextSplit::kArticle, 0.5, path.string());
  EXPECT_EQ(s.train_units, 31);  // WikiText-2 test has 62 articles
  EXPECT_EQ(s.validation_units, 31);
  EXPECT_EQ(s.train.size() + s.validation.size(), text.size() + (text.ends_with('\n') ? 0 : 1));
  EXPECT_TRUE(is_article_heading(s.validation.substr(0, s.validation.find('\n'))));
}

}  // namespace
}  // namespace calq::io
