#include "nwc/tools/bench.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/allocate.hpp"
#include "nwc/runtime/awq.hpp"
#include "nwc/runtime/blockft.hpp"
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/sequential.hpp"
#include "nwc/runtime/tokenizer.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <map>
#include <optional>
#include <sstream>

namespace nwc::tools {
using namespace nwc::host;
using namespace nwc::runtime;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Peak resident memory since the last reset, from /proc/self/status (VmHWM), in MB. Writing "5"
// to /proc/self/clear_refs resets it, so each pipeline gets its own peak.
void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}
double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0.0;
}

std::string fixed(double v, int prec) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(prec) << v;
  return o.str();
}
std::string sci(double v) {
  std::ostringstream o;
  o << std::scientific << std::setprecision(2) << v;
  return o.str();
}

// A model whose tensors are the given decoded values (so evaluation does not decode twice).
Model in_memory(const Model &like, std::map<std::string, std::vector<float>> values) {
  auto store = std::make_shared<std::map<std::string, std::vector<float>>>(std::move(values));
  Model m;
  m.format = "decoded";
  m.path = like.path;
  m.arch = like.arch;
  for (const auto &t : like.tensors) {
    ModelTensor mt;
    mt.info = t.info;
    const std::string name = t.info.name;
    mt.load = [store, name] { return store->at(name); };
    m.tensors.push_back(std::move(mt));
  }
  m.keepalive = store;
  return m;
}

double hessian_error(const std::vector<float> &w, const std::vector<float> &q,
                     const std::vector<float> &h, int64_t rows, int64_t cols) {
  double num = 0, den = 0;
  std::vector<double> d(static_cast<size_t>(cols)), x(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i) {
      x[i] = w[r * cols + i];
      d[i] = static_cast<double>(w[r * cols + i]) - q[r * cols + i];
    }
    for (int64_t i = 0; i < cols; ++i) {
      double hd = 0, hx = 0;
      for (int64_t j = 0; j < cols; ++j) {
        hd += h[i * cols + j] * d[j];
        hx += h[i * cols + j] * x[j];
      }
      num += d[i] * hd;
      den += x[i] * hx;
    }
  }
  return den > 0 ? num / den : 0.0;
}

// One rate-perplexity plot, <stem>.svg and <stem>.png: a line per method over the rate `x`, the
// fp32 model as a horizontal line; the data and gnuplot script stay beside them.
void plot_rate_ppl(const BenchSettings &s, const std::vector<BenchRow> &rows,
                   const std::string &stem, const std::string &xlabel, double BenchRow::*x,
                   const std::function<void(const std::string &)> &log) {
  const auto dir = s.output_dir;
  std::map<std::string, std::vector<const BenchRow *>> by_method;
  for (const auto &r : rows)
    if (!r.container.empty()) by_method[r.method].push_back(&r);
  std::ofstream dat(dir / (stem + ".dat"));
  std::vector<std::string> methods;
  for (auto &[method, list] : by_method) {
    std::sort(list.begin(), list.end(),
              [x](const BenchRow *a, const BenchRow *b) { return a->*x < b->*x; });
    dat << "# " << method << "\n";
    for (const auto *r : list) dat << r->*x << " " << r->ppl << "\n";
    dat << "\n\n";
    methods.push_back(method);
  }
  dat.close();
  const double fp32_ppl = rows.empty() ? 0 : rows.front().ppl;
  std::ofstream gp(dir / (stem + ".gp"));
  gp << "set xlabel '" << xlabel << "'\n"
     << "set ylabel 'perplexity (ppl-v1)'\nset logscale y\nset key outside right\nset grid\n"
     << "set title '" << s.model.filename().string() << "'\n";
  // The interesting part is near the fp32 line; collapsed points (>20x) stay in the table.
  if (fp32_ppl > 0) gp << "set yrange [" << fp32_ppl * 0.9 << ":" << fp32_ppl * 20 << "]\n";
  for (const char *term : {"svg size 900,560", "pngcairo size 900,560"}) {
    const std::string ext = std::string(term).substr(0, 3) == "svg" ? "svg" : "png";
    gp << "set terminal " << term << "\nset output '" << (dir / (stem + "." + ext)).string()
       << "'\nplot ";
    for (size_t i = 0; i < methods.size(); ++i)
      gp << "'" << (dir / (stem + ".dat")).string() << "' index " << i
         << " with linespoints title '" << methods[i] << "', ";
    gp << fp32_ppl << " with lines dashtype 2 title 'fp32'\n";
  }
  gp.close();
  std::string cmd = "gnuplot '" + (dir / (stem + ".gp")).string() + "' 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  std::string out;
  if (p) {
    char buf[256];
    while (fgets(buf, sizeof buf, p)) out += buf;
  }
  int rc = p ? pclose(p) : -1;
  if (rc != 0)
    log("warning: gnuplot failed (install Debian's gnuplot-nox); the plot script is " +
        (dir / (stem + ".gp")).string() + (out.empty() ? "" : ": " + out));
}

