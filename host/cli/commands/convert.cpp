// nwc convert --model M -o OUT [--layout hf|gguf] [--dtype F32|F16|BF16]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/gguf.hpp"
#include "nwc/tools/convert.hpp"

#include <iostream>

namespace nwc::cli {

int cmd_convert(const Command &self, const Args &args) {
  Common c;
  std::string model_path, out, layout = "hf", dtype_name = "F32";
  po::options_description d(self.title());
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "output,o", po::value(&out)->required(),
      "output directory")("layout", po::value(&layout)->default_value("hf"),
                          "hf: config.json + model.safetensors; gguf: one GGUF v3 file")(
      "dtype", po::value(&dtype_name)->default_value("F32"), "F32, F16 or BF16");
  add_common(d, c);
  parse(args, d, {}, self.usage);
  if (layout != "hf" && layout != "gguf")
    throw UsageError("--layout: expected hf or gguf, got '" + layout + "'");
  DType dtype = parse_output_dtype(dtype_name);
  host::Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  if (layout == "gguf") {
    // GGUF's "llama" architecture (as write_gguf describes it) has no biases, q/k norms, separate
    // head size, sliding window or RoPE scaling.
    if (const auto fields = llama_variant_fields(model.arch); !fields.empty())
      fail(NWC_E_INVALID_ARG, model_path +
                                  ": --layout gguf writes plain Llama only; the model has " +
                                  fields.front() + " (use --layout hf)");
    write_gguf(model, out, dtype);
  } else {
    tools::write_hf_directory(model, out, dtype);
  }
  if (!c.quiet)
    std::cout << "wrote " << out << " (" << (layout == "hf" ? "HF Llama directory" : "GGUF v3")
              << ", " << dtype_name << ")\n";
  return 0;
}

} // namespace nwc::cli
