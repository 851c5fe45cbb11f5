// The nwc executable end to end: the main job on stories260K, and every kind of bad input gets a
// one-line error, a non-zero exit and no output file.
#include "cli_runner.hpp"
#include "nwc/abi.h"
#include "nwc/formats/container.hpp"
#include "nwc/formats/model.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <sys/wait.h>
#include <xxhash.h>

namespace fs = std::filesystem;
using nwc::test::Result;
using nwc::test::run_nwc;
using nwc::test::slurp;
using nwc::test::TempDir;

namespace {

std::string model() {
  return nwc::test::stories260k().string();
}
std::string pipeline(const std::string &name) {
  return (nwc::test::source_dir() / "pipelines" / name).string();
}

// A failed command: the expected exit code, exactly one line on stderr naming the problem, and
// nothing left in the output directory.
void expect_failure(const Result &r, int code, const std::string &needle, const TempDir &dir,
                    const std::vector<std::string> &allowed = {}) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == code);
  CHECK(r.err.find(needle) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  std::vector<std::string> left;
  for (const auto &e : dir.entries())
    if (std::find(allowed.begin(), allowed.end(), e) == allowed.end()) left.push_back(e);
  CHECK(left.empty());
}

void write_text(const fs::path &p, const std::string &s) {
  nwc::test::write_bytes(p, s.data(), s.size());
}

// Compresses stories260K into dir/m.nwc with the 4-bit preset.
void make_container(const TempDir &dir) {
  Result r = run_nwc({"compress", model(), "--pipeline", pipeline("rtn-4bit-g32.toml"), "-o",
                      (dir / "m.nwc").string(), "--quiet"});
  REQUIRE(r.exit_code == 0);
}

uint64_t le64(const uint8_t *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

} // namespace

TEST_CASE("compress, inspect, decompress stories260K with the 4-bit preset") {
  TempDir dir;
  Result c = run_nwc({"compress", model(), "--pipeline", pipeline("rtn-4bit-g32.toml"), "-o",
                      (dir / "m.nwc").string(), "--json"});
  REQUIRE(c.exit_code == 0);
  auto cj = nlohmann::json::parse(c.out);
  CHECK(cj["tensors"] == 47); // embedding, 5 x (2 norms + 7 linears), final norm
  CHECK(cj["weights"] == 260032);
  CHECK(cj["bytes"].get<uint64_t>() == fs::file_size(dir / "m.nwc"));

  Result i = run_nwc({"inspect", (dir / "m.nwc").string(), "--reference", model(), "--json"});
  REQUIRE(i.exit_code == 0);
  auto ij = nlohmann::json::parse(i.out);
  const auto &totals = ij["totals"];
  CHECK(totals["bytes"].get<uint64_t>() == fs::file_size(dir / "m.nwc"));
  CHECK(totals["bits_per_weight"].get<double>() ==
        doctest::Approx(8.0 * static_cast<double>(fs::file_size(dir / "m.nwc")) / 260032));
  // Coded linears: 4-bit symbols + an fp16 scale and a 4-bit zero point per 32 weights (GPTQ's
  // grid) = 4.625 bits, plus stream headers and the container's share.
  // down_proj (172 columns) pads its last group of each block, and the 16 KB manifest is shared
  // by 260K weights: about 0.5 bits/weight of container overhead on a model this small.
  CHECK(totals["pipeline_bits_per_weight"].get<double>() > 4.625);
  CHECK(totals["pipeline_bits_per_weight"].get<double>() < 6.0);
  uint64_t q_bytes = 0;
  for (const auto &t : ij["tensors"])
    if (t["name"] == "model.layers.0.self_attn.q_proj.weight") q_bytes = t["stream_bytes"];
  // 64x64 weights: 2048 bytes of 4-bit symbols + 5-byte raw header; side: 128 groups x (2-byte
  // fp16 scale + 4-bit zero point).
  CHECK(q_bytes == 2048 + 5 + 128 * 2 + 128 * 4 / 8);
  CHECK(totals["mse"].get<double>() > 0);
  CHECK(totals["mse"].get<double>() < 1e-3);
  for (const auto &t : ij["tensors"])
    if (t["storage"] == "raw") CHECK(t["mse"].get<double>() == 0.0);

  Result d =
      run_nwc({"decompress", (dir / "m.nwc").string(), "-o", (dir / "m.safetensors").string()});
  REQUIRE(d.exit_code == 0);
  // The decompressed file is itself a model: compressing it losslessly gives the same MSE.
  Result i2 = run_nwc({"inspect", (dir / "m.nwc").string(), "--reference",
                       (dir / "m.safetensors").string(), "--json"});
  REQUIRE(i2.exit_code == 0);
  CHECK(nlohmann::json::parse(i2.out)["totals"]["mse"].get<double>() == 0.0);
}

TEST_CASE("plugins list and show describe the shipped plugins and their options") {
  Result r = run_nwc({"plugins", "list", "--json"});
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  std::vector<std::string> ids;
  for (const auto &p : j["plugins"]) ids.push_back(p["id"]);
  for (const char *id : {"nwc.chunk.group", "nwc.quant.uniform", "nwc.entropy.raw",
                         "nwc.entropy.zstd", "nwc.comp.none"})
    CHECK(std::find(ids.begin(), ids.end(), id) != ids.end());
  Result s = run_nwc({"plugins", "show", "nwc.quant.uniform", "--json"});
  REQUIRE(s.exit_code == 0);
  auto sj = nlohmann::json::parse(s.out);
  // Bundled plugins are built against this SDK's ABI.
  CHECK(sj["abi_version"] ==
        std::to_string(NWC_ABI_VERSION_MAJOR) + "." + std::to_string(NWC_ABI_VERSION_MINOR));
  bool found = false;
  for (const auto &o : sj["options"])
    if (o["key"] == "bits") {
      found = true;
      CHECK(o["range"][0] == 2);
      CHECK(o["range"][1] == 8);
      CHECK(!o["doc"].get<std::string>().empty());
    }
  CHECK(found);
  Result text = run_nwc({"plugins", "show", "nwc.quant.uniform"});
  CHECK(text.out.find("bits (int, default 4, 2..8") != std::string::npos);
}

