#include "nwc/runtime/eval.hpp"

#include "nwc/cpp/error.hpp"

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

namespace nwc::runtime {

std::vector<int32_t> ppl_token_stream(const std::string &raw, const Tokenizer &tokenizer) {
  std::string text;
  text.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i)
    if (!(raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n')) text += raw[i];
  auto is_space = [](char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
  };
  std::vector<int32_t> stream;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    size_t a = start, b = end;
    while (a < b && is_space(text[a])) ++a;
    while (b > a && is_space(text[b - 1])) --b;
    if (b > a) {
      auto ids = tokenizer.encode(std::string_view(text).substr(a, b - a), true, false);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
    start = end + 2;
  }
  return stream;
}

EvalResult evaluate_ppl(const LlamaModel &model, const std::vector<int32_t> &stream,
                        const EvalSettings &settings) {
  EvalResult r;
  r.seq_len = settings.seq_len > 0 ? settings.seq_len : model.arch().max_seq_len;
  if (r.seq_len < 2) fail(NWC_E_INVALID_ARG, "eval: --seq-len must be at least 2");
  if (r.seq_len > model.arch().max_seq_len)
    fail(NWC_E_INVALID_ARG, "eval: --seq-len " + std::to_string(r.seq_len) +
                                " exceeds the model's maximum " +
                                std::to_string(model.arch().max_seq_len));
  r.tokens = static_cast<int64_t>(stream.size());
  if (settings.max_tokens > 0) r.tokens = std::min(r.tokens, settings.max_tokens);
  r.windows = r.tokens / r.seq_len;
  if (r.windows == 0)
    fail(NWC_E_INVALID_ARG, "eval: the text gives " + std::to_string(r.tokens) +
                                " tokens, fewer than one window of " + std::to_string(r.seq_len));
  r.predicted_tokens = r.windows * (r.seq_len - 1);
  const int64_t batch = std::max<int64_t>(1, settings.batch);
  auto t0 = std::chrono::steady_clock::now();
  const int64_t batches = (r.windows + batch - 1) / batch;
  std::vector<double> per_window(static_cast<size_t>(r.windows));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&] {
    for (int64_t k; (k = next.fetch_add(1)) < batches;) {
      try {
        const int64_t w = k * batch, n = std::min(batch, r.windows - w);
        std::vector<int32_t> chunk(stream.begin() + w * r.seq_len,
                                   stream.begin() + (w + n) * r.seq_len);
        auto nll = model.window_nll(chunk, n, r.seq_len);
        std::copy(nll.begin(), nll.end(), per_window.begin() + w);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        next = batches;
      }
    }
  };
  unsigned threads = settings.threads ? settings.threads : std::thread::hardware_concurrency();
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(batches)));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto &t : pool) t.join();
  if (error) std::rethrow_exception(error);
  double total = 0;
  for (double v : per_window) total += v;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.nll = total / static_cast<double>(r.predicted_tokens);
  r.ppl = std::exp(r.nll);
  r.tokens_per_second =
      r.seconds > 0 ? static_cast<double>(r.windows * r.seq_len) / r.seconds : 0.0;
  return r;
}

std::string generate_text(const LlamaModel &model, const Tokenizer &tokenizer,
                          const std::string &prompt, int64_t steps, std::vector<int32_t> *ids,
                          const Sampling &sampling) {
  std::vector<int32_t> in = tokenizer.encode(prompt, true, false);
  std::vector<int32_t> out = model.generate(in, steps, tokenizer.bos_id(), sampling);
  std::string text;
  for (size_t i = 1; i < out.size(); ++i) {
    if (i >= in.size() && out[i] == tokenizer.bos_id()) break;
    std::string piece = tokenizer.decode(out[i - 1], out[i]);
    if (piece.size() == 1 && !std::isprint(static_cast<unsigned char>(piece[0])) &&
        !std::isspace(static_cast<unsigned char>(piece[0])))
      continue;
    text += piece;
  }
  if (ids) *ids = std::move(out);
  return text;
}

} // namespace nwc::runtime
