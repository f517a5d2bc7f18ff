// The Python extension `calq._calq` over the public API (include/calq/): open a model, calibrate,
// quantize, evaluate, inspect, check, bisect, calib_check, returning plain Python objects (dicts,
// lists); number formats on numpy arrays. calq::Error becomes calq.Error with the same message.
// The work runs with the GIL released (run_released). The package's __init__.py re-exports these.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>

#include "calq/calq.h"

namespace py = pybind11;

namespace {

// A job's progress callback over an optional Python callable, and the work run with the GIL
// released (so other Python threads run, and Ctrl-C is seen between units of work). The callable
// gets {"stage", "done", "total", "message"}; returning False cancels (calq.Error), raising an
// exception cancels and re-raises it; Ctrl-C cancels and raises KeyboardInterrupt.
struct PyProgress {
  py::object callback;  // None or a callable; only touched with the GIL held
  bool interrupted = false;
  std::optional<py::error_already_set> error;
};

// The ProgressFn holds the state by shared_ptr: copying it needs no GIL. The last reference is
// the caller's (`run_released` below), released with the GIL held.
calq::ProgressFn python_progress(const std::shared_ptr<PyProgress>& state) {
  return [state](const calq::Progress& p) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {  // a signal handler raised (KeyboardInterrupt): stop
      PyErr_Clear();
      state->interrupted = true;
      return false;
    }
    if (state->callback.is_none()) return true;
    try {
      py::dict d;
      d["stage"] = std::string(p.stage);
      d["done"] = p.done;
      d["total"] = p.total;
      d["message"] = std::string(p.message);
      const py::object r = state->callback(d);
      return r.is_none() || r.cast<bool>();  // None (no return) continues; False cancels
    } catch (py::error_already_set& e) {
      state->error = std::move(e);
      return false;
    }
  };
}

// Runs fn(progress) with the GIL released; see PyProgress.
template <class Fn>
auto run_released(const py::object& callback, Fn&& fn) {
  auto state = std::make_shared<PyProgress>();
  state->callback = callback;
  calq::ProgressFn progress = python_progress(state);
  try {
    py::gil_scoped_release release;
    return fn(progress);
  } catch (const calq::Error& e) {
    if (e.kind() != calq::ErrorKind::kCancelled) throw;
    if (state->error) throw std::move(*state->error);
    if (state->interrupted) {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
      throw py::error_already_set();
    }
    throw;
  }
}

py::dict model_info(const calq::ModelInfo& i) {
  py::dict d;
  d["path"] = i.path;
  d["format"] = i.format;
  d["architecture"] = i.architecture;
  d["n_layers"] = i.n_layers;
  d["hidden_size"] = i.hidden_size;
  d["vocab_size"] = i.vocab_size;
  d["n_params"] = i.n_params;
  d["bits_per_weight"] = i.bits_per_weight;
  d["tokenizer"] = i.tokenizer_source;
  return d;
}

py::dict quantize_report(const calq::QuantizeReport& r) {
  py::dict d;
  d["out"] = r.out;
  d["form"] = r.form;
  d["description"] = r.description;
  d["recipe"] = r.recipe;
  d["bits_per_weight"] = r.bits_per_weight;
  d["bytes_in"] = r.bytes_in;
  d["bytes_out"] = r.bytes_out;
  d["n_tensors"] = r.n_tensors;
  d["n_quantized"] = r.n_quantized;
  d["n_with_importance"] = r.n_with_importance;
  py::list tensors;
  for (const auto& t : r.tensors) {
    py::dict e;
    e["name"] = t.name;
    e["shape"] = t.shape;
    e["type"] = t.type;
    e["quantized"] = t.quantized;
    e["fell_back"] = t.fell_back;
    e["used_importance"] = t.used_importance;
    tensors.append(e);
  }
  d["tensors"] = tensors;
  d["method_events"] = r.method_events;
  d["calibration"] = r.calibration ? py::cast(*r.calibration) : py::none();
  d["allocation"] = r.allocation;
  d["predicted_kld"] = r.predicted_kld;
  d["seconds"] = r.seconds;
  d["warnings"] = r.warnings;
  return d;
}

