// calq::Model::Impl (calq/model.h): the loaded model, its tokenizer and the info the handle shows.
#pragma once

#include <memory>

#include "api/model_source.h"
#include "calq/model.h"
#include "io/tokenizer.h"

namespace calq {

struct Model::Impl {
  api::LoadedModel loaded;
  io::Tokenizer tokenizer;
  ModelInfo info;
};

}  // namespace calq