void write_outputs(const BenchSettings &s, const std::vector<BenchRow> &rows,
                   const std::function<void(const std::string &)> &log) {
  const auto dir = s.output_dir;
  nlohmann::json j = nlohmann::json::array();
  for (const auto &r : rows) j.push_back(r.to_json());
  std::ofstream(dir / "results.json") << j.dump(2) << "\n";

  std::ofstream csv(dir / "results.csv");
  csv << "method,pipeline,bits_per_weight,linear_bits_per_weight,header_bits_per_weight,mse,"
         "sqnr_db,hessian_error,nll,ppl,encode_seconds,decode_seconds,encode_weights_per_second,"
         "decode_weights_per_second,peak_rss_mb,kl\n";
  for (const auto &r : rows)
    csv << r.method << "," << r.pipeline << "," << r.bits_per_weight << ","
        << r.linear_bits_per_weight << "," << r.header_bits_per_weight << "," << r.mse << ","
        << r.sqnr_db << "," << r.hessian_error << "," << r.nll << "," << r.ppl << ","
        << r.encode_seconds << "," << r.decode_seconds << "," << r.encode_weights_per_second << ","
        << r.decode_weights_per_second << "," << r.peak_rss_mb << "," << r.kl << "\n";

  std::ofstream md(dir / "results.md");
  md << "# nwc bench: " << s.model.filename().string() << "\n\n"
     << "Protocol ppl-v1 on `" << s.eval_text.filename().string() << "`"
     << (s.max_tokens ? " (first " + std::to_string(s.max_tokens) + " tokens)" : "")
     << "; calibration: " << s.calib_tokens << " tokens of `" << s.calib_text.filename().string()
     << "`. Bits per weight are measured from the "
     << "container (streams, side information and the tensor's share of headers); *linear* "
     << "counts the coded tensors, *all* every tensor; *headers* is the part of *linear* that pays "
     << "for the container's header, manifest and footer. Hessian error = mean over linear layers "
     << "of tr(ΔW H ΔWᵀ)/tr(W H Wᵀ). KL = mean KL divergence from fp32's next-token "
     << "distributions to the pipeline's over the scored positions (nats per token).\n\n"
     << "| method | pipeline | bits/w linear | of which headers | bits/w all | NLL | ppl | KL | "
        "Hessian err | MSE | SQNR dB | encode s | decode Mw/s | peak RSS MB |\n"
     << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto &r : rows)
    md << "| " << r.method << " | " << r.pipeline << " | " << fixed(r.linear_bits_per_weight, 3)
       << " | " << fixed(r.header_bits_per_weight, 4) << " | " << fixed(r.bits_per_weight, 3)
       << " | " << fixed(r.nll, 4) << " | " << fixed(r.ppl, 3) << " | "
       << (r.container.empty() ? "0" : sci(r.kl)) << " | "
       << (r.container.empty() ? "0" : sci(r.hessian_error)) << " | "
       << (r.container.empty() ? "0" : sci(r.mse)) << " | "
       << (r.container.empty() || !std::isfinite(r.sqnr_db) ? "inf" : fixed(r.sqnr_db, 2)) << " | "
       << fixed(r.encode_seconds, 2) << " | " << fixed(r.decode_weights_per_second / 1e6, 2)
       << " | " << fixed(r.peak_rss_mb, 0) << " |\n";
  md << "\n![rate vs perplexity, coded tensors](rate_ppl.svg)\n"
     << "![rate vs perplexity, whole file](rate_ppl_file.svg)\n\nRegenerate with:\n\n```\n";
  for (size_t i = 0; i < s.argv.size(); ++i) md << (i ? " " : "") << s.argv[i];
  md << "\n```\n";

  // Rate-perplexity plots: against the coded tensors' bits (rate_ppl) and the whole file's
  // (rate_ppl_file, what a model costs on disk, raw embeddings and norms included).
  plot_rate_ppl(s, rows, "rate_ppl", "bits per weight (coded tensors, measured)",
                &BenchRow::linear_bits_per_weight, log);
  plot_rate_ppl(s, rows, "rate_ppl_file", "bits per weight (whole file, measured)",
                &BenchRow::bits_per_weight, log);
}