py::dict adapter_info(const calq::AdapterInfo& a) {
  py::dict d;
  d["folder"] = a.folder;
  d["count"] = a.count;
  d["r"] = a.r;
  d["rank_min"] = a.rank_min;
  d["rank_max"] = a.rank_max;
  d["lora_alpha"] = a.lora_alpha;
  d["bytes"] = a.bytes;
  d["bits_per_weight"] = a.bits_per_weight;
  d["hash_checked"] = a.hash_checked;
  d["base_model_sha256"] = a.base_model_sha256;
  return d;
}

py::dict model_score(const calq::ModelScore& s) {
  py::dict d;
  d["model"] = s.model;
  d["name"] = s.name;
  d["bits_per_weight"] = s.bits_per_weight;
  d["ppl"] = s.ppl;
  d["ppl_ref"] = s.ppl_ref;
  d["delta_ppl"] = s.delta_ppl;
  d["delta_ppl_ci"] = py::make_tuple(s.delta_ppl_ci.lo, s.delta_ppl_ci.hi);
  d["kld"] = s.kld_mean;
  d["kld_ci"] = py::make_tuple(s.kld_mean_ci.lo, s.kld_mean_ci.hi);
  d["kld_p99"] = s.kld_p99;
  d["top1_agreement"] = s.top1_agreement;
  d["top1_agreement_ci"] = py::make_tuple(s.top1_agreement_ci.lo, s.top1_agreement_ci.hi);
  d["accuracy"] = s.accuracy;
  d["ece"] = s.ece;
  if (s.adapters) d["adapters"] = adapter_info(*s.adapters);
  return d;
}

// A report's JSON document as plain Python objects (dicts, lists).
py::object parse_json(const std::string& json) { return py::module_::import("json").attr("loads")(json); }

// A C-contiguous float32 array, or calq.Error naming what it is instead.
py::array_t<float, py::array::c_style> float32_array(const py::array& a, const char* what) {
  if (!a.dtype().is(py::dtype::of<float>())) {
    throw calq::Error(calq::ErrorKind::kInvalidArgument,
                      std::string(what) + " has dtype " + py::str(a.dtype()).cast<std::string>() +
                          "; calq.formats takes float32 arrays (convert with .astype(numpy.float32))");
  }
  return py::array_t<float, py::array::c_style>::ensure(a);
}

}  // namespace