TEST_CASE("usage errors exit with 2") {
  CHECK(run_nwc({"compress"}).exit_code == 2);
  CHECK(run_nwc({"frobnicate"}).exit_code == 2);
  CHECK(run_nwc({"compress", model(), "--pipeline", "x", "-o", "y", "--bogus"}).exit_code == 2);
  CHECK(run_nwc({"decompress", "x.nwc", "-o", "y", "--dtype", "F64"}).exit_code == 2);
}

TEST_CASE("bad model inputs") {
  TempDir dir;
  const std::string out = (dir / "o.nwc").string();
  auto compress = [&](const std::string &m) {
    return run_nwc({"compress", m, "--pipeline", pipeline("rtn-4bit-g32.toml"), "-o", out});
  };
  SUBCASE("missing model") {
    expect_failure(compress((dir / "absent.bin").string()), 1, "absent.bin", dir);
  }
  SUBCASE("a directory without model files") {
    fs::create_directory(dir / "empty");
    expect_failure(compress((dir / "empty").string()), 1, "empty", dir, {"empty"});
  }
  SUBCASE("a .gguf that is not GGUF") {
    write_text(dir / "x.gguf", "hello, this is text\n");
    expect_failure(compress((dir / "x.gguf").string()), 1, "not a GGUF file", dir, {"x.gguf"});
  }
  SUBCASE("a .safetensors that is not safetensors") {
    write_text(dir / "x.safetensors", "hello, this is text and not a header\n");
    expect_failure(compress((dir / "x.safetensors").string()), 1, "safetensors", dir,
                   {"x.safetensors"});
  }
  SUBCASE("truncated llama2.c") {
    auto bytes = nwc::test::read_bytes(model());
    nwc::test::write_bytes(dir / "t.bin", bytes.data(), bytes.size() - 1000);
    expect_failure(compress((dir / "t.bin").string()), 1, "truncated", dir, {"t.bin"});
  }
  SUBCASE("truncated safetensors") {
    TempDir work;
    make_container(work);
    REQUIRE(
        run_nwc({"decompress", (work / "m.nwc").string(), "-o", (work / "m.safetensors").string()})
            .exit_code == 0);
    auto bytes = nwc::test::read_bytes(work / "m.safetensors");
    nwc::test::write_bytes(dir / "t.safetensors", bytes.data(), bytes.size() / 2);
    expect_failure(compress((dir / "t.safetensors").string()), 1, "t.safetensors", dir,
                   {"t.safetensors"});
  }
  SUBCASE("safetensors header with offsets outside the file") {
    std::string header = R"({"a.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}})";
    std::string file(8, '\0');
    uint64_t n = header.size();
    std::memcpy(file.data(), &n, 8);
    file += header + std::string(16, '\0');
    write_text(dir / "o.safetensors", file);
    expect_failure(compress((dir / "o.safetensors").string()), 1, "o.safetensors", dir,
                   {"o.safetensors"});
  }
  SUBCASE("truncated GGUF") {
    std::string g = "GGUF";
    uint32_t version = 3;
    uint64_t tensors = 1, kvs = 5;
    g.append(reinterpret_cast<const char *>(&version), 4);
    g.append(reinterpret_cast<const char *>(&tensors), 8);
    g.append(reinterpret_cast<const char *>(&kvs), 8);
    write_text(dir / "t.gguf", g);
    expect_failure(compress((dir / "t.gguf").string()), 1, "t.gguf", dir, {"t.gguf"});
  }
}

TEST_CASE("bad pipeline inputs") {
  TempDir dir;
  const std::string out = (dir / "o.nwc").string();
  const std::string good = slurp(pipeline("rtn-4bit-g32.toml"));
  auto with = [&](const std::string &from, const std::string &to) {
    std::string s = good;
    auto pos = s.find(from);
    REQUIRE(pos != std::string::npos);
    s.replace(pos, from.size(), to);
    write_text(dir / "p.toml", s);
    return run_nwc({"compress", model(), "--pipeline", (dir / "p.toml").string(), "-o", out});
  };
  SUBCASE("invalid TOML") {
    expect_failure(with("[chunker]", "[chunker"), 1, "invalid TOML", dir, {"p.toml"});
  }
  SUBCASE("unknown plugin id") {
    expect_failure(with("nwc.entropy.raw", "nwc.entropy.rans2"), 1, "unknown plugin id", dir,
                   {"p.toml"});
  }
  SUBCASE("option of the wrong type") {
    expect_failure(with("bits = 4", "bits = 4.5"), 1, "quantizer.bits: expected an int, got float",
                   dir, {"p.toml"});
  }
  SUBCASE("option out of range") {
    expect_failure(with("bits = 4", "bits = 9"), 1, "out of range [2, 8]", dir, {"p.toml"});
  }
  SUBCASE("a shape the chunker cannot handle") {
    expect_failure(with("group = 32", "group = 32\ntail = \"error\""), 1,
                   "model.layers.0.mlp.down_proj.weight", dir, {"p.toml"});
  }
  SUBCASE("missing pipeline file") {
    Result r =
        run_nwc({"compress", model(), "--pipeline", (dir / "none.toml").string(), "-o", out});
    expect_failure(r, 1, "none.toml", dir);
  }
}

TEST_CASE("output path not writable") {
  TempDir dir;
  Result r = run_nwc({"compress", model(), "--pipeline", pipeline("rtn-4bit-g32.toml"), "-o",
                      (dir / "no-such-dir" / "o.nwc").string()});
  expect_failure(r, 1, "no-such-dir", dir);
}

