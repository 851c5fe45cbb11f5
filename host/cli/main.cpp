// nwc — command-line front end: compress, decompress, inspect, plugins.
//
// Exit codes: 0 success, 1 runtime failure, 2 usage error. Every error is one line on stderr.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/codec_file.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/formats/gguf.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/plugin_docs.hpp"
#include "nwc/host/registry.hpp"
#include "nwc/host/target_rate.hpp"
#include "nwc/runtime/blockft.hpp"
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "nwc/runtime/train_codec.hpp"
#include "nwc/tools/bench.hpp"
#include "nwc/tools/codec_measure.hpp"
#include "nwc/tools/convert.hpp"
#include "nwc/tools/synth.hpp"
#include "plugin_check.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <unistd.h>

namespace po = boost::program_options;
using nlohmann::json;
using namespace nwc;
using namespace nwc::host;
using namespace nwc::tools;
using namespace nwc::runtime;

namespace {

constexpr const char *kVersion = "0.1.0";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Common {
  std::vector<std::string> plugin_paths;
  bool no_default_plugin_path = false;
  bool json = false;
  bool quiet = false;
  unsigned threads = 0;
};

void add_common(po::options_description &d, Common &c) {
  d.add_options()("plugin-path", po::value(&c.plugin_paths)->composing(),
                  "directory to search for plugins first (repeatable)")(
      "no-default-plugin-path", po::bool_switch(&c.no_default_plugin_path),
      "search only --plugin-path and NWC_PLUGIN_PATH")("json", po::bool_switch(&c.json),
                                                       "machine-readable JSON on stdout")(
      "quiet,q", po::bool_switch(&c.quiet),
      "no progress, no warnings")("threads", po::value(&c.threads)->default_value(0),
                                  "worker threads (0 = all cores)")("help,h", "show this help");
}

// Parses a subcommand's arguments; positional names in order.
po::variables_map parse(const std::vector<std::string> &args, po::options_description &desc,
                        const std::vector<std::string> &positional, const std::string &usage) {
  po::positional_options_description pos;
  for (const auto &p : positional) pos.add(p.c_str(), 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << desc << "\n";
      std::exit(0);
    }
    po::notify(vm);
  } catch (const po::error &e) {
    throw UsageError(std::string(e.what()) + " (usage: " + usage + ")");
  }
  return vm;
}

Registry load_registry(const Common &c) {
  set_log_level(c.quiet ? NWC_LOG_ERROR : NWC_LOG_WARNING);
  std::vector<std::filesystem::path> cli(c.plugin_paths.begin(), c.plugin_paths.end());
  Registry reg;
  reg.scan(Registry::search_path(cli, !c.no_default_plugin_path));
  return reg;
}

// Progress on a terminal: "[i/N] name  rate  ETA", rewritten in place.
struct Progress {
  bool enabled;
  std::string label;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  Progress(bool on, std::string what)
      : enabled(on && isatty(STDERR_FILENO)), label(std::move(what)) {}
  void operator()(size_t done, size_t total, const std::string &name) {
    if (!enabled) return;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0;
    std::fprintf(stderr, "\r\033[K%s tensor %zu of %zu  %.1f tensors/s  ETA %.0fs  %s",
                 label.c_str(), done, total, rate, eta, name.c_str());
    if (done == total) std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
};

// Async-signal-safe only: unlink/rmdir of paths registered beforehand, write, _exit.
void on_signal(int sig) {
  remove_pending_temporaries();
  remove_pending_hf_directory();
  remove_pending_synth_directory();
  const char msg[] = "nwc: interrupted; no output written\n";
  ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
  (void)ignored;
  _exit(128 + sig);
}

std::string shape_str(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string fmt(double v, int prec) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(prec) << v;
  return o.str();
}

std::string sci(double v) {
  std::ostringstream o;
  o << std::scientific << std::setprecision(3) << v;
  return o.str();
}

// A model file, or a .nwc container decoded through the installed plugins.
Model open_model(const std::string &path, const Registry &reg, unsigned threads) {
  static const unsigned char magic[8] = {0x89, 'N', 'W', 'C', '\r', '\n', 0x1a, '\n'};
  unsigned char head[8] = {};
  if (FILE *f = std::fopen(path.c_str(), "rb")) {
    size_t got = std::fread(head, 1, 8, f);
    std::fclose(f);
    if (got == 8 && std::memcmp(head, magic, 8) == 0)
      return open_container_model(path, reg, threads);
  }
  return load_model(path);
}

DType parse_output_dtype(std::string name) {
  for (auto &ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  DType dtype;
  if (!dtype_from_name(name, dtype) ||
      (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16))
    throw UsageError("--dtype: expected F32, F16 or BF16, got '" + name + "'");
  return dtype;
}

// The calibration text: `given`, else $NWC_DATA/text/tinystories-calib.txt; never the evaluation
// half of TinyStories (calibrating on it would flatter every method evaluated on it afterwards).
std::string calibration_text(const std::string &given, const std::string &option) {
  std::string path = given;
  if (path.empty()) {
    const char *data = std::getenv("NWC_DATA");
    if (!data || !*data)
      throw UsageError(option + " is required (or set NWC_DATA to use its " +
                       "text/tinystories-calib.txt)");
    path = (std::filesystem::path(data) / "text" / "tinystories-calib.txt").string();
  }
  if (std::filesystem::path(path).filename() == "tinystories-eval.txt")
    throw Error(NWC_E_INVALID_ARG, path + ": this is the evaluation half of TinyStories; "
                                          "calibrate on tinystories-calib.txt");
  return path;
}

std::string text_hash(const std::string &text) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(container_checksum(text.data(), text.size())));
  return hex;
}

// ---- commands ----------------------------------------------------------------------------------