PYBIND11_MODULE(_calq, m) {
  m.doc() = "calq: post-training quantization of LLMs, measured against full precision";
  m.attr("__version__") = calq::version();
  static py::exception<calq::Error> error(m, "Error");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const calq::Error& e) {
      error(e.what());
    }
  });

  py::class_<calq::OpenOptions>(m, "OpenOptions")
      .def(py::init<>())
      .def_readwrite("tokenizer", &calq::OpenOptions::tokenizer)
      .def_readwrite("threads", &calq::OpenOptions::threads);
  py::class_<calq::Model>(m, "Model")
      .def_static("open", &calq::Model::open, py::arg("path"), py::arg("options") = calq::OpenOptions{})
      .def_property_readonly("info", [](const calq::Model& self) { return model_info(self.info()); })
      .def("tokenize", &calq::Model::tokenize, py::arg("text"))
      .def("detokenize", &calq::Model::detokenize, py::arg("ids"));

  m.def(
      "open",
      [](const std::string& path, const std::string& tokenizer, size_t threads) {
        return calq::Model::open(path, {.tokenizer = tokenizer, .threads = threads});
      },
      py::arg("path"), py::arg("tokenizer") = "", py::arg("threads") = 0,
      "Open a Hugging Face folder or GGUF file with its tokenizer");

  m.def(
      "calibrate",
      [](const std::string& model, const std::string& out, const std::string& text, int64_t samples, int64_t seq_len,
         uint64_t seed, const std::string& stats, size_t threads, bool force, const py::object& progress,
         bool all_experts, int64_t expert_min_tokens) {
        const calq::CalibrateReport r = run_released(progress, [&](const calq::ProgressFn& pf) {
          return calq::calibrate(
              {.model = model, .out = out,
               .data = {.text = text, .samples = samples, .seq_len = seq_len, .seed = seed, .tokenizer = ""},
               .stats = stats, .threads = threads, .force = force, .all_experts = all_experts,
               .expert_min_tokens = expert_min_tokens, .progress = pf});
        });
        py::dict d;
        d["out"] = r.out;
        d["samples"] = r.samples;
        d["seq_len"] = r.seq_len;
        d["stats"] = r.stats;
        d["sites"] = r.sites.size();
        d["seconds"] = r.seconds;
        py::list experts;  // MoE models: per layer, the tokens the router sent to each expert
        for (const calq::ExpertCoverage& c : r.experts) {
          py::dict e;
          e["layer"] = c.layer;
          e["tokens"] = c.tokens;
          e["under_covered"] = c.under_covered;
          e["threshold"] = c.threshold;
          experts.append(e);
        }
        d["experts"] = experts;
        return d;
      },
      py::arg("model"), py::arg("out"), py::arg("text"), py::arg("samples") = 128, py::arg("seq_len") = 512,
      py::arg("seed") = 0, py::arg("stats") = "absmax,mean_abs,mean_sq,histogram", py::arg("threads") = 0,
      py::arg("force") = false, py::arg("progress") = py::none(), py::arg("all_experts") = false,
      py::arg("expert_min_tokens") = 0,
      "Calibration statistics of every linear input, written to a statistics file (text: a file, or "
      "\"generate:N\" for N sequences sampled from the model)");

  m.def(
      "quantize",
      [](const std::string& model, const std::string& out, const std::string& format, const std::string& mix,
         const std::string& method, const std::string& recipe, const std::map<std::string, py::object>& options,
         const std::string& calib, int64_t samples, int64_t seq_len, const std::string& stats, double target_bpw,
         const std::vector<std::string>& candidates, const std::string& sensitivity,
         const std::string& sensitivity_text, int64_t sensitivity_windows, int64_t sensitivity_ctx,
         const std::string& act_quant, const std::vector<std::string>& rules, const std::string& observer,
         uint64_t max_memory, const std::string& json_out, size_t threads, bool force, const py::object& progress,
         const std::string& expert_policy, int64_t expert_min_tokens, const std::string& export_scheme,
         uint64_t max_shard_bytes) {
        calq::QuantizeJob job{.model = model, .out = out, .export_scheme = export_scheme,
                              .max_shard_bytes = max_shard_bytes, .mix = mix, .format = format, .method = method,
                              .recipe = recipe, .observer = observer, .rules = rules,
                              .calibration = {.text = calib, .samples = samples, .seq_len = seq_len},
                              .stats = stats, .act_quant = act_quant, .expert_policy = expert_policy,
                              .expert_min_tokens = expert_min_tokens,
                              .target = {.bits_per_weight = target_bpw, .candidates = candidates,
                                         .sensitivity = sensitivity, .sensitivity_text = sensitivity_text,
                                         .sensitivity_windows = sensitivity_windows,
                                         .sensitivity_ctx = sensitivity_ctx},
                              .max_memory = max_memory, .json_out = json_out, .threads = threads, .force = force};
        // {"gptq.damp": 0.02, "gptq.act_order": True}: method.key -> a JSON value.
        const py::module_ json = py::module_::import("json");
        for (const auto& [name, value] : options) {
          const size_t dot = name.find('.');
          if (dot == std::string::npos) {
            throw calq::Error(calq::ErrorKind::kInvalidArgument,
                              "option '" + name + "': expected 'method.key', e.g. 'gptq.damp'");
          }
          job.method_options.push_back(
              {name.substr(0, dot), name.substr(dot + 1), json.attr("dumps")(value).cast<std::string>()});
        }
        const calq::QuantizeReport r = run_released(progress, [&](const calq::ProgressFn& pf) {
          job.progress = pf;
          return calq::quantize(job);
        });
        py::dict d = quantize_report(r);
        d["report"] = parse_json(r.json);  // the JSON document: training records with their loss curves
        return d;
      },
      py::arg("model"), py::arg("out"), py::arg("format") = "", py::arg("mix") = "", py::arg("method") = "rtn",
      py::arg("recipe") = "", py::arg("options") = std::map<std::string, py::object>{}, py::arg("calib") = "",
      py::arg("samples") = 128, py::arg("seq_len") = 512, py::arg("stats") = "", py::arg("target_bpw") = 0.0,
      py::arg("candidates") = std::vector<std::string>{}, py::arg("sensitivity") = "",
      py::arg("sensitivity_text") = "", py::arg("sensitivity_windows") = 8, py::arg("sensitivity_ctx") = 512,
      py::arg("act_quant") = "none", py::arg("rules") = std::vector<std::string>{}, py::arg("observer") = "minmax",
      py::arg("max_memory") = 0, py::arg("json_out") = "", py::arg("threads") = 0, py::arg("force") = false,
      py::arg("progress") = py::none(), py::arg("expert_policy") = "natural", py::arg("expert_min_tokens") = 0,
      py::arg("export") = "", py::arg("max_shard_bytes") = calq::QuantizeJob{}.max_shard_bytes,
      "Quantize a model into a GGUF file, or with export = gptq, gptq-v2, awq, compressed-tensors or bnb-nf4 into a "
      "Hugging Face folder for vLLM/SGLang/transformers (same options and recipes as `calq quantize`; "
      "expert_policy: natural, all or rtn-fallback for mixture-of-experts models)");

  m.def(
      "evaluate",
      [](const std::string& reference, const std::vector<std::string>& models, const std::string& text, int64_t ctx,
         int64_t max_windows, const std::string& tokenizer, const std::vector<std::string>& kv_cache,
         const std::string& hellaswag, int64_t mc_items, const std::vector<std::string>& generate,
         int64_t max_new_tokens, const std::string& json_out, const std::string& adapter,
         bool adapter_skip_hash_check, bool exact, size_t threads, const py::object& progress) {
        const calq::EvalReport r = run_released(progress, [&](const calq::ProgressFn& pf) {
          return calq::evaluate({.reference = reference, .models = models, .text = text, .ctx = ctx,
                                 .max_windows = max_windows, .tokenizer = tokenizer, .kv_cache = kv_cache,
                                 .hellaswag = hellaswag, .mc_items = mc_items, .generate = generate,
                                 .max_new_tokens = max_new_tokens, .json_out = json_out, .adapter = adapter,
                                 .adapter_skip_hash_check = adapter_skip_hash_check, .exact = exact,
                                 .threads = threads, .progress = pf});
        });
        py::dict d;
        d["reference"] = r.reference;
        d["tokenizer"] = r.tokenizer;
        d["n_tokens"] = r.n_tokens;
        d["n_windows"] = r.n_windows;
        d["ppl_ref"] = r.ppl_ref;
        py::list scores;
        for (const auto& s : r.models) scores.append(model_score(s));
        d["models"] = scores;
        d["warnings"] = r.warnings;
        // Everything else (per-window values, multiple choice, generations) as `calq eval --json` writes it.
        d["report"] = parse_json(r.json);
        return d;
      },
      py::arg("reference"), py::arg("models"), py::arg("text") = "", py::arg("ctx") = 512, py::arg("max_windows") = 0,
      py::arg("tokenizer") = "", py::arg("kv_cache") = std::vector<std::string>{}, py::arg("hellaswag") = "",
      py::arg("mc_items") = 0, py::arg("generate") = std::vector<std::string>{}, py::arg("max_new_tokens") = 48,
      py::arg("json_out") = "", py::arg("adapter") = "", py::arg("adapter_skip_hash_check") = false,
      py::arg("exact") = false, py::arg("threads") = 0, py::arg("progress") = py::none(),
      "Models against a full-precision reference (\"\" for one model's perplexity): PPL, KLD, top-1 agreement, ECE "
      "with 95% intervals; HellaSwag multiple choice and greedy generation on request. exact=True runs the exact "
      "path (dequantized float32) instead of the fast kernels; report['kernels'] says which ran");

  m.def("model_sha256", &calq::model_sha256, py::arg("path"),
        "The base-model hash LoRA adapter folders record (sha256 of a GGUF file; of a Hugging Face folder's "
        "*.safetensors in name order followed by config.json)");

  m.def(
      "merge_adapters",
      [](const std::string& model, const std::string& adapter, const std::string& out, const std::string& type,
         bool adapter_skip_hash_check, bool force, size_t threads, const py::object& progress) {
        const calq::AdapterMergeReport r = run_released(progress, [&](const calq::ProgressFn& pf) {
          return calq::merge_adapters({.model = model, .adapter = adapter, .out = out, .type = type,
                                       .adapter_skip_hash_check = adapter_skip_hash_check, .force = force,
                                       .threads = threads, .progress = pf});
        });
        py::dict d;
        d["out"] = r.out;
        d["type"] = r.type;
        d["adapters"] = adapter_info(r.adapters);
        d["n_params"] = r.n_params;
        d["bytes_out"] = r.bytes_out;
        d["bits_per_weight"] = r.bits_per_weight;
        d["seconds"] = r.seconds;
        return d;
      },
      py::arg("model"), py::arg("adapter"), py::arg("out"), py::arg("type") = "f16",
      py::arg("adapter_skip_hash_check") = false, py::arg("force") = false, py::arg("threads") = 0,
      py::arg("progress") = py::none(),
      "Fold a PEFT LoRA adapter folder into its base model and write a float GGUF (same as `calq merge`)");

  m.def(
      "inspect",
      [](const std::string& model, bool weights, bool activations, const std::string& text,
               const std::string& tokenizer, int64_t samples, int64_t ctx, size_t top, size_t threads,
               const py::object& progress) {
        const calq::InspectReport r = run_released(progress, [&](const calq::ProgressFn& pf) {
          return calq::inspect({.model = model, .weights = weights, .activations = activations, .text = text,
                                .tokenizer = tokenizer, .samples = samples, .ctx = ctx, .top = top,
                                .threads = threads, .progress = pf});
        });
        py::dict d = parse_json(r.json);
        d["text"] = r.text;
        return d;
      },
      py::arg("model"), py::arg("weights") = false, py::arg("activations") = false, py::arg("text") = "",
      py::arg("tokenizer") = "", py::arg("samples") = 128, py::arg("ctx") = 512, py::arg("top") = 8,
      py::arg("threads") = 0, py::arg("progress") = py::none(),
      "What a model holds (HF folder or GGUF file) and, on request, its weight and activation outlier statistics");

  m.def(
      "check",
      [](const std::string& path) { return parse_json(run_released(py::none(), [&](const calq::ProgressFn&) {
                                            return calq::check(path);
                                          }).json); },
      py::arg("path"), "Whether llama.cpp's loader would accept a GGUF file: {ok, errors, warnings, findings}");

  m.def(
      "bisect",
      [](const std::string& model, const std::string& quantized, const std::string& eval_text,
               const std::string& tokenizer, double target, const std::optional<double>& tolerance,
               const std::string& restore_format, int64_t ctx, int64_t max_windows, size_t threads,
               const py::object& progress) {
        return parse_json(run_released(progress, [&](const calq::ProgressFn& pf) {
                        return calq::bisect({.model = model, .quantized = quantized, .eval_text = eval_text,
                                             .tokenizer = tokenizer, .target = target, .tolerance = tolerance,
                                             .restore_format = restore_format, .ctx = ctx,
                                             .max_windows = max_windows, .threads = threads, .progress = pf});
                      }).json);
      },
      py::arg("model"), py::arg("quantized"), py::arg("eval_text"), py::arg("tokenizer") = "", py::arg("target") = 0.0,
      py::arg("tolerance") = py::none(), py::arg("restore_format") = "", py::arg("ctx") = 512,
      py::arg("max_windows") = 8, py::arg("threads") = 0, py::arg("progress") = py::none(),
      "The fewest tensors of a quantized model whose restoration brings KLD back to a goal");

  m.def(
      "calib_check",
      [](const std::string& model, const std::string& calib, const std::string& eval_text, int64_t samples,
               int64_t seq_len, uint64_t seed, const std::string& tokenizer, double threshold, size_t threads,
               const py::object& progress) {
        return parse_json(run_released(progress, [&](const calq::ProgressFn& pf) {
                        return calq::calib_check({.model = model, .calib = calib, .eval_text = eval_text,
                                                  .samples = samples, .seq_len = seq_len, .seed = seed,
                                                  .tokenizer = tokenizer, .threshold = threshold,
                                                  .threads = threads, .progress = pf});
                      }).json);
      },
      py::arg("model"), py::arg("calib"), py::arg("eval_text"), py::arg("samples") = 32, py::arg("seq_len") = 512,
      py::arg("seed") = 0, py::arg("tokenizer") = "", py::arg("threshold") = calq::CalibCheckJob{}.threshold,
      py::arg("threads") = 0, py::arg("progress") = py::none(),
      "Activation statistics of a calibration text against those of an evaluation text (drift score, flagged)");

  py::module_ f = m.def_submodule("formats", "Number formats on numpy float32 arrays");
  f.def("list", [] {
    py::list out;
    for (const auto& i : calq::formats::list()) out.append(i.name);
    return out;
  });
  f.def("info", [](const std::string& name) {
    const calq::formats::FormatInfo i = calq::formats::info(name);
    py::dict d;
    d["name"] = i.name;
    d["bits_per_weight"] = i.bits_per_weight;
    d["block"] = i.block;
    d["gguf_native"] = i.gguf_native;
    return d;
  });
  f.def(
      "quantize",
      [](const py::array& array, const std::string& format, const py::object& importance) {
        const auto a = float32_array(array, "the array");
        if (a.ndim() != 2 && a.ndim() != 1) {
          throw calq::Error(calq::ErrorKind::kInvalidArgument,
                            "the array has " + std::to_string(a.ndim()) + " dimensions; give [rows, cols] or [cols]");
        }
        const int64_t rows = a.ndim() == 2 ? a.shape(0) : 1;
        const int64_t cols = a.ndim() == 2 ? a.shape(1) : a.shape(0);
        std::vector<float> imp;
        if (!importance.is_none()) {
          const auto i = float32_array(importance.cast<py::array>(), "importance");
          imp.assign(i.data(), i.data() + i.size());
        }
        const std::vector<std::byte> bytes =
            calq::formats::quantize(format, std::span<const float>(a.data(), static_cast<size_t>(a.size())), rows,
                                    cols, imp);
        return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      },
      py::arg("array"), py::arg("format"), py::arg("importance") = py::none(),
      "Encode a float32 [rows, cols] array into the format's bytes");
  f.def(
      "dequantize",
      [](const py::bytes& data, const std::string& format, const std::vector<int64_t>& shape) {
        if (shape.size() != 2 && shape.size() != 1) {
          throw calq::Error(calq::ErrorKind::kInvalidArgument, "shape must be (rows, cols) or (cols,)");
        }
        const int64_t rows = shape.size() == 2 ? shape[0] : 1;
        const int64_t cols = shape.back();
        const std::string_view view = data;
        const std::vector<float> values = calq::formats::dequantize(
            format, std::span<const std::byte>(reinterpret_cast<const std::byte*>(view.data()), view.size()), rows,
            cols);
        py::array_t<float> out(std::vector<py::ssize_t>(shape.begin(), shape.end()));
        std::memcpy(out.mutable_data(), values.data(), values.size() * sizeof(float));
        return out;
      },
      py::arg("data"), py::arg("format"), py::arg("shape"), "Decode a format's bytes into a float32 array");
}
