// Pipeline files: every error names file:line:column and the key, before any work starts.
#include "nwc/cpp/error.hpp"
#include "nwc/host/pipeline.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <fstream>
#include <iterator>

using namespace nwc::host;

namespace {
const nwc::host::Registry &registry() {
  return nwc::test::bundled_registry();
}

const std::string kGood = R"([pipeline]
name = "rtn4"
select = ["model.layers.*.weight"]
exclude = ["*norm*"]

[chunker]
plugin = "nwc.chunk.group"
group = 32

[quantizer]
plugin = "nwc.quant.uniform"
bits = 4

[entropy]
plugin = "nwc.entropy.raw"

[[override]]
match = "model.layers.0.*"
quantizer = { bits = 8 }

[[override]]
match = "model.layers.4.mlp.down_proj.weight"
skip = true
)";

std::string error_of(const std::string &text) {
  try {
    parse_pipeline(text, "p.toml", registry());
  } catch (const nwc::Error &e) {
    return e.what();
  }
  return "(no error)";
}

std::string replace(std::string s, const std::string &from, const std::string &to) {
  auto pos = s.find(from);
  REQUIRE(pos != std::string::npos);
  return s.replace(pos, from.size(), to);
}
} // namespace

TEST_CASE("a valid pipeline resolves per-tensor chains with overrides in order") {
  Pipeline p = parse_pipeline(kGood, "p.toml", registry());
  CHECK(p.name == "rtn4");
  auto c1 = p.chain_for("model.layers.1.self_attn.q_proj.weight");
  REQUIRE(c1);
  CHECK((*c1)[Slot::Quantizer].plugin == "nwc.quant.uniform");
  CHECK(std::get<int64_t>((*c1)[Slot::Quantizer].options.find("bits")->value) == 4);
  CHECK((*c1)[Slot::Compensator].plugin == "nwc.comp.none"); // the default compensator
  auto c0 = p.chain_for("model.layers.0.self_attn.q_proj.weight");
  REQUIRE(c0);
  CHECK(std::get<int64_t>((*c0)[Slot::Quantizer].options.find("bits")->value) == 8);
  CHECK(std::get<int64_t>((*c0)[Slot::Chunker].options.find("group")->value) == 32);
  CHECK_FALSE(p.chain_for("model.layers.4.mlp.down_proj.weight"));
  CHECK_FALSE(p.chain_for("model.layers.1.input_layernorm.weight")); // excluded
  CHECK_FALSE(p.chain_for("model.embed_tokens.weight"));             // not selected
}

TEST_CASE("invalid TOML names line and column") {
  std::string e = error_of("[chunker\nplugin = 1\n");
  CHECK(e.find("p.toml:1:") != std::string::npos);
  CHECK(e.find("invalid TOML") != std::string::npos);
}

TEST_CASE("unknown key with a suggestion, at its position") {
  std::string e = error_of(replace(kGood, "group = 32", "gruop = 32"));
  CHECK(e.find("p.toml:8:1: chunker.gruop: unknown option of nwc.chunk.group (did you mean "
               "'group'?)") != std::string::npos);
  e = error_of(replace(kGood, "[entropy]", "[entropi]"));
  CHECK(e.find("did you mean 'entropy'") != std::string::npos);
}

TEST_CASE("wrong type names the key and both types") {
  std::string e = error_of(replace(kGood, "bits = 4", "bits = \"four\""));
  CHECK(e.find("p.toml:12:1: quantizer.bits: expected an int, got string") != std::string::npos);
}

TEST_CASE("out of range names the key, the value and the bounds") {
  std::string e = error_of(replace(kGood, "bits = 4", "bits = 12"));
  CHECK(e.find("p.toml:12:1: quantizer.bits") != std::string::npos);
  CHECK(e.find("out of range [2, 8]") != std::string::npos);
  e = error_of(replace(kGood, "bits = 8 }", "bits = 1 }"));
  CHECK(e.find("p.toml:19:") != std::string::npos);
}

TEST_CASE("unknown plugin id, with a suggestion") {
  std::string e = error_of(replace(kGood, "nwc.entropy.raw", "nwc.entropy.rawr"));
  CHECK(e.find("p.toml:15:") != std::string::npos);
  CHECK(e.find("unknown plugin id 'nwc.entropy.rawr' (did you mean 'nwc.entropy.raw'?)") !=
        std::string::npos);
}