// A pipeline with [awq]: the scaled model it codes, the Hessians of that model (the shared ones
// describe the unscaled model) and its values, against which the errors are measured.
struct AwqModel {
  Model model;
  CompressSettings settings;
  std::map<std::string, std::vector<float>> reference;
};

AwqModel awq_model(const Model &model, const Pipeline &pl, const std::vector<int32_t> &calib,
                   const CalibrationSettings &cal, const CompressSettings &cs,
                   const std::function<void(const std::string &)> &log) {
  AwqScaled scaled = awq_scale_model(model, calib, cal, pl.awq);
  log("    awq: " + std::to_string(scaled.result.groups.size()) + " scaling groups, " +
      fixed(scaled.seconds, 2) + " s");
  AwqModel out{std::move(scaled.model), cs, {}};
  for (const auto &t : out.model.tensors) out.reference[t.info.name] = t.load();
  out.settings.hessians.clear();
  Calibration c = calibrate(out.model, calib, cal);
  for (const auto &h : c.hessians) {
    auto v = std::make_shared<std::vector<float>>(h.h.begin(), h.h.end());
    for (const auto &l : h.linears) out.settings.hessians[l] = v;
  }
  return out;
}

// The pipelines of a run, loaded and checked before the long work starts: [awq] and [blockft]
// do not combine, and each pipeline name (the container's file name) is used once.
std::vector<Pipeline> load_bench_pipelines(const BenchSettings &s, const Registry &registry) {
  std::vector<Pipeline> pipelines;
  for (const auto &p : s.pipelines) pipelines.push_back(load_pipeline(p, registry));
  for (const auto &pl : pipelines)
    if (pl.awq.enabled && pl.blockft.enabled)
      fail(NWC_E_INVALID_ARG, pl.file.string() + " has [awq] and [blockft], which do not combine");
  std::map<std::string, std::string> seen;
  for (size_t i = 0; i < pipelines.size(); ++i) {
    auto [it, fresh] = seen.emplace(pipelines[i].name, s.pipelines[i].string());
    if (!fresh)
      fail(NWC_E_INVALID_ARG, s.pipelines[i].string() + ": pipeline name '" + pipelines[i].name +
                                  "' is also used by " + it->second);
  }
  return pipelines;
}

// Calibrates the model (the Hessians every pipeline shares go into cs) and evaluates it
// uncompressed: the fp32 row.
BenchRow calibrate_and_evaluate_fp32(const Model &model, const BenchSettings &s,
                                     const std::vector<int32_t> &calib_stream,
                                     const std::vector<int32_t> &eval_stream,
                                     const LlamaModel &llama, const EvalSettings &es,
                                     CompressSettings &cs,
                                     const std::function<void(const std::string &)> &log) {
  log("calibrating on " + std::to_string(s.calib_tokens) + " tokens of " + s.calib_text.string());
  CalibrationSettings cal;
  cal.tokens = s.calib_tokens;
  cal.threads = s.threads;
  Calibration c = calibrate(model, calib_stream, cal);
  for (const auto &h : c.hessians) {
    auto v = std::make_shared<std::vector<float>>(h.h.begin(), h.h.end());
    for (const auto &l : h.linears) cs.hessians[l] = v;
  }
  log("evaluating fp32");
  EvalResult r = evaluate_ppl(llama, eval_stream, es);
  BenchRow fp32;
  fp32.method = "fp32";
  fp32.pipeline = "fp32";
  fp32.bits_per_weight = fp32.linear_bits_per_weight = 32;
  fp32.sqnr_db = std::numeric_limits<double>::infinity();
  fp32.nll = r.nll;
  fp32.ppl = r.ppl;
  return fp32;
}

