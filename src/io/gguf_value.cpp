// GgufValue: typed reads with conversion checks, constructors, and the value type names.
#include <limits>
#include <utility>

#include "core/error.h"
#include "io/gguf.h"

namespace calq::io {

bool gguf_is_value_type(uint32_t id) { return id <= static_cast<uint32_t>(GgufValueType::kFloat64); }

uint64_t gguf_value_min_bytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString: return 8;
    case GgufValueType::kArray: return 4 + 8;
  }
  return 1;
}

std::string_view gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

size_t GgufValue::array_size() const {
  if (type != GgufValueType::kArray) return 0;
  switch (array_type) {
    case GgufValueType::kUint8:
    case GgufValueType::kUint16:
    case GgufValueType::kUint32:
    case GgufValueType::kUint64:
    case GgufValueType::kBool: return uints.size();
    case GgufValueType::kInt8:
    case GgufValueType::kInt16:
    case GgufValueType::kInt32:
    case GgufValueType::kInt64: return ints.size();
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64: return floats.size();
    case GgufValueType::kString: return strings.size();
    case GgufValueType::kArray: return arrays.size();
  }
  return 0;
}

namespace {
bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 ||
         t == GgufValueType::kUint32 || t == GgufValueType::kUint64;
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}
bool is_float(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}
}  // namespace

int64_t GgufValue::as_int(std::string_view what) const {
  if (is_signed(type)) return i;
  if (is_unsigned(type)) {
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(ErrorKind::kFormat, "{}: value {} does not fit in int64", what, u);
    }
    return static_cast<int64_t>(u);
  }
  fail(ErrorKind::kFormat, "{}: expected an integer, got {}", what, gguf_value_type_name(type));
}

double GgufValue::as_float(std::string_view what) const {
  if (is_float(type)) return f;
  if (is_signed(type)) return static_cast<double>(i);
  if (is_unsigned(type)) return static_cast<double>(u);
  fail(ErrorKind::kFormat, "{}: expected a number, got {}", what, gguf_value_type_name(type));
}

bool GgufValue::as_bool(std::string_view what) const {
  if (type == GgufValueType::kBool) return u != 0;
  fail(ErrorKind::kFormat, "{}: expected a bool, got {}", what, gguf_value_type_name(type));
}

const std::string& GgufValue::as_string(std::string_view what) const {
  if (type == GgufValueType::kString) return s;
  fail(ErrorKind::kFormat, "{}: expected a string, got {}", what, gguf_value_type_name(type));
}

GgufValue GgufValue::of_uint32(uint32_t v) {
  GgufValue out;
  out.type = GgufValueType::kUint32;
  out.u = v;
  return out;
}
GgufValue GgufValue::of_int32(int32_t v) {
  GgufValue out;
  out.type = GgufValueType::kInt32;
  out.i = v;
  return out;
}
GgufValue GgufValue::of_uint64(uint64_t v) {
  GgufValue out;
  out.type = GgufValueType::kUint64;
  out.u = v;
  return out;
}
GgufValue GgufValue::of_float32(float v) {
  GgufValue out;
  out.type = GgufValueType::kFloat32;
  out.f = v;
  return out;
}
GgufValue GgufValue::of_bool(bool v) {
  GgufValue out;
  out.type = GgufValueType::kBool;
  out.u = v ? 1 : 0;
  return out;
}
GgufValue GgufValue::of_string(std::string v) {
  GgufValue out;
  out.type = GgufValueType::kString;
  out.s = std::move(v);
  return out;
}
GgufValue GgufValue::of_strings(std::vector<std::string> v) {
  GgufValue out;
  out.type = GgufValueType::kArray;
  out.array_type = GgufValueType::kString;
  out.strings = std::move(v);
  return out;
}
GgufValue GgufValue::of_float32s(std::vector<double> v) {
  GgufValue out;
  out.type = GgufValueType::kArray;
  out.array_type = GgufValueType::kFloat32;
  out.floats = std::move(v);
  return out;
}
GgufValue GgufValue::of_int32s(std::vector<int64_t> v) {
  GgufValue out;
  out.type = GgufValueType::kArray;
  out.array_type = GgufValueType::kInt32;
  out.ints = std::move(v);
  return out;
}

}  // namespace calq::io