TEST_CASE("bad containers") {
  TempDir dir;
  make_container(dir);
  const auto good = nwc::test::read_bytes(dir / "m.nwc");
  auto decompress = [&](const std::vector<uint8_t> &bytes, const std::string &extra_env = "") {
    nwc::test::write_bytes(dir / "bad.nwc", bytes);
    return run_nwc(
        {"decompress", (dir / "bad.nwc").string(), "-o", (dir / "o.safetensors").string()},
        extra_env);
  };
  const std::vector<std::string> inputs{"m.nwc", "bad.nwc"};
  SUBCASE("truncated") {
    for (size_t cut :
         {size_t{10}, size_t{100}, good.size() / 2, good.size() - 41, good.size() - 1}) {
      std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<long>(cut));
      expect_failure(decompress(t), 1, "bad.nwc", dir, inputs);
    }
  }
  SUBCASE("a flipped byte in a stream fails its checksum") {
    std::vector<uint8_t> t = good;
    t[200] ^= 0x01;
    expect_failure(decompress(t), 1, "checksum", dir, inputs);
  }
  SUBCASE("a version 1 manifest that lies about a stream length") {
    // Version 1 keeps each stream's offset and length in a JSON manifest (version 2 implies the
    // offsets from the lengths; the fuzz corpus covers its inconsistent tables).
    nwc::ContainerWriteOptions v1;
    v1.format_version = 1;
    nwc::container_rewrite(nwc::ContainerReader(dir / "m.nwc"), dir / "m1.nwc", v1);
    const auto v1_file = nwc::test::read_bytes(dir / "m1.nwc");
    const uint8_t *footer = v1_file.data() + v1_file.size() - 40;
    uint64_t moff = le64(footer), mlen = le64(footer + 8);
    auto manifest = nlohmann::json::parse(v1_file.begin() + static_cast<long>(moff),
                                          v1_file.begin() + static_cast<long>(moff + mlen));
    manifest["tensors"][1]["streams"][0]["length"] = moff; // runs into the manifest
    std::string m = manifest.dump();
    std::vector<uint8_t> t(v1_file.begin(), v1_file.begin() + static_cast<long>(moff));
    t.insert(t.end(), m.begin(), m.end());
    uint64_t f[3] = {moff, m.size(), XXH64(m.data(), m.size(), 0)};
    const uint8_t *rest = footer + 24;
    t.insert(t.end(), reinterpret_cast<uint8_t *>(f), reinterpret_cast<uint8_t *>(f) + 24);
    t.insert(t.end(), rest, rest + 16);
    expect_failure(decompress(t), 1, "bad.nwc", dir, {"m.nwc", "m1.nwc", "bad.nwc"});
  }
  SUBCASE("a plugin the file needs is not installed") {
    Result r = run_nwc({"decompress", (dir / "m.nwc").string(), "-o",
                        (dir / "o.safetensors").string(), "--no-default-plugin-path"},
                       "NWC_PLUGIN_PATH=");
    expect_failure(r, 1, "not installed", dir, {"m.nwc"});
  }
}

TEST_CASE("eval: the original model and its 4-bit container, side by side") {
  TempDir dir;
  make_container(dir);
  const auto data = nwc::test::data_dir();
  const std::string tok = (data / "models" / "stories260K" / "tok512.bin").string();
  const std::string text = (data / "text" / "tinystories-eval.txt").string();
  auto eval = [&](const std::string &m) {
    Result r = run_nwc({"eval", "--model", m, "--tokenizer", tok, "--text", text, "--max-tokens",
                        "20480", "--threads", "1", "--json"});
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out);
  };
  auto orig = eval(model()), quant = eval((dir / "m.nwc").string());
  for (const auto &j : {orig, quant}) {
    CHECK(j["protocol"] == "ppl-v1");
    CHECK(j["tokens"] == 20480);
    CHECK(j["windows"] == 40);
    CHECK(j["tokens_per_second"].get<double>() > 0);
    CHECK(j["ppl"].get<double>() == doctest::Approx(std::exp(j["nll"].get<double>())));
  }
  CHECK(std::abs(orig["nll"].get<double>() - 1.40716) <= 0.0005);
  // 4-bit RTN costs some perplexity on a model this small, but not all of it.
  CHECK(quant["nll"].get<double>() > orig["nll"].get<double>() + 0.005);
  CHECK(quant["nll"].get<double>() < orig["nll"].get<double>() + 0.5);
  MESSAGE("ppl-v1 (20480 tokens): original NLL " << orig["nll"] << ", rtn-4bit-g32 NLL "
                                                 << quant["nll"]);
}