// Codes `coded` with the pipeline into `container` the way `nwc compress` would: each tensor's
// codec chosen by [allocate], block-wise fine-tuning or sequential calibration on the calibration
// tokens when the pipeline asks for it.
void compress_for_bench(const Model &coded, const Pipeline &input, const Registry &registry,
                        const std::string &container, const CompressSettings &settings,
                        const std::vector<int32_t> &calib_stream, const CalibrationSettings &cal) {
  const Pipeline pl =
      input.allocate.enabled
          ? allocate_by_sensitivity(coded, input, registry, settings, calib_stream, container)
                .pipeline
          : input;
  if (pl.blockft.enabled) { // fine-tuning on the same calibration tokens as the Hessians
    compress_model_blockft(coded, pl, registry, container, settings, calib_stream);
  } else if (pl.calibration_mode == CalibrationMode::Sequential) {
    // Its own Hessians, from the same tokens, while it codes (the shared ones still weigh the
    // error columns of the row).
    CompressSettings own = settings;
    own.hessians.clear();
    compress_model_sequential(coded, pl, registry, container, own, calib_stream, cal);
  } else {
    compress_model(coded, pl, registry, container, settings);
  }
}

// The row's sizes and errors from the container and its decoded tensors: bits per weight of the
// file, of the coded linears and of their headers; MSE and SQNR against `reference`; the mean
// Hessian-weighted error over the linears with a Hessian.
void measure_container(BenchRow &row, const ContainerReader &reader,
                       const std::map<std::string, std::vector<float>> &reference,
                       const std::map<std::string, std::vector<float>> &decoded,
                       const std::map<std::string, HessianRef> &hessians, uint64_t total_weights) {
  const auto &m = reader.manifest();
  const uint64_t file = reader.file_size();
  const ContainerLayout layout = reader.layout();
  double linear_bytes = 0, header_bytes = 0, err = 0, sig = 0, herr = 0;
  uint64_t linear_weights = 0;
  int layers = 0;
  for (const auto &t : m.tensors) {
    const auto &a = reference.at(t.name), &b = decoded.at(t.name);
    for (size_t k = 0; k < a.size(); ++k) {
      const double d = static_cast<double>(a[k]) - b[k];
      err += d * d;
      sig += static_cast<double>(a[k]) * a[k];
    }
    if (t.storage == "pipeline") {
      linear_bytes += container_tensor_bytes(m, file, t);
      header_bytes += container_tensor_header_bytes(m, layout, t);
      linear_weights += t.numel();
    }
    auto h = hessians.find(t.name);
    if (h != hessians.end() && t.shape.size() == 2) {
      herr += hessian_error(a, b, *h->second.load(), t.shape[0], t.shape[1]);
      ++layers;
    }
  }
  row.bits_per_weight = static_cast<double>(file) * 8 / static_cast<double>(total_weights);
  row.linear_bits_per_weight =
      linear_weights ? linear_bytes * 8 / static_cast<double>(linear_weights) : row.bits_per_weight;
  row.header_bits_per_weight =
      linear_weights
          ? header_bytes * 8 / static_cast<double>(linear_weights)
          : static_cast<double>(layout.container_bytes()) * 8 / static_cast<double>(total_weights);
  row.mse = err / static_cast<double>(total_weights);
  row.sqnr_db = err > 0 ? 10 * std::log10(sig / err) : std::numeric_limits<double>::infinity();
  row.hessian_error = layers ? herr / layers : 0.0;
}

} // namespace

nlohmann::json BenchRow::to_json() const {
  return {{"method", method},
          {"pipeline", pipeline},
          {"container", container},
          {"bits_per_weight", bits_per_weight},
          {"linear_bits_per_weight", linear_bits_per_weight},
          {"header_bits_per_weight", header_bits_per_weight},
          {"mse", mse},
          {"sqnr_db", std::isfinite(sqnr_db) ? nlohmann::json(sqnr_db) : nlohmann::json()},
          {"hessian_error", hessian_error},
          {"nll", nll},
          {"ppl", ppl},
          {"kl", kl},
          {"encode_seconds", encode_seconds},
          {"decode_seconds", decode_seconds},
          {"encode_weights_per_second", encode_weights_per_second},
          {"decode_weights_per_second", decode_weights_per_second},
          {"peak_rss_mb", peak_rss_mb}};
}