TEST_CASE("a plugin of the wrong kind in a slot") {
  std::string e =
      error_of(replace(kGood, "plugin = \"nwc.entropy.raw\"", "plugin = \"nwc.quant.uniform\""));
  CHECK(e.find("entropy.plugin: nwc.quant.uniform is a quantizer, not an entropy coder") !=
        std::string::npos);
}

TEST_CASE("missing required stage tables") {
  std::string e = error_of("[chunker]\nplugin = \"nwc.chunk.group\"\n");
  CHECK(e.find("missing [quantizer]") != std::string::npos);
}

TEST_CASE("bad enum value lists the choices") {
  std::string e = error_of(replace(kGood, "group = 32", "group = 32\ntail = \"wrap\""));
  CHECK(e.find("chunker.tail") != std::string::npos);
  CHECK(e.find("\"pad\"") != std::string::npos);
}

TEST_CASE("calibration mode: original by default, sequential on request, nothing else") {
  CHECK(parse_pipeline(kGood, "p.toml", registry()).calibration_mode == CalibrationMode::Original);
  CHECK(parse_pipeline(kGood + "\n[calibration]\nmode = \"sequential\"\n", "p.toml", registry())
            .calibration_mode == CalibrationMode::Sequential);
  CHECK(parse_pipeline(kGood + "\n[calibration]\nmode = \"original\"\n", "p.toml", registry())
            .calibration_mode == CalibrationMode::Original);
  CHECK(error_of(kGood + "\n[calibration]\nmode = \"true-sequential\"\n") ==
        "p.toml:26:8: calibration.mode: expected \"original\" or \"sequential\"");
  CHECK(error_of(kGood + "\n[calibration]\nmode = 1\n") ==
        "p.toml:26:8: calibration.mode: expected \"original\" or \"sequential\"");
}

TEST_CASE("glob patterns") {
  CHECK(glob_match("model.layers.*.self_attn.*_proj.weight",
                   "model.layers.3.self_attn.q_proj.weight"));
  CHECK_FALSE(
      glob_match("model.layers.*.self_attn.*_proj.weight", "model.layers.3.mlp.up_proj.weight"));
  CHECK(glob_match("*", ""));
  CHECK(glob_match("a?c", "abc"));
  CHECK_FALSE(glob_match("a?c", "ac"));
  CHECK(glob_match("*a*a*a*", "xaxaxax"));
  CHECK_FALSE(glob_match("*a*a*a*b", std::string(200, 'a')));
}

TEST_CASE("awq table: off without it, AutoAWQ defaults with bits and group from the coder") {
  CHECK_FALSE(parse_pipeline(kGood, "p.toml", registry()).awq.enabled);
  // kGood: nwc.chunk.group with group = 32, nwc.quant.uniform with bits = 4.
  const Pipeline p = parse_pipeline(kGood + "\n[awq]\n", "p.toml", registry());
  CHECK(p.awq.enabled);
  CHECK(p.awq.bits == 4);
  CHECK(p.awq.group == 32);
  CHECK(p.awq.grid == 20);
  CHECK(p.awq.duo_scaling);
  CHECK(p.awq.clip);
  CHECK(p.awq.max_shrink == 0.5);
  CHECK(p.awq.clip_grid == 20);
  CHECK(p.awq.clip_tokens == 512);
  CHECK(p.awq.where == "p.toml:25:1");
  // The coder's values as set, or its schema defaults (nwc.chunk.group: 128 columns).
  const Pipeline three = parse_pipeline(
      replace(replace(kGood, "bits = 4", "bits = 3"), "group = 32\n", "") + "\n[awq]\n", "p.toml",
      registry());
  CHECK(three.awq.bits == 3);
  CHECK(three.awq.group == 128);
  // Given values win over the coder's.
  const Pipeline given =
      parse_pipeline(kGood + "\n[awq]\nbits = 3\ngroup = 64\ngrid = 10\n"
                             "duo_scaling = false\nclip = false\nmax_shrink = 0.25\n"
                             "clip_grid = 8\nclip_tokens = 128\n",
                     "p.toml", registry());
  CHECK(given.awq.bits == 3);
  CHECK(given.awq.group == 64);
  CHECK(given.awq.grid == 10);
  CHECK_FALSE(given.awq.duo_scaling);
  CHECK_FALSE(given.awq.clip);
  CHECK(given.awq.max_shrink == 0.25);
  CHECK(given.awq.clip_grid == 8);
  CHECK(given.awq.clip_tokens == 128);
}