TEST_CASE("eval --protocol wikitext2 on wiki.test.raw: GPTQ's WikiText-2 rules") {
  const auto data = nwc::test::data_dir();
  const std::string tok = (data / "models" / "stories260K" / "tok512.bin").string();
  const std::string text = (data / "text" / "wiki.test.raw").string();
  auto eval = [&](const std::string &protocol) {
    Result r = run_nwc({"eval", "--model", model(), "--tokenizer", tok, "--text", text,
                        "--protocol", protocol, "--max-tokens", "20480", "--json"});
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out);
  };
  auto w = eval("wikitext2"), v1 = eval("ppl-v1");
  CHECK(w["protocol"] == "wikitext2");
  CHECK(w["seq_len"] == 512); // min(2048, stories260K's 512)
  CHECK(w["tokens"] == 20480);
  CHECK(w["windows"] == 40);
  CHECK(w["predicted_tokens"] == 40 * 511);
  CHECK(w["ppl"].get<double>() == doctest::Approx(std::exp(w["nll"].get<double>())));
  CHECK(std::abs(w["nll"].get<double>() - 4.85196) <= 0.0005);
  // ppl-v1 reads the same file as documents with a BOS each: another stream, another figure.
  CHECK(v1["protocol"] == "ppl-v1");
  CHECK(std::abs(v1["nll"].get<double>() - w["nll"].get<double>()) > 0.01);
  MESSAGE("wiki.test.raw, first 20480 tokens, stories260K: wikitext2 NLL "
          << w["nll"] << " ppl " << w["ppl"] << "; ppl-v1 NLL " << v1["nll"]);
  Result bad = run_nwc(
      {"eval", "--model", model(), "--tokenizer", tok, "--text", text, "--protocol", "wikitext"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--protocol must be ppl-v1 or wikitext2") != std::string::npos);
}

TEST_CASE("generate prints llama2.c's greedy story") {
  const auto dir = nwc::test::data_dir() / "models" / "stories260K";
  Result r = run_nwc({"generate", "--model", model(), "--tokenizer", (dir / "tok512.bin").string(),
                      "--steps", "511", "--threads", "1"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == slurp(dir / "greedy_output.txt"));
}

TEST_CASE("tokenize prints the ids, pieces and JSON of a text, and refuses bad arguments") {
  TempDir dir;
  const auto data = nwc::test::data_dir();
  const std::string tok = (data / "models" / "stories260K" / "tok512.bin").string();
  const std::string sentence = "Once upon a time, there was a little girl named Lily.";
  // The data README's encoding check: 16 ids with BOS, starting 1, 403, 407, 261.
  Result r = run_nwc({"tokenize", "--tokenizer", tok, "--string", sentence, "--bos"});
  REQUIRE(r.exit_code == 0);
  std::istringstream ids(r.out);
  std::vector<int> v;
  for (int id; ids >> id;) v.push_back(id);
  REQUIRE(v.size() == 16);
  CHECK(std::vector<int>(v.begin(), v.begin() + 4) == std::vector<int>{1, 403, 407, 261});
  // A file gives the same ids as the string; JSON carries them with the pieces.
  write_text(dir / "s.txt", sentence);
  Result j = run_nwc({"tokenize", "--tokenizer", tok, "--text", (dir / "s.txt").string(), "--bos",
                      "--pieces", "--json"});
  REQUIRE(j.exit_code == 0);
  const auto report = nlohmann::json::parse(j.out);
  CHECK(report["ids"].get<std::vector<int>>() == v);
  CHECK(report["tokens"] == 16);
  CHECK(report["pieces"][1]["piece"] == " Once");
  CHECK(report["pieces"][1]["text"] == "Once"); // the leading space of the first word is dropped
  // --pieces: one line per token.
  Result p = run_nwc({"tokenize", "--tokenizer", tok, "--string", "Once upon", "--pieces"});
  REQUIRE(p.exit_code == 0);
  CHECK(p.out == "0\t403\t Once\t Once\n1\t407\t upon\t upon\n"); // no BOS: the space stays
  // A model directory opens its tokenizer.json.
  Result hf = run_nwc({"tokenize", "--tokenizer", (data / "models" / "tinystories656K").string(),
                       "--string", sentence, "--json", "--vocab-size", "2048"});
  REQUIRE(hf.exit_code == 0);
  CHECK(nlohmann::json::parse(hf.out)["vocab_size"] == 2048);
  // Neither or both of --text/--string, a missing file, a vocabulary that does not match.
  expect_failure(run_nwc({"tokenize", "--tokenizer", tok}), 2, "exactly one of", dir, {"s.txt"});
  expect_failure(run_nwc({"tokenize", "--tokenizer", tok, "--string", "a", "--text", "b"}), 2,
                 "exactly one of", dir, {"s.txt"});
  expect_failure(run_nwc({"tokenize", "--tokenizer", tok, "--text", (dir / "none.txt").string()}),
                 1, "none.txt", dir, {"s.txt"});
  expect_failure(run_nwc({"tokenize", "--tokenizer", tok, "--string", "a", "--vocab-size", "7"}), 1,
                 "tok512.bin", dir, {"s.txt"});
}

TEST_CASE("generate samples as llama2.c's run.c does, token for token") {
  // run.c at karpathy/llama2.c 350e04f: `run stories260K.bin -z tok512.bin -t T -p P -s S -n N
  // -i PROMPT` (N counts positions, prompt included), so its text is a prefix of ours.
  struct Case {
    const char *temperature, *top_p, *seed, *prompt, *expected;
  };
  const Case cases[] = {
      {"1.0", "0.9", "42", "Once upon a time",
       "Once upon a time, there was a brave little boy named Tim. Tim loved to play with his toys "
       "and make blocks. One day, Tim went to the mirror and saw his dad. The man said, \"Look, "
       "Tim, that's not bald. We have to play with it.\"\nTim felt very happy. He"},
      {"0.8", "0", "7", "",
       "Once upon a time, there was a little girl named Lily. She loved to play with her toys all "
       "day long. One sunny day, she went to the park to play with her friend, Timmy. They went to "
       "the"},
  };
  const auto dir = nwc::test::data_dir() / "models" / "stories260K";
  for (const auto &c : cases) {
    INFO("temperature " << c.temperature << ", top-p " << c.top_p << ", seed " << c.seed);
    Result r =
        run_nwc({"generate", "--model", model(), "--tokenizer", (dir / "tok512.bin").string(),
                 "--prompt", c.prompt, "--steps", "120", "--temperature", c.temperature, "--top-p",
                 c.top_p, "--seed", c.seed, "--threads", "1"});
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.substr(0, std::string(c.expected).size()) == c.expected);
  }
  Result cold = run_nwc({"generate", "--model", model(), "--tokenizer",
                         (dir / "tok512.bin").string(), "--temperature", "-1"});
  CHECK(cold.exit_code == 2);
  CHECK(cold.err.find("--temperature") != std::string::npos);
  Result zero = run_nwc({"generate", "--model", model(), "--tokenizer",
                         (dir / "tok512.bin").string(), "--temperature", "1", "--seed", "0"});
  CHECK(zero.exit_code == 2);
  CHECK(zero.err.find("--seed") != std::string::npos);
}

TEST_CASE("calibrate writes Hessians that compress accepts only for the same model") {
  TempDir dir;
  const auto data = nwc::test::data_dir();
  Result c = run_nwc({"calibrate", "--model", model(), "--tokenizer",
                      (data / "models" / "stories260K" / "tok512.bin").string(), "--text",
                      (data / "text" / "tinystories-calib.txt").string(), "--tokens", "2048",
                      "--threads", "1", "-o", (dir / "h.safetensors").string(), "--json"});
  REQUIRE(c.exit_code == 0);
  auto j = nlohmann::json::parse(c.out);
  CHECK(j["tokens"] == 2048);
  CHECK(j["inputs"].size() == 20);
  Result ok = run_nwc({"compress", model(), "--pipeline", pipeline("rtn-4bit-g32.toml"), "-o",
                       (dir / "a.nwc").string(), "--calibration", (dir / "h.safetensors").string(),
                       "--quiet"});
  CHECK(ok.exit_code == 0);
  // The same Hessians offered for another model are refused before any output is written.
  Result other =
      run_nwc({"compress", (data / "models" / "aidreams260K" / "aidreams260K.bin").string(),
               "--pipeline", pipeline("rtn-4bit-g32.toml"), "-o", (dir / "b.nwc").string(),
               "--calibration", (dir / "h.safetensors").string()});
  expect_failure(other, 1, "calibrated on model", dir, {"h.safetensors", "a.nwc"});
}

TEST_CASE("calibrate refuses the evaluation text") {
  TempDir dir;
  const auto data = nwc::test::data_dir();
  Result r = run_nwc({"calibrate", "--model", model(), "--tokenizer",
                      (data / "models" / "stories260K" / "tok512.bin").string(), "--text",
                      (data / "text" / "tinystories-eval.txt").string(), "-o",
                      (dir / "h.safetensors").string()});
  expect_failure(r, 1, "evaluation half", dir);
}

TEST_CASE("convert writes HF and GGUF layouts that evaluate like the original") {
  TempDir dir;
  const auto data = nwc::test::data_dir();
  REQUIRE(
      run_nwc({"convert", "--model", model(), "-o", (dir / "hf").string(), "--quiet"}).exit_code ==
      0);
  REQUIRE(run_nwc({"convert", "--model", model(), "-o", (dir / "m.gguf").string(), "--layout",
                   "gguf", "--quiet"})
              .exit_code == 0);
  CHECK(fs::exists(dir / "hf" / "config.json"));
  for (const std::string &m : {(dir / "hf").string(), (dir / "m.gguf").string()}) {
    Result r = run_nwc({"eval", "--model", m, "--tokenizer",
                        (data / "models" / "stories260K" / "tok512.bin").string(), "--text",
                        (data / "text" / "tinystories-eval.txt").string(), "--max-tokens", "2048",
                        "--json"});
    REQUIRE(r.exit_code == 0);
    auto ref = run_nwc({"eval", "--model", model(), "--tokenizer",
                        (data / "models" / "stories260K" / "tok512.bin").string(), "--text",
                        (data / "text" / "tinystories-eval.txt").string(), "--max-tokens", "2048",
                        "--json"});
    CHECK(std::abs(nlohmann::json::parse(r.out)["nll"].get<double>() -
                   nlohmann::json::parse(ref.out)["nll"].get<double>()) <= 1e-4);
  }
}

TEST_CASE("convert keeps the ggml blocks of a container and of a quantized GGUF") {
  // A container coded by nwc.quant.ggml (q8_0; the 172-column down_proj in llama.cpp's f16
  // fallback) exported to GGUF holds the container's blocks: read back, each linear's blocks are
  // the container's (export_native) and decode to its weights bit for bit; GGUF -> GGUF keeps
  // them again (F16 tensors are not blocks: they take --dtype); --decode-blocks writes floats.
  TempDir dir;
  write_text(dir / "q8.toml", "[pipeline]\nselect = [\"model.layers.*_proj.weight\"]\n"
                              "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = 0\n"
                              "[quantizer]\nplugin = \"nwc.quant.ggml\"\ntype = \"q8_0\"\n"
                              "fallback = \"llama.cpp\"\n"
                              "[entropy]\nplugin = \"nwc.entropy.raw\"\n");
  const std::string c = (dir / "q8.nwc").string(), g = (dir / "q8.gguf").string(),
                    g2 = (dir / "again.gguf").string(), st = (dir / "q8.safetensors").string();
  Result r = run_nwc({"compress", model(), "-p", (dir / "q8.toml").string(), "-o", c});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  REQUIRE(run_nwc({"decompress", c, "-o", st}).exit_code == 0);
  r = run_nwc({"convert", "--model", c, "--layout", "gguf", "-o", g});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  // 30 linears of 64 columns in q8_0, 5 down_proj in f16, the embedding and 11 norms in F32.
  CHECK(r.out.find("(GGUF v3; f16 x5 f32 x12 q8_0 x30 tensors)") != std::string::npos);
  r = run_nwc({"convert", "--model", g, "--layout", "gguf", "-o", g2});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out.find("(GGUF v3; f32 x17 q8_0 x30 tensors)") != std::string::npos); // F16 -> --dtype
  const nwc::Model decoded = nwc::load_model(st), a = nwc::load_model(g), b = nwc::load_model(g2);
  int kept = 0;
  for (const auto &t : a.tensors) {
    CAPTURE(t.info.name);
    CHECK(t.load() == decoded.find(t.info.name)->load());
    const auto &t2 = *b.find(t.info.name);
    CHECK(static_cast<bool>(t.load_native) == static_cast<bool>(t2.load_native));
    if (!t.load_native) continue;
    const auto x = t.load_native(), y = t2.load_native();
    CHECK(x->type == "q8_0");
    CHECK(x->bytes == y->bytes);
    CHECK(x->bytes.size() == t.info.numel() / 32 * 34);
    ++kept;
  }
  CHECK(kept == 30);
  r = run_nwc({"convert", "--model", c, "--layout", "gguf", "--decode-blocks", "-o", g2});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out.find("(GGUF v3; f32 x47 tensors)") != std::string::npos);
  expect_failure(run_nwc({"convert", "--model", c, "--decode-blocks", "-o", (dir / "hf").string()}),
                 2, "--decode-blocks: only --layout gguf keeps ggml blocks", dir,
                 {"q8.toml", "q8.nwc", "q8.gguf", "again.gguf", "q8.safetensors"});
}

