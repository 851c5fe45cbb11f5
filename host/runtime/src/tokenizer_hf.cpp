// Hugging Face tokenizer.json (the `tokenizers` library's format) in our own C++: normalizer,
// pre-tokenizer, model (BPE, byte-level BPE, Unigram), added tokens, post-processor and decoder.
// The semantics follow the Rust `tokenizers` library; the independent check is the JavaScript
// implementation @huggingface/tokenizers (tests/unit/tokenizer). docs/tokenizers.md lists the
// components and the few places where the two references differ.
#include "nwc/runtime/tokenizer.hpp"

#include "bpe_merge.hpp"
#include "gguf_vocab.hpp"
#include "hf_components.hpp"
#include "hf_regex.hpp"
#include "nwc/cpp/error.hpp"
#include "sp_charsmap.hpp"
#include "unicode_text.hpp"
#include "unigram.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace nwc::runtime {

namespace {

using namespace hf;
namespace d = detail;

// ------------------------------------------------------------------------------------------------
struct AddedToken {
  int32_t id;
  std::string content;
  bool special, lstrip, rstrip, normalized, single_word;
};

// Leftmost-longest matching of added tokens (as the Rust library's Aho-Corasick and the
// JavaScript reference's trie): a byte trie and a first-byte filter.
class TokenMatcher {
public:
  void add(std::string_view key, int32_t token) {
    if (key.empty()) return;
    first_[static_cast<uint8_t>(key[0])] = true;
    trie_.insert(key, token);
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // (length, token) of the longest key at s's start; length 0 if none.
  std::pair<size_t, int32_t> longest(std::string_view s) const {
    if (s.empty() || !first_[static_cast<uint8_t>(s[0])]) return {0, -1};
    std::pair<size_t, int32_t> best{0, -1};
    trie_.prefixes(s, [&](size_t len, int32_t v) { best = {len, v}; });
    return best;
  }

private:
  std::array<bool, 256> first_{};
  d::PieceTrie trie_;
  bool empty_ = true;
};

struct Section {
  std::string text;
  int32_t token; // added token index, -1 for text
};

class HfTokenizer final : public Tokenizer {
public:
  HfTokenizer(const Ctx &ctx, const json &root, const json *config) : ctx_(ctx) {
    if (!root.is_object()) ctx.fail_at("(top level)", "must be a JSON object");
    // "truncation" and "padding" shape batches of fixed length; encode() never truncates or pads.
    if (const json *n = member(root, "normalizer")) {
      normalizer_ = make_normalizer(ctx, *n, "normalizer");
      normalizer_json_ = *n;
    }
    if (const json *p = member(root, "pre_tokenizer")) {
      pre_tokenizer_ = make_pre_tokenizer(ctx, *p, "pre_tokenizer");
      pre_tokenizer_json_ = *p;
    }
    const json *model = member(root, "model");
    if (!model) ctx.fail_at("model", "is missing");
    load_model(*model);
    load_added_tokens(root);
    if (const json *p = member(root, "post_processor")) load_post_processor(*p, "post_processor");
    if (const json *dec = member(root, "decoder"))
      make_decoder(ctx, *dec, "decoder", decode_steps_);
    apply_config(config);
    for (int b = 0; b < 256; ++b) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      const std::string piece = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
      const auto it = vocab_.find(piece);
      byte_ids_[static_cast<size_t>(b)] = it == vocab_.end() ? -1 : it->second;
    }
  }

