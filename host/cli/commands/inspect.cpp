// nwc inspect IN.nwc [--reference MODEL]
#include "commands/commands.hpp"
#include "common.hpp"
#include "container_figures.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>

namespace nwc::cli {

namespace {

json figures_json(const ContainerReader &reader, const ContainerFigures &f, const std::string &in) {
  const auto &m = reader.manifest();
  json tensors = json::array();
  for (const auto &row : f.tensors) {
    const TensorRecord &t = *row.record;
    json j = {{"name", t.name},
              {"shape", t.shape},
              {"dtype", std::string(dtype_name(t.dtype))},
              {"storage", t.storage},
              {"blocks", t.blocks.size()},
              {"stream_bytes", t.stream_bytes()},
              {"bytes", row.bytes},
              {"bits_per_weight", row.bits_per_weight}};
    if (t.storage == "pipeline") j["stages"] = row.stages;
    if (f.compared) {
      j["mse"] = row.mse;
      j["sqnr_db"] = row.sqnr_db;
    }
    tensors.push_back(j);
  }
  json totals = {{"tensors", m.tensors.size()},
                 {"weights", f.weights},
                 {"bytes", f.file_bytes},
                 {"bits_per_weight", f.bits_per_weight},
                 {"pipeline_weights", f.pipeline_weights},
                 {"pipeline_bits_per_weight", f.pipeline_bits_per_weight}};
  if (f.compared) {
    totals["mse"] = f.mse;
    totals["sqnr_db"] = f.sqnr_db;
  }
  return {{"file", in},
          {"format_version", kContainerVersion},
          {"pipeline", m.pipeline_name},
          {"source", {{"model", m.source_model}, {"format", m.source_format}}},
          {"architecture", m.architecture},
          {"tensors", tensors},
          {"totals", totals}};
}

void print_table(const ContainerReader &reader, const ContainerFigures &f, const std::string &in) {
  const auto &m = reader.manifest();
  std::cout << in << ": pipeline " << m.pipeline_name << ", source " << m.source_model << " ("
            << m.source_format << "), " << m.tensors.size() << " tensors\n";
  int name_width = 8;
  for (const auto &t : m.tensors)
    name_width = std::max(name_width, static_cast<int>(t.name.size()) + 2);
  std::cout << std::left << std::setw(name_width) << "tensor" << std::setw(12) << "shape"
            << std::setw(10) << "storage" << std::right << std::setw(10) << "bytes" << std::setw(8)
            << "bits/w";
  if (f.compared) std::cout << std::setw(12) << "MSE" << std::setw(9) << "SQNR dB";
  std::cout << "\n";
  for (const auto &row : f.tensors) {
    const TensorRecord &t = *row.record;
    std::string shape;
    for (int64_t x : t.shape) shape += (shape.empty() ? "" : "x") + std::to_string(x);
    std::cout << std::left << std::setw(name_width) << t.name << std::setw(12) << shape
              << std::setw(10) << t.storage << std::right << std::setw(10) << fmt(row.bytes, 0)
              << std::setw(8) << fmt(row.bits_per_weight, 3);
    if (f.compared)
      std::cout << std::setw(12) << sci(row.mse) << std::setw(9)
                << (std::isinf(row.sqnr_db) ? std::string("inf") : fmt(row.sqnr_db, 2));
    std::cout << "\n";
  }
  std::cout << "total: " << f.weights << " weights, " << f.file_bytes << " bytes, "
            << fmt(f.bits_per_weight, 3) << " bits/weight";
  if (f.pipeline_weights)
    std::cout << " (pipeline tensors: " << f.pipeline_weights << " weights, "
              << fmt(f.pipeline_bits_per_weight, 3) << " bits/weight)";
  if (f.compared) std::cout << ", MSE " << sci(f.mse) << ", SQNR " << fmt(f.sqnr_db, 2) << " dB";
  std::cout << "\n";
}

} // namespace

int cmd_inspect(const Command &self, const Args &args) {
  Common c;
  std::string in, reference;
  po::options_description d(self.title());
  d.add_options()("input", po::value(&in)->required(), "input .nwc file")(
      "reference", po::value(&reference), "original model: adds MSE and SQNR per tensor");
  add_common(d, c);
  parse(args, d, {"input"}, self.usage);
  host::Registry reg = load_registry(c);
  ContainerReader reader(in);
  const ContainerFigures f = container_figures(reader, reg, reference, c.threads);
  if (c.json) {
    // JSON has no infinity: lossless tensors report sqnr_db = null.
    std::cout << figures_json(reader, f, in).dump(2, ' ', false, json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  print_table(reader, f, in);
  return 0;
}

} // namespace nwc::cli