TEST_CASE("TinyStories-656K (HF directory, tokenizer.json) through compress, decompress, eval and "
          "generate") {
  TempDir dir;
  const auto data = nwc::test::data_dir();
  const fs::path hf = data / "models" / "tinystories656K";
  const std::string tok = (hf / "tokenizer.json").string();
  const std::string text = (data / "text" / "tinystories-eval.txt").string();
  auto nll = [&](const std::string &m) {
    Result r = run_nwc({"eval", "--model", m, "--tokenizer", tok, "--text", text, "--max-tokens",
                        "20480", "--json"});
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out)["nll"].get<double>();
  };
  const double original = nll(hf.string());
  // GPTQ with sequential calibration (tokenizer.json for the calibration text) and the data-free
  // NWC codec: each costs some NLL, not most of it.
  const std::string gptq =
      (nwc::test::source_dir() / "benchmarks" / "suites" / "baselines" / "gptq-ao-g128-4b.toml")
          .string();
  for (const std::string &p : {gptq, pipeline("nwc-datafree-l300.toml")}) {
    const std::string out = (dir / (fs::path(p).stem().string() + ".nwc")).string();
    Result r =
        run_nwc({"compress", hf.string(), "--pipeline", p, "-o", out, "--calibrate", "--tokenizer",
                 tok, "--calib-text", (data / "text" / "tinystories-calib.txt").string(),
                 "--calib-tokens", "8192", "--quiet"});
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    const double coded = nll(out);
    MESSAGE(fs::path(p).stem().string() << ": NLL " << coded << " (original " << original << ")");
    CHECK(coded > original);
    CHECK(coded < original + 0.2);
  }
  // Decoded to an HF directory: the tied embedding stays one tensor, GQA is kept, and the
  // directory evaluates exactly like the container.
  REQUIRE(run_nwc({"decompress", (dir / "gptq-ao-g128-4b.nwc").string(), "--layout", "hf", "-o",
                   (dir / "hf").string(), "--quiet"})
              .exit_code == 0);
  const auto config = nlohmann::json::parse(slurp(dir / "hf" / "config.json"));
  CHECK(config["tie_word_embeddings"] == true);
  CHECK(config["num_key_value_heads"] == 4);
  const std::string st = slurp(dir / "hf" / "model.safetensors");
  CHECK(st.find("model.embed_tokens.weight") != std::string::npos);
  CHECK(st.find("lm_head.weight") == std::string::npos);
  CHECK(std::abs(nll((dir / "hf").string()) - nll((dir / "gptq-ao-g128-4b.nwc").string())) <= 1e-6);
  Result g = run_nwc({"generate", "--model", (dir / "hf").string(), "--tokenizer", tok, "--prompt",
                      "Once upon a time", "--steps", "24", "--threads", "1"});
  REQUIRE(g.exit_code == 0);
  CHECK(g.out.rfind("Once upon a time", 0) == 0);
  CHECK(g.out.size() > 40);
}

