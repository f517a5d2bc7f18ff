// `calq quantize`: flags over calq::quantize (calq/quantize.h), and printing its report.
//  * --type MIX: llama.cpp's mixes, GGUF in, GGUF out, optional imatrix.
//  * --format FORMAT: any registered format, Hugging Face or GGUF in, with calibration (--calib or
//    --stats), a range observer, method steps and per-tensor rules; the output is a GGUF llama.cpp
//    loads when every type is GGUF-native, else a calq GGUF (docs/formats.md).
//  * --target-bpw B --candidates LIST --sensitivity FILE: the --format form with one exact rule per
//    tensor from the bit allocation; --format, when given, is the format of linear weights outside
//    the map.
#include <fmt/format.h>

#include <memory>
#include <optional>

#include "calq/quantize.h"
#include "cli/byte_size.h"
#include "cli/calib_flags.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/quantize_target.h"

namespace calq::cli {
namespace {

// The job the flags fill in, and the flags that map onto it other than one to one.
struct QuantizeFlags {
  QuantizeJob job;
  bool no_importance = false;
  bool quiet = false;
  // method steps' most used options (QuantizeJob::method_options)
  std::optional<double> damp;
  bool act_order = false;
  std::optional<double> sq_alpha;
  std::optional<uint64_t> rotate_seed;
  bool rotate_down = false;
  std::optional<int64_t> lora_rank;
  std::string max_memory;  // "6G", parsed into job.max_memory
  std::string max_shard_size;  // "2G", parsed into job.max_shard_bytes
};

QuantizeJob job_of(const QuantizeFlags& f) {
  QuantizeJob job = f.job;
  job.use_importance = !f.no_importance;
  if (!f.max_memory.empty()) job.max_memory = parse_byte_size(f.max_memory, "--max-memory");
  if (!f.max_shard_size.empty()) job.max_shard_bytes = parse_byte_size(f.max_shard_size, "--max-shard-size");
  job.progress = progress_printer("calq quantize", f.quiet);
  if (f.damp) job.method_options.push_back({"gptq", "damp", fmt::format("{}", *f.damp)});
  if (f.act_order) job.method_options.push_back({"gptq", "act_order", "true"});
  if (f.sq_alpha) job.method_options.push_back({"smoothquant", "alpha", fmt::format("{}", *f.sq_alpha)});
  if (f.rotate_seed) job.method_options.push_back({"rotate", "seed", fmt::format("{}", *f.rotate_seed)});
  if (f.rotate_down) job.method_options.push_back({"rotate", "rotate_down", "true"});
  if (f.lora_rank) job.method_options.push_back({"lora-compensate", "rank", fmt::format("{}", *f.lora_rank)});
  return job;
}

void print_mix_report(const QuantizeReport& r, bool with_imatrix) {
  constexpr double kMiB = 1024.0 * 1024.0;
  fmt::print("wrote {}: {}, {} tensors, {} quantized{}\n", r.out, r.description, r.n_tensors, r.n_quantized,
             with_imatrix ? fmt::format(" ({} with imatrix)", r.n_with_importance) : "");
  fmt::print("size  {:.2f} MiB -> {:.2f} MiB ({:.2f} bits per weight)\n", static_cast<double>(r.bytes_in) / kMiB,
             static_cast<double>(r.bytes_out) / kMiB, r.bits_per_weight);
  fmt::print("time  {:.2f} s convert, {:.2f} s encode, {:.2f} s write\n", r.seconds_convert, r.seconds_encode,
             r.seconds_write);
}

void print_format_report(const QuantizeReport& r, const QuantizeFlags& f) {
  if (!r.allocation.empty()) fmt::print("{}", r.allocation);
  fmt::print("wrote {}: {}, {:.4f} bits per weight, {} tensors quantized ({} with importance)\n", r.out,
             r.description, r.bits_per_weight, r.n_tensors, r.n_with_importance);
  if (!f.quiet) {
    for (const std::string& e : r.method_events) fmt::print(stderr, "  {}\n", e);
  }
  if (r.calibration) fmt::print("{}\n", *r.calibration);
  fmt::print("time {:.2f} s (encode {:.2f} s), peak RSS {:.1f} MiB\n", r.seconds, r.seconds_encode, r.peak_rss_mib);
  if (r.form == "target") {
    fmt::print("target      {} bits per weight: {:.4f} written, predicted KLD {:.6g}\n", f.job.target.bits_per_weight,
               r.bits_per_weight, r.predicted_kld);
  }
  if (r.verify) fmt::print("{}\n", r.verify->text);
}

void run_quantize(const QuantizeFlags& f) {
  const QuantizeReport r = quantize(job_of(f));
  if (r.form == "mix") {
    print_mix_report(r, !f.job.imatrix.empty());
  } else {
    print_format_report(r, f);
  }
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto flags = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize a model into a GGUF file");
  cmd->add_option("--model", flags->job.model,
                  "Model: a GGUF file (F32/F16/BF16 tensors) for --type; a Hugging Face folder or GGUF for --format")
      ->required();
  cmd->add_option("--out", flags->job.out, "Output GGUF file (with --export: the Hugging Face folder)")->required();
  cmd->add_option("--export", flags->job.export_scheme,
                  "Write a Hugging Face folder for vLLM/SGLang/transformers instead of a GGUF: gptq (checkpoint "
                  "format v1), gptq-v2, awq (GEMM), compressed-tensors or bnb-nf4 (transformers' bitsandbytes 4-bit); "
                  "--format must be one the scheme holds (int formats with fp16 scales; gptq 2/3/4/8 bits, awq 4 bits "
                  "in groups, compressed-tensors 4/8 bits or fp8-e4m3[-pt]; bnb-nf4: nf4-bnb)")
      ->check(CLI::IsMember({"gptq", "gptq-v2", "awq", "compressed-tensors", "bnb-nf4"}));
  cmd->add_option("--max-shard-size", flags->max_shard_size,
                  "--export: safetensors shards of at most this size (bytes, or K/M/G in powers of 1024; default "
                  "5000000000, as save_pretrained)");
  cmd->add_option("--type", flags->job.mix,
                  "Mix: llama.cpp's q2_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m, q6_k, q8_0, or one type for every "
                  "weight (q4_0, q4_1, q5_0, q5_1, q3_k, q4_k, q5_k, iq4_nl, iq4_xs, f16, bf16, pure-<type>)");
  cmd->add_option("--format", flags->job.format,
                  "Any registered number format for the linear weights (e.g. int4-g128-asym, nf4-dq, fp8-e4m3, q4_k; "
                  "docs/formats.md lists them)");
  cmd->add_option("--method", flags->job.method,
                  "Method chain, e.g. rtn, gptq, awq, awq+gptq, rotate+gptq, smoothquant, gptq+qat-block, "
                  "gptq+qat-block+qat-e2e (transforms first, then rtn or gptq, then qat-block, then qat-e2e; rtn is "
                  "appended when no weight quantizer is named)")
      ->capture_default_str();
  cmd->add_option("--recipe", flags->job.recipe,
                  "Recipe file (JSON): {\"steps\": [{\"method\": \"awq\"}, {\"method\": \"gptq\", \"act_order\": true}]}");
  cmd->add_option("--damp", flags->damp, "gptq: dampening, times the mean diagonal of the Hessian (default 0.01)");
  cmd->add_flag("--act-order", flags->act_order, "gptq: quantize columns by descending Hessian diagonal");
  cmd->add_option("--lora-rank", flags->lora_rank,
                  "lora-compensate: adapter rank (default 16; other options through --recipe)");
  cmd->add_option("--sq-alpha", flags->sq_alpha, "smoothquant: migration strength alpha in [0, 1] (default 0.5)");
  cmd->add_option("--rotate-seed", flags->rotate_seed, "rotate: seed of the random Hadamard signs (default 0)");
  cmd->add_flag("--rotate-down", flags->rotate_down, "rotate: also rotate the MLP intermediate online");
  cmd->add_option("--act-quant", flags->job.act_quant,
                  "Activation quantization simulated at every linear input: none, int8-token / int4-token (dynamic "
                  "per token; option clip in a recipe), int8-tensor "
                  "(static, from calibration), llm-int8 (outlier columns in float)")
      ->capture_default_str();
  cmd->add_option("--llm-int8-threshold", flags->job.llm_int8_threshold, "llm-int8: outlier threshold on |x|")
      ->capture_default_str();
  cmd->add_option("--observer", flags->job.observer, "Weight range observer: minmax, percentile, kl, mse")
      ->capture_default_str();
  cmd->add_option("--percentile", flags->job.percentile, "Percentile of the percentile observer")->capture_default_str();
  cmd->add_option("--rule", flags->job.rules,
                  "Per-tensor format 'REGEX=FORMAT' (repeatable, first match wins; FORMAT may be f32), matched on "
                  "GGUF or Hugging Face tensor names");
  cmd->add_option("--expert-policy", flags->job.expert_policy,
                  "MoE models: expert statistics — natural (routed tokens), all (every token through every expert), "
                  "rtn-fallback (rarely routed experts rounded to nearest with the layer's input importance)")
      ->check(CLI::IsMember({"natural", "all", "rtn-fallback"}))
      ->capture_default_str();
  cmd->add_option("--expert-min-tokens", flags->job.expert_min_tokens,
                  "MoE models: routed tokens under which an expert is under-covered (0 = its input width)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--head-format", flags->job.head_format,
                  "Format of the token embedding and output head (default: q6_k below 6.5 bits, else q8_0)");
  add_calib_flags(cmd, flags->job.calibration);
  add_target_flags(cmd, flags->job.target);
  cmd->add_option("--stats", flags->job.stats, "Statistics file from calq calibrate (instead of --calib)");
  cmd->add_flag("--float-inputs", flags->job.float_inputs,
                "Calibrate every layer on the float model's activations (default: true sequential, each layer "
                "sees the outputs of the already quantized layers before it)");
  cmd->add_flag("--no-importance", flags->no_importance, "Do not weight the rounding error by E[x^2]");
  cmd->add_option("--imatrix", flags->job.imatrix, "Importance matrix (llama.cpp's imatrix.dat or GGUF imatrix)");
  cmd->add_option("--max-memory", flags->max_memory,
                  "Refuse, before any work, a run whose layer pass or training step (qat-block, qat-e2e) has an "
                  "estimated peak memory above this size (bytes, or K/M/G/T in powers of 1024: 6G, 512M); a layer "
                  "pass above the machine's available memory is refused anyway");
  cmd->add_option("--json", flags->job.json_out,
                  "Write the report as JSON to this file (tensors, method events, training loss curves)");
  cmd->add_option("--threads", flags->job.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--force", flags->job.force, "Overwrite an existing output file");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_quantize(*flags); });
}

}  // namespace calq::cli
