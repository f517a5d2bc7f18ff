// The ggml type table (io, gguf_types.cpp) and the GGUF-native formats (formats/, FormatTraits)
// both state each ggml type's block layout. formats sits below io, so neither can be derived from
// the other without inverting the layers (io's table must also cover types calq cannot encode);
// this test keeps the two copies equal instead.
#include <gtest/gtest.h>

#include <cctype>
#include <string>

#include "formats/format.h"
#include "io/gguf.h"

namespace calq::io {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

TEST(GgufTypesFormats, EveryGgufNativeFormatMatchesTheGgmlTable) {
  int checked = 0;
  for (const Format* format : all_formats()) {
    const FormatTraits& t = format->traits();
    if (!t.ggml_type) continue;
    SCOPED_TRACE(t.name);
    const GgmlTypeInfo* info = ggml_type_info(*t.ggml_type);
    ASSERT_NE(info, nullptr) << "ggml type " << *t.ggml_type << " is not in io's table";
    EXPECT_EQ(info->block_size, t.block_size);
    EXPECT_EQ(info->type_size, static_cast<int64_t>(t.block_bytes));
    EXPECT_EQ(upper(t.name), info->name);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST(GgufTypesFormats, EveryGgmlTypeWithAFormatIsThatFormatsType) {
  int with_format = 0;
  for (uint32_t id = 0; id < 256; ++id) {
    const Format* format = format_by_ggml_type(id);
    const GgmlTypeInfo* info = ggml_type_info(id);
    if (format == nullptr) continue;
    SCOPED_TRACE(format->name());
    ASSERT_NE(info, nullptr) << "format for unknown ggml type " << id;
    EXPECT_EQ(format->traits().ggml_type, id);
    EXPECT_EQ(info->block_size, format->traits().block_size);
    EXPECT_EQ(info->type_size, static_cast<int64_t>(format->traits().block_bytes));
    // A ggml type is found again by its name.
    EXPECT_EQ(ggml_type_by_name(info->name), info);
    ++with_format;
  }
  EXPECT_GT(with_format, 0);
}

}  // namespace
}  // namespace calq::io