TEST_CASE("whole-model presets code the embedding once and halve the whole file") {
  // The *-whole presets code the token embedding and the output head too; a tied head is the
  // embedding, stored and coded once. Bounds from nwc bench (docs/results.md), first 20,480
  // tokens: stories260K whole file 8.32 -> 4.87 b/w (RTN) and 7.84 -> 4.32 (NWC), NLL 1.4739 ->
  // 1.5074 and 1.4648 -> 1.4902; TinyStories-656K (a tied embedding of 40 % of its weights)
  // 9.20 -> 4.65 and 8.85 -> 4.08 b/w.
  TempDir dir;
  const auto data = nwc::test::data_dir();
  const std::string text = (data / "text" / "tinystories-eval.txt").string();
  struct Case {
    std::string model, tokenizer, pipeline;
    double max_file_bpw, max_nll;
  };
  const fs::path hf = data / "models" / "tinystories656K";
  const std::vector<Case> cases = {
      {nwc::test::stories260k().string(), (data / "models" / "stories260K" / "tok512.bin").string(),
       "rtn-4bit-g32-whole.toml", 4.9, 1.52},
      {nwc::test::stories260k().string(), (data / "models" / "stories260K" / "tok512.bin").string(),
       "nwc-datafree-l300-whole.toml", 4.35, 1.50},
      {hf.string(), (hf / "tokenizer.json").string(), "rtn-4bit-g32-whole.toml", 4.7, 4.24},
      {hf.string(), (hf / "tokenizer.json").string(), "nwc-datafree-l300-whole.toml", 4.1, 4.27},
  };
  int n = 0;
  for (const auto &c : cases) {
    INFO(c.model << " with " << c.pipeline);
    const std::string out = (dir / ("m" + std::to_string(n++) + ".nwc")).string();
    Result r =
        run_nwc({"compress", c.model, "--pipeline", pipeline(c.pipeline), "-o", out, "--quiet"});
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    Result in = run_nwc({"inspect", out, "--json"});
    REQUIRE(in.exit_code == 0);
    const auto j = nlohmann::json::parse(in.out);
    bool embedding_coded = false, head = false;
    for (const auto &t : j["tensors"]) {
      const std::string name = t["name"];
      if (name == "model.embed_tokens.weight") embedding_coded = t["storage"] == "pipeline";
      if (name == "lm_head.weight") head = true;
      if (t["storage"] != "pipeline") CHECK_MESSAGE(t["shape"].size() == 1, name); // norms only
    }
    CHECK(embedding_coded);
    CHECK_FALSE(head); // both models tie the head to the embedding
    const double file_bpw = j["totals"]["bits_per_weight"].get<double>();
    Result e = run_nwc({"eval", "--model", out, "--tokenizer", c.tokenizer, "--text", text,
                        "--max-tokens", "20480", "--json"});
    REQUIRE(e.exit_code == 0);
    const double nll = nlohmann::json::parse(e.out)["nll"].get<double>();
    MESSAGE(c.pipeline << " on " << fs::path(c.model).filename().string() << ": whole file "
                       << file_bpw << " b/w, NLL " << nll);
    CHECK(file_bpw < c.max_file_bpw);
    CHECK(nll < c.max_nll);
  }
}

