// nwc bench --model M --tokenizer T --pipelines A.toml B.toml|DIR ... -o DIR
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/tools/bench.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>

namespace nwc::cli {

namespace {

// `path`, else $NWC_DATA/text/NAME (a usage error naming `flag` without NWC_DATA).
void default_from_data(std::string &path, const char *name, const char *flag) {
  if (!path.empty()) return;
  const char *data = std::getenv("NWC_DATA");
  if (!data || !*data)
    throw UsageError(std::string(flag) + " is required (or set NWC_DATA to use its text/" + name +
                     ")");
  path = (std::filesystem::path(data) / "text" / name).string();
}

// Pipeline files as given; a directory stands for its *.toml files in name order.
std::vector<std::filesystem::path> pipeline_files(const std::vector<std::string> &given) {
  std::vector<std::filesystem::path> out;
  for (const auto &p : given) {
    if (!std::filesystem::is_directory(p)) {
      out.emplace_back(p);
      continue;
    }
    std::vector<std::filesystem::path> files;
    for (const auto &e : std::filesystem::directory_iterator(p))
      if (e.path().extension() == ".toml") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw Error(NWC_E_INVALID_ARG, p + ": no .toml pipeline files");
    out.insert(out.end(), files.begin(), files.end());
  }
  return out;
}

} // namespace

int cmd_bench(const Command &self, const Args &args) {
  Common c;
  std::string model_path, tok_path, eval_text, calib_text, out;
  std::vector<std::string> pipelines;
  tools::BenchSettings bs;
  po::options_description d(self.title());
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or directory")(
      "tokenizer,t", po::value(&tok_path)->required(),
      "tokenizer: llama2.c tokenizer.bin, SentencePiece .model, HF tokenizer.json, or a model "
      "directory holding one")("pipelines,p", po::value(&pipelines)->multitoken()->required(),
                               "pipeline files, or directories of *.toml files")(
      "eval-text", po::value(&eval_text),
      "evaluation text (default: $NWC_DATA/text/tinystories-eval.txt)")(
      "calib-text", po::value(&calib_text),
      "calibration text (default: $NWC_DATA/text/tinystories-calib.txt)")(
      "max-tokens", po::value(&bs.max_tokens)->default_value(0), "truncate the evaluation stream")(
      "calib-tokens", po::value(&bs.calib_tokens)->default_value(65536),
      "calibration tokens")("output,o", po::value(&out)->required(), "results directory");
  add_common(d, c);
  parse(args, d, {}, self.usage);
  if (bs.max_tokens < 0 || bs.calib_tokens < 1)
    throw UsageError("--max-tokens must be >= 0 and --calib-tokens >= 1");
  default_from_data(eval_text, "tinystories-eval.txt", "--eval-text");
  default_from_data(calib_text, "tinystories-calib.txt", "--calib-text");
  bs.pipelines = pipeline_files(pipelines);
  bs.model = model_path;
  bs.tokenizer = tok_path;
  bs.eval_text = eval_text;
  bs.calib_text = calib_text;
  bs.output_dir = out;
  bs.threads = c.threads;
  bs.argv = {"nwc", "bench"};
  bs.argv.insert(bs.argv.end(), args.begin(), args.end());
  host::Registry reg = load_registry(c);
  auto rows = tools::run_bench(bs, reg, [&](const std::string &line) {
    if (!c.quiet) std::cerr << "bench: " << line << "\n";
  });
  if (c.json) {
    json j = json::array();
    for (const auto &r : rows) j.push_back(r.to_json());
    print_json(j);
  } else {
    std::cout << "wrote " << out
              << "/results.md, results.csv, results.json, rate_ppl.png/svg, rate_ppl_file.png/svg ("
              << rows.size() << " rows)\n";
  }
  return 0;
}

} // namespace nwc::cli