TEST_CASE("awq table: unknown keys and out-of-range values name file, line and column") {
  CHECK(error_of(kGood + "\n[awq]\nbits = 3\nzzzzzz = 1\n") ==
        "p.toml:27:1: awq.zzzzzz: unknown key");
  CHECK(error_of(kGood + "\n[awq]\nbits = 9\n") ==
        "p.toml:26:8: awq.bits: expected an integer in [1, 8]");
  CHECK(error_of(kGood + "\n[awq]\ngroup = 0\n") ==
        "p.toml:26:9: awq.group: expected an integer in [1, 16777216]");
  CHECK(error_of(kGood + "\n[awq]\nmax_shrink = 1.0\n") ==
        "p.toml:26:14: awq.max_shrink: expected a number in [0, 1)");
  CHECK(error_of(kGood + "\n[awq]\nclip = 1\n") == "p.toml:26:8: awq.clip: expected a bool");
  CHECK(error_of(kGood + "\n[awq]\ngrid = \"20\"\n") ==
        "p.toml:26:8: awq.grid: expected an integer in [1, 1000]");
  CHECK(error_of("awq = 3\n" + kGood) == "p.toml:1:7: awq: expected a table");
}

TEST_CASE("blockft table: defaults, inputs, the end-to-end stage, and errors naming the key") {
  const Pipeline plain = parse_pipeline(kGood + "\n[blockft]\n", "p.toml", registry());
  CHECK(plain.blockft.enabled);
  CHECK_FALSE(plain.blockft.coded_inputs);
  CHECK(plain.blockft.e2e_epochs == 0);
  CHECK(plain.blockft.seed == 0);
  CHECK_FALSE(plain.blockft.e2e_embeddings);
  const Pipeline set =
      parse_pipeline(kGood + "\n[blockft]\ninputs = \"coded\"\ne2e_epochs = 20\ne2e_lr = "
                             "3e-4\ne2e_sequences = 256\ne2e_embeddings = true\nseed = 7\n",
                     "p.toml", registry());
  CHECK(set.blockft.e2e_embeddings);
  CHECK(set.blockft.coded_inputs);
  CHECK(set.blockft.e2e_epochs == 20);
  CHECK(set.blockft.e2e_lr == 3e-4);
  CHECK(set.blockft.e2e_sequences == 256);
  CHECK(set.blockft.seed == 7);
  CHECK(error_of(kGood + "\n[blockft]\nseed = -3\n") ==
        "p.toml:26:8: blockft.seed: expected a non-negative int");
  CHECK(error_of(kGood + "\n[blockft]\ne2e_sequences = 0\n") ==
        "p.toml:26:17: blockft.e2e_sequences: expected a positive int");
  CHECK(error_of(kGood + "\n[blockft]\ninputs = \"quantized\"\n") ==
        "p.toml:26:10: blockft.inputs: expected \"original\" or \"coded\"");
  CHECK(error_of(kGood + "\n[blockft]\ne2e_epochs = -1\n") ==
        "p.toml:26:14: blockft.e2e_epochs: expected a non-negative int");
  CHECK(error_of(kGood + "\n[blockft]\ne2e_lr = 2\n") ==
        "p.toml:26:10: blockft.e2e_lr: expected a number in (0, 1)");
  CHECK(error_of(kGood + "\n[blockft]\ne2e = 1\n") == "p.toml:26:1: blockft.e2e: unknown key");
  CHECK(error_of(kGood + "\n[blockft]\ne2e_epochs = 2\ne2e_embeddings = 1\n") ==
        "p.toml:27:18: blockft.e2e_embeddings: expected true or false");
  CHECK(error_of(kGood + "\n[blockft]\ne2e_embeddings = true\n") ==
        "p.toml:26:18: blockft.e2e_embeddings: needs e2e_epochs > 0 (the stage that trains them)");
}