  std::vector<int32_t> encode(std::string_view input, bool bos, bool eos) const override {
    std::vector<int32_t> out;
    if (bos) out.insert(out.end(), prefix_.begin(), prefix_.end());
    const std::string text = d::utf8_repair(input);
    StringMap<std::vector<int32_t>> cache;
    const std::vector<Section> sections = split_added(text, raw_matcher_);
    for (size_t k = 0; k < sections.size(); ++k) {
      const Section &raw = sections[k];
      if (raw.token >= 0) {
        out.push_back(added_[static_cast<size_t>(raw.token)].id);
        continue;
      }
      const std::string norm = normalizer_ ? normalizer_(raw.text) : raw.text;
      if (norm.empty()) continue;
      const std::vector<Section> subs = split_added(norm, norm_matcher_);
      for (size_t i = 0; i < subs.size(); ++i) {
        const Section &sub = subs[i];
        if (sub.token >= 0) {
          out.push_back(added_[static_cast<size_t>(sub.token)].id);
          continue;
        }
        std::vector<std::string> pieces{sub.text};
        // Metaspace's prepend_scheme "first": only the text at the very start of the input.
        if (pre_tokenizer_) pre_tokenizer_(pieces, k == 0 && i == 0);
        for (const std::string &p : pieces) encode_word(p, cache, out);
      }
    }
    if (eos) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  std::string decode(int32_t prev, int32_t token) const override {
    check_id(token);
    // Special added tokens decode to nothing; other added tokens go through the decoders too.
    if (const int32_t a = added_index_[static_cast<size_t>(token)];
        a >= 0 && added_[static_cast<size_t>(a)].special)
      return {};
    const bool at_start =
        prev < 0 || prev >= vocab_size() ||
        (added_index_[static_cast<size_t>(prev)] >= 0 &&
         added_[static_cast<size_t>(added_index_[static_cast<size_t>(prev)])].special);
    std::string s = pieces_[static_cast<size_t>(token)];
    for (const DecodeStep &st : decode_steps_) {
      switch (st.kind) {
      case DecodeStep::kReplace:
        s = st.pattern->replace(s, st.content);
        break;
      case DecodeStep::kByteFallback:
        if (const int b = d::byte_piece_value(s); b >= 0) s = std::string(1, static_cast<char>(b));
        break;
      case DecodeStep::kStrip:
        if (at_start)
          for (int64_t k = 0; k < st.start && !st.content.empty() && s.starts_with(st.content); ++k)
            s.erase(0, st.content.size());
        break;
      case DecodeStep::kMetaspace:
        replace_all(s, st.content, " ");
        if (at_start && st.prepend && s.starts_with(' ')) s.erase(0, 1);
        break;
      case DecodeStep::kByteLevel: {
        std::string bytes;
        bytes.reserve(s.size());
        const auto &to_byte = byte_table().to_byte;
        for (size_t i = 0; i < s.size();) {
          const size_t start = i;
          const char32_t c = d::utf8_next(s, i);
          const auto it = to_byte.find(c);
          if (it != to_byte.end())
            bytes += static_cast<char>(it->second);
          else
            bytes.append(s, start, i - start);
        }
        s = std::move(bytes);
        break;
      }
      }
    }
    return s;
  }

  std::string piece(int32_t token) const override {
    check_id(token);
    return pieces_[static_cast<size_t>(token)];
  }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }

