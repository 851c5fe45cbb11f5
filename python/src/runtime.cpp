// runtime.cpp — tokenizers (always built) and, with the LibTorch model runtime
// (NWC_WITH_RUNTIME), perplexity evaluation and calibration: the code behind `nwc tokenize`,
// `nwc eval` and `nwc calibrate`, on model files, containers or tensors held by Python.
#include "bindings.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/runtime/tokenizer.hpp"

#ifdef NWC_PYTHON_WITH_RUNTIME
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/calibrate_job.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#endif

namespace nwc::python {

#ifdef NWC_PYTHON_WITH_RUNTIME
namespace {

// The model to run: a file or container at `path`, else the tensors handed over (kept alive by
// `keep` while the model is used).
Model model_to_run(const host::Registry &registry, const std::string &path,
                   const std::vector<std::tuple<std::string, py::array, std::string>> &tensors,
                   const std::string &architecture_json, unsigned threads,
                   std::vector<py::array> &keep) {
  if (!path.empty()) {
    py::gil_scoped_release release;
    return open_any_model(path, registry, threads);
  }
  std::vector<TensorSource> sources;
  for (const auto &[name, array, dtype] : tensors) sources.push_back({name, array, dtype});
  return model_from_tensors(sources, architecture_json, "tensors", keep);
}

py::dict eval_dict(const runtime::EvalResult &r) {
  py::dict d;
  d["protocol"] = r.protocol;
  d["tokens"] = r.tokens;
  d["windows"] = r.windows;
  d["seq_len"] = r.seq_len;
  d["predicted_tokens"] = r.predicted_tokens;
  d["nll"] = r.nll;
  d["ppl"] = r.ppl;
  d["seconds"] = r.seconds;
  d["tokens_per_second"] = r.tokens_per_second;
  return d;
}

} // namespace
#endif

void bind_runtime(py::module_ &m) {
  py::class_<runtime::Tokenizer, std::shared_ptr<runtime::Tokenizer>>(
      m, "Tokenizer",
      "A tokenizer: llama2.c tokenizer.bin, SentencePiece .model, HF tokenizer.json, or a model "
      "directory holding one.")
      .def(py::init([](const std::string &path, int64_t vocab_size) {
             return std::shared_ptr<runtime::Tokenizer>(runtime::load_tokenizer(path, vocab_size));
           }),
           py::arg("path"), py::arg("vocab_size") = 0)
      .def(
          "encode",
          [](const runtime::Tokenizer &t, const std::string &text, bool bos, bool eos) {
            py::gil_scoped_release release;
            return t.encode(text, bos, eos);
          },
          py::arg("text"), py::arg("bos") = false, py::arg("eos") = false)
      .def(
          "decode",
          [](const runtime::Tokenizer &t, const std::vector<int32_t> &ids) {
            std::string out;
            int32_t prev = -1;
            for (int32_t id : ids) {
              out += t.decode(prev, id);
              prev = id;
            }
            return py::bytes(out);
          },
          py::arg("ids"), "The bytes the ids stand for (possibly not valid UTF-8).")
      .def("piece", &runtime::Tokenizer::piece, py::arg("id"))
      .def_property_readonly("bos_id", &runtime::Tokenizer::bos_id)
      .def_property_readonly("eos_id", &runtime::Tokenizer::eos_id)
      .def_property_readonly("vocab_size", &runtime::Tokenizer::vocab_size);

#ifdef NWC_PYTHON_WITH_RUNTIME
  m.def(
      "evaluate",
      [](const std::shared_ptr<host::Registry> &registry, const std::string &model_path,
         const std::vector<std::tuple<std::string, py::array, std::string>> &tensors,
         const std::string &architecture_json, const std::string &tokenizer,
         const std::string &text_path, const std::string &protocol, int64_t seq_len,
         int64_t max_tokens, int64_t batch, unsigned threads) {
        if (seq_len < 0 || max_tokens < 0 || batch < 1)
          fail(NWC_E_INVALID_ARG, "seq_len and max_tokens must be >= 0, batch >= 1");
        runtime::EvalSettings es;
        es.protocol = runtime::parse_protocol(protocol);
        es.seq_len = seq_len;
        es.max_tokens = max_tokens;
        es.batch = batch;
        es.threads = threads;
        std::vector<py::array> keep;
        const Model model =
            model_to_run(*registry, model_path, tensors, architecture_json, threads, keep);
        runtime::EvalResult r;
        {
          py::gil_scoped_release release;
          // As `nwc eval`: windows in parallel, one LibTorch thread each.
          runtime::LlamaModel llama(model, 1);
          auto tok = runtime::load_tokenizer(tokenizer, model.arch.vocab_size);
          const auto stream =
              runtime::protocol_token_stream(es.protocol, runtime::read_text_file(text_path), *tok);
          r = runtime::evaluate_ppl(llama, stream, es);
        }
        return eval_dict(r);
      },
      py::arg("registry"), py::arg("model_path"), py::arg("tensors"), py::arg("architecture_json"),
      py::arg("tokenizer"), py::arg("text"), py::arg("protocol"), py::arg("seq_len"),
      py::arg("max_tokens"), py::arg("batch"), py::arg("threads"),
      "`nwc eval`: the NLL and perplexity of a model on a text; see nwc.eval.");

  m.def(
      "calibrate",
      [](const std::shared_ptr<host::Registry> &registry, const std::string &model_path,
         const std::vector<std::tuple<std::string, py::array, std::string>> &tensors,
         const std::string &architecture_json, const std::string &tokenizer,
         const std::string &text, int64_t tokens, int64_t seq_len, unsigned threads,
         const std::string &out) {
        if (tokens < 1) fail(NWC_E_INVALID_ARG, "tokens must be >= 1");
        std::vector<py::array> keep;
        const Model model =
            model_to_run(*registry, model_path, tensors, architecture_json, threads, keep);
        runtime::Calibration cal;
        {
          py::gil_scoped_release release;
          const runtime::CalibrationText ct = runtime::load_calibration_text(
              runtime::calibration_text_path(text, "text"), tokenizer, model.arch.vocab_size);
          runtime::CalibrationSettings cs;
          cs.tokens = tokens;
          cs.seq_len = seq_len;
          cs.threads = threads;
          cal = runtime::calibrate(model, ct.tokens, cs);
          cal.model_hash = runtime::model_fingerprint(model);
          cal.text_hash = ct.hash;
          if (!out.empty()) runtime::save_calibration(cal, out);
        }
        // Each input's Hessian once, as float32 (as the file stores it and coders use it), under
        // the name of every linear it feeds.
        py::dict by_linear;
        for (runtime::Hessian &h : cal.hessians) {
          std::vector<float> values(h.h.begin(), h.h.end());
          py::array_t<float> a = to_numpy(std::move(values), {h.dim, h.dim});
          for (const auto &l : h.linears) by_linear[py::str(l)] = a;
        }
        return by_linear;
      },
      py::arg("registry"), py::arg("model_path"), py::arg("tensors"), py::arg("architecture_json"),
      py::arg("tokenizer"), py::arg("text"), py::arg("tokens"), py::arg("seq_len"),
      py::arg("threads"), py::arg("out"),
      "`nwc calibrate`: every linear's input Hessian; see nwc.calibrate.");
#endif
}

} // namespace nwc::python
