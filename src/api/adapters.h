// LoRA adapter folders at the API level: the base model's hash (calq::model_sha256's definition,
// calq/adapters.h), loading a folder onto a loaded model with that check, and writing a model's
// adapters as a folder that records it. model/peft_adapter.h reads and writes the files.
#pragma once

#include <filesystem>
#include <string>

#include "api/model_source.h"
#include "calq/adapters.h"
#include "model/model.h"

namespace calq::api {

// calq::model_sha256 (calq/adapters.h) of a model path (resolve_model decides what it is).
std::string model_source_sha256(const std::filesystem::path& path);

// Loads the adapter folder `dir` onto m.model, checking its base hash against m's file unless
// `skip_hash_check` (option adapter_skip_hash_check). `base_sha256` may pass the hash when the
// caller has it ("" = compute it). Errors as model::load_peft_adapters (nothing installed).
AdapterInfo load_adapters(LoadedModel& m, const std::string& dir, bool skip_hash_check,
                          const std::string& base_sha256 = "");

// Writes `model`'s adapters to `dir` (model::write_peft_adapters), recording the hash of
// `base_path` (the model file the adapters were made on) and calq's version; an existing `dir` is
// replaced only with `force`.
void write_adapters(const model::Model& model, const std::string& dir, const std::string& base_path, bool force,
                    double lora_dropout = 0);

}  // namespace calq::api