TEST_CASE("allocate table: codecs relative to the file, a target, checked where written") {
  CHECK_FALSE(parse_pipeline(kGood, "p.toml", registry()).allocate.enabled);
  const Pipeline p = parse_pipeline(
      kGood + "\n[allocate]\ncodecs = [\"c/a.nwcc\", \"/abs/b.nwcc\"]\ntarget_bpw = 4.5\n",
      "/some/dir/p.toml", registry());
  CHECK(p.allocate.enabled);
  CHECK(p.allocate.codecs == std::vector<std::string>{"/some/dir/c/a.nwcc", "/abs/b.nwcc"});
  CHECK(p.allocate.target_bpw == 4.5);
  CHECK(p.allocate.tokens == 4096);
  CHECK(p.allocate.seq_len == 128);
  CHECK(p.allocate.where == "/some/dir/p.toml:25:1");
  const Pipeline q = parse_pipeline(
      kGood + "\n[allocate]\ncodecs = \"a\"\ntarget_bpw = 3\ntokens = 512\nseq_len = 64\n",
      "p.toml", registry());
  CHECK(q.allocate.target_bpw == 3.0);
  CHECK(q.allocate.tokens == 512);
  CHECK(q.allocate.seq_len == 64);

  CHECK(error_of(kGood + "\n[allocate]\ntarget_bpw = 4\n") ==
        "p.toml:25:1: allocate: needs codecs = [\"<codec file>\", ...] or [[allocate.candidate]] "
        "tables (the choices besides the pipeline's own chain)");
  CHECK(error_of(kGood + "\n[allocate]\ncodecs = []\ntarget_bpw = 4\n") ==
        "p.toml:26:10: allocate.codecs: expected at least one codec file");
  CHECK(error_of(kGood + "\n[allocate]\ncodecs = [\"a\"]\n") ==
        "p.toml:25:1: allocate.target_bpw: expected bits per coded weight in (0, 64]");
  CHECK(error_of(kGood + "\n[allocate]\ncodecs = [\"a\"]\ntarget_bpw = -1\n") ==
        "p.toml:27:14: allocate.target_bpw: expected bits per coded weight in (0, 64]");
  CHECK(error_of(kGood + "\n[allocate]\ncodecs = [\"a\"]\ntarget_bpw = 4\nseq_len = 1\n") ==
        "p.toml:28:11: allocate.seq_len: expected an int in [2, 100000000]");
  CHECK(error_of(kGood + "\n[allocate]\ncodecs = [\"a\"]\ntarget_bpw = 4\ntokens = 64\n") ==
        "p.toml:25:1: allocate.tokens: expected at least seq_len (128) tokens, one window");
  CHECK(error_of(kGood + "\n[allocate]\ncodecs = [\"a\"]\ntarget_bpw = 4\nbits = 4\n")
            .rfind("p.toml:28:1: allocate.bits: unknown key", 0) == 0);
  CHECK(error_of("allocate = 1\n" + kGood) == "p.toml:1:12: allocate: expected a table");
  CHECK(error_of(kGood + "\n[calibration]\nmode = \"sequential\"\n[allocate]\ncodecs = "
                         "[\"a\"]\ntarget_bpw = 4\n") ==
        "p.toml:27:1: [allocate] cannot be combined with [calibration] mode = \"sequential\": it "
        "codes every tensor on the original model's Hessians");
}