int cmd_compress(const std::vector<std::string> &args) {
  Common c;
  std::string model_path, pipeline_path, out, calibration_path;
  po::options_description d("nwc compress");
  d.add_options()("model", po::value(&model_path)->required(), "model file or directory")(
      "pipeline,p", po::value(&pipeline_path)->required(),
      "pipeline TOML file")("output,o", po::value(&out)->required(), "output .nwc file")(
      "calibration", po::value(&calibration_path),
      "Hessians from `nwc calibrate` of this same model (for compensators that use them)")(
      "embed-codec", "store the codec files the pipeline names inside the container")(
      "tokenizer,t", po::value<std::string>(),
      "tokenizer of the model (pipelines with [blockft] fine-tune on calibration text)")(
      "calib-text", po::value<std::string>(),
      "calibration text for [blockft] (default: $NWC_DATA/text/tinystories-calib.txt)")(
      "target-bpw", po::value<double>(),
      "NWC pipelines: choose the ladder codec and level fractions whose measured bits per "
      "coded weight land closest to this")(
      "calibrate", "compute the Hessians first from --calib-text, layer by layer (needs "
                   "--tokenizer); under mpirun each rank runs a share of the text")(
      "calib-tokens", po::value<int64_t>()->default_value(65536),
      "tokens --calibrate runs (whole windows)")(
      "save-calibration", po::value<std::string>(),
      "keep the Hessians of --calibrate in this file (default: a temporary file beside OUT)");
  add_common(d, c);
  auto vm =
      parse(args, d, {"model"},
            "nwc compress MODEL --pipeline FILE.toml -o OUT.nwc [--calibration H.safetensors | "
            "--calibrate --tokenizer T]");
  Job *job = current_job();
  const bool lead = !job || job->rank() == 0; // the process that writes and reports
  const bool calibrate_first = vm.count("calibrate") > 0;
  if (calibrate_first && !calibration_path.empty())
    throw UsageError("--calibrate computes the Hessians; do not also pass --calibration");
  if (vm.count("save-calibration") && !calibrate_first)
    throw UsageError("--save-calibration needs --calibrate");
  if (job && vm.count("target-bpw"))
    throw UsageError("--target-bpw runs in one process; start it without mpirun");
  Registry reg = load_registry(c);
  Pipeline pl = load_pipeline(pipeline_path, reg);
  Model model = load_model(model_path);
  Progress progress(lead && !c.quiet && !c.json, "compress");
  CompressSettings s;
  s.threads = c.threads;
  s.progress = std::ref(progress);
  s.embed_resources = vm.count("embed-codec") > 0;
  s.job = job;
  // Calibration and fine-tuning inputs are checked before any coding (a rate search can take
  // minutes).
  std::vector<int32_t> tokens;
  std::string text;
  if (pl.blockft.enabled || calibrate_first) {
    if (!vm.count("tokenizer"))
      throw UsageError(
          std::string(calibrate_first ? "--calibrate" : pipeline_path + " has [blockft]") +
          ": --tokenizer is required");
    const std::string text_path = calibration_text(
        vm.count("calib-text") ? vm["calib-text"].as<std::string>() : "", "--calib-text");
    auto tok = load_tokenizer(vm["tokenizer"].as<std::string>(), model.arch.vocab_size);
    text = read_text_file(text_path);
    tokens = ppl_token_stream(text, *tok);
  }
  auto t0 = std::chrono::steady_clock::now();
  std::optional<ScratchFile> scratch; // the Hessians of --calibrate, unless they are kept
  double calib_secs = 0;
  if (calibrate_first) {
    CalibrationSettings cs;
    cs.tokens = vm["calib-tokens"].as<int64_t>();
    cs.threads = c.threads;
    if (cs.tokens < 1) throw UsageError("--calib-tokens must be >= 1");
    if (vm.count("save-calibration")) {
      calibration_path = vm["save-calibration"].as<std::string>();
    } else {
      const std::filesystem::path o(out);
      calibration_path =
          (o.parent_path() / ("." + o.filename().string() + ".calibration.safetensors")).string();
      if (lead) scratch.emplace(calibration_path);
    }
    const std::string fp = lead ? model_fingerprint(model) : "";
    calibrate_to_file(model, tokens, cs, fp, text_hash(text), calibration_path, job);
    if (job) job->barrier(); // rank 0 has written the file every rank reads from
    calib_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  if (!calibration_path.empty()) {
    CalibrationFile cal = open_calibration(calibration_path);
    if (lead && !calibrate_first) {
      std::string fp = model_fingerprint(model);
      if (fp != cal.info.model_hash)
        throw Error(NWC_E_INVALID_ARG, calibration_path + ": calibrated on model " +
                                           cal.info.model_hash + ", but " + model_path + " is " +
                                           fp + " (rerun nwc calibrate on this model)");
    }
    s.hessians = hessians_by_linear(cal); // loaded tensor by tensor as coders need them
  }
  if (job && pl.blockft.enabled) {
    // Block fine-tuning walks the model in order, each block after the one before: rank 0 runs it.
    if (!lead) return 0;
    s.job = nullptr;
    if (!c.quiet)
      std::cerr << "nwc: [blockft] runs on rank 0; the other ranks helped with calibration only\n";
  }
  json rate = nullptr;
  if (vm.count("target-bpw")) {
    const double target = vm["target-bpw"].as<double>();
    RateChoice choice = choose_for_target_bpw(model, pl, reg, s, target, out);
    pl = choice.pipeline;
    const auto &ch = choice.chosen;
    rate = {{"target_bpw", target},
            {"codec", ch.codec},
            {"fraction_scale", ch.fraction_scale},
            {"level", ch.level},
            {"search_bpw", ch.bits_per_weight},
            {"candidates", choice.tried.size()}};
    if (!c.quiet && !c.json)
      std::cerr << "target " << fmt(target, 3)
                << " bits/weight: " << std::filesystem::path(ch.codec).filename().string()
                << (ch.level >= 0 ? ", level " + std::to_string(ch.level)
                                  : ", level fractions x" + fmt(ch.fraction_scale, 2))
                << " (" << fmt(ch.bits_per_weight, 3) << " bits/weight, best of "
                << choice.tried.size() << " candidates)\n";
  }
  CompressResult r;
  if (pl.blockft.enabled) {
    auto ft = compress_model_blockft(model, pl, reg, out, s, tokens, [&](const BlockFtReport &b) {
      if (!c.quiet && !c.json)
        std::cerr << "blockft: " << b.linear << " held-out block MSE " << sci(b.mse_before)
                  << " -> " << sci(b.mse_after) << " (epoch " << b.best_epoch << ")\n";
    });
    r = ft.compress;
  } else {
    r = compress_model(model, pl, reg, out, s);
  }
  if (!lead) return 0; // rank 0 wrote the container and reports
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t numel = 0;
  for (const auto &t : r.tensors) numel += t.numel;
  double bpw = numel ? static_cast<double>(r.file_bytes) * 8.0 / static_cast<double>(numel) : 0;
  double coded_bytes = 0, coded_weights = 0;
  for (const auto &t : r.tensors)
    if (t.storage == "pipeline") {
      coded_bytes += static_cast<double>(t.stream_bytes);
      coded_weights += static_cast<double>(t.numel);
    }
  const double coded_bpw = coded_weights > 0 ? 8.0 * coded_bytes / coded_weights : 0.0;
  if (!rate.is_null()) rate["achieved_bpw"] = coded_bpw;
  if (c.json) {
    json j = {{"output", out},
              {"tensors", r.tensors.size()},
              {"weights", numel},
              {"bytes", r.file_bytes},
              {"bits_per_weight", bpw},
              {"seconds", secs},
              {"pipeline", pl.name},
              {"coded_bits_per_weight", coded_bpw},
              {"processes", job ? job->size() : 1}};
    if (calibrate_first) j["calibration_seconds"] = calib_secs;
    if (!rate.is_null()) j["rate_control"] = rate;
    std::cout << j.dump(2) << "\n";
  } else if (!c.quiet) {
    std::cout << "wrote " << out << ": " << r.tensors.size() << " tensors, " << numel
              << " weights, " << r.file_bytes << " bytes, " << fmt(bpw, 3)
              << " bits/weight (pipeline " << pl.name << ", " << fmt(secs, 2) << " s)\n";
    if (!rate.is_null())
      std::cout << "target " << fmt(rate["target_bpw"].get<double>(), 3)
                << " bits per coded weight, achieved " << fmt(coded_bpw, 3) << "\n";
  }
  return 0;
}

int cmd_decompress(const std::vector<std::string> &args) {
  Common c;
  std::string in, out, dtype_name = "F32", layout = "safetensors";
  po::options_description d("nwc decompress");
  d.add_options()("input", po::value(&in)->required(), "input .nwc file")(
      "output,o", po::value(&out)->required(), "output .safetensors file (or directory for hf)")(
      "dtype", po::value(&dtype_name)->default_value("F32"), "output dtype: F32, F16 or BF16")(
      "layout", po::value(&layout)->default_value("safetensors"),
      "safetensors: one file; hf: config.json + model.safetensors");
  add_common(d, c);
  parse(args, d, {"input"}, "nwc decompress IN.nwc -o OUT.safetensors [--dtype F32|F16|BF16]");
  DType dtype = parse_output_dtype(dtype_name);
  if (layout != "safetensors" && layout != "hf")
    throw UsageError("--layout: expected safetensors or hf, got '" + layout + "'");
  Registry reg = load_registry(c);
  if (layout == "hf") {
    Model model = open_container_model(in, reg, c.threads);
    write_hf_directory(model, out, dtype);
    if (!c.quiet) std::cout << "wrote " << out << " (HF Llama layout, " << dtype_name << ")\n";
    return 0;
  }
  Progress progress(!c.quiet && !c.json, "decompress");
  auto t0 = std::chrono::steady_clock::now();
  decompress_to_safetensors(in, out, reg, dtype, c.threads, std::ref(progress));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t bytes = std::filesystem::file_size(out);
  if (c.json)
    std::cout
        << json{{"output", out}, {"bytes", bytes}, {"dtype", dtype_name}, {"seconds", secs}}.dump(2)
        << "\n";
  else if (!c.quiet)
    std::cout << "wrote " << out << " (" << bytes << " bytes, " << dtype_name << ", "
              << fmt(secs, 2) << " s)\n";
  return 0;
}

int cmd_inspect(const std::vector<std::string> &args) {
  Common c;
  std::string in, reference;
  po::options_description d("nwc inspect");
  d.add_options()("input", po::value(&in)->required(), "input .nwc file")(
      "reference", po::value(&reference), "original model: adds MSE and SQNR per tensor");
  add_common(d, c);
  parse(args, d, {"input"}, "nwc inspect IN.nwc [--reference MODEL]");
  Registry reg = load_registry(c);
  ContainerReader reader(in);
  const auto &m = reader.manifest();
  std::unique_ptr<ContainerDecoder> decoder;
  std::optional<Model> ref;
  if (!reference.empty()) {
    decoder = std::make_unique<ContainerDecoder>(reader, reg);
    ref = load_model(reference);
  }
  json tensors = json::array();
  double total_bytes = 0, sq_err = 0, sq_sig = 0, pipe_bytes = 0;
  uint64_t total_numel = 0, pipe_numel = 0;
  for (const auto &t : m.tensors) {
    double bytes = container_tensor_bytes(m, reader.file_size(), t);
    json row = {{"name", t.name},
                {"shape", t.shape},
                {"dtype", std::string(dtype_name(t.dtype))},
                {"storage", t.storage},
                {"blocks", t.blocks.size()},
                {"stream_bytes", t.stream_bytes()},
                {"bytes", bytes},
                {"bits_per_weight", t.numel() ? bytes * 8 / static_cast<double>(t.numel()) : 0}};
    if (t.storage == "pipeline") {
      json stages = json::array();
      for (const auto &s : m.stage_configs[static_cast<size_t>(t.stage_config)].stages)
        stages.push_back(s.plugin_id);
      row["stages"] = stages;
      pipe_bytes += bytes;
      pipe_numel += t.numel();
    }
    total_bytes += bytes;
    total_numel += t.numel();
    if (ref) {
      const ModelTensor *orig = ref->find(t.name);
      if (!orig) throw Error(NWC_E_INVALID_ARG, reference + ": has no tensor " + t.name);
      if (orig->info.shape != t.shape)
        throw Error(NWC_E_INVALID_ARG, reference + ": tensor " + t.name + " has shape " +
                                           shape_str(orig->info.shape) + ", the container " +
                                           shape_str(t.shape));
      std::vector<float> a = orig->load();
      std::vector<float> b = decoder->decode_tensor(t, c.threads);
      double e = 0, s = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        double diff = static_cast<double>(a[i]) - static_cast<double>(b[i]);
        e += diff * diff;
        s += static_cast<double>(a[i]) * static_cast<double>(a[i]);
      }
      sq_err += e;
      sq_sig += s;
      double n = static_cast<double>(a.size());
      row["mse"] = n > 0 ? e / n : 0.0;
      row["sqnr_db"] = e > 0 ? 10 * std::log10(s / e) : std::numeric_limits<double>::infinity();
    }
    tensors.push_back(row);
  }
  json totals = {
      {"tensors", m.tensors.size()},
      {"weights", total_numel},
      {"bytes", reader.file_size()},
      {"bits_per_weight", total_numel ? total_bytes * 8 / static_cast<double>(total_numel) : 0},
      {"pipeline_weights", pipe_numel},
      {"pipeline_bits_per_weight",
       pipe_numel ? pipe_bytes * 8 / static_cast<double>(pipe_numel) : 0}};
  if (ref) {
    totals["mse"] = total_numel ? sq_err / static_cast<double>(total_numel) : 0;
    totals["sqnr_db"] =
        sq_err > 0 ? 10 * std::log10(sq_sig / sq_err) : std::numeric_limits<double>::infinity();
  }
  if (c.json) {
    json j = {{"file", in},
              {"format_version", kContainerVersion},
              {"pipeline", m.pipeline_name},
              {"source", {{"model", m.source_model}, {"format", m.source_format}}},
              {"architecture", m.architecture},
              {"tensors", tensors},
              {"totals", totals}};
    // JSON has no infinity: lossless tensors report sqnr_db = null.
    std::cout << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::cout << in << ": pipeline " << m.pipeline_name << ", source " << m.source_model << " ("
            << m.source_format << "), " << m.tensors.size() << " tensors\n";
  int name_width = 8;
  for (const auto &t : m.tensors)
    name_width = std::max(name_width, static_cast<int>(t.name.size()) + 2);
  std::cout << std::left << std::setw(name_width) << "tensor" << std::setw(12) << "shape"
            << std::setw(10) << "storage" << std::right << std::setw(10) << "bytes" << std::setw(8)
            << "bits/w";
  if (ref) std::cout << std::setw(12) << "MSE" << std::setw(9) << "SQNR dB";
  std::cout << "\n";
  for (const auto &row : tensors) {
    std::string shape;
    for (auto &x : row["shape"])
      shape += (shape.empty() ? "" : "x") + std::to_string(x.get<int64_t>());
    std::cout << std::left << std::setw(name_width) << row["name"].get<std::string>()
              << std::setw(12) << shape << std::setw(10) << row["storage"].get<std::string>()
              << std::right << std::setw(10) << fmt(row["bytes"].get<double>(), 0) << std::setw(8)
              << fmt(row["bits_per_weight"].get<double>(), 3);
    if (ref) {
      double sq = row["sqnr_db"].get<double>();
      std::cout << std::setw(12) << sci(row["mse"].get<double>()) << std::setw(9)
                << (std::isinf(sq) ? std::string("inf") : fmt(sq, 2));
    }
    std::cout << "\n";
  }
  std::cout << "total: " << total_numel << " weights, " << reader.file_size() << " bytes, "
            << fmt(totals["bits_per_weight"].get<double>(), 3) << " bits/weight";
  if (pipe_numel)
    std::cout << " (pipeline tensors: " << pipe_numel << " weights, "
              << fmt(totals["pipeline_bits_per_weight"].get<double>(), 3) << " bits/weight)";
  if (ref)
    std::cout << ", MSE " << sci(totals["mse"].get<double>()) << ", SQNR "
              << fmt(totals["sqnr_db"].get<double>(), 2) << " dB";
  std::cout << "\n";
  return 0;
}

json option_json(const nwc_option_spec &s) {
  json o = {{"key", s.key},
            {"type", option_type_name(s.type)},
            {"doc", s.doc ? s.doc : ""},
            {"required", (s.flags & NWC_OPTF_REQUIRED) != 0},
            {"affects_bitstream", (s.flags & NWC_OPTF_AFFECTS_BITSTREAM) != 0}};
  if (!(s.flags & NWC_OPTF_REQUIRED)) o["default"] = c_value_to_json(s.default_value);
  if (s.min <= s.max) o["range"] = {s.min, s.max};
  if (s.type == NWC_OPT_ENUM)
    o["choices"] = std::vector<std::string>(s.choices, s.choices + s.choice_count);
  if (s.unit) o["unit"] = s.unit;
  return o;
}

json plugin_json(const Plugin &p, bool with_options) {
  json j = {{"id", p.id},
            {"version", p.version},
            {"kind", kind_name(p.kind)},
            {"name", p.name},
            {"stream_version", p.stream_version},
            {"abi_version", std::to_string(NWC_ABI_MAJOR(p.abi_version)) + "." +
                                std::to_string(NWC_ABI_MINOR(p.abi_version))},
            {"library", p.library_path.string()},
            {"description", p.description}};
  if (with_options) {
    json opts = json::array();
    for (const auto &s : p.options) opts.push_back(option_json(s));
    j["options"] = opts;
  }
  return j;
}

std::string option_line(const nwc_option_spec &s) {
  json o = option_json(s);
  std::string line = std::string(s.key) + " (" + option_type_name(s.type);
  if (o.contains("default")) line += ", default " + o["default"].dump();
  if (o.contains("range"))
    line += ", " + fmt(s.min, s.min == std::floor(s.min) ? 0 : 3) + ".." +
            fmt(s.max, s.max == std::floor(s.max) ? 0 : 3);
  if (o.contains("choices")) {
    std::string ch;
    for (auto &x : o["choices"]) ch += (ch.empty() ? "" : "|") + x.get<std::string>();
    line += ", " + ch;
  }
  if (s.unit) line += std::string(", ") + s.unit;
  line += ")";
  return line;
}

// The installed plugin `id`, or an error that suggests the closest installed id.
const Plugin &installed_plugin(const Registry &reg, const std::string &id) {
  if (const Plugin *p = reg.find(id)) return *p;
  std::vector<std::string> ids;
  for (const auto &q : reg.plugins()) ids.push_back(q->id);
  std::string hint = did_you_mean(id, ids);
  throw Error(NWC_E_INVALID_ARG, "plugin " + id + " is not installed" +
                                     (hint.empty() ? "" : " (did you mean " + hint + "?)"));
}

struct MarkdownRequest {
  bool markdown = false, all = false;
  std::string output_dir;
};

// `plugins show ID --markdown` and `plugins show --all --markdown [--output-dir DIR]`: reference
// pages generated from the descriptors (nwc/host/plugin_docs.hpp), plugins in pipeline order.
int show_markdown(const Registry &reg, const Common &c, const std::string &id,
                  const MarkdownRequest &md) {
  if (!md.markdown)
    throw UsageError("plugins show: --all and --output-dir need --markdown (for every plugin as "
                     "text or JSON use `nwc plugins list [--json]`)");
  if (c.json) throw UsageError("plugins show: --markdown and --json are exclusive");
  if (md.all == !id.empty())
    throw UsageError("plugins show --markdown: give either a plugin id or --all");
  if (!md.output_dir.empty() && !md.all) throw UsageError("plugins show: --output-dir needs --all");
  if (!md.all) {
    const Plugin *p = &installed_plugin(reg, id);
    std::cout << plugin_markdown(*p);
    return 0;
  }
  auto rank = [](uint32_t kind) {
    switch (kind) {
    case NWC_KIND_CHUNKER:
      return 0;
    case NWC_KIND_TRANSFORM:
      return 1;
    case NWC_KIND_QUANTIZER:
      return 2;
    case NWC_KIND_ENTROPY_CODER:
      return 3;
    default:
      return 4;
    }
  };
  std::vector<const Plugin *> plugins;
  for (const auto &p : reg.plugins()) plugins.push_back(p.get());
  std::sort(plugins.begin(), plugins.end(), [&](const Plugin *a, const Plugin *b) {
    return std::make_pair(rank(a->kind), a->id) < std::make_pair(rank(b->kind), b->id);
  });
  if (md.output_dir.empty()) {
    std::cout << plugins_index_markdown(plugins);
    for (const Plugin *p : plugins) std::cout << "\n" << plugin_markdown(*p);
    return 0;
  }
  std::filesystem::path dir(md.output_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(NWC_E_IO, dir.string() + ": cannot create directory: " + ec.message());
  auto write_page = [&](const std::string &name, const std::string &text) {
    AtomicFile f(dir / name);
    f.write(text.data(), text.size());
    f.commit();
  };
  write_page("README.md", plugins_index_markdown(plugins));
  for (const Plugin *p : plugins) write_page(plugin_markdown_file(*p), plugin_markdown(*p));
  if (!c.quiet) std::cout << "wrote " << plugins.size() + 1 << " pages to " << dir.string() << "\n";
  return 0;
}

int cmd_plugins(const std::vector<std::string> &args) {
  Common c;
  std::string action, id;
  po::options_description d("nwc plugins");
  d.add_options()("action", po::value(&action)->required(), "list | show")("id", po::value(&id),
                                                                           "plugin id (for show)");
  MarkdownRequest md;
  d.add_options()("markdown", po::bool_switch(&md.markdown),
                  "show: the plugin's reference page in Markdown")(
      "all", po::bool_switch(&md.all), "show --markdown: every installed plugin")(
      "output-dir", po::value(&md.output_dir),
      "show --all --markdown: write <id>.md per plugin and README.md (index) here");
  add_common(d, c);
  parse(args, d, {"action", "id"},
        "nwc plugins list | nwc plugins show ID [--markdown] | "
        "nwc plugins show --all --markdown [--output-dir DIR]");
  Registry reg = load_registry(c);
  if (action == "list") {
    if (c.json) {
      json j = {{"plugins", json::array()}, {"problems", json::array()}};
      for (const auto &p : reg.plugins()) j["plugins"].push_back(plugin_json(*p, true));
      for (const auto &dgn : reg.diagnostics())
        j["problems"].push_back({{"path", dgn.path.string()}, {"message", dgn.message}});
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    size_t id_width = 20;
    for (const auto &p : reg.plugins()) id_width = std::max(id_width, p->id.size());
    for (const auto &p : reg.plugins()) {
      std::cout << std::left << std::setw(static_cast<int>(id_width + 2)) << p->id << std::setw(13)
                << kind_name(p->kind) << std::setw(8) << p->version
                << p->library_path.filename().string() << "\n";
      for (const auto &s : p->options) std::cout << "    " << option_line(s) << "\n";
    }
    if (reg.plugins().empty())
      std::cout << "no plugins found (searched --plugin-path, NWC_PLUGIN_PATH and "
                   "<prefix>/lib/nwc/plugins)\n";
    return 0;
  }
  if (action == "show" && (md.markdown || md.all || !md.output_dir.empty()))
    return show_markdown(reg, c, id, md);
  if (action == "show") {
    if (id.empty())
      throw UsageError("plugins show: missing plugin id (usage: nwc plugins show ID)");
    const Plugin *p = &installed_plugin(reg, id);
    if (c.json) {
      std::cout << plugin_json(*p, true).dump(2) << "\n";
      return 0;
    }
    std::cout << p->id << " " << p->version << " (" << kind_name(p->kind) << ", stream version "
              << p->stream_version << ")\n  " << p->library_path.string() << "\n\n"
              << p->description << "\n\noptions:\n";
    if (p->options.empty()) std::cout << "  (none)\n";
    for (const auto &s : p->options)
      std::cout << "  " << option_line(s) << "\n      " << (s.doc ? s.doc : "") << "\n";
    return 0;
  }
  throw UsageError("plugins: unknown action '" + action + "' (expected list or show)");
}

int cmd_eval(const std::vector<std::string> &args) {
  Common c;
  std::string model_path, tok_path, text_path;
  EvalSettings es;
  po::options_description d("nwc eval");
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "tokenizer,t", po::value(&tok_path)->required(), "tokenizer.bin or SentencePiece .model")(
      "text", po::value(&text_path)->required(), "UTF-8 text to evaluate on")(
      "seq-len", po::value(&es.seq_len)->default_value(0), "window length (0 = model maximum)")(
      "max-tokens", po::value(&es.max_tokens)->default_value(0), "truncate the token stream")(
      "batch", po::value(&es.batch)->default_value(1), "windows per forward pass");
  add_common(d, c);
  parse(args, d, {}, "nwc eval --model M --tokenizer T --text FILE [--seq-len N] [--max-tokens N]");
  if (es.seq_len < 0 || es.max_tokens < 0 || es.batch < 1)
    throw UsageError("--seq-len and --max-tokens must be >= 0, --batch >= 1");
  Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  // Windows run in parallel, each on one LibTorch thread: on a loaded machine, intra-op threads
  // that spin at barriers are several times slower than this.
  LlamaModel llama(model, 1);
  es.threads = c.threads;
  auto tok = load_tokenizer(tok_path, model.arch.vocab_size);
  auto stream = ppl_token_stream(read_text_file(text_path), *tok);
  EvalResult r = evaluate_ppl(llama, stream, es);
  if (c.json) {
    std::cout << json{{"protocol", r.protocol},
                      {"model", model_path},
                      {"text", text_path},
                      {"tokens", r.tokens},
                      {"windows", r.windows},
                      {"seq_len", r.seq_len},
                      {"predicted_tokens", r.predicted_tokens},
                      {"nll", r.nll},
                      {"ppl", r.ppl},
                      {"seconds", r.seconds},
                      {"tokens_per_second", r.tokens_per_second}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "protocol " << r.protocol << "\n"
            << "model    " << model_path << "\n"
            << "text     " << text_path << "\n"
            << "tokens   " << r.tokens << " (" << r.windows << " windows x " << r.seq_len << ", "
            << r.predicted_tokens << " predicted)\n"
            << "nll      " << fmt(r.nll, 5) << "\n"
            << "ppl      " << fmt(r.ppl, 4) << "\n"
            << "speed    " << fmt(r.tokens_per_second, 0) << " tokens/s (" << fmt(r.seconds, 2)
            << " s)\n";
  return 0;
}

int cmd_generate(const std::vector<std::string> &args) {
  Common c;
  std::string model_path, tok_path, prompt;
  int64_t steps = 256;
  po::options_description d("nwc generate");
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "tokenizer,t", po::value(&tok_path)->required(), "tokenizer.bin or SentencePiece .model")(
      "prompt", po::value(&prompt)->default_value(""), "text to continue (BOS is prepended)")(
      "steps", po::value(&steps)->default_value(256), "maximum number of new tokens");
  add_common(d, c);
  parse(args, d, {}, "nwc generate --model M --tokenizer T [--prompt S] [--steps N]");
  if (steps < 0) throw UsageError("--steps must be >= 0");
  Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  LlamaModel llama(model, c.threads);
  auto tok = load_tokenizer(tok_path, model.arch.vocab_size);
  std::vector<int32_t> ids;
  std::string text = generate_text(llama, *tok, prompt, steps, &ids);
  if (c.json) {
    std::cout << json{{"text", text}, {"tokens", ids}}.dump(2) << "\n";
    return 0;
  }
  std::cout << text << "\n";
  return 0;
}

int cmd_calibrate(const std::vector<std::string> &args) {
  Common c;
  std::string model_path, tok_path, text_path, out;
  CalibrationSettings cs;
  po::options_description d("nwc calibrate");
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "tokenizer,t", po::value(&tok_path)->required(), "tokenizer.bin or SentencePiece .model")(
      "text", po::value(&text_path),
      "calibration text (default: $NWC_DATA/text/tinystories-calib.txt; never the eval text)")(
      "tokens", po::value(&cs.tokens)->default_value(65536), "tokens to run (whole windows)")(
      "seq-len", po::value(&cs.seq_len)->default_value(0), "window length (0 = model maximum)")(
      "output,o", po::value(&out)->required(), "output .safetensors file of Hessians");
  add_common(d, c);
  parse(args, d, {}, "nwc calibrate --model M --tokenizer T [--text FILE] -o H.safetensors");
  if (cs.tokens < 1 || cs.seq_len < 0) throw UsageError("--tokens must be >= 1, --seq-len >= 0");
  text_path = calibration_text(text_path, "--text");
  Job *job = current_job();
  const bool lead = !job || job->rank() == 0;
  Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  cs.threads = c.threads;
  auto tok = load_tokenizer(tok_path, model.arch.vocab_size);
  std::string text = read_text_file(text_path);
  const std::string fp = lead ? model_fingerprint(model) : "";
  json inputs = json::array();
  auto t0 = std::chrono::steady_clock::now();
  // Layer by layer; each Hessian is written as its layer finishes (rank 0 writes under mpirun).
  Calibration cal = calibrate_to_file(model, ppl_token_stream(text, *tok), cs, fp, text_hash(text),
                                      out, job, [&](const Hessian &h) {
                                        double trace = 0;
                                        for (int64_t i = 0; i < h.dim; ++i)
                                          trace += h.h[static_cast<size_t>(i * h.dim + i)];
                                        inputs.push_back({{"input", h.input},
                                                          {"linears", h.linears},
                                                          {"dim", h.dim},
                                                          {"count", h.count},
                                                          {"trace", trace}});
                                      });
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!lead) return 0;
  if (c.json) {
    std::cout << json{{"output", out},
                      {"tokens", cal.tokens},
                      {"seq_len", cal.seq_len},
                      {"model_hash", cal.model_hash},
                      {"text_hash", cal.text_hash},
                      {"seconds", secs},
                      {"processes", job ? job->size() : 1},
                      {"tokens_per_second", secs > 0 ? static_cast<double>(cal.tokens) / secs : 0},
                      {"inputs", inputs}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "calibrated " << model_path << " on " << cal.tokens << " tokens of " << text_path
            << " (windows of " << cal.seq_len << ", " << fmt(secs, 2) << " s, "
            << fmt(static_cast<double>(cal.tokens) / std::max(secs, 1e-9), 0) << " tokens/s)\n";
  std::cout << std::left << std::setw(22) << "input" << std::setw(6) << "dim" << std::setw(12)
            << "trace(H)"
            << "linears\n";
  for (const auto &row : inputs) {
    std::string names;
    for (const auto &l : row["linears"]) {
      std::string n = l.get<std::string>();
      auto dot = n.rfind('.', n.size() - 8); // "...q_proj.weight" -> "q_proj"
      names += (names.empty() ? "" : ", ") + n.substr(dot + 1, n.size() - dot - 8);
    }
    std::cout << std::left << std::setw(22) << row["input"].get<std::string>() << std::setw(6)
              << row["dim"].get<int64_t>() << std::setw(12) << sci(row["trace"].get<double>())
              << names << "\n";
  }
  std::cout << "wrote " << out << " (model " << cal.model_hash << ", text " << cal.text_hash
            << ")\n";
  return 0;
}

int cmd_train_codec(const std::vector<std::string> &args) {
  Common c;
  TrainCodecSettings ts;
  std::vector<std::string> models;
  std::string out, coefficients, layer_norm = "on";
  po::options_description d("nwc train-codec");
  d.add_options()("model,m", po::value(&models)->required()->composing(),
                  "model whose decoder-block linear weights form the training set (repeatable)")(
      "lambda", po::value(&ts.lambda)->required(),
      "rate-distortion trade-off (larger = more bits)")("output,o", po::value(&out)->required(),
                                                        "output codec file (.nwcc)")(
      "steps", po::value(&ts.steps)->default_value(2000),
      "training steps")("batch", po::value(&ts.batch)->default_value(256), "samples per step")(
      "sample-length", po::value(&ts.sample_length)->default_value(0),
      "weights per sample, a multiple of 16 (0 = min(1024, shortest column))")(
      "width", po::value(&ts.width)->default_value(64),
      "hidden width D")("blocks", po::value(&ts.blocks)->default_value(1), "residual blocks")(
      "latent", po::value(&ts.latent)->default_value(16),
      "latent dimension M")("levels", po::value(&ts.levels)->default_value(4), "quality levels Q")(
      "layer-norm", po::value(&layer_norm)->default_value("on"), "LayerNorm in the blocks: on|off")(
      "coefficients", po::value(&coefficients),
      "rate weight per level, comma-separated (default 3.4,1.2,0.1,0.05 for Q = 4)")(
      "normalize", po::value(&ts.normalize)->default_value("scalar"),
      "scalar (dataset mean/std, as the reference) or row (per-row std, as at compression)")(
      "lr", po::value(&ts.lr)->default_value(1e-4), "Adam learning rate of the transforms")(
      "aux-lr", po::value(&ts.aux_lr)->default_value(1e-3), "Adam learning rate of the quantiles")(
      "lr-drop", po::value(&ts.lr_drop)->default_value(0),
      "step after which both learning rates drop tenfold (0 = constant rate)")(
      "clip", po::value(&ts.clip)->default_value(1.0),
      "gradient norm clip (0 = off)")("eval-every", po::value(&ts.eval_every)->default_value(250),
                                      "steps between held-out evaluations (and checkpoints)")(
      "validation-samples", po::value(&ts.validation_samples)->default_value(1000),
      "held-out samples (at most 10% of the data)")("seed", po::value(&ts.seed)->default_value(100),
                                                    "random seed")(
      "restart", "ignore an existing checkpoint and start afresh");
  add_common(d, c);
  auto vm =
      parse(args, d, {},
            "nwc train-codec --model M [--model M2 ...] --lambda L -o codec.nwcc [--steps N]");
  if (layer_norm != "on" && layer_norm != "off") throw UsageError("--layer-norm: on or off");
  ts.layer_norm = layer_norm == "on";
  ts.resume = !vm.count("restart");
  ts.threads = c.threads;
  for (const auto &m : models) ts.models.emplace_back(m);
  ts.output = out;
  if (!coefficients.empty()) {
    std::stringstream ss(coefficients);
    for (std::string item; std::getline(ss, item, ',');) {
      try {
        ts.level_coefficients.push_back(std::stod(item));
      } catch (const std::exception &) {
        throw UsageError("--coefficients: '" + item + "' is not a number");
      }
    }
  }
  Registry reg = load_registry(c);
  if (!c.quiet && !c.json) ts.log = [](const std::string &line) { std::cerr << line << "\n"; };
  TrainCodecResult r = train_codec(ts, reg);
  json levels = json::array();
  for (const auto &l : r.validation)
    levels.push_back({{"level", l.level},
                      {"bits_per_weight", l.bits_per_weight},
                      {"estimate_bpw", l.estimate_bpw},
                      {"mse", l.mse}});
  if (c.json) {
    std::cout << json{{"output", out},
                      {"steps", r.steps},
                      {"best_step", r.best_step},
                      {"resumed_from", r.resumed_from},
                      {"best_loss", r.best_loss},
                      {"seconds", r.seconds},
                      {"train_samples", r.train_samples},
                      {"validation_samples", r.validation_samples},
                      {"sample_length", r.sample_length},
                      {"dataset_std", r.dataset_std},
                      {"train_loss", r.train_loss},
                      {"validation", levels}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "wrote " << out << " (best held-out loss " << fmt(r.best_loss, 4) << " at step "
            << r.best_step << " of " << r.steps << ", " << fmt(r.seconds, 1) << " s)\n";
  std::cout << "level  bits/w (rANS)  bits/w (estimate)  MSE/sigma^2\n";
  for (const auto &l : r.validation)
    std::cout << std::left << std::setw(7) << l.level << std::setw(15) << fmt(l.bits_per_weight, 3)
              << std::setw(19) << fmt(l.estimate_bpw, 3) << sci(l.mse) << "\n";
  return 0;
}

int cmd_codec(const std::vector<std::string> &args) {
  if (args.empty() || (args[0] != "info" && args[0] != "measure"))
    throw UsageError("nwc codec info FILE | nwc codec measure FILE --model M [--level Q]");
  const std::string sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  Common c;
  CodecMeasureSettings ms;
  std::string file;
  po::options_description d("nwc codec " + sub);
  d.add_options()("codec", po::value(&file)->required(), "codec file (.nwcc)");
  if (sub == "measure")
    d.add_options()("model,m", po::value<std::string>()->required(), "model to code")(
        "level", po::value(&ms.level)->default_value(0), "quality level of every column")(
        "block", po::value(&ms.block)->default_value(128), "columns per rANS stream");
  add_common(d, c);
  auto vm = parse(rest, d, {"codec"},
                  sub == "info" ? "nwc codec info FILE.nwcc"
                                : "nwc codec measure FILE.nwcc --model M [--level Q]");
  if (sub == "info") {
    neural::CodecFile f = neural::load_codec(file);
    MappedFile mf(file);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(container_checksum(mf.data(), mf.size())));
    json j = f.metadata;
    j["file"] = file;
    j["bytes"] = mf.size();
    j["xxh64"] = hex;
    j["tables"] = {{"channels", f.tables.channels},
                   {"max_length", f.tables.max_length},
                   {"lengths", f.tables.lengths},
                   {"offsets", f.tables.offsets},
                   {"medians", f.tables.medians}};
    if (c.json) {
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    const auto &cfg = f.config;
    std::cout << file << ": NWC codec, " << mf.size() << " bytes, xxh64 " << hex << "\n"
              << "  chunk " << cfg.chunk << ", width " << cfg.width << ", " << cfg.blocks
              << " residual blocks, latent " << cfg.latent << ", " << cfg.levels
              << " quality levels, LayerNorm " << (cfg.layer_norm ? "on" : "off") << "\n";
    if (j.contains("lambda")) std::cout << "  lambda " << j["lambda"].dump() << "\n";
    if (j.contains("training")) std::cout << "  training " << j["training"].dump() << "\n";
    if (j.contains("validation")) std::cout << "  validation " << j["validation"].dump() << "\n";
    return 0;
  }
  ms.codec = file;
  ms.model = vm["model"].as<std::string>();
  Registry reg = load_registry(c);
  CodecMeasure m = measure_codec(ms, reg);
  const double gap = m.estimate_bpw > 0 ? (m.rans_bpw / m.estimate_bpw - 1.0) * 100.0 : 0.0;
  if (c.json) {
    json tensors = json::array();
    for (const auto &t : m.tensors)
      tensors.push_back({{"name", t.name},
                         {"shape", {t.rows, t.cols}},
                         {"estimate_bits", t.estimate_bits},
                         {"rans_bits", t.rans_bits},
                         {"side_bits", t.side_bits},
                         {"squared_error", t.squared_error}});
    std::cout << json{{"codec", file},
                      {"model", ms.model},
                      {"level", ms.level},
                      {"weights", m.weights},
                      {"estimate_bpw", m.estimate_bpw},
                      {"rans_bpw", m.rans_bpw},
                      {"side_bpw", m.side_bpw},
                      {"bits_per_weight", m.rans_bpw + m.side_bpw},
                      {"rans_over_estimate_percent", gap},
                      {"mse", m.mse},
                      {"variance", m.variance},
                      {"shannon_mse", m.shannon_mse},
                      {"tensors", tensors}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "codec " << file << " on " << ms.model << " (level " << ms.level << ", "
            << static_cast<int64_t>(m.weights) << " linear weights)\n"
            << "  latents: rANS " << fmt(m.rans_bpw, 4) << " bits/weight, estimate "
            << fmt(m.estimate_bpw, 4) << " (rANS " << (gap >= 0 ? "+" : "") << fmt(gap, 2) << "%)\n"
            << "  row scales: " << fmt(m.side_bpw, 4) << " bits/weight; total "
            << fmt(m.rans_bpw + m.side_bpw, 4) << "\n"
            << "  MSE " << sci(m.mse) << " (weight variance " << sci(m.variance)
            << ", Shannon bound at this rate " << sci(m.shannon_mse) << ")\n";
  return 0;
}

int cmd_convert(const std::vector<std::string> &args) {
  Common c;
  std::string model_path, out, layout = "hf", dtype_name = "F32";
  po::options_description d("nwc convert");
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "output,o", po::value(&out)->required(),
      "output directory")("layout", po::value(&layout)->default_value("hf"),
                          "hf: config.json + model.safetensors; gguf: one GGUF v3 file")(
      "dtype", po::value(&dtype_name)->default_value("F32"), "F32, F16 or BF16");
  add_common(d, c);
  parse(args, d, {}, "nwc convert --model M -o OUT [--layout hf|gguf] [--dtype F32|F16|BF16]");
  if (layout != "hf" && layout != "gguf")
    throw UsageError("--layout: expected hf or gguf, got '" + layout + "'");
  DType dtype = parse_output_dtype(dtype_name);
  Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  if (layout == "gguf")
    write_gguf(model, out, dtype);
  else
    write_hf_directory(model, out, dtype);
  if (!c.quiet)
    std::cout << "wrote " << out << " (" << (layout == "hf" ? "HF Llama directory" : "GGUF v3")
              << ", " << dtype_name << ")\n";
  return 0;
}

int cmd_bench(const std::vector<std::string> &args) {
  Common c;
  std::string model_path, tok_path, eval_text, calib_text, out;
  std::vector<std::string> pipelines;
  BenchSettings bs;
  po::options_description d("nwc bench");
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or directory")(
      "tokenizer,t", po::value(&tok_path)->required(), "tokenizer.bin or SentencePiece .model")(
      "pipelines,p", po::value(&pipelines)->multitoken()->required(),
      "pipeline files, or directories of *.toml files")(
      "eval-text", po::value(&eval_text),
      "evaluation text (default: $NWC_DATA/text/tinystories-eval.txt)")(
      "calib-text", po::value(&calib_text),
      "calibration text (default: $NWC_DATA/text/tinystories-calib.txt)")(
      "max-tokens", po::value(&bs.max_tokens)->default_value(0), "truncate the evaluation stream")(
      "calib-tokens", po::value(&bs.calib_tokens)->default_value(65536),
      "calibration tokens")("output,o", po::value(&out)->required(), "results directory");
  add_common(d, c);
  parse(args, d, {},
        "nwc bench --model M --tokenizer T --pipelines a.toml b.toml ... -o results/ "
        "[--eval-text F] [--calib-text F] [--max-tokens N]");
  if (bs.max_tokens < 0 || bs.calib_tokens < 1)
    throw UsageError("--max-tokens must be >= 0 and --calib-tokens >= 1");
  const char *data = std::getenv("NWC_DATA");
  auto from_data = [&](std::string &path, const char *name, const char *flag) {
    if (!path.empty()) return;
    if (!data || !*data)
      throw UsageError(std::string(flag) + " is required (or set NWC_DATA to use its text/" + name +
                       ")");
    path = (std::filesystem::path(data) / "text" / name).string();
  };
  from_data(eval_text, "tinystories-eval.txt", "--eval-text");
  from_data(calib_text, "tinystories-calib.txt", "--calib-text");
  for (const auto &p : pipelines) {
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> files;
      for (const auto &e : std::filesystem::directory_iterator(p))
        if (e.path().extension() == ".toml") files.push_back(e.path());
      std::sort(files.begin(), files.end());
      if (files.empty()) throw Error(NWC_E_INVALID_ARG, p + ": no .toml pipeline files");
      bs.pipelines.insert(bs.pipelines.end(), files.begin(), files.end());
    } else {
      bs.pipelines.emplace_back(p);
    }
  }
  bs.model = model_path;
  bs.tokenizer = tok_path;
  bs.eval_text = eval_text;
  bs.calib_text = calib_text;
  bs.output_dir = out;
  bs.threads = c.threads;
  bs.argv = {"nwc", "bench"};
  bs.argv.insert(bs.argv.end(), args.begin(), args.end());
  Registry reg = load_registry(c);
  auto rows = run_bench(bs, reg, [&](const std::string &line) {
    if (!c.quiet) std::cerr << "bench: " << line << "\n";
  });
  if (c.json) {
    json j = json::array();
    for (const auto &r : rows) j.push_back(r.to_json());
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "wrote " << out << "/results.md, results.csv, results.json, rate_ppl.png/svg ("
              << rows.size() << " rows)\n";
  }
  return 0;
}

int cmd_synth(const std::vector<std::string> &args) {
  Common c;
  std::string out, preset = "tiny", dtype_text = "BF16", shard_size = "0", tied;
  int64_t layers = 0, dim = 0, hidden = 0, heads = 0, kv_heads = 0, vocab = 0, seq = 0;
  uint64_t seed = 0;
  po::options_description d("nwc synth");
  d.add_options()("output,o", po::value(&out)->required(), "output directory (HF Llama layout)")(
      "preset", po::value(&preset)->default_value("tiny"),
      "tiny, small, llama2-7b, llama3-8b, llama3-8b-block or llama3.2-1b")(
      "layers", po::value(&layers), "decoder layers (overrides the preset)")(
      "dim", po::value(&dim), "hidden size")("hidden-dim", po::value(&hidden), "MLP size")(
      "heads", po::value(&heads), "attention heads")("kv-heads", po::value(&kv_heads),
                                                     "key/value heads")(
      "vocab", po::value(&vocab), "vocabulary size")("max-seq-len", po::value(&seq),
                                                     "max_position_embeddings")(
      "tied-embeddings", po::value(&tied), "on or off: lm_head shares the embedding")(
      "seed", po::value(&seed)->default_value(0), "random seed (same seed, same bytes)")(
      "dtype", po::value(&dtype_text)->default_value("BF16"),
      "BF16, F16 or F32")("shard-size", po::value(&shard_size)->default_value("0"),
                          "bytes per shard, e.g. 5GB or 500MiB (0 = one model.safetensors)");
  add_common(d, c);
  auto vm = parse(args, d, {},
                  "nwc synth -o DIR [--preset NAME] [--layers N] [--dim D --hidden-dim F "
                  "--heads H --kv-heads K --vocab V --max-seq-len L] [--seed S] "
                  "[--dtype BF16|F16|F32] [--shard-size 5GB]");
  SynthSpec spec;
  try {
    spec = synth_preset(preset);
  } catch (const Error &e) {
    throw UsageError(std::string("--preset: ") + e.what());
  }
  auto over = [&](const char *flag, int64_t v, int64_t &field) {
    if (!vm.count(flag)) return;
    if (v < 1)
      throw UsageError(std::string("--") + flag + ": expected >= 1, got " + std::to_string(v));
    field = v;
  };
  over("layers", layers, spec.arch.n_layers);
  over("dim", dim, spec.arch.dim);
  over("hidden-dim", hidden, spec.arch.hidden_dim);
  over("heads", heads, spec.arch.n_heads);
  over("kv-heads", kv_heads, spec.arch.n_kv_heads);
  over("vocab", vocab, spec.arch.vocab_size);
  over("max-seq-len", seq, spec.arch.max_seq_len);
  for (const char *flag :
       {"layers", "dim", "hidden-dim", "heads", "kv-heads", "vocab", "max-seq-len"})
    if (vm.count(flag)) spec.preset = preset + " (modified)";
  if (vm.count("tied-embeddings")) {
    if (tied != "on" && tied != "off")
      throw UsageError("--tied-embeddings: expected on or off, got '" + tied + "'");
    spec.arch.tied_embeddings = tied == "on";
  }
  spec.seed = seed;
  spec.dtype = parse_output_dtype(dtype_text);
  try {
    spec.shard_bytes = parse_byte_size(shard_size);
  } catch (const Error &e) {
    throw UsageError(std::string("--shard-size: ") + e.what());
  }
  spec.threads = c.threads;
  try {
    plan_synthetic_model(spec); // checks every value: a bad one is a usage error, caught up front
  } catch (const Error &e) {
    throw UsageError(e.what());
  }
  Progress prog(!c.quiet && !c.json, "synth");
  const SynthResult r = write_synthetic_model(spec, out, std::ref(prog));
  const double mbps = r.seconds > 0 ? static_cast<double>(r.file_bytes) / 1e6 / r.seconds : 0;
  if (c.json) {
    std::cout << json{{"output", r.dir.string()},
                      {"preset", spec.preset},
                      {"seed", spec.seed},
                      {"dtype", std::string(dtype_name(spec.dtype))},
                      {"architecture", spec.arch.to_json()},
                      {"files", r.files},
                      {"tensors", r.tensors},
                      {"parameters", r.parameters},
                      {"data_bytes", r.data_bytes},
                      {"bytes", r.file_bytes},
                      {"seconds", r.seconds},
                      {"mb_per_second", mbps}}
                     .dump(2)
              << "\n";
  } else if (!c.quiet) {
    std::cout << "wrote " << r.dir.string() << ": " << r.tensors << " tensors, " << r.parameters
              << " parameters, " << r.file_bytes << " bytes (" << dtype_name(spec.dtype) << ", "
              << r.files.size() << (r.files.size() == 1 ? " file" : " files") << ") in "
              << fmt(r.seconds, 2) << " s (" << fmt(mbps, 1) << " MB/s)\n";
  }
  return 0;
}

void print_help() {
  std::cout << "nwc " << kVersion << " — compress the weights of language models\n\n"
            << "usage: nwc <command> [options]\n\n"
            << "commands:\n"
            << "  compress MODEL --pipeline FILE.toml -o OUT.nwc   code a model into a container\n"
            << "  decompress IN.nwc -o OUT.safetensors              decode every tensor\n"
            << "  inspect IN.nwc [--reference MODEL]                sizes, bits/weight, MSE\n"
            << "  eval --model M --tokenizer T --text FILE          perplexity (protocol ppl-v1)\n"
            << "  generate --model M --tokenizer T [--prompt S]     greedy decoding\n"
            << "  calibrate --model M --tokenizer T --text F -o H   per-linear input Hessians\n"
            << "  convert --model M -o DIR --layout hf              HF Llama directory\n"
            << "  synth -o DIR [--preset llama3-8b]                 synthetic Llama checkpoint\n"
            << "  bench --model M --tokenizer T --pipelines ... -o D compare pipelines\n"
            << "  train-codec --model M --lambda L -o C.nwcc       train an NWC neural codec\n"
            << "  codec info C.nwcc | codec measure C.nwcc -m M    a codec's metadata, its rates\n"
            << "  plugins list | plugins show ID                    installed plugins, options\n"
            << "  plugins check ID... | --all                       exercise plugins in a child\n\n"
            << "every command takes --json, --quiet, --threads N, --plugin-path DIR, --help\n"
            << "under mpirun -np N, compress and calibrate share their work (docs/cluster.md)\n";
}

int run_command(const std::string &cmd, const std::vector<std::string> &args) {
  if (cmd == "compress") return cmd_compress(args);
  if (cmd == "decompress") return cmd_decompress(args);
  if (cmd == "inspect") return cmd_inspect(args);
  if (cmd == "plugins" && !args.empty() && args[0] == "check")
    return nwc::cli::plugins_check({args.begin() + 1, args.end()});
  if (cmd == nwc::cli::kPluginCheckChild) return nwc::cli::plugin_check_child(args);
  if (cmd == "plugins") return cmd_plugins(args);
  if (cmd == "eval") return cmd_eval(args);
  if (cmd == "generate") return cmd_generate(args);
  if (cmd == "calibrate") return cmd_calibrate(args);
  if (cmd == "convert") return cmd_convert(args);
  if (cmd == "synth") return cmd_synth(args);
  if (cmd == "bench") return cmd_bench(args);
  if (cmd == "train-codec") return cmd_train_codec(args);
  if (cmd == "codec") return cmd_codec(args);
  throw UsageError("unknown command '" + cmd + "' (try nwc --help)");
}

} // namespace

int main(int argc, char **argv) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help();
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::cout << "nwc " << kVersion << " (plugin ABI " << NWC_ABI_VERSION_MAJOR << "."
              << NWC_ABI_VERSION_MINOR << ", container v" << kContainerVersion << ")\n";
    return 0;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  Job *job = nullptr;
  int rc = 1;
  std::string where = "nwc";
  try {
    job = current_job();
    if (job) {
      where =
          "nwc (rank " + std::to_string(job->rank()) + " of " + std::to_string(job->size()) + ")";
      // Anything else would run N copies writing the same files.
      if (cmd != "compress" && cmd != "calibrate")
        throw UsageError("nwc " + cmd +
                         " runs in one process; under mpirun, compress and "
                         "calibrate share their work");
    }
    rc = run_command(cmd, args);
    finish_job();
    return rc;
  } catch (const UsageError &e) {
    std::cerr << where + ": usage error: " + e.what() + "\n"; // one write: ranks interleave
    rc = 2;
  } catch (const std::exception &e) { // nwc::Error and anything else
    std::cerr << where + ": error: " + e.what() + "\n";
  }
  if (job) job->abort(rc); // the other ranks would wait for this one forever
  return rc;
}