std::vector<BenchRow> run_bench(const BenchSettings &s, const Registry &registry,
                                const std::function<void(const std::string &)> &log) {
  const std::vector<Pipeline> pipelines = load_bench_pipelines(s, registry);
  std::filesystem::create_directories(s.output_dir);
  Model model = load_model(s.model);
  auto tok = load_tokenizer(s.tokenizer, model.arch.vocab_size);
  const auto eval_stream = ppl_token_stream(read_text_file(s.eval_text), *tok);
  const auto calib_stream = ppl_token_stream(read_text_file(s.calib_text), *tok);
  // Before the long work: a [blockft] pipeline that the calibration text cannot feed, or an
  // [allocate] table whose codecs are missing, would stop the run when its turn comes, after every
  // pipeline before it.
  for (const auto &pl : pipelines) {
    if (pl.blockft.enabled)
      require_blockft_calibration(pl, model.arch, calib_stream.size(), s.calib_text.string());
    if (pl.allocate.enabled) check_allocate_inputs(model, pl, registry);
  }
  EvalSettings es;
  es.max_tokens = s.max_tokens;
  es.threads = s.threads;

  std::map<std::string, std::vector<float>> original;
  uint64_t total_weights = 0;
  for (const auto &t : model.tensors) {
    original[t.info.name] = t.load();
    total_weights += t.info.numel();
  }

  CompressSettings cs;
  cs.threads = s.threads;
  const LlamaModel reference(model, 1); // fp32: its row, and the KL of every pipeline to it
  std::vector<BenchRow> rows{
      calibrate_and_evaluate_fp32(model, s, calib_stream, eval_stream, reference, es, cs, log)};
  EvalSettings against_fp32 = es;
  against_fp32.reference = &reference;
  // With the Hessians known: a pipeline whose tensors lack one it needs ([levels] on a tensor
  // that is not a calibrated linear, say) stops the run now, not at its turn.
  for (const auto &pl : pipelines) check_compress_inputs(model, pl, registry, cs);
  for (size_t i = 0; i < pipelines.size(); ++i) {
    const Pipeline &pl = pipelines[i];
    BenchRow row;
    row.method = pl.method;
    row.pipeline = pl.name;
    row.container = (s.output_dir / (pl.name + ".nwc")).string();
    log("[" + std::to_string(i + 1) + "/" + std::to_string(pipelines.size()) + "] " + pl.name);
    reset_peak_rss();
    auto t0 = Clock::now();
    CalibrationSettings cal;
    cal.tokens = s.calib_tokens;
    cal.threads = s.threads;
    std::optional<AwqModel> awq; // [awq]: the scaled model is coded, with its own Hessians
    if (pl.awq.enabled) awq = awq_model(model, pl, calib_stream, cal, cs, log);
    compress_for_bench(awq ? awq->model : model, pl, registry, row.container,
                       awq ? awq->settings : cs, calib_stream, cal);
    row.encode_seconds = since(t0);

    ContainerReader reader(row.container);
    ContainerDecoder decoder(reader, registry);
    std::map<std::string, std::vector<float>> decoded;
    t0 = Clock::now();
    for (const auto &t : reader.manifest().tensors)
      decoded[t.name] = decoder.decode_tensor(t, s.threads);
    row.decode_seconds = since(t0);
    row.peak_rss_mb = peak_rss_mb();
    measure_container(row, reader, awq ? awq->reference : original, decoded,
                      awq ? awq->settings.hessians : cs.hessians, total_weights);
    const double weights = static_cast<double>(total_weights);
    row.encode_weights_per_second = row.encode_seconds > 0 ? weights / row.encode_seconds : 0;
    row.decode_weights_per_second = row.decode_seconds > 0 ? weights / row.decode_seconds : 0;

    LlamaModel llama(in_memory(model, std::move(decoded)), 1);
    EvalResult r = evaluate_ppl(llama, eval_stream, against_fp32);
    row.nll = r.nll;
    row.ppl = r.ppl;
    row.kl = r.kl.value_or(0);
    log("    " + fixed(row.linear_bits_per_weight, 3) + " bits/w (container headers " +
        fixed(row.header_bits_per_weight, 4) + "), NLL " + fixed(row.nll, 4) + ", ppl " +
        fixed(row.ppl, 3) + ", KL " + sci(row.kl));
    rows.push_back(row);
    write_outputs(s, rows, log); // rewritten after every pipeline: a long run's results so far
  }
  if (pipelines.empty()) write_outputs(s, rows, log);
  return rows;
}

} // namespace nwc::tools