TEST_CASE("the whole method's whole-model preset: at most 5 b/w for the whole file at NLL 1.45") {
  // nwc-l300-whole: levels, trellis-coded latents, LDLQ and block fine-tuning on the linears; the
  // tied embedding at the codec's top level (no Hessian: levels off, no feedback). nwc bench,
  // first 20,480 tokens: whole file 4.648 b/w at NLL 1.4338 (rounded latents: 4.547 at 1.4537).
  TempDir dir;
  const auto data = nwc::test::data_dir();
  const std::string tok = (data / "models" / "stories260K" / "tok512.bin").string();
  const std::string out = (dir / "w.nwc").string();
  Result r = run_nwc({"compress", model(), "--pipeline", pipeline("nwc-l300-whole.toml"), "-o", out,
                      "--calibrate", "--tokenizer", tok, "--threads", "2", "--quiet"});
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  Result in = run_nwc({"inspect", out, "--json"});
  REQUIRE(in.exit_code == 0);
  const auto j = nlohmann::json::parse(in.out);
  int coded = 0;
  for (const auto &t : j["tensors"]) {
    const std::string name = t["name"];
    if (t["storage"] == "pipeline")
      ++coded;
    else
      CHECK_MESSAGE(t["shape"].size() == 1, name); // norms only
  }
  CHECK(coded == 5 * 7 + 1);
  const double file_bpw = j["totals"]["bits_per_weight"].get<double>();
  Result e = run_nwc({"eval", "--model", out, "--tokenizer", tok, "--text",
                      (data / "text" / "tinystories-eval.txt").string(), "--max-tokens", "20480",
                      "--json"});
  REQUIRE(e.exit_code == 0);
  const double nll = nlohmann::json::parse(e.out)["nll"].get<double>();
  MESSAGE("nwc-l300-whole on stories260K: whole file " << file_bpw << " b/w, NLL " << nll);
  CHECK(file_bpw <= 4.7);
  CHECK(nll <= 1.45);
}

TEST_CASE("bench compares pipelines against fp32 with measured bits and writes table and plot") {
  TempDir dir;
  const auto data = nwc::test::data_dir();
  const auto suite = nwc::test::source_dir() / "benchmarks" / "suites" / "baselines";
  Result r = run_nwc({"bench",
                      "--model",
                      model(),
                      "--tokenizer",
                      (data / "models" / "stories260K" / "tok512.bin").string(),
                      "--pipelines",
                      (suite / "rtn-g32-3b.toml").string(),
                      (suite / "gptq-ao-g32-3b.toml").string(),
                      (suite / "zstd-fp16.toml").string(),
                      "--eval-text",
                      (data / "text" / "tinystories-eval.txt").string(),
                      "--calib-text",
                      (data / "text" / "tinystories-calib.txt").string(),
                      "--max-tokens",
                      "2048",
                      "--calib-tokens",
                      "4096",
                      "--threads",
                      "2",
                      "-o",
                      (dir / "out").string(),
                      "--quiet",
                      "--json"});
  REQUIRE(r.exit_code == 0);
  auto rows = nlohmann::json::parse(r.out);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0]["pipeline"] == "fp32");
  CHECK(rows[1]["pipeline"] == "rtn-g32-3b");
  // The fp32 row is the model's own ppl-v1 on the same tokens.
  Result e = run_nwc({"eval", "--model", model(), "--tokenizer",
                      (data / "models" / "stories260K" / "tok512.bin").string(), "--text",
                      (data / "text" / "tinystories-eval.txt").string(), "--max-tokens", "2048",
                      "--json"});
  CHECK(std::abs(rows[0]["nll"].get<double>() - nlohmann::json::parse(e.out)["nll"].get<double>()) <
        1e-9);
  // Bits are the container's, as inspect measures them.
  for (size_t i = 1; i < rows.size(); ++i) {
    Result in = run_nwc({"inspect", rows[i]["container"].get<std::string>(), "--json"});
    REQUIRE(in.exit_code == 0);
    auto totals = nlohmann::json::parse(in.out)["totals"];
    CHECK(rows[i]["bits_per_weight"].get<double>() ==
          doctest::Approx(totals["bits_per_weight"].get<double>()));
  }
  CHECK(rows[2]["hessian_error"].get<double>() < rows[1]["hessian_error"].get<double>());
  CHECK(rows[3]["mse"].get<double>() < 1e-6); // fp16 rounding only
  // KL to fp32: none for fp32, less for GPTQ than for RTN at 3 bits, next to none for fp16.
  CHECK(rows[0]["kl"].get<double>() == 0.0);
  CHECK(rows[2]["kl"].get<double>() < rows[1]["kl"].get<double>());
  CHECK(rows[1]["kl"].get<double>() > 0.01);
  CHECK(rows[3]["kl"].get<double>() < 1e-4);
  CHECK(rows[3]["kl"].get<double>() >= 0.0);
  for (const char *f : {"results.md", "results.csv", "results.json", "rate_ppl.png", "rate_ppl.svg",
                        "rate_ppl_file.png", "rate_ppl_file.svg"})
    CHECK(fs::file_size(dir / "out" / f) > 100);
  CHECK(slurp(dir / "out" / "results.md").find("| GPTQ act-order g32 | gptq-ao-g32-3b |") !=
        std::string::npos);
}

