#include "nwc/runtime/eval.hpp"

#include "kl.hpp"
#include "nwc/cpp/error.hpp"

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

namespace nwc::runtime {

Protocol parse_protocol(std::string_view name) {
  if (name == kPplProtocol) return Protocol::PplV1;
  if (name == kWikitext2Protocol) return Protocol::Wikitext2;
  fail(NWC_E_INVALID_ARG, "eval: unknown protocol '" + std::string(name) + "' (expected " +
                              kPplProtocol + " or " + kWikitext2Protocol + ")");
}

const char *protocol_name(Protocol protocol) {
  return protocol == Protocol::Wikitext2 ? kWikitext2Protocol : kPplProtocol;
}

namespace {

// Length of the Python whitespace character (str.isspace) at the start of s, 0 if there is none:
// ASCII \t \n \v \f \r, \x1c-\x1f and space, and in UTF-8 U+0085, U+00A0, U+1680,
// U+2000-U+200A, U+2028, U+2029, U+202F, U+205F and U+3000.
size_t python_space_len(std::string_view s) {
  auto b = [&](size_t i) { return i < s.size() ? static_cast<unsigned char>(s[i]) : 0u; };
  const unsigned c0 = b(0), c1 = b(1), c2 = b(2);
  if ((c0 >= 0x09 && c0 <= 0x0D) || (c0 >= 0x1C && c0 <= 0x20)) return 1;
  if (c0 == 0xC2 && (c1 == 0x85 || c1 == 0xA0)) return 2;
  if (c0 == 0xE1 && c1 == 0x9A && c2 == 0x80) return 3;
  if (c0 == 0xE2 && c1 == 0x80 &&
      (c2 <= 0x8A ? c2 >= 0x80 : (c2 == 0xA8 || c2 == 0xA9 || c2 == 0xAF)))
    return 3;
  if (c0 == 0xE2 && c1 == 0x81 && c2 == 0x9F) return 3;
  if (c0 == 0xE3 && c1 == 0x80 && c2 == 0x80) return 3;
  return 0;
}

// Python's row.strip() == "".
bool blank_row(std::string_view row) {
  while (!row.empty()) {
    size_t n = python_space_len(row);
    if (n == 0) return false;
    row.remove_prefix(n);
  }
  return true;
}

} // namespace

std::string wikitext2_text(std::string_view raw) {
  // Universal newlines, as Python's open() in text mode: CRLF and a lone CR become LF.
  std::string text;
  text.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\r') {
      text += raw[i];
      continue;
    }
    text += '\n';
    if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
  }
  // Hugging Face's wikitext loader: one row per line, keeping its "\n"; a whitespace-only line
  // is the row "". The reference tokenizes "\n\n".join(rows).
  std::string out;
  out.reserve(text.size() + text.size() / 16);
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    end = end == std::string::npos ? text.size() : end + 1;
    const std::string_view row = std::string_view(text).substr(start, end - start);
    if (start > 0) out += "\n\n";
    if (!blank_row(row)) out += row;
    start = end;
  }
  return out;
}

std::vector<int32_t> wikitext2_token_stream(const std::string &file_bytes,
                                            const Tokenizer &tokenizer) {
  return tokenizer.encode(wikitext2_text(file_bytes), true, false);
}

std::vector<int32_t> protocol_token_stream(Protocol protocol, const std::string &file_bytes,
                                           const Tokenizer &tokenizer) {
  return protocol == Protocol::Wikitext2 ? wikitext2_token_stream(file_bytes, tokenizer)
                                         : ppl_token_stream(file_bytes, tokenizer);
}

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
  r.protocol = protocol_name(settings.protocol);
  const int64_t max_seq_len = model.arch().max_seq_len;
  r.seq_len = settings.seq_len > 0                       ? settings.seq_len
              : settings.protocol == Protocol::Wikitext2 ? std::min(kWikitext2SeqLen, max_seq_len)
                                                         : max_seq_len;
  if (r.seq_len < 2) fail(NWC_E_INVALID_ARG, "eval: --seq-len must be at least 2");
  if (r.seq_len > max_seq_len)
    fail(NWC_E_INVALID_ARG, "eval: --seq-len " + std::to_string(r.seq_len) +
                                " exceeds the model's maximum " + std::to_string(max_seq_len));
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
  std::vector<double> per_window(static_cast<size_t>(r.windows)),
      per_window_kl(settings.reference ? static_cast<size_t>(r.windows) : 0);
  const int64_t vocab = model.arch().vocab_size;
  if (settings.reference && settings.reference->arch().vocab_size != vocab)
    fail(NWC_E_INVALID_ARG, "eval: the reference model's vocabulary differs from the model's");
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
        if (settings.reference) { // the positions whose next token the NLL scores
          std::vector<float> p = settings.reference->logits(chunk, n, r.seq_len),
                             q = model.logits(chunk, n, r.seq_len);
          log_softmax_rows(p, vocab);
          log_softmax_rows(q, vocab);
          for (int64_t i = 0; i < n; ++i) {
            const size_t at = static_cast<size_t>(i * r.seq_len * vocab);
            add_kl(per_window_kl[static_cast<size_t>(w + i)], p.data() + at, q.data() + at,
                   r.seq_len - 1, vocab);
          }
        }
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
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  if (settings.protocol == Protocol::Wikitext2) {
    // The reference: nlls.append(mean CE of the window * seqlen); exp(sum / (nsamples * seqlen)).
    for (double v : per_window) total += v / static_cast<double>(r.seq_len - 1);
    r.nll = total / static_cast<double>(r.windows);
  } else {
    for (double v : per_window) total += v;
    r.nll = total / static_cast<double>(r.predicted_tokens);
  }
  r.ppl = std::exp(r.nll);
  if (settings.reference) {
    double kl = 0;
    for (double v : per_window_kl) kl += v;
    r.kl = kl / static_cast<double>(r.predicted_tokens);
  }
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