  GgufMetadata gguf_metadata() const override {
    if (!bpe_)
      fail(NWC_E_INVALID_ARG, ctx_.file + ": a Unigram tokenizer.json cannot be written to GGUF "
                                          "(llama.cpp's T5 tokenizer needs SentencePiece's "
                                          "charsmap); expected a BPE model");
    detail::GgufVocab v;
    const bool byte_level = std::any_of(decode_steps_.begin(), decode_steps_.end(),
                                        [](const DecodeStep &s) { return s.kind == s.kByteLevel; });
    std::vector<int32_t> merge_rank(pieces_.size(), -1); // rank of the first merge giving each id
    std::vector<std::pair<int32_t, uint64_t>> ranked;
    for (const auto &[pair, rank_merged] : merges_) {
      ranked.emplace_back(rank_merged.first, pair);
      int32_t &r = merge_rank[static_cast<size_t>(rank_merged.second)];
      if (r < 0 || rank_merged.first < r) r = rank_merged.first;
    }
    for (size_t i = 0; i < pieces_.size(); ++i) {
      const auto id = static_cast<int32_t>(i);
      const int32_t a = added_index_[i];
      std::string t = pieces_[i];
      int32_t type = detail::kGgufNormal;
      if (t.empty() && a < 0) {
        t = "[PAD" + std::to_string(i) + "]"; // an id the file leaves out, as convert_hf_to_gguf
        type = detail::kGgufUnused;
      } else if (a >= 0) {
        type = added_[static_cast<size_t>(a)].special ? detail::kGgufControl
                                                      : detail::kGgufUserDefined;
      }
      if (id == unk_id_) type = detail::kGgufUnknown;
      if (!byte_level && byte_fallback_ && d::byte_piece_value(t) >= 0) type = detail::kGgufByte;
      v.tokens.push_back(std::move(t));
      v.types.push_back(type);
    }
    if (byte_level) {
      // llama.cpp's byte-level BPE: merges by rank after its own pre-tokenizer, chosen by name.
      v.model = "gpt2";
      v.pre = gguf_pre_tokenizer_name();
      std::sort(ranked.begin(), ranked.end());
      for (const auto &[rank, pair] : ranked)
        v.merges.push_back(pieces_[static_cast<size_t>(pair >> 32)] + " " +
                           pieces_[static_cast<size_t>(pair & 0xFFFFFFFFu)]);
    } else {
      // SentencePiece-style BPE: llama.cpp merges the adjacent pair whose concatenation has the
      // highest score, which is BPE when each token scores minus the rank of the merge that makes
      // it. (convert_hf_to_gguf.py writes -1000 for every token, which merges leftmost first.)
      v.model = "llama";
      v.pre = "default";
      for (size_t i = 0; i < pieces_.size(); ++i)
        v.scores.push_back(merge_rank[i] >= 0 ? -static_cast<float>(merge_rank[i]) - 1.0f : 0.0f);
      v.add_space_prefix = prepends_metaspace() ? 1 : 0;
    }
    v.bos = bos_id_;
    v.eos = eos_id_;
    v.unk = unk_id_;
    v.add_bos = !prefix_.empty();
    v.add_eos = !suffix_.empty();
    return detail::to_gguf_metadata(std::move(v));
  }

private:
  // llama.cpp's name (tokenizer.ggml.pre) for the split pattern of this file's byte-level
  // pre-tokenizer: Llama 3's, Qwen 2's (also Qwen 3's) or GPT-2's.
  std::string gguf_pre_tokenizer_name() const {
    const std::string dump = pre_tokenizer_json_.dump();
    const auto has = [&](std::string_view s) { return dump.find(s) != std::string::npos; };
    static constexpr std::string_view kLlama3 =
        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|)";
    static constexpr std::string_view kQwen2 =
        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|)";
    if (has(kLlama3)) return "llama-bpe";
    if (has(kQwen2)) return "qwen2";
    if (pre_tokenizer_json_.is_object() && pre_tokenizer_json_.value("type", "") == "ByteLevel" &&
        pre_tokenizer_json_.value("use_regex", true))
      return "gpt-2";
    ctx_.fail_at("pre_tokenizer", "is not one llama.cpp names (Llama 3's, Qwen 2's or GPT-2's "
                                  "split pattern), so GGUF cannot say how to pre-tokenize");
  }

  // Whether the normalizer or the Metaspace pre-tokenizer puts U+2581 before the text, which is
  // llama.cpp's add_space_prefix.
  bool prepends_metaspace() const {
    bool found = false;
    const std::function<void(const json &)> walk = [&](const json &j) {
      if (j.is_array()) {
        for (const json &e : j) walk(e);
        return;
      }
      if (!j.is_object()) return;
      const std::string type = j.value("type", "");
      if (type == "Prepend" && j.value("prepend", "") == kMetaspace) found = true;
      if (type == "Metaspace" &&
          (j.contains("prepend_scheme") ? j.value("prepend_scheme", "") != "never"
                                        : j.value("add_prefix_space", true)))
        found = true;
      for (const char *k : {"normalizers", "pretokenizers"})
        if (j.contains(k)) walk(j[k]);
    };
    walk(normalizer_json_);
    walk(pre_tokenizer_json_);
    return found;
  }

  void check_id(int32_t token) const {
    if (token < 0 || token >= vocab_size())
      fail(NWC_E_INVALID_ARG, ctx_.file + ": token id " + std::to_string(token) +
                                  " is out of range, expected 0.." +
                                  std::to_string(vocab_size() - 1));
  }

  void set_piece(int32_t id, const std::string &text) {
    if (id < 0) ctx_.fail_at("model.vocab", "has a negative id");
    if (static_cast<size_t>(id) >= pieces_.size()) {
      if (id > 16 * 1024 * 1024)
        ctx_.fail_at("model.vocab", "has id " + std::to_string(id) + ", more than 16M");
      pieces_.resize(static_cast<size_t>(id) + 1);
      added_index_.resize(static_cast<size_t>(id) + 1, -1);
    }
    pieces_[static_cast<size_t>(id)] = text;
  }

  void load_model(const json &m) {
    const std::string type = member(m, "type") ? get_string(ctx_, m, "model", "type") : "";
    const json *vocab = member(m, "vocab");
    if (!vocab) ctx_.fail_at("model.vocab", "is missing");
    if (type == "BPE" || (type.empty() && vocab->is_object() && member(m, "merges"))) {
      bpe_ = true;
      if (const json *dr = member(m, "dropout"))
        ctx_.fail_at("model.dropout", "is " + dr->dump() + ", only null is supported");
      if (!get_string(ctx_, m, "model", "continuing_subword_prefix", std::string()).empty())
        ctx_.fail_at("model.continuing_subword_prefix", "is not supported (only null or \"\")");
      if (!get_string(ctx_, m, "model", "end_of_word_suffix", std::string()).empty())
        ctx_.fail_at("model.end_of_word_suffix", "is not supported (only null or \"\")");
      byte_fallback_ = get_bool(ctx_, m, "model", "byte_fallback", false);
      fuse_unk_ = get_bool(ctx_, m, "model", "fuse_unk", false);
      ignore_merges_ = get_bool(ctx_, m, "model", "ignore_merges", false);
      if (!vocab->is_object()) ctx_.fail_at("model.vocab", "must be an object for BPE");
      vocab_.reserve(vocab->size());
      for (const auto &[k, v] : vocab->items()) {
        if (!v.is_number_integer())
          ctx_.fail_at("model.vocab[\"" + k + "\"]", "must be an integer");
        const auto id = v.get<int64_t>();
        if (id < 0 || id > INT32_MAX) ctx_.fail_at("model.vocab[\"" + k + "\"]", "is out of range");
        vocab_.emplace(k, static_cast<int32_t>(id));
        set_piece(static_cast<int32_t>(id), k);
      }
      const std::string unk = get_string(ctx_, m, "model", "unk_token", std::string());
      if (!unk.empty()) {
        const auto it = vocab_.find(unk);
        if (it == vocab_.end())
          ctx_.fail_at("model.unk_token", "\"" + unk + "\" is not in the vocabulary");
        unk_id_ = it->second;
      }
      const json *merges = member(m, "merges");
      if (!merges || !merges->is_array()) ctx_.fail_at("model.merges", "must be an array");
      if (merges->size() >= (1u << 24)) ctx_.fail_at("model.merges", "has more than 2^24 merges");
      merges_.reserve(merges->size());
      std::string a, b;
      for (size_t i = 0; i < merges->size(); ++i) {
        const json &e = (*merges)[i];
        const std::string at = "model.merges[" + std::to_string(i) + "]";
        if (e.is_string()) {
          const std::string s = e.get<std::string>();
          const size_t sp = s.find(' ');
          if (sp == std::string::npos) ctx_.fail_at(at, "\"" + s + "\" is not \"left right\"");
          a = s.substr(0, sp);
          b = s.substr(sp + 1);
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
          a = e[0].get<std::string>();
          b = e[1].get<std::string>();
        } else {
          ctx_.fail_at(at, "must be \"left right\" or [left, right]");
        }
        const auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
        if (ia == vocab_.end() || ib == vocab_.end() || im == vocab_.end())
          ctx_.fail_at(at, "\"" + a + " " + b + "\" has a part or a result outside the vocabulary");
        merges_.emplace(pair_key(ia->second, ib->second),
                        std::pair<int32_t, int32_t>{static_cast<int32_t>(i), im->second});
      }
      return;
    }
    if (type == "Unigram" || (type.empty() && vocab->is_array())) {
      bpe_ = false;
      if (!vocab->is_array()) ctx_.fail_at("model.vocab", "must be an array for Unigram");
      byte_fallback_ = get_bool(ctx_, m, "model", "byte_fallback", false);
      scores_.reserve(vocab->size());
      double min_score = std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < vocab->size(); ++i) {
        const json &e = (*vocab)[i];
        if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
          ctx_.fail_at("model.vocab[" + std::to_string(i) + "]", "must be [piece, score]");
        const std::string p = e[0].get<std::string>();
        const double score = e[1].get<double>();
        set_piece(static_cast<int32_t>(i), p);
        scores_.push_back(score);
        min_score = std::min(min_score, score);
        vocab_.emplace(p, static_cast<int32_t>(i));
        if (!p.empty()) trie_.insert(p, static_cast<int32_t>(i));
      }
      const int64_t unk = get_int(ctx_, m, "model", "unk_id", -1);
      if (unk >= static_cast<int64_t>(scores_.size()))
        ctx_.fail_at("model.unk_id", "is out of range");
      unk_id_ = static_cast<int32_t>(unk);
      unk_score_ = min_score - 10.0;
      // As the JavaScript reference, the unknown piece itself scores like an unknown character.
      if (unk_id_ >= 0) scores_[static_cast<size_t>(unk_id_)] = unk_score_;
      return;
    }
    ctx_.unsupported_type("model", type.empty() ? "(none)" : type);
  }

  void load_added_tokens(const json &root) {
    const json *list = member(root, "added_tokens");
    if (!list) return;
    if (!list->is_array()) ctx_.fail_at("added_tokens", "must be an array");
    for (size_t i = 0; i < list->size(); ++i) {
      const json &e = (*list)[i];
      const std::string at = "added_tokens[" + std::to_string(i) + "]";
      AddedToken t;
      const int64_t id = get_int(ctx_, e, at, "id", -1);
      if (id < 0 || id > INT32_MAX) ctx_.fail_at(at + ".id", "is missing or out of range");
      t.id = static_cast<int32_t>(id);
      t.content = get_string(ctx_, e, at, "content");
      t.special = get_bool(ctx_, e, at, "special", false);
      t.lstrip = get_bool(ctx_, e, at, "lstrip", false);
      t.rstrip = get_bool(ctx_, e, at, "rstrip", false);
      t.normalized = get_bool(ctx_, e, at, "normalized", !t.special);
      t.single_word = get_bool(ctx_, e, at, "single_word", false);
      if (t.content.empty()) continue;
      set_piece(t.id, t.content);
      const auto index = static_cast<int32_t>(added_.size());
      added_index_[static_cast<size_t>(t.id)] = index;
      if (t.normalized && normalizer_)
        norm_matcher_.add(normalizer_(t.content), index);
      else
        raw_matcher_.add(t.content, index);
      added_.push_back(std::move(t));
    }
  }

  int32_t special_id(const std::string &content, const std::string &path) const {
    for (const AddedToken &t : added_)
      if (t.content == content) return t.id;
    if (const auto it = vocab_.find(content); it != vocab_.end()) return it->second;
    ctx_.fail_at(path, "names \"" + content + "\", which is not a token");
  }

  void load_post_processor(const json &p, const std::string &path) {
    const std::string type = type_of(ctx_, p, path);
    std::vector<int32_t> pre, post;
    if (type == "Sequence") {
      const json *list = member(p, "processors");
      if (!list || !list->is_array()) ctx_.fail_at(path + ".processors", "must be an array");
      for (size_t i = 0; i < list->size(); ++i)
        load_post_processor((*list)[i], path + ".processors[" + std::to_string(i) + "]");
      return;
    }
    if (type == "ByteLevel") return;
    if (type == "TemplateProcessing") {
      const json *single = member(p, "single");
      if (!single || !single->is_array()) ctx_.fail_at(path + ".single", "must be an array");
      const json *specials = member(p, "special_tokens");
      bool seen_a = false;
      for (size_t i = 0; i < single->size(); ++i) {
        const json &item = (*single)[i];
        const std::string at = path + ".single[" + std::to_string(i) + "]";
        if (const json *st = member(item, "SpecialToken")) {
          const std::string name = get_string(ctx_, *st, at + ".SpecialToken", "id");
          const json *spec = specials ? member(*specials, name.c_str()) : nullptr;
          std::vector<int32_t> ids;
          if (spec && member(*spec, "ids") && (*spec)["ids"].is_array()) {
            for (const json &x : (*spec)["ids"]) {
              if (!x.is_number_integer())
                ctx_.fail_at(path + ".special_tokens", "ids must be integers");
              ids.push_back(x.get<int32_t>());
            }
          } else {
            ids.push_back(special_id(name, at + ".SpecialToken.id"));
          }
          (seen_a ? post : pre).insert((seen_a ? post : pre).end(), ids.begin(), ids.end());
        } else if (const json *sq = member(item, "Sequence")) {
          if (get_string(ctx_, *sq, at + ".Sequence", "id") != "A")
            ctx_.fail_at(at + ".Sequence.id", "must be \"A\" in the single template");
          seen_a = true;
        } else {
          ctx_.fail_at(at, "must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
        }
      }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      for (const char *key : {"cls", "sep"}) {
        const json *e = member(p, key);
        if (!e || !e->is_array() || e->size() != 2 || !(*e)[1].is_number_integer())
          ctx_.fail_at(path + "." + key, "must be [token, id]");
        (std::string(key) == "cls" ? pre : post).push_back((*e)[1].get<int32_t>());
      }
    } else {
      ctx_.unsupported_type(path, type);
    }
    // Later processors wrap the result of earlier ones.
    prefix_.insert(prefix_.begin(), pre.begin(), pre.end());
    suffix_.insert(suffix_.end(), post.begin(), post.end());
    if (!template_bos_) template_bos_ = pre.empty() ? std::nullopt : std::optional(pre.front());
    if (!post.empty()) template_eos_ = post.back();
  }

  void apply_config(const json *config) {
    const auto token_name = [&](const char *key) -> std::optional<std::string> {
      if (!config) return std::nullopt;
      const json *t = member(*config, key);
      if (!t) return std::nullopt;
      if (t->is_string()) return t->get<std::string>();
      if (const json *c = member(*t, "content"); c && c->is_string()) return c->get<std::string>();
      return std::nullopt;
    };
    const auto lookup = [&](const std::optional<std::string> &name) -> int32_t {
      if (!name) return -1;
      for (const AddedToken &t : added_)
        if (t.content == *name) return t.id;
      const auto it = vocab_.find(*name);
      return it == vocab_.end() ? -1 : it->second;
    };
    bos_id_ = lookup(token_name("bos_token"));
    eos_id_ = lookup(token_name("eos_token"));
    if (bos_id_ < 0 && template_bos_) bos_id_ = *template_bos_;
    if (eos_id_ < 0 && template_eos_) eos_id_ = *template_eos_;
    if (!config) return;
    // transformers' Llama and Gemma tokenizers rebuild the post-processor from these flags.
    const std::string cls = config->value("tokenizer_class", std::string());
    const bool rebuilds =
        cls.starts_with("Llama") || cls.starts_with("Gemma") || cls.starts_with("CodeLlama");
    if (!rebuilds) return;
    if (const json *b = member(*config, "add_bos_token"); b && b->is_boolean()) {
      prefix_.clear();
      if (b->get<bool>() && bos_id_ >= 0) prefix_.push_back(bos_id_);
    }
    if (const json *e = member(*config, "add_eos_token"); e && e->is_boolean()) {
      suffix_.clear();
      if (e->get<bool>() && eos_id_ >= 0) suffix_.push_back(eos_id_);
    }
  }

  // Splits text at added tokens (leftmost-longest), honouring single_word, lstrip and rstrip.
  std::vector<Section> split_added(const std::string &text, const TokenMatcher &m) const {
    std::vector<Section> out;
    if (m.empty()) {
      if (!text.empty()) out.push_back({text, -1});
      return out;
    }
    size_t start = 0;
    const auto is_word = [&](size_t i, bool before) {
      if (before) {
        if (i == 0) return false;
        size_t b = i - 1;
        while (b > 0 && (static_cast<uint8_t>(text[b]) & 0xC0) == 0x80) --b;
        size_t k = b;
        const char32_t c = d::utf8_next(text, k);
        return d::is_alphanumeric(c) || c == '_';
      }
      if (i >= text.size()) return false;
      size_t k = i;
      const char32_t c = d::utf8_next(text, k);
      return d::is_alphanumeric(c) || c == '_';
    };
    for (size_t i = 0; i < text.size();) {
      const auto [len, token] = m.longest(std::string_view(text).substr(i));
      if (len == 0 || (added_[static_cast<size_t>(token)].single_word &&
                       (is_word(i, true) || is_word(i + len, false)))) {
        i += d::utf8_lead_len(static_cast<uint8_t>(text[i]));
        continue;
      }
      if (i > start) out.push_back({text.substr(start, i - start), -1});
      out.push_back({std::string(), token});
      i += len;
      start = i;
    }
    if (start < text.size()) out.push_back({text.substr(start), -1});
    // lstrip / rstrip remove the whitespace beside the token from the neighbouring text.
    for (size_t k = 0; k < out.size(); ++k) {
      if (out[k].token < 0) continue;
      const AddedToken &t = added_[static_cast<size_t>(out[k].token)];
      if (t.lstrip && k > 0 && out[k - 1].token < 0)
        out[k - 1].text = strip_white(std::move(out[k - 1].text), false, true);
      if (t.rstrip && k + 1 < out.size() && out[k + 1].token < 0)
        out[k + 1].text = strip_white(std::move(out[k + 1].text), true, false);
    }
    std::vector<Section> kept;
    kept.reserve(out.size());
    for (auto &s : out)
      if (s.token >= 0 || !s.text.empty()) kept.push_back(std::move(s));
    return kept;
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  }

  // Byte fallback for an unknown piece: its bytes' <0xHH> tokens if all exist, else unk.
  void emit_unknown(std::string_view s, std::vector<int32_t> &out, size_t word_start) const {
    if (byte_fallback_) {
      bool all = true;
      for (char c : s) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : s) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        return;
      }
    }
    if (unk_id_ < 0) return; // no unknown token: the piece is dropped (as the JS reference)
    if ((fuse_unk_ || !bpe_) && out.size() > word_start && out.back() == unk_id_) return;
    out.push_back(unk_id_);
  }

  void encode_word(const std::string &word, StringMap<std::vector<int32_t>> &cache,
                   std::vector<int32_t> &out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (const auto it = vocab_.find(word); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() < 256;
    if (cacheable) {
      if (const auto it = cache.find(word); it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t start = out.size();
    if (bpe_)
      encode_bpe(word, out);
    else
      encode_unigram(word, out);
    if (cacheable && cache.size() < 200000)
      cache.emplace(
          word, std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
  }

  void encode_bpe(const std::string &word, std::vector<int32_t> &out) const {
    struct Sym {
      int32_t id; // -1: a character outside the vocabulary
      uint32_t begin, len;
    };
    std::vector<Sym> sym;
    sym.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      const size_t n = std::min(d::utf8_lead_len(static_cast<uint8_t>(word[i])), word.size() - i);
      const auto it = vocab_.find(std::string_view(word).substr(i, n));
      sym.push_back({it == vocab_.end() ? -1 : it->second, static_cast<uint32_t>(i),
                     static_cast<uint32_t>(n)});
      i += n;
    }
    const auto lookup = [&](int32_t l, int32_t r) -> std::optional<d::BpeMergeCandidate> {
      const int32_t a = sym[static_cast<size_t>(l)].id, b = sym[static_cast<size_t>(r)].id;
      if (a < 0 || b < 0) return std::nullopt;
      const auto it = merges_.find(pair_key(a, b));
      if (it == merges_.end()) return std::nullopt;
      // Lowest rank first; bpe_merge takes the highest score, leftmost on ties.
      return d::BpeMergeCandidate{-static_cast<float>(it->second.first), it->second.second};
    };
    const auto apply = [&](int32_t l, int32_t r, int32_t merged) {
      sym[static_cast<size_t>(l)].id = merged;
      sym[static_cast<size_t>(l)].len += sym[static_cast<size_t>(r)].len;
    };
    const std::vector<int32_t> order =
        d::bpe_merge(static_cast<int32_t>(sym.size()), lookup, apply);
    const size_t word_start = out.size();
    for (int32_t i : order) {
      const Sym &s = sym[static_cast<size_t>(i)];
      if (s.id >= 0)
        out.push_back(s.id);
      else
        emit_unknown(std::string_view(word).substr(s.begin, s.len), out, word_start);
    }
  }

  void encode_unigram(const std::string &word, std::vector<int32_t> &out) const {
    const auto score = [&](int32_t id, size_t) -> std::optional<double> {
      return scores_[static_cast<size_t>(id)];
    };
    const auto spans = d::unigram_viterbi<double>(word, trie_, score, unk_score_);
    const size_t word_start = out.size();
    for (const d::UnigramSpan &s : spans) {
      if (s.id >= 0 && s.id != unk_id_)
        out.push_back(s.id);
      else
        emit_unknown(std::string_view(word).substr(s.begin, s.end - s.begin), out, word_start);
    }
  }

  Ctx ctx_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  json normalizer_json_, pre_tokenizer_json_; // as the file spells them, for gguf_metadata
  bool bpe_ = true, byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  StringMap<int32_t> vocab_;                                         // model vocabulary
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_; // (a, b) -> (rank, merged)
  std::vector<double> scores_;                                       // Unigram
  d::PieceTrie trie_;                                                // Unigram
  double unk_score_ = 0;
  int32_t unk_id_ = -1;
  std::vector<std::string> pieces_;  // id -> vocabulary entry or added token
  std::vector<int32_t> added_index_; // id -> index into added_, -1
  std::vector<AddedToken> added_;
  TokenMatcher raw_matcher_, norm_matcher_;
  std::vector<int32_t> prefix_, suffix_;
  std::optional<int32_t> template_bos_, template_eos_;
  int32_t bos_id_ = -1, eos_id_ = -1;
  std::vector<DecodeStep> decode_steps_;
  std::array<int32_t, 256> byte_ids_{};
};

json read_json(const std::filesystem::path &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(NWC_E_IO, path.string() + ": cannot open tokenizer file");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception &e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    fail(NWC_E_CORRUPT_STREAM, path.string() + ": not valid JSON (" + what + ")");
  }
}

} // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path &path_in) {
  std::filesystem::path path = path_in;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) path /= "tokenizer.json";
  if (!std::filesystem::is_regular_file(path, ec))
    fail(NWC_E_IO, path.string() + ": cannot open tokenizer file (not a regular file)");
  const json root = read_json(path);
  const std::filesystem::path config_path = path.parent_path() / "tokenizer_config.json";
  json config;
  const bool has_config = std::filesystem::is_regular_file(config_path, ec);
  if (has_config) config = read_json(config_path);
  return std::make_unique<HfTokenizer>(Ctx{path.string()}, root, has_config ? &config : nullptr);
}

} // namespace nwc::runtime
