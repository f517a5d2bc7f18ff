#include "io/tokenizer/post_processors.h"

#include <optional>
#include <sstream>
#include <string>

namespace calq::io::tok {
namespace {

// The single-sequence template as a list of items: ids to insert, or (empty) the sequence itself.
class Template final : public PostProcessor {
 public:
  explicit Template(std::vector<std::optional<std::vector<int32_t>>> items) : items_(std::move(items)) {}

  void process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 8);
    for (const auto& item : items_) {
      if (item) {
        out.insert(out.end(), item->begin(), item->end());
      } else {
        out.insert(out.end(), ids.begin(), ids.end());
      }
    }
    ids = std::move(out);
  }

 private:
  std::vector<std::optional<std::vector<int32_t>>> items_;
};

class Identity final : public PostProcessor {
 public:
  void process(std::vector<int32_t>& /*ids*/) const override {}
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& part : parts_) part->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

std::vector<int32_t> special_token_ids(const Json& specials, const JsonPath& at, const std::string& name) {
  const JsonPath specials_at = at.key("special_tokens");
  const auto it = specials.find(name);
  if (it == specials.end()) specials_at.format_error(fmt::format("template uses undefined special token '{}'", name));
  const JsonPath token_at = specials_at.key(name);
  const JsonPath ids_at = token_at.key("ids");
  const Json& ids = require_array(require(*it, token_at, "ids"), ids_at);
  std::vector<int32_t> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!ids[i].is_number_integer()) ids_at.index(i).format_error("expected an integer id");
    out.push_back(ids[i].get<int32_t>());
  }
  return out;
}

// One template piece as HF's Piece::try_from(String) reads it: "$A", "$B", "$A:1", "<s>", "<s>:1".
std::optional<std::string> parse_template_word(const std::string& word, const JsonPath& at) {
  std::string name = word.substr(0, word.find(':'));
  if (name.starts_with('$')) {
    if (name == "$" || name == "$A" || name == "$a") return std::nullopt;
    at.format_error(fmt::format("single template uses sequence '{}'", name));
  }
  return name;
}

std::unique_ptr<PostProcessor> make_template(const Json& value, const JsonPath& at) {
  const JsonPath single_at = at.key("single");
  const Json& single = require(value, at, "single");
  const Json& specials = require_object(require(value, at, "special_tokens"), at.key("special_tokens"));
  std::vector<std::optional<std::vector<int32_t>>> items;
  if (single.is_string()) {
    std::istringstream words(single.get<std::string>());
    std::string word;
    while (words >> word) {
      const auto name = parse_template_word(word, single_at);
      items.push_back(name ? std::optional(special_token_ids(specials, at, *name)) : std::nullopt);
    }
    return std::make_unique<Template>(std::move(items));
  }
  require_array(single, single_at);
  for (size_t i = 0; i < single.size(); ++i) {
    const JsonPath item_at = single_at.index(i);
    const Json& item = require_object(single[i], item_at);
    if (item.contains("SpecialToken")) {
      const std::string name = require_string(item["SpecialToken"], item_at.key("SpecialToken"), "id");
      items.emplace_back(special_token_ids(specials, at, name));
    } else if (item.contains("Sequence")) {
      const std::string id = require_string(item["Sequence"], item_at.key("Sequence"), "id");
      if (id != "A") item_at.format_error(fmt::format("single template uses sequence '{}'", id));
      items.emplace_back(std::nullopt);
    } else {
      item_at.format_error("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
  }
  return std::make_unique<Template>(std::move(items));
}

// RobertaProcessing / BertProcessing: "cls": ["<s>", 0], "sep": ["</s>", 2].
int32_t token_pair_id(const Json& value, const JsonPath& at, std::string_view key) {
  const Json& pair = require(value, at, key);
  if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer()) {
    at.key(key).format_error("expected [\"token\", id]");
  }
  return pair[1].get<int32_t>();
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const Json& value, const JsonPath& at) {
  const std::string type = component_type(value, at);
  if (type == "TemplateProcessing") return make_template(value, at);
  if (type == "ByteLevel") return std::make_unique<Identity>();  // only trims offsets
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    std::vector<std::optional<std::vector<int32_t>>> items;
    items.emplace_back(std::vector<int32_t>{token_pair_id(value, at, "cls")});
    items.emplace_back(std::nullopt);
    items.emplace_back(std::vector<int32_t>{token_pair_id(value, at, "sep")});
    return std::make_unique<Template>(std::move(items));
  }
  if (type == "Sequence") {
    const JsonPath list_at = at.key("processors");
    const Json& list = require_array(require(value, at, "processors"), list_at);
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < list.size(); ++i) parts.push_back(make_post_processor(list[i], list_at.index(i)));
    return std::make_unique<SequenceProcessor>(std::move(parts));
  }
  at.unsupported("post-processor", type);
}

}  // namespace calq::io::tok
