// calq::quantize: checks which form the job asks for, runs it (api/quantize_forms.h), and writes
// the report's JSON (api/quantize_json.h) when asked.
#include "api/model_source.h"
#include "api/quantize_forms.h"
#include "api/quantize_json.h"
#include "core/error.h"

namespace calq {

namespace {

QuantizeReport run_form(const QuantizeJob& job) {
  if (job.model.empty()) fail(ErrorKind::kInvalidArgument, "quantize: no model given");
  if (job.out.empty()) fail(ErrorKind::kInvalidArgument, "quantize: no output file given");
  api::Reporter report(job.progress);
  const bool target = job.target.bits_per_weight > 0;
  if (!job.format.empty() || target) {
    if (!job.mix.empty()) {
      fail(ErrorKind::kInvalidArgument, "give either a mix (llama.cpp's) or {}, not both",
           target ? "a target bits_per_weight" : "a format");
    }
    if (!job.imatrix.empty()) {
      fail(ErrorKind::kInvalidArgument,
           "an imatrix goes with a mix; with a format, give a calibration text or a statistics file");
    }
    return api::quantize_format(job, report);
  }
  if (job.mix.empty()) fail(ErrorKind::kInvalidArgument, "quantize needs a mix or a format");
  if (!job.export_scheme.empty()) {
    fail(ErrorKind::kInvalidArgument, "export_scheme '{}' needs a format (int4-g128-sym, ...), not a mix",
         job.export_scheme);
  }
  // A mix with anything llama-quantize's form does not do (calibration, a method, an observer, rules,
  // a head format, activation quantization) runs the format form, typed per tensor by the mix:
  // nothing asked for is silently left out.
  const bool format_form = job.method != "rtn" || !job.recipe.empty() || !job.calibration.text.empty() ||
                           !job.stats.empty() || !job.method_options.empty() || job.observer != "minmax" ||
                           !job.rules.empty() || !job.head_format.empty() || job.act_quant != "none";
  if (format_form || api::resolve_model(job.model).format == api::ModelFormat::kHfFolder) {
    if (!job.imatrix.empty()) {
      fail(ErrorKind::kInvalidArgument, "an imatrix goes with a plain mix; with a method or calibration, the "
           "calibration gives the importance");
    }
    return api::quantize_format(job, report);
  }
  return api::quantize_mix(job, report);
}

}  // namespace

QuantizeReport quantize(const QuantizeJob& job) {
  api::check_output_folder(job.json_out);
  QuantizeReport r = run_form(job);
  r.json = api::quantize_report_json(r);
  if (!job.json_out.empty()) api::write_text_atomic(job.json_out, r.json);
  return r;
}

}  // namespace calq
