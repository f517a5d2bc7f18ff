// MethodOf<Options> — the base of every method plugin (method.h): it binds the recipe keys to the
// fields of the method's typed option struct, so a plugin file declares its keys once and gets
// parsing, validation and to_json from here.
//
//   struct SmoothQuantOptions { double alpha = 0.5; };
//   class SmoothQuant final : public MethodOf<SmoothQuantOptions> {
//    public:
//     SmoothQuant() : MethodOf({.name = "smoothquant", ...},
//                              {number_option("alpha", &SmoothQuantOptions::alpha, {0, 1}, "...")}) {}
//     Migration migrate(...) const override { const SmoothQuantOptions& o = typed(options); ... }
//   };
//
// Field types: bool, int, int64_t, uint64_t, double, std::string (string_option: one of a list of
// values, or a comma-separated list of them). The default of each key is the option
// struct's default member value (read from a value-initialised struct), so it is written once.
#pragma once

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "quant/method.h"

namespace calq::quant {

// Non-template parts (method.cpp).
namespace detail {
// Throws unless `object` is a JSON object (Error naming origin and method).
void check_options_object(const Method& method, const nlohmann::json& object, std::string_view origin);
// The index of `key` in method.options(); an unknown key is an Error naming origin, method and key.
size_t option_index(const Method& method, std::string_view key, std::string_view origin);
// `value` checked against `spec` (type, range); a whole-valued float for an integer key becomes an
// integer. Errors name origin, method and key.
nlohmann::json checked_option_value(const Method& method, const OptionSpec& spec, const nlohmann::json& value,
                                    std::string_view origin);
}  // namespace detail

struct OptionRange {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
};

template <class O>
struct OptionField {
  using Member = std::variant<bool O::*, int O::*, int64_t O::*, uint64_t O::*, double O::*, std::string O::*>;
  Member member;
  OptionSpec spec;
};

template <class O>
OptionField<O> bool_option(std::string key, bool O::*member, std::string doc) {
  return {member, OptionSpec{.key = std::move(key), .type = OptionType::kBool, .doc = std::move(doc)}};
}

// One of `choices` (list: a comma-separated list of distinct ones), a std::string field.
template <class O>
OptionField<O> string_option(std::string key, std::string O::*member, std::vector<std::string> choices, bool list,
                             std::string doc) {
  assert(!choices.empty());
  return {member, OptionSpec{.key = std::move(key), .type = OptionType::kString, .doc = std::move(doc),
                             .choices = std::move(choices), .list = list}};
}

// A number (double field) or an integer (integral field) within `range` (integral fields are also
// bounded by their type).
template <class O, class T>
OptionField<O> number_option(std::string key, T O::*member, OptionRange range, std::string doc) {
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, int> || std::is_same_v<T, int64_t> ||
                std::is_same_v<T, uint64_t>);
  OptionSpec spec{.key = std::move(key), .type = std::is_same_v<T, double> ? OptionType::kNumber : OptionType::kInteger,
                  .min = range.min, .max = range.max, .min_exclusive = range.min_exclusive, .doc = std::move(doc)};
  if constexpr (!std::is_same_v<T, double>) {
    spec.min = std::max(spec.min, static_cast<double>(std::numeric_limits<T>::lowest()));
    // int64's maximum rounds up to 2^63 as a double: the largest double below it instead. uint64's
    // rounds up to 2^64, which no JSON integer reaches (range checks compare exactly).
    const double top = static_cast<double>(std::numeric_limits<T>::max());
    spec.max = std::min(spec.max, std::is_same_v<T, int64_t> ? std::nextafter(top, 0.0) : top);
  }
  return {member, std::move(spec)};
}

template <class O>
class MethodOf : public Method {
 public:
  MethodOf(MethodTraits traits, std::vector<OptionField<O>> fields)
      : traits_(std::move(traits)), fields_(std::move(fields)) {
    assert(fields_.size() < 64);
    const O defaults{};
    for (auto& f : fields_) {
      f.spec.default_value = read(f.member, defaults);
      specs_.push_back(f.spec);
    }
  }

  const MethodTraits& traits() const final { return traits_; }
  std::span<const OptionSpec> options() const final { return specs_; }

  StepOptions parse_options(const nlohmann::json& object, std::string_view origin) const final {
    detail::check_options_object(*this, object, origin);
    O value{};
    uint64_t given = 0;
    for (const auto& [key, v] : object.items()) {
      const size_t i = detail::option_index(*this, key, origin);
      assign(fields_[i].member, value, detail::checked_option_value(*this, specs_[i], v, origin));
      given |= uint64_t{1} << i;
    }
    return StepOptions(std::move(value), given);
  }

  nlohmann::json options_json(const StepOptions& options, bool with_defaults) const final {
    const O& o = typed(options);
    nlohmann::json j = nlohmann::json::object();
    for (size_t i = 0; i < fields_.size(); ++i) {
      if (with_defaults || options.given(i)) j[fields_[i].spec.key] = read(fields_[i].member, o);
    }
    return j;
  }

 protected:
  static const O& typed(const StepOptions& options) { return options.template get<O>(); }

 private:
  // (An option struct without fields has no field to read, and one smaller than a field type has
  // no field of that type: GCC's bounds analysis would flag those unreachable member accesses.)
  template <class T>
  static constexpr bool kCanHold = sizeof(T) <= sizeof(O);

  static nlohmann::json read([[maybe_unused]] const typename OptionField<O>::Member& member,
                             [[maybe_unused]] const O& o) {
    if constexpr (std::is_empty_v<O>) {
      return {};
    } else {
      return std::visit(
          [&](auto m) -> nlohmann::json {
            using T = std::remove_cv_t<std::remove_reference_t<decltype(o.*m)>>;
            if constexpr (kCanHold<T>) {
              return nlohmann::json(o.*m);
            } else {
              assert(false && "a field larger than its struct");
              return {};
            }
          },
          member);
    }
  }
  // `v` was checked by checked_option_value: the right JSON type and within the field's range.
  static void assign([[maybe_unused]] const typename OptionField<O>::Member& member, [[maybe_unused]] O& o,
                     [[maybe_unused]] const nlohmann::json& v) {
    if constexpr (!std::is_empty_v<O>) {
      std::visit(
          [&](auto m) {
            using T = std::remove_reference_t<decltype(o.*m)>;
            if constexpr (!kCanHold<T>) {
              assert(false && "a field larger than its struct");
            } else if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, double> ||
                                 std::is_same_v<T, std::string>) {
              o.*m = v.get<T>();
            } else if constexpr (std::is_unsigned_v<T>) {
              o.*m = v.get<uint64_t>();
            } else {
              o.*m = static_cast<T>(v.get<int64_t>());
            }
          },
          member);
    }
  }

  MethodTraits traits_;
  std::vector<OptionField<O>> fields_;
  std::vector<OptionSpec> specs_;
};

}  // namespace calq::quant
