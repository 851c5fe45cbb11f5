// nwc convert --model M -o OUT [--layout hf|gguf] [--dtype F32|F16|BF16] [--tokenizer T]
//             [--decode-blocks]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/formats/gguf.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "nwc/tools/convert.hpp"

#include <iostream>
#include <map>

namespace nwc::cli {

int cmd_convert(const Command &self, const Args &args) {
  Common c;
  std::string model_path, out, layout = "hf", dtype_name = "F32", tokenizer_path;
  bool decode_blocks = false;
  po::options_description d(self.title());
  d.add_options()("model,m", po::value(&model_path)->required(), "model file or .nwc container")(
      "output,o", po::value(&out)->required(), "output: a directory (hf) or a file (gguf)")(
      "layout", po::value(&layout)->default_value("hf"),
      "hf: config.json + model.safetensors; gguf: one GGUF v3 file")(
      "dtype", po::value(&dtype_name)->default_value("F32"), "F32, F16 or BF16")(
      "tokenizer", po::value(&tokenizer_path),
      "gguf: the vocabulary to write (tokenizer.bin, .model, tokenizer.json or a model "
      "directory); llama.cpp loads no GGUF without one")(
      "decode-blocks", po::bool_switch(&decode_blocks),
      "gguf: write every tensor as --dtype, also those whose source holds ggml blocks (a "
      "quantized GGUF, a container coded by nwc.quant.ggml), which are otherwise kept as they "
      "are");
  add_common(d, c);
  parse(args, d, {}, self.usage);
  if (layout != "hf" && layout != "gguf")
    throw UsageError("--layout: expected hf or gguf, got '" + layout + "'");
  if (!tokenizer_path.empty() && layout != "gguf")
    throw UsageError("--tokenizer: only --layout gguf stores a vocabulary (an HF directory takes "
                     "the model's tokenizer.json as it is)");
  if (decode_blocks && layout != "gguf")
    throw UsageError("--decode-blocks: only --layout gguf keeps ggml blocks");
  DType dtype = parse_output_dtype(dtype_name);
  host::Registry reg = load_registry(c);
  Model model = open_model(model_path, reg, c.threads);
  if (layout == "gguf") {
    GgufMetadata vocab;
    if (!tokenizer_path.empty())
      vocab = runtime::load_tokenizer(tokenizer_path, model.arch.vocab_size)->gguf_metadata();
    const GgufWriteReport report = write_gguf(model, out, dtype, vocab, !decode_blocks);
    if (c.quiet) return 0;
    for (const std::string &note : report.notes) std::cerr << "note: " << note << "\n";
    if (tokenizer_path.empty())
      std::cerr << "note: no --tokenizer: nwc reads this GGUF, llama.cpp refuses it\n";
    std::map<std::string, int> counts; // tensors per GGUF type
    for (const auto &[name, type] : report.tensor_types) ++counts[type];
    std::cout << "wrote " << out << " (GGUF v3;";
    for (const auto &[type, count] : counts) std::cout << " " << type << " x" << count;
    std::cout << " tensors)\n";
    return 0;
  }
  tools::write_hf_directory(model, out, dtype);
  if (!c.quiet) std::cout << "wrote " << out << " (HF Llama directory, " << dtype_name << ")\n";
  return 0;
}

} // namespace nwc::cli