TEST_CASE("bench refuses a blockft pipeline its calibration text cannot feed before any work") {
  // nwc-tcq-l300 fine-tunes on 448 windows of 128 tokens (57,344); the calibration text here has
  // about 2,000. The run stops at once, naming the pipeline and the text, with no results.
  TempDir dir;
  const auto data = nwc::test::data_dir();
  const fs::path calib = dir / "short.txt";
  std::ofstream(calib) << slurp(data / "text" / "tinystories-calib.txt").substr(0, 8000);
  const auto pipes = nwc::test::source_dir() / "pipelines";
  Result r =
      run_nwc({"bench", "--model", model(), "--tokenizer",
               (data / "models" / "stories260K" / "tok512.bin").string(), "--pipelines",
               (pipes / "rtn-4bit-g32.toml").string(), (pipes / "nwc-tcq-l300.toml").string(),
               "--eval-text", (data / "text" / "tinystories-eval.txt").string(), "--calib-text",
               calib.string(), "-o", (dir / "out").string(), "--quiet"});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("nwc-tcq-l300.toml: [blockft] needs 57344 calibration tokens, " +
                   calib.string() + " has ") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "out" / "results.json"));
  CHECK_FALSE(fs::exists(dir / "out" / "rtn-4bit-g32.nwc"));
}

TEST_CASE("bench refuses a pipeline whose tensors lack the Hessians it needs before coding any") {
  // nwc-l300 with a rule that also selects block 4's norms: [levels] has no Hessian to rank their
  // columns. The run stops after calibrating, before the first pipeline, naming the file and the
  // tensor.
  TempDir dir;
  const auto data = nwc::test::data_dir();
  const auto source = nwc::test::source_dir();
  std::string toml = slurp(source / "pipelines" / "nwc-l300.toml");
  toml.replace(toml.find("../codecs/"), 10, (source / "codecs").string() + "/");
  const fs::path bad = dir / "levels-on-norms.toml";
  std::ofstream(bad) << toml << "\n[[override]]\nmatch = \"model.layers.4.*\"\n";
  Result r = run_nwc({"bench", "--model", model(), "--tokenizer",
                      (data / "models" / "stories260K" / "tok512.bin").string(), "--pipelines",
                      (source / "pipelines" / "rtn-4bit-g32.toml").string(), bad.string(),
                      "--calib-tokens", "2048", "--max-tokens", "1024", "-o",
                      (dir / "out").string(), "--quiet"});
  CHECK(r.exit_code != 0);
  INFO(r.err);
  CHECK(r.err.find(bad.string() + ":13:1: [levels] needs the calibration Hessian of "
                                  "model.layers.4.") != std::string::npos);
  CHECK(r.err.find("layernorm.weight") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "out" / "results.json"));
  CHECK_FALSE(fs::exists(dir / "out" / "rtn-4bit-g32.nwc"));
}

TEST_CASE("help lists every command and subcommand, and each one dispatches") {
  Result h = run_nwc({"--help"});
  REQUIRE(h.exit_code == 0);
  CHECK(run_nwc({}).out == h.out); // bare `nwc` prints the same help, with exit code 2
  CHECK(run_nwc({}).exit_code == 2);
  for (const char *name : {"compress", "decompress", "inspect", "eval", "generate", "calibrate",
                           "convert", "synth", "bench", "train-codec", "codec info",
                           "codec measure", "plugins list", "plugins show", "plugins check"})
    CHECK_MESSAGE(h.out.find("\n  " + std::string(name) + " ") != std::string::npos, name);
  CHECK(h.out.find("under mpirun -np N, compress and calibrate share their work") !=
        std::string::npos);
  // Every listed entry runs: its --help prints its usage line.
  std::istringstream lines(h.out.substr(h.out.find("commands:\n") + 10));
  int listed = 0;
  for (std::string line; std::getline(lines, line) && !line.empty(); ++listed) {
    const std::string name = line.substr(2, line.find("  ", 2) - 2);
    std::vector<std::string> args;
    std::istringstream words(name);
    for (std::string w; words >> w;) args.push_back(w);
    args.push_back("--help");
    Result r = run_nwc(args);
    INFO(name << ": " << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.rfind("usage: nwc " + name, 0) == 0);
    // `nwc help NAME` is `nwc NAME --help`.
    args.pop_back();
    args.insert(args.begin(), "help");
    CHECK(run_nwc(args).out == r.out);
  }
  CHECK(listed == 16);
}

TEST_CASE("group help lists the subcommands; a missing or unknown one is a usage error") {
  Result p = run_nwc({"plugins", "--help"});
  REQUIRE(p.exit_code == 0);
  for (const char *s : {"list", "show", "check"})
    CHECK(p.out.find("\n  " + std::string(s) + " ") != std::string::npos);
  CHECK(p.out.find("nwc plugins check ID... | --all") != std::string::npos);
  Result c = run_nwc({"codec", "--help"});
  REQUIRE(c.exit_code == 0);
  CHECK(c.out.find("\n  info ") != std::string::npos);
  CHECK(c.out.find("\n  measure ") != std::string::npos);
  CHECK(run_nwc({"help", "plugins"}).out == p.out);

  Result none = run_nwc({"plugins"});
  CHECK(none.exit_code == 2);
  CHECK(none.err.find("missing subcommand: list, show or check") != std::string::npos);
  Result unknown = run_nwc({"codec", "frob"});
  CHECK(unknown.exit_code == 2);
  CHECK(unknown.err.find("unknown subcommand 'frob' (expected info or measure)") !=
        std::string::npos);
  // Options may come before the subcommand.
  Result list = run_nwc({"plugins", "--json", "list"});
  REQUIRE(list.exit_code == 0);
  CHECK(nlohmann::json::parse(list.out).contains("plugins"));
}
