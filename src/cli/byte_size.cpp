#include "cli/byte_size.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace calq::cli {

uint64_t parse_byte_size(const std::string& text, std::string_view flag) {
  const auto bad = [&] {
    fail(ErrorKind::kInvalidArgument,
         "{}: '{}' is not a size (bytes, or a number with K, M, G or T, powers of 1024: 6G, 512M, 1.5G)", flag,
         text);
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) != 0 || text[i] == '.')) ++i;
  const std::string number = text.substr(0, i);
  if (number.empty() || number.find('.') != number.rfind('.') || number == ".") bad();
  std::string unit;
  for (size_t k = i; k < text.size(); ++k) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[k])));
  double scale = 1;
  if (!unit.empty() && unit != "B") {
    const std::string_view units = "KMGT";
    const size_t power = units.find(unit[0]);
    const std::string rest = unit.substr(1);
    if (power == std::string_view::npos || !(rest.empty() || rest == "B" || rest == "IB")) bad();
    scale = std::pow(1024.0, static_cast<double>(power + 1));
  }
  const double bytes = std::strtod(number.c_str(), nullptr) * scale;
  if (!(bytes >= 1)) fail(ErrorKind::kInvalidArgument, "{}: '{}' must be at least 1 byte", flag, text);
  if (bytes >= 18446744073709551616.0) fail(ErrorKind::kInvalidArgument, "{}: '{}' is too large", flag, text);
  return static_cast<uint64_t>(std::llround(std::floor(bytes)));
}

}  // namespace calq::cli
