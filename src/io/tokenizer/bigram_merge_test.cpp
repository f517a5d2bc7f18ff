// merge_bigrams on hand-made priorities: each expected split is worked out by hand from the rule in
// bigram_merge.h (highest priority first, ties leftmost, stale pairs skipped).
#include "io/tokenizer/bigram_merge.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace calq::io::tok {
namespace {

// Priority from a table keyed by "left+right" (absent: no merge); records every call.
struct Table {
  std::map<std::string, double> priorities;
  std::vector<std::string> asked;

  std::vector<std::string> split(std::string_view text) {
    std::vector<std::string_view> pieces;
    merge_bigrams(
        text,
        [&](std::string_view l, std::string_view r) -> std::optional<double> {
          // The contract: left is directly followed by right inside the text.
          EXPECT_EQ(l.data() + l.size(), r.data());
          asked.push_back(std::string(l) + "+" + std::string(r));
          const auto it = priorities.find(std::string(l) + "+" + std::string(r));
          if (it == priorities.end()) return std::nullopt;
          return it->second;
        },
        pieces);
    return {pieces.begin(), pieces.end()};
  }
};

using Pieces = std::vector<std::string>;

TEST(BigramMerge, EmptyAndSingleCharacter) {
  Table t;
  EXPECT_EQ(t.split(""), Pieces{});
  EXPECT_EQ(t.split("a"), Pieces{"a"});
  EXPECT_TRUE(t.asked.empty());
}

TEST(BigramMerge, HigherPriorityFirst) {
  // "abc": b+c (2) beats a+b (1); then a+bc is not in the table, so "a","bc" stays.
  Table t{.priorities = {{"a+b", 1}, {"b+c", 2}}};
  EXPECT_EQ(t.split("abc"), (Pieces{"a", "bc"}));
  // With a+b higher it goes the other way.
  Table u{.priorities = {{"a+b", 3}, {"b+c", 2}}};
  EXPECT_EQ(u.split("abc"), (Pieces{"ab", "c"}));
}

TEST(BigramMerge, TiesMergeLeftmostFirst) {
  // "aaa": both a+a pairs tie; the left one merges, then aa+a has no priority.
  Table t{.priorities = {{"a+a", 1}}};
  EXPECT_EQ(t.split("aaa"), (Pieces{"aa", "a"}));
  // "aaaa": left pair, then the stale (1,2) entry is skipped, then the pair (2,3).
  EXPECT_EQ(t.split("aaaa"), (Pieces{"aa", "aa"}));
}

TEST(BigramMerge, NewPairsWithNeighboursAreQueued) {
  // a+b, then ab+c, then abc+d: each merge queues the new symbol's pairs.
  Table t{.priorities = {{"a+b", 3}, {"ab+c", 2}, {"abc+d", 1}}};
  EXPECT_EQ(t.split("abcd"), (Pieces{"abcd"}));
}

TEST(BigramMerge, StaleEntryOfAGrownSymbolIsSkipped) {
  // Queued first: b+c (1). a+b (5) merges first, which makes the (b,c) entry stale; ab+c is absent,
  // so "c" stays alone even though b+c had a priority.
  Table t{.priorities = {{"a+b", 5}, {"b+c", 1}}};
  EXPECT_EQ(t.split("abc"), (Pieces{"ab", "c"}));
}

TEST(BigramMerge, SymbolsAreUtf8Characters) {
  // "é" (2 bytes) and "€" (3 bytes) are single symbols; a truncated lead byte at the end is kept whole.
  Table t;
  EXPECT_EQ(t.split("a\xC3\xA9\xE2\x82\xAC"), (Pieces{"a", "\xC3\xA9", "\xE2\x82\xAC"}));
  EXPECT_EQ(t.asked, (Pieces{"a+\xC3\xA9", "\xC3\xA9+\xE2\x82\xAC"}));
  EXPECT_EQ(t.split("a\xE2\x82"), (Pieces{"a", "\xE2\x82"}));
}

TEST(BigramMerge, NegativeRanksOrderLowestRankFirst) {
  // The BPE caller passes -rank: rank 0 beats rank 7.
  Table t{.priorities = {{"a+b", -7.0}, {"b+c", -0.0}}};
  EXPECT_EQ(t.split("abc"), (Pieces{"a", "bc"}));
}

}  // namespace
}  // namespace calq::io::tok