TEST_CASE("allocate table: candidates as stage options, groups, checked where written") {
  const Pipeline p = parse_pipeline(kGood + "\n[allocate]\ntarget_bpw = 4\ngroup = \"kind\"\n"
                                            "[[allocate.candidate]]\nquantizer = { bits = 3 }\n"
                                            "[[allocate.candidate]]\nchunker = { group = 128 }\n"
                                            "quantizer = { bits = 6 }\n",
                                    "p.toml", registry());
  CHECK(p.allocate.codecs.empty());
  CHECK(p.allocate.group == AllocateGroup::Kind);
  REQUIRE(p.allocate.candidates.size() == 2);
  CHECK(p.allocate.candidates[0].where == "p.toml:28:1");
  // Merged as an [[override]] merges: options over the base chain's, the rest of the chain kept.
  StageChain one = p.base, two = p.base;
  merge_stages(one, p.allocate.candidates[0]);
  merge_stages(two, p.allocate.candidates[1]);
  CHECK(std::get<int64_t>(one[Slot::Quantizer].options.find("bits")->value) == 3);
  CHECK(std::get<int64_t>(one[Slot::Chunker].options.find("group")->value) == 32);
  CHECK(std::get<int64_t>(two[Slot::Quantizer].options.find("bits")->value) == 6);
  CHECK(std::get<int64_t>(two[Slot::Chunker].options.find("group")->value) == 128);
  CHECK(parse_pipeline(kGood + "\n[allocate]\ncodecs = [\"a\"]\ntarget_bpw = 4\n", "p.toml",
                       registry())
            .allocate.group == AllocateGroup::Tensor);

  const std::string head = kGood + "\n[allocate]\ntarget_bpw = 4\n";
  CHECK(error_of(head + "group = \"layer\"\n[[allocate.candidate]]\nquantizer = { bits = 3 }\n") ==
        "p.toml:27:9: allocate.group: expected \"tensor\", \"block\" or \"kind\"");
  CHECK(error_of(head + "[[allocate.candidate]]\nquantizer = { bitz = 3 }\n") ==
        "p.toml:28:15: quantizer.bitz: unknown option of nwc.quant.uniform (did you mean 'bits'?)");
  CHECK(error_of(head + "[[allocate.candidate]]\nquantizer = { bits = 99 }\n")
            .rfind("p.toml:28:15: quantizer.bits: ", 0) == 0);
  CHECK(error_of(head + "[[allocate.candidate]]\nmatch = \"x\"\n") ==
        "p.toml:28:1: allocate.candidate.match: unknown key");
  CHECK(error_of(head + "[[allocate.candidate]]\nquantizer = { bits = 4 }\n") ==
        "p.toml:27:1: allocate.candidate: changes nothing in the pipeline's chain; expected stage "
        "options such as quantizer = { bits = 3 }");
  CHECK(error_of(head + "candidate = 1\n") ==
        "p.toml:27:13: allocate.candidate: expected [[allocate.candidate]] tables");
  // A rotating candidate is refused with [levels] or [blockft], as a rotating [[override]] is.
  CHECK(
      error_of(head + "[[allocate.candidate]]\nrotation = { plugin = \"nwc.rotation.hadamard\" }\n"
                      "[blockft]\nepochs = 1\n")
          .find("[blockft] cannot be combined with [rotation] (p.toml:27:1)") != std::string::npos);
}

TEST_CASE("a container records the pipeline without its comments, strings byte for byte") {
  const std::string text = "# a preset\n"
                           "[pipeline]   # the table\n"
                           "name = \"a # not a comment\"  # a comment\n"
                           "\n"
                           "select = ['x#y', \"q\\\"#\"]\n"
                           "doc = \"\"\"\n"
                           "  # kept: inside a multi-line string\n"
                           "\n"
                           "ends with quotes\"\"\"\"\" # gone\n"
                           "raw = '''# kept\n"
                           "'''\n"
                           "   # indented comment\n"
                           "n = 3#tight\n";
  const std::string want = "[pipeline]\n"
                           "name = \"a # not a comment\"\n"
                           "select = ['x#y', \"q\\\"#\"]\n"
                           "doc = \"\"\"\n"
                           "  # kept: inside a multi-line string\n"
                           "\n"
                           "ends with quotes\"\"\"\"\"\n"
                           "raw = '''# kept\n"
                           "'''\n"
                           "n = 3\n";
  CHECK(toml_without_comments(text) == want);
  // Invalid TOML is recorded as given (the stripped text must parse to the same document).
  CHECK(toml_without_comments("a = \"unterminated # x\n") == "a = \"unterminated # x\n");
  // A shipped preset (its plugins are in every test build): every key and value kept, a third of
  // the bytes or more gone.
  const auto preset = nwc::test::source_dir() / "pipelines" / "nwc-datafree-l300.toml";
  std::ifstream f(preset);
  const std::string shipped((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(!shipped.empty());
  const std::string stripped = toml_without_comments(shipped);
  CHECK(stripped.find('#') == std::string::npos);
  CHECK(stripped.size() * 3 < shipped.size() * 2);
  const Pipeline a = parse_pipeline(shipped, preset, registry());
  const Pipeline b = parse_pipeline(stripped, preset, registry());
  for (const char *t :
       {"model.layers.0.self_attn.k_proj.weight", "model.layers.4.mlp.down_proj.weight"})
    CHECK(a.chain_for(t)->to_json() == b.chain_for(t)->to_json());
}
