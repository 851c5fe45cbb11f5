// nwc decompress IN.nwc -o OUT.safetensors [--dtype F32|F16|BF16] [--layout safetensors|hf]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/tools/convert.hpp"

#include <filesystem>
#include <iostream>

namespace nwc::cli {

int cmd_decompress(const Command &self, const Args &args) {
  Common c;
  std::string in, out, dtype_name = "F32", layout = "safetensors";
  po::options_description d(self.title());
  d.add_options()("input", po::value(&in)->required(), "input .nwc file")(
      "output,o", po::value(&out)->required(), "output .safetensors file (or directory for hf)")(
      "dtype", po::value(&dtype_name)->default_value("F32"), "output dtype: F32, F16 or BF16")(
      "layout", po::value(&layout)->default_value("safetensors"),
      "safetensors: one file; hf: config.json + model.safetensors");
  add_common(d, c);
  parse(args, d, {"input"}, self.usage);
  DType dtype = parse_output_dtype(dtype_name);
  if (layout != "safetensors" && layout != "hf")
    throw UsageError("--layout: expected safetensors or hf, got '" + layout + "'");
  host::Registry reg = load_registry(c);
  if (layout == "hf") {
    Model model = host::open_container_model(in, reg, c.threads);
    tools::write_hf_directory(model, out, dtype);
    if (!c.quiet) std::cout << "wrote " << out << " (HF Llama layout, " << dtype_name << ")\n";
    return 0;
  }
  Progress progress(!c.quiet && !c.json, "decompress");
  auto t0 = std::chrono::steady_clock::now();
  host::decompress_to_safetensors(in, out, reg, dtype, c.threads, std::ref(progress));
  double secs = seconds_since(t0);
  uint64_t bytes = std::filesystem::file_size(out);
  if (c.json)
    print_json({{"output", out}, {"bytes", bytes}, {"dtype", dtype_name}, {"seconds", secs}});
  else if (!c.quiet)
    std::cout << "wrote " << out << " (" << bytes << " bytes, " << dtype_name << ", "
              << fmt(secs, 2) << " s)\n";
  return 0;
}

} // namespace nwc::cli
