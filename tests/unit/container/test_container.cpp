// Tests of the .nwc container, versions 1 and 2 (docs/container.md): round trip, random access,
// atomic output, conversion between versions, bit accounting, and rejection of truncated,
// corrupted and lying files. Version 2 manifests are checked against v2_spec.hpp, a second
// implementation of the spec.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "test_support.hpp"
#include "v2_spec.hpp"

#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

using nwc::test::read_bytes;
using nwc::test::TempDir;
using nwc::test::write_bytes;
using json = nlohmann::json;

namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 3));
  return v;
}

uint64_t le64(const std::vector<uint8_t> &b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[at + static_cast<size_t>(i)];
  return v;
}
void put_le32(std::vector<uint8_t> &b, size_t at, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_le64(std::vector<uint8_t> &b, size_t at, uint64_t v) {
  for (size_t i = 0; i < 8; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// What the sample container holds, to compare against after reading.
struct Sample {
  nwc::ContainerManifest manifest; // as given to finish(), tensors filled in
  std::map<std::pair<std::string, size_t>, std::vector<uint8_t>> data; // (tensor, stream) -> bytes
};

nwc::ContainerWriteOptions version(uint32_t v) {
  nwc::ContainerWriteOptions o;
  o.format_version = v;
  return o;
}

Sample write_sample(const std::filesystem::path &out,
                    const nwc::ContainerWriteOptions &options = {}) {
  Sample s;
  nwc::ContainerWriter w(out, options);
  auto append = [&](nwc::TensorRecord &t, const std::string &role, int32_t block, size_t n,
                    uint8_t seed) {
    auto bytes = pattern(n, seed);
    t.streams.push_back(w.append_stream(role, block, bytes.data(), bytes.size()));
    s.data[{t.name, t.streams.size() - 1}] = bytes;
  };

  nwc::TensorRecord wq;
  wq.name = "layers.0.attention.wq.weight";
  wq.dtype = nwc::DType::F32;
  wq.shape = {4, 10};
  wq.storage = "pipeline";
  wq.stage_config = 1;
  wq.blocks = {{0, 4, 16}, {4, 10, 24}};
  append(wq, "chunker", -1, 12, 1);
  append(wq, "quantizer", 0, 8, 2);
  append(wq, "entropy", 0, 33, 3);
  append(wq, "quantizer", 1, 8, 4);
  append(wq, "entropy", 1, 41, 5);

  nwc::TensorRecord norm;
  norm.name = "norm.weight";
  norm.dtype = nwc::DType::F32;
  norm.shape = {5};
  norm.storage = "raw";
  append(norm, "raw", -1, 20, 6);

  nwc::TensorRecord emb;
  emb.name = "tok_embeddings.weight";
  emb.dtype = nwc::DType::F16;
  emb.shape = {3, 2};
  emb.storage = "zstd";
  append(emb, "zstd", -1, 9, 7);

  s.manifest.tensors = {wq, norm, emb};
  for (const auto &t : s.manifest.tensors) w.add_tensor(t);

  s.manifest.architecture = {{"dim", 64}, {"n_layers", 5}, {"vocab_size", 512}};
  s.manifest.pipeline_name = "test-pipe";
  s.manifest.pipeline_text = "[pipeline]\nname = \"test-pipe\"\n# ünïcode ok\n";
  s.manifest.source_model = "stories260K.bin";
  s.manifest.source_format = "llama2c";
  nwc::StageRecord q{"quantizer", "nwc.uniform", "1.2.0", 3, json{{"bits", 4}}};
  nwc::StageRecord e{"entropy", "nwc.rans", "0.9.1", 1, json{{"precision", 12}, {"tbl", "x"}}};
  s.manifest.stage_configs = {{{q}}, {{q, e}}};
  s.manifest.extra = {{"codec_hash", "0123abcd"}, {"note", json::array({1, 2})}};
  nwc::ContainerManifest given = s.manifest;
  given.tensors.clear(); // finish() takes the tensors registered with add_tensor()
  w.finish(given);
  return s;
}

void check_equal(const nwc::TensorRecord &a, const nwc::TensorRecord &b) {
  CHECK(a.name == b.name);
  CHECK(a.dtype == b.dtype);
  CHECK(a.shape == b.shape);
  CHECK(a.storage == b.storage);
  CHECK(a.stage_config == b.stage_config);
  REQUIRE(a.blocks.size() == b.blocks.size());
  for (size_t i = 0; i < a.blocks.size(); ++i) {
    CHECK(a.blocks[i].col_begin == b.blocks[i].col_begin);
    CHECK(a.blocks[i].col_end == b.blocks[i].col_end);
    CHECK(a.blocks[i].symbol_count == b.blocks[i].symbol_count);
  }
  REQUIRE(a.streams.size() == b.streams.size());
  for (size_t i = 0; i < a.streams.size(); ++i) {
    CHECK(a.streams[i].role == b.streams[i].role);
    CHECK(a.streams[i].block == b.streams[i].block);
    CHECK(a.streams[i].offset == b.streams[i].offset);
    CHECK(a.streams[i].length == b.streams[i].length);
    // Version 2 records carry no per-stream checksum (their unit's is verified on read).
    if (a.streams[i].xxh64 != 0) CHECK(a.streams[i].xxh64 == b.streams[i].xxh64);
  }
}

// Opening must fail with nwc::Error (code `code`) whose one-line message starts with the path and
// contains every given substring.
void expect_rejected(const std::filesystem::path &p, std::initializer_list<const char *> parts,
                     nwc_status code = NWC_E_CORRUPT_STREAM) {
  bool threw = false;
  try {
    nwc::ContainerReader r(p);
  } catch (const nwc::Error &e) {
    threw = true;
    std::string m = e.what();
    INFO("message: " << m);
    CHECK(e.code() == code);
    CHECK(m.find('\n') == std::string::npos);
    CHECK(m.rfind(p.string(), 0) == 0);
    for (const char *part : parts) CHECK(m.find(part) != std::string::npos);
  }
  CHECK_MESSAGE(threw, "container was accepted: " << p);
}

// Rewrites the manifest with `edit` and writes a new footer (offset, length, checksum) for it, so
// that only the semantic checks can catch the lie.
std::vector<uint8_t> rewrite_manifest(const std::vector<uint8_t> &file,
                                      const std::function<void(json &)> &edit) {
  const size_t foot = file.size() - 40;
  const auto moff = static_cast<size_t>(le64(file, foot));
  const auto mlen = static_cast<size_t>(le64(file, foot + 8));
  json j = json::parse(file.begin() + static_cast<std::ptrdiff_t>(moff),
                       file.begin() + static_cast<std::ptrdiff_t>(moff + mlen));
  edit(j);
  const std::string text = j.dump();
  std::vector<uint8_t> out(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(moff));
  out.insert(out.end(), text.begin(), text.end());
  std::vector<uint8_t> footer(40, 0);
  put_le64(footer, 0, moff);
  put_le64(footer, 8, text.size());
  put_le64(footer, 16, nwc::container_checksum(text.data(), text.size()));
  put_le32(footer, 24, 1);
  std::memcpy(footer.data() + 32, "NWCFOOT1", 8);
  out.insert(out.end(), footer.begin(), footer.end());
  return out;
}

json &tensor(json &j, const std::string &name) {
  for (auto &t : j["tensors"])
    if (t["name"] == name) return t;
  throw std::runtime_error("no tensor " + name);
}

const std::string kWq = "layers.0.attention.wq.weight";
const uint32_t kVersions[] = {1, 2};

} // namespace

TEST_CASE("container: round trip of manifest and streams") {
  for (uint32_t v : kVersions) {
    INFO("format version " << v);
    TempDir dir;
    const auto path = dir / "m.nwc";
    const Sample s = write_sample(path, version(v));
    CHECK(dir.entries() == std::vector<std::string>{"m.nwc"});

    nwc::ContainerReader r(path);
    CHECK(r.format_version() == v);
    CHECK(r.path() == path);
    CHECK(r.file_size() == std::filesystem::file_size(path));
    const auto &m = r.manifest();
    CHECK(m.architecture == s.manifest.architecture);
    CHECK(m.pipeline_name == s.manifest.pipeline_name);
    CHECK(m.pipeline_text == s.manifest.pipeline_text);
    CHECK(m.source_model == s.manifest.source_model);
    CHECK(m.source_format == s.manifest.source_format);
    CHECK(m.extra == s.manifest.extra);
    REQUIRE(m.stage_configs.size() == s.manifest.stage_configs.size());
    for (size_t c = 0; c < m.stage_configs.size(); ++c) {
      const auto &a = m.stage_configs[c].stages, &b = s.manifest.stage_configs[c].stages;
      REQUIRE(a.size() == b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        CHECK(a[i].slot == b[i].slot);
        CHECK(a[i].plugin_id == b[i].plugin_id);
        CHECK(a[i].plugin_version == b[i].plugin_version);
        CHECK(a[i].stream_version == b[i].stream_version);
        CHECK(a[i].options == b[i].options);
      }
    }
    REQUIRE(m.tensors.size() == 3);
    for (size_t t = 0; t < 3; ++t) check_equal(m.tensors[t], s.manifest.tensors[t]);

    for (const auto &t : m.tensors)
      for (size_t i = 0; i < t.streams.size(); ++i)
        CHECK(r.read_stream(t, t.streams[i]) == s.data.at({t.name, i}));

    // Streams are back to back from offset 16, in append order.
    CHECK(m.tensors[0].streams[0].offset == 16);
    CHECK(m.tensors[0].stream_bytes() == 12 + 8 + 33 + 8 + 41);
    CHECK(m.tensors[0].numel() == 40);
    CHECK(m.tensors[1].numel() == 5);

    REQUIRE(r.find("norm.weight") != nullptr);
    CHECK(r.find("norm.weight")->storage == "raw");
    CHECK(r.find("missing") == nullptr);

    // Bit accounting: the per-tensor shares add up to the file size.
    double total = 0;
    for (const auto &t : m.tensors) {
      double b = nwc::container_tensor_bytes(m, r.file_size(), t);
      CHECK(b >= static_cast<double>(t.stream_bytes()));
      total += b;
    }
    CHECK(total == doctest::Approx(static_cast<double>(r.file_size())));
  }
}

TEST_CASE("container: version 1 byte layout matches the spec") {
  TempDir dir;
  write_sample(dir / "m.nwc", version(1));
  auto b = read_bytes(dir / "m.nwc");
  const uint8_t magic[8] = {0x89, 0x4E, 0x57, 0x43, 0x0D, 0x0A, 0x1A, 0x0A};
  CHECK(std::memcmp(b.data(), magic, 8) == 0);
  CHECK(le64(b, 8) == 1); // version 1, flags 0
  const size_t foot = b.size() - 40;
  CHECK(std::memcmp(b.data() + foot + 32, "NWCFOOT1", 8) == 0);
  CHECK(le64(b, foot + 24) == 1); // version 1, reserved 0
  const auto moff = le64(b, foot), mlen = le64(b, foot + 8);
  CHECK(moff + mlen == foot);
  CHECK(le64(b, foot + 16) == nwc::container_checksum(b.data() + moff, mlen));
  json j = json::parse(b.begin() + static_cast<std::ptrdiff_t>(moff),
                       b.begin() + static_cast<std::ptrdiff_t>(foot));
  CHECK(j["format"] == "nwc");
  CHECK(j["version"] == 1);
  const auto &st = tensor(j, kWq)["streams"][0];
  CHECK(st["xxh64"].get<std::string>().size() == 16);
  CHECK(tensor(j, kWq)["blocks"] == json::parse("[[0,4,16],[4,10,24]]"));
  CHECK(tensor(j, "norm.weight")["dtype"] == "F32");
}

TEST_CASE("container: an empty container is valid") {
  for (uint32_t v : kVersions) {
    TempDir dir;
    {
      nwc::ContainerWriter w(dir / "e.nwc", version(v));
      w.finish({});
    }
    nwc::ContainerReader r(dir / "e.nwc");
    CHECK(r.format_version() == v);
    CHECK(r.manifest().tensors.empty());
    CHECK(r.manifest().architecture == json::object());
  }
}

TEST_CASE("container: random access to one block of one tensor") {
  for (uint32_t v : kVersions) {
    INFO("format version " << v);
    TempDir dir;
    const Sample s = write_sample(dir / "m.nwc", version(v));
    nwc::ContainerReader r(dir / "m.nwc");
    const nwc::TensorRecord *t = r.find(kWq);
    REQUIRE(t != nullptr);
    const nwc::StreamRef *entropy1 = nullptr;
    size_t idx = 0;
    for (size_t i = 0; i < t->streams.size(); ++i)
      if (t->streams[i].role == "entropy" && t->streams[i].block == 1) {
        entropy1 = &t->streams[i];
        idx = i;
      }
    REQUIRE(entropy1 != nullptr);
    CHECK(t->blocks[1].col_begin == 4);
    CHECK(t->blocks[1].symbol_count == 24);
    CHECK(r.read_stream(*t, *entropy1) == s.data.at({kWq, idx}));

    // Corrupting a different block does not affect reading this one.
    auto b = read_bytes(dir / "m.nwc");
    b[t->streams[2].offset] ^= 0x40; // entropy stream of block 0
    write_bytes(dir / "c.nwc", b);
    nwc::ContainerReader rc(dir / "c.nwc");
    const auto *tc = rc.find(kWq);
    CHECK(rc.read_stream(*tc, tc->streams[idx]) == s.data.at({kWq, idx}));
    CHECK_THROWS_AS(rc.read_stream(*tc, tc->streams[2]), nwc::Error);
  }
}

TEST_CASE("container: writer without finish leaves nothing behind") {
  TempDir dir;
  {
    nwc::ContainerWriter w(dir / "x.nwc");
    auto bytes = pattern(1000, 3);
    auto ref = w.append_stream("raw", -1, bytes.data(), bytes.size());
    CHECK(ref.offset == 16);
    CHECK(ref.length == 1000);
    CHECK(ref.xxh64 == nwc::container_checksum(bytes.data(), bytes.size()));
    CHECK(dir.entries().size() == 1); // the temporary file, not the target
    CHECK(!std::filesystem::exists(dir / "x.nwc"));
  }
  CHECK(dir.entries().empty());

  // An exception thrown while writing has the same effect.
  try {
    nwc::ContainerWriter w(dir / "y.nwc");
    throw std::runtime_error("stop");
  } catch (const std::runtime_error &) {
  }
  CHECK(dir.entries().empty());

  // An existing target is left untouched by an unfinished write.
  write_bytes(dir / "z.nwc", std::vector<uint8_t>{1, 2, 3});
  { nwc::ContainerWriter w(dir / "z.nwc"); }
  CHECK(read_bytes(dir / "z.nwc") == std::vector<uint8_t>{1, 2, 3});
  CHECK(dir.entries() == std::vector<std::string>{"z.nwc"});
}

TEST_CASE("container: output in a missing directory is a clear error") {
  TempDir dir;
  const auto missing = dir / "no" / "such" / "dir";
  try {
    nwc::ContainerWriter w(missing / "out.nwc");
    FAIL("expected an error");
  } catch (const nwc::Error &e) {
    std::string m = e.what();
    INFO(m);
    CHECK(m.find(missing.string()) != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  }
  CHECK(dir.entries().empty());

  // A "directory" that is a regular file: fails even for root.
  write_bytes(dir / "plain", std::vector<uint8_t>{1});
  try {
    nwc::ContainerWriter w(dir / "plain" / "out.nwc");
    FAIL("expected an error");
  } catch (const nwc::Error &e) {
    std::string m = e.what();
    INFO(m);
    CHECK(m.find((dir / "plain").string()) != std::string::npos);
  }
  CHECK(dir.entries() == std::vector<std::string>{"plain"});
}

TEST_CASE("container: output in an unwritable directory is a clear error") {
  TempDir dir;
  const auto ro = dir / "ro";
  std::filesystem::create_directory(ro);
  std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_all |
                                               std::filesystem::perms::others_exec);
  std::filesystem::permissions(
      ro, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec |
              std::filesystem::perms::others_read | std::filesystem::perms::others_exec);
  // The writer's error message, from this process, or as root (who may write anywhere) from a
  // child that drops to the unprivileged user "nobody" first.
  auto try_write = [&]() -> std::string {
    try {
      nwc::ContainerWriter w(ro / "out.nwc");
    } catch (const nwc::Error &e) {
      return e.what();
    }
    return "(no error)";
  };
  std::string message;
  if (::geteuid() != 0) {
    message = try_write();
  } else {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      std::string m = ::setgid(65534) == 0 && ::setuid(65534) == 0 ? try_write() : "(setuid)";
      const bool sent = ::write(fds[1], m.data(), m.size()) == static_cast<ssize_t>(m.size());
      ::_exit(sent ? 0 : 1);
    }
    ::close(fds[1]);
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
      message.append(buf, static_cast<size_t>(n));
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  }
  INFO(message);
  CHECK(message.find(ro.string()) != std::string::npos);
  CHECK(message.find("Permission denied") != std::string::npos);
  CHECK(message.find('\n') == std::string::npos);
  CHECK(std::filesystem::is_empty(ro));
  std::filesystem::permissions(ro, std::filesystem::perms::owner_all);
}

TEST_CASE("container: writer rejects use after finish") {
  TempDir dir;
  nwc::ContainerWriter w(dir / "f.nwc");
  w.finish({});
  uint8_t byte = 1;
  CHECK_THROWS_WITH_AS(w.append_stream("raw", -1, &byte, 1), doctest::Contains("after finish"),
                       nwc::Error);
  CHECK_THROWS_WITH_AS(w.finish({}), doctest::Contains("after finish"), nwc::Error);
  nwc::ContainerReader r(dir / "f.nwc");
  CHECK(r.file_size() == std::filesystem::file_size(dir / "f.nwc"));
}

TEST_CASE("container: writer rejects streams it did not append and bad records") {
  TempDir dir;
  nwc::ContainerWriter w(dir / "w.nwc");
  auto bytes = pattern(20, 1);
  auto ref = w.append_stream("raw", -1, bytes.data(), bytes.size());
  nwc::TensorRecord t;
  t.name = "a";
  t.shape = {5};
  t.storage = "raw";
  t.streams = {ref};

  nwc::TensorRecord forged = t;
  forged.streams[0].xxh64 ^= 1;
  CHECK_THROWS_WITH_AS(w.add_tensor(forged), doctest::Contains("not a stream returned"),
                       nwc::Error);
  nwc::TensorRecord wrong_len = t;
  wrong_len.shape = {4};
  CHECK_THROWS_WITH_AS(w.add_tensor(wrong_len), doctest::Contains("expected 16"), nwc::Error);

  w.add_tensor(t);
  nwc::TensorRecord again = t;
  CHECK_THROWS_WITH_AS(w.add_tensor(again), doctest::Contains("duplicate tensor name"), nwc::Error);
  again.name = "b";
  CHECK_THROWS_WITH_AS(w.add_tensor(again), doctest::Contains("already used"), nwc::Error);

  auto ref2 = w.append_stream("entropy", 0, bytes.data(), 4);
  nwc::TensorRecord p;
  p.name = "p";
  p.shape = {2, 3};
  p.storage = "pipeline";
  p.stage_config = 0;
  p.blocks = {{0, 3, 6}};
  p.streams = {ref2};
  w.add_tensor(p);
  // stage_config 0 does not exist in a manifest without stage configs.
  CHECK_THROWS_WITH_AS(w.finish({}), doctest::Contains("stage_config 0 is out of range"),
                       nwc::Error);
}

TEST_CASE("container: truncated files are reported as truncated at every cut point") {
  for (uint32_t v : kVersions) {
    TempDir dir;
    write_sample(dir / "m.nwc", version(v));
    const auto full = read_bytes(dir / "m.nwc");
    const auto cut_path = dir / "cut.nwc";
    size_t checked = 0;
    for (size_t cut = 0; cut < full.size(); ++cut) {
      write_bytes(cut_path, full.data(), cut);
      INFO("cut at " << cut << " of " << full.size());
      expect_rejected(cut_path, {"truncated or not an nwc container"});
      ++checked;
    }
    CHECK(checked == full.size());
  }
}

TEST_CASE("container: a flipped stream byte fails that stream's checksum") {
  for (uint32_t v : kVersions) {
    INFO("format version " << v);
    TempDir dir;
    write_sample(dir / "m.nwc", version(v));
    const auto full = read_bytes(dir / "m.nwc");
    nwc::ContainerReader orig(dir / "m.nwc");
    for (const auto &t : orig.manifest().tensors) {
      for (const auto &st : t.streams) {
        auto b = full;
        b[st.offset + st.length / 2] ^= 0x01;
        write_bytes(dir / "f.nwc", b);
        nwc::ContainerReader r(dir / "f.nwc"); // the manifest is intact: opening succeeds
        const auto *rt = r.find(t.name);
        REQUIRE(rt != nullptr);
        std::string expect = "tensor " + t.name + ": stream " + st.role + " block " +
                             std::to_string(st.block) + " at offset " + std::to_string(st.offset) +
                             ": checksum mismatch";
        try {
          (void)r.read_stream(*rt, st);
          FAIL("checksum mismatch not detected");
        } catch (const nwc::Error &e) {
          std::string m = e.what();
          INFO(m);
          CHECK(e.code() == NWC_E_CORRUPT_STREAM);
          CHECK(m.rfind((dir / "f.nwc").string(), 0) == 0);
          CHECK(m.find(expect) != std::string::npos);
        }
      }
    }
  }
}

TEST_CASE("container: a flipped manifest byte fails the manifest checksum") {
  for (uint32_t v : kVersions) {
    TempDir dir;
    write_sample(dir / "m.nwc", version(v));
    auto b = read_bytes(dir / "m.nwc");
    const auto moff = le64(b, b.size() - 40);
    b[moff + 10] ^= 0x20;
    write_bytes(dir / "f.nwc", b);
    expect_rejected(dir / "f.nwc",
                    {("manifest at offset " + std::to_string(moff)).c_str(), "checksum mismatch"});
  }
}

void check_header_and_footer(uint32_t v) {
  INFO("format version " << v);
  TempDir dir;
  write_sample(dir / "m.nwc", version(v));
  const auto full = read_bytes(dir / "m.nwc");
  const auto p = dir / "h.nwc";
  const size_t foot = full.size() - 40;

  SUBCASE("bad magic") {
    auto b = full;
    b[1] = 'X';
    write_bytes(p, b);
    expect_rejected(p, {"not an nwc container", "bad magic"});
  }
  SUBCASE("text-mode mangling") {
    // CRLF -> LF conversion shortens the header.
    auto b = full;
    b.erase(b.begin() + 4);
    write_bytes(p, b);
    expect_rejected(p, {"bad magic"});
  }
  SUBCASE("future version") {
    auto b = full;
    put_le32(b, 8, 3);
    write_bytes(p, b);
    expect_rejected(p, {"container format version 3 is newer than this build supports (2)"},
                    NWC_E_VERSION);
  }
  SUBCASE("version zero") {
    auto b = full;
    put_le32(b, 8, 0);
    write_bytes(p, b);
    expect_rejected(p, {"invalid container format version 0"});
  }
  SUBCASE("unknown flag") {
    auto b = full;
    put_le32(b, 12, 4);
    write_bytes(p, b);
    expect_rejected(p, {"unknown flag bits 0x00000004"});
  }
  SUBCASE("footer version differs") {
    auto b = full;
    put_le32(b, foot + 24, 3 - v);
    write_bytes(p, b);
    expect_rejected(p, {"footer at offset", "differs from the header"});
  }
  SUBCASE("footer reserved not zero") {
    auto b = full;
    put_le32(b, foot + 28, 1);
    write_bytes(p, b);
    expect_rejected(p, {"reserved field is not zero"});
  }
  SUBCASE("manifest offset does not reach the footer") {
    auto b = full;
    put_le64(b, foot, le64(b, foot) + 1);
    write_bytes(p, b);
    expect_rejected(p, {"does not end at the footer"});
  }
  SUBCASE("manifest length wraps around") {
    auto b = full;
    put_le64(b, foot + 8, ~uint64_t{0});
    write_bytes(p, b);
    expect_rejected(p, {"does not end at the footer"});
  }
  SUBCASE("manifest offset inside the header") {
    auto b = full;
    put_le64(b, foot, 3);
    put_le64(b, foot + 8, foot - 3);
    write_bytes(p, b);
    expect_rejected(p, {"does not end at the footer"});
  }
  SUBCASE("missing file") {
    try {
      nwc::ContainerReader r(dir / "absent.nwc");
      FAIL("expected an error");
    } catch (const nwc::Error &e) {
      CHECK(std::string(e.what()).find((dir / "absent.nwc").string()) != std::string::npos);
    }
  }
}

TEST_CASE("container: header and footer fields are checked (version 1)") {
  check_header_and_footer(1);
}

TEST_CASE("container: header and footer fields are checked (version 2)") {
  check_header_and_footer(2);
}

TEST_CASE("container: version 1 manifests that lie are rejected by the semantic checks") {
  TempDir dir;
  write_sample(dir / "m.nwc", version(1));
  const auto full = read_bytes(dir / "m.nwc");
  const auto moff = le64(full, full.size() - 40);
  const auto p = dir / "lie.nwc";
  auto lie = [&](const std::function<void(json &)> &edit) {
    write_bytes(p, rewrite_manifest(full, edit));
  };

  SUBCASE("an unchanged rewrite is accepted") {
    lie([](json &) {});
    nwc::ContainerReader r(p);
    CHECK(r.manifest().tensors.size() == 3);
  }
  SUBCASE("unknown keys are ignored") {
    lie([](json &j) {
      j["future"] = {{"x", 1}};
      tensor(j, kWq)["future_key"] = "y";
      tensor(j, kWq)["streams"][0]["future_key"] = 3;
      j["stage_configs"][0]["future"] = true;
    });
    nwc::ContainerReader r(p);
    CHECK(r.manifest().tensors.size() == 3);
  }
  SUBCASE("stream length extends into the manifest") {
    lie([&](json &j) {
      auto &st = tensor(j, "tok_embeddings.weight")["streams"][0];
      st["length"] = moff - st["offset"].get<uint64_t>() + 1;
    });
    expect_rejected(p, {"tensor 'tok_embeddings.weight'", "outside the stream area"});
  }
  SUBCASE("stream extends beyond the file") {
    lie([&](json &j) { tensor(j, kWq)["streams"][1]["length"] = 1u << 30; });
    expect_rejected(
        p, {"tensor 'layers.0.attention.wq.weight'", "stream 1", "outside the stream area"});
  }
  SUBCASE("stream offset + length overflows") {
    lie([&](json &j) {
      tensor(j, kWq)["streams"][1]["offset"] = 100;
      tensor(j, kWq)["streams"][1]["length"] = ~uint64_t{0} - 50;
    });
    expect_rejected(p, {"outside the stream area"});
  }
  SUBCASE("stream inside the header") {
    lie([&](json &j) { tensor(j, kWq)["streams"][0]["offset"] = 8; });
    expect_rejected(p, {"outside the stream area"});
  }
  SUBCASE("overlapping streams") {
    lie([&](json &j) {
      auto &s = tensor(j, kWq)["streams"];
      s[1]["offset"] = s[0]["offset"].get<uint64_t>() + 4;
    });
    expect_rejected(p, {"overlap", "tensor 'layers.0.attention.wq.weight'"});
  }
  SUBCASE("overlapping streams of two tensors") {
    lie([&](json &j) {
      tensor(j, "norm.weight")["streams"][0]["offset"] =
          tensor(j, kWq)["streams"][4]["offset"].get<uint64_t>();
    });
    expect_rejected(p, {"overlap"});
  }
  SUBCASE("blocks do not cover all columns") {
    lie([&](json &j) { tensor(j, kWq)["blocks"][1][1] = 9; });
    expect_rejected(p, {"blocks cover columns [0, 9) but the tensor has 10 columns"});
  }
  SUBCASE("blocks with a gap") {
    lie([&](json &j) { tensor(j, kWq)["blocks"][1][0] = 5; });
    expect_rejected(p, {"block 1", "starts at column 5, expected 4"});
  }
  SUBCASE("blocks out of order") {
    lie([&](json &j) {
      auto &b = tensor(j, kWq)["blocks"];
      std::swap(b[0], b[1]);
    });
    expect_rejected(p, {"block 0", "starts at column 4, expected 0"});
  }
  SUBCASE("block beyond the columns") {
    lie([&](json &j) { tensor(j, kWq)["blocks"][1][1] = 11; });
    expect_rejected(p, {"exceeds 10 columns"});
  }
  SUBCASE("negative symbol count") {
    lie([&](json &j) { tensor(j, kWq)["blocks"][0][2] = -1; });
    expect_rejected(p, {"symbol_count", "out of range"});
  }
  SUBCASE("stream block index out of range") {
    lie([&](json &j) { tensor(j, kWq)["streams"][2]["block"] = 2; });
    expect_rejected(p, {"block 2 is out of range [-1, 2)"});
  }
  SUBCASE("pipeline tensor with 3-D shape") {
    lie([&](json &j) { tensor(j, kWq)["shape"] = {2, 2, 10}; });
    expect_rejected(p, {"pipeline storage needs a 2-D shape"});
  }
  SUBCASE("stage_config out of range") {
    lie([&](json &j) { tensor(j, kWq)["stage_config"] = 2; });
    expect_rejected(p, {"stage_config 2 is out of range [0, 2)"});
  }
  SUBCASE("raw stream length mismatch") {
    lie([&](json &j) { tensor(j, "norm.weight")["shape"] = {6}; });
    expect_rejected(p, {"tensor 'norm.weight'", "has 20 bytes, expected 24"});
  }
  SUBCASE("raw tensor without a raw stream") {
    lie([&](json &j) { tensor(j, "norm.weight")["streams"][0]["role"] = "entropy"; });
    expect_rejected(p, {"expected exactly one stream, with role 'raw'", "0 with that role"});
  }
  SUBCASE("zstd tensor with two streams") {
    lie([&](json &j) {
      auto &s = tensor(j, "tok_embeddings.weight")["streams"];
      json second = s[0];
      second["length"] = 0;
      s.push_back(second);
    });
    expect_rejected(p, {"expected exactly one stream, with role 'zstd'; found 2 streams"});
  }
  SUBCASE("unknown storage") {
    lie([&](json &j) { tensor(j, "norm.weight")["storage"] = "lz4"; });
    expect_rejected(p, {"storage 'lz4' is not one of pipeline, raw, zstd"});
  }
  SUBCASE("duplicate tensor names") {
    lie([&](json &j) { tensor(j, "norm.weight")["name"] = kWq; });
    expect_rejected(p, {"duplicate tensor name"});
  }
  SUBCASE("huge declared shape fails fast") {
    lie([&](json &j) {
      tensor(j, kWq)["shape"] = {uint64_t{1} << 40, uint64_t{1} << 40};
      tensor(j, kWq)["blocks"] = json::array({json::array({0, uint64_t{1} << 40, 1})});
    });
    expect_rejected(p, {"tensor 'layers.0.attention.wq.weight'", "more than 2^40 elements"});
  }
  SUBCASE("too many dimensions") {
    lie([&](json &j) {
      tensor(j, "norm.weight")["shape"] = json::array({1, 1, 1, 1, 1, 1, 1, 1, 5});
    });
    expect_rejected(p, {"9 dimensions (at most 8)"});
  }
  SUBCASE("negative dimension") {
    lie([&](json &j) { tensor(j, "norm.weight")["shape"] = {-5}; });
    expect_rejected(p, {"shape' dimension 0", "out of range"});
  }
  SUBCASE("unknown dtype") {
    lie([&](json &j) { tensor(j, "norm.weight")["dtype"] = "F128"; });
    expect_rejected(p, {"tensor 'norm.weight'", "unknown dtype 'F128'"});
  }
  SUBCASE("missing required key") {
    lie([&](json &j) { tensor(j, "norm.weight").erase("shape"); });
    expect_rejected(p, {"tensor 'norm.weight'", "missing required key 'shape'"});
  }
  SUBCASE("wrong type") {
    lie([&](json &j) { tensor(j, kWq)["streams"][0]["length"] = "12"; });
    expect_rejected(p, {"tensor 'layers.0.attention.wq.weight'", "stream 0",
                        "key 'length': expected a non-negative integer"});
  }
  SUBCASE("float where an integer is required") {
    lie([&](json &j) { tensor(j, kWq)["stage_config"] = 1.0; });
    expect_rejected(p, {"key 'stage_config': expected an integer"});
  }
  SUBCASE("checksum not a hex string") {
    lie([&](json &j) { tensor(j, kWq)["streams"][0]["xxh64"] = "xyz"; });
    expect_rejected(p, {"key 'xxh64': expected 16 hex digits"});
  }
  SUBCASE("missing top-level key") {
    lie([&](json &j) { j.erase("stage_configs"); });
    expect_rejected(p, {"missing required key 'stage_configs'"});
  }
  SUBCASE("wrong format name") {
    lie([&](json &j) { j["format"] = "other"; });
    expect_rejected(p, {"key 'format'"});
  }
  SUBCASE("stage options not an object") {
    lie([&](json &j) { j["stage_configs"][0]["stages"][0]["options"] = 3; });
    expect_rejected(p, {"stage_config 0: stage 0", "key 'options': expected an object"});
  }
}

TEST_CASE("container: invalid and hostile version 1 manifest JSON") {
  TempDir dir;
  write_sample(dir / "m.nwc", version(1));
  const auto full = read_bytes(dir / "m.nwc");
  const auto moff = static_cast<size_t>(le64(full, full.size() - 40));
  auto with_text = [&](const std::string &text) {
    std::vector<uint8_t> out(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(moff));
    out.insert(out.end(), text.begin(), text.end());
    std::vector<uint8_t> footer(40, 0);
    put_le64(footer, 0, moff);
    put_le64(footer, 8, text.size());
    put_le64(footer, 16, nwc::container_checksum(text.data(), text.size()));
    put_le32(footer, 24, 1);
    std::memcpy(footer.data() + 32, "NWCFOOT1", 8);
    out.insert(out.end(), footer.begin(), footer.end());
    write_bytes(dir / "j.nwc", out);
  };
  with_text("{\"format\": \"nwc\", ");
  expect_rejected(dir / "j.nwc", {"invalid JSON"});
  with_text("");
  expect_rejected(dir / "j.nwc", {"invalid JSON"});
  with_text(std::string(100000, '[') + std::string(100000, ']'));
  expect_rejected(dir / "j.nwc", {"nested deeper than 64"});
  with_text("[1,2,3]");
  expect_rejected(dir / "j.nwc", {"top level: expected an object"});
}

TEST_CASE("container: every single-byte corruption is detected, never a crash") {
  for (uint32_t v : kVersions) {
    INFO("format version " << v);
    TempDir dir;
    // A small container: one raw tensor and one pipeline tensor.
    {
      nwc::ContainerWriter w(dir / "s.nwc", version(v));
      nwc::TensorRecord a;
      a.name = "a";
      a.dtype = nwc::DType::U8;
      a.shape = {3};
      a.storage = "raw";
      auto ab = pattern(3, 9);
      a.streams = {w.append_stream("raw", -1, ab.data(), ab.size())};
      w.add_tensor(a);
      nwc::TensorRecord b;
      b.name = "b";
      b.shape = {1, 2};
      b.storage = "pipeline";
      b.stage_config = 0;
      b.blocks = {{0, 2, 2}};
      auto bb = pattern(5, 1);
      b.streams = {w.append_stream("entropy", 0, bb.data(), bb.size())};
      w.add_tensor(b);
      nwc::ContainerManifest m;
      m.stage_configs = {{{{"entropy", "e", "1", 1, json::object()}}}};
      w.finish(m);
    }
    const auto full = read_bytes(dir / "s.nwc");
    std::vector<std::vector<uint8_t>> original;
    {
      nwc::ContainerReader r(dir / "s.nwc");
      for (const auto &t : r.manifest().tensors)
        for (const auto &st : t.streams) original.push_back(r.read_stream(t, st));
    }
    size_t rejected = 0, accepted = 0;
    for (size_t i = 0; i < full.size(); ++i) {
      for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
        auto b = full;
        b[i] ^= mask;
        write_bytes(dir / "f.nwc", b);
        try {
          nwc::ContainerReader r(dir / "f.nwc");
          std::vector<std::vector<uint8_t>> got;
          for (const auto &t : r.manifest().tensors)
            for (const auto &st : t.streams) got.push_back(r.read_stream(t, st));
          CHECK(got == original);
          ++accepted;
        } catch (const nwc::Error &e) {
          CHECK(std::string(e.what()).find('\n') == std::string::npos);
          ++rejected;
        }
      }
    }
    // Every byte is covered by a check (magic, version, flags, checksums, footer fields).
    CHECK(accepted == 0);
    CHECK(rejected == full.size() * 3);
  }
}

// ---- version 2
// ------------------------------------------------------------------------------------

namespace {

const std::string &str(const v2spec::Body &b, uint64_t i) {
  return b.strings.at(static_cast<size_t>(i));
}

std::string name_of(const v2spec::Body &b, const v2spec::Tensor &t) {
  std::string n;
  for (size_t i = 0; i < t.name.size(); ++i) n += (i ? "." : "") + str(b, t.name[i]);
  return n;
}

uint64_t string_index(v2spec::Body &b, const std::string &s) {
  for (size_t i = 0; i < b.strings.size(); ++i)
    if (b.strings[i] == s) return i;
  b.strings.push_back(s);
  return b.strings.size() - 1;
}

// The body's streams of tensor `name`, in file order.
std::vector<v2spec::Stream *> streams2(v2spec::Body &b, const std::string &name) {
  std::vector<v2spec::Stream *> out;
  uint64_t t = 0;
  while (name_of(b, b.tensors.at(t)) != name) ++t;
  for (auto &r : b.runs)
    if (r.owner == t + 1)
      for (auto &s : r.streams) out.push_back(&s);
  return out;
}

} // namespace

TEST_CASE("container: version 2 byte layout matches the spec") {
  TempDir dir;
  const Sample s = write_sample(dir / "m.nwc");
  const auto b = read_bytes(dir / "m.nwc");
  const uint8_t magic[8] = {0x89, 0x4E, 0x57, 0x43, 0x0D, 0x0A, 0x1A, 0x0A};
  CHECK(std::memcmp(b.data(), magic, 8) == 0);
  CHECK(le64(b, 8) == 2); // version 2, flags 0
  const size_t foot = b.size() - 40;
  CHECK(std::memcmp(b.data() + foot + 32, "NWCFOOT1", 8) == 0);
  CHECK(le64(b, foot + 24) == 2); // version 2, reserved 0
  const auto moff = le64(b, foot), mlen = le64(b, foot + 8);
  CHECK(moff + mlen == foot);
  CHECK(le64(b, foot + 16) == nwc::container_checksum(b.data() + moff, mlen));
  CHECK(b[moff] <= 1); // encoding: stored or zstd

  // The second implementation reads the body and writes it back byte for byte.
  const std::string body = v2spec::body_of(b);
  const v2spec::Body p = v2spec::parse(body);
  CHECK(v2spec::encode(p) == body);
  CHECK(str(p, p.pipeline_name) == "test-pipe");
  CHECK(str(p, p.pipeline_text) == s.manifest.pipeline_text);
  CHECK(str(p, p.source_model) == "stories260K.bin");
  CHECK(json::parse(str(p, p.architecture)) == s.manifest.architecture);
  CHECK(json::parse(str(p, p.extra)) == s.manifest.extra);
  REQUIRE(p.configs.size() == 2);
  REQUIRE(p.configs[1].size() == 2);
  CHECK(str(p, p.configs[1][1].plugin) == "nwc.rans");
  CHECK(p.configs[1][1].stream_version == 1);
  CHECK(json::parse(str(p, p.configs[1][1].options)) == json{{"precision", 12}, {"tbl", "x"}});
  // Repeated strings are stored once.
  CHECK(std::count(p.strings.begin(), p.strings.end(), "nwc.uniform") == 1);
  REQUIRE(p.tensors.size() == 3);
  const auto &wq = p.tensors[0];
  CHECK(name_of(p, wq) == kWq);
  CHECK(wq.name.size() == 5); // layers, 0, attention, wq, weight
  CHECK(wq.dtype == 1);
  CHECK(wq.storage == 0);
  CHECK(wq.shape == std::vector<uint64_t>{4, 10});
  CHECK(wq.config == 2); // stage config 1, + 1
  REQUIRE(wq.blocks.size() == 2);
  CHECK(wq.blocks[1].width == 6);
  CHECK(wq.blocks[1].symbols == 24);
  CHECK(p.tensors[1].storage == 1);
  CHECK(p.tensors[1].config == 0);
  CHECK(p.tensors[2].dtype == 2); // F16
  CHECK(p.tensors[2].storage == 2);
  // The stream table: one run per tensor, offsets implied from 16.
  REQUIRE(p.runs.size() == 3);
  CHECK(p.runs[0].owner == 1);
  REQUIRE(p.runs[0].streams.size() == 5);
  CHECK(str(p, p.runs[0].streams[0].role) == "chunker");
  CHECK(p.runs[0].streams[0].block == 0); // -1 + 1
  CHECK(p.runs[0].streams[4].block == 2);
  CHECK(p.runs[0].streams[4].length == 41);
  // Units: wq's tensor-level streams, block 0, block 1; norm; tok_embeddings.
  CHECK(p.sums.size() == 5);
  CHECK(p.sums == v2spec::unit_sums(p, b));
}

TEST_CASE("container: version 2 verifies one checksum per unit") {
  TempDir dir;
  write_sample(dir / "m.nwc");
  auto b = read_bytes(dir / "m.nwc");
  nwc::ContainerReader r0(dir / "m.nwc");
  CHECK(r0.layout().checksums == 5);
  const nwc::TensorRecord *t0 = r0.find(kWq);
  REQUIRE(t0 != nullptr);
  for (const auto &st : t0->streams) CHECK(st.xxh64 == 0);
  b[t0->streams[2].offset] ^= 0x40; // entropy stream of block 0
  write_bytes(dir / "c.nwc", b);
  nwc::ContainerReader r(dir / "c.nwc");
  const auto *t = r.find(kWq);
  // Block 1 and the tensor-level streams are other units: readable.
  CHECK(r.read_stream(*t, t->streams[0]).size() == 12);
  CHECK(r.read_stream(*t, t->streams[3]).size() == 8);
  CHECK(r.read_stream(*t, t->streams[4]).size() == 41);
  // The quantizer stream of block 0 shares the damaged entropy stream's unit.
  for (size_t i : {size_t{1}, size_t{2}}) {
    const auto &st = t->streams[i];
    try {
      (void)r.read_stream(*t, st);
      FAIL("checksum mismatch not detected");
    } catch (const nwc::Error &e) {
      std::string m = e.what();
      INFO(m);
      CHECK(e.code() == NWC_E_CORRUPT_STREAM);
      CHECK(m.find("tensor " + kWq + ": stream " + st.role + " block 0 at offset " +
                   std::to_string(st.offset) + ": checksum mismatch") != std::string::npos);
      CHECK(m.find("the streams of block 0: 2 streams") != std::string::npos);
    }
  }
  // A stream that is not in the manifest is refused, not read.
  nwc::StreamRef forged = t->streams[3];
  forged.length += 1;
  CHECK_THROWS_WITH_AS(r.read_stream(*t, forged), doctest::Contains("not a stream of this tensor"),
                       nwc::Error);
  nwc::TensorRecord other = *t;
  other.name = "nope";
  CHECK_THROWS_WITH_AS(r.read_stream(other, t->streams[3]), doctest::Contains("no tensor"),
                       nwc::Error);
}

TEST_CASE("container: version 2 keeps unreferenced bytes and lists streams in file order") {
  TempDir dir;
  auto bytes = pattern(64, 5);
  nwc::ContainerWriter w(dir / "g.nwc");
  nwc::TensorRecord a;
  a.name = "a";
  a.shape = {2, 4};
  a.storage = "pipeline";
  a.stage_config = 0;
  a.blocks = {{0, 4, 8}};
  const auto e = w.append_stream("entropy", 0, bytes.data(), 10);
  const auto gap = w.append_stream("resource", -1, bytes.data() + 10, 7); // claimed by no tensor
  const auto z = w.append_stream("quantizer", 0, bytes.data(), 0);        // zero-length
  const auto q = w.append_stream("quantizer", 0, bytes.data() + 20, 5);
  a.streams = {q, z, e}; // not in file order
  w.add_tensor(a);
  nwc::TensorRecord c;
  c.name = "c";
  c.dtype = nwc::DType::U8;
  c.shape = {3};
  c.storage = "raw";
  c.streams = {w.append_stream("raw", -1, bytes.data() + 30, 3)};
  w.add_tensor(c);
  (void)w.append_stream("tail", -1, bytes.data() + 40, 4); // unreferenced, at the end
  nwc::ContainerManifest m;
  m.stage_configs = {{{{"entropy", "e", "1", 1, json::object()}}}};
  w.finish(m);

  nwc::ContainerReader r(dir / "g.nwc");
  const auto *ra = r.find("a");
  REQUIRE(ra != nullptr);
  REQUIRE(ra->streams.size() == 3);
  CHECK(ra->streams[0].role == "entropy");
  CHECK(ra->streams[0].offset == 16);
  CHECK(ra->streams[1].role == "quantizer");
  CHECK(ra->streams[1].offset == 33);
  CHECK(ra->streams[1].length == 0);
  CHECK(ra->streams[2].offset == 33);
  CHECK(r.read_stream(*ra, ra->streams[2]) ==
        std::vector<uint8_t>(bytes.begin() + 20, bytes.begin() + 25));
  CHECK(r.read_stream(*ra, ra->streams[1]).empty());
  CHECK(r.find("c")->streams[0].offset == 38);
  // The unreferenced bytes are still there and readable by their own record.
  CHECK(r.read_stream_at(gap, "resource") ==
        std::vector<uint8_t>(bytes.begin() + 10, bytes.begin() + 17));
  const nwc::ContainerLayout l = r.layout();
  CHECK(l.unreferenced_bytes == 7 + 4);
  CHECK(l.tensor_stream_bytes == 15 + 3);
  const v2spec::Body p = v2spec::parse(v2spec::body_of(read_bytes(dir / "g.nwc")));
  // a: entropy | 7 unreferenced | a: quantizer (empty), quantizer | c | 4 unreferenced
  REQUIRE(p.runs.size() == 5);
  CHECK(p.runs[0].owner == 1);
  CHECK(p.runs[1].owner == 0);
  CHECK(p.runs[1].gap == 7);
  CHECK(p.runs[2].streams.size() == 2);
  CHECK(p.runs[3].owner == 2);
  CHECK(p.runs[4].owner == 0);
  CHECK(p.runs[4].gap == 4);
}

TEST_CASE("container: conversion between versions keeps every byte of the stream area") {
  TempDir dir;
  const Sample s = write_sample(dir / "v1.nwc", version(1));
  {
    nwc::ContainerReader r1(dir / "v1.nwc");
    nwc::container_rewrite(r1, dir / "v2.nwc");
  }
  {
    nwc::ContainerReader r2(dir / "v2.nwc");
    CHECK(r2.format_version() == 2);
    nwc::container_rewrite(r2, dir / "back.nwc", version(1));
    nwc::container_rewrite(r2, dir / "again.nwc");
    for (size_t t = 0; t < 3; ++t) check_equal(r2.manifest().tensors[t], s.manifest.tensors[t]);
    for (const auto &t : r2.manifest().tensors)
      for (size_t i = 0; i < t.streams.size(); ++i)
        CHECK(r2.read_stream(t, t.streams[i]) == s.data.at({t.name, i}));
  }
  const auto v1 = read_bytes(dir / "v1.nwc"), v2 = read_bytes(dir / "v2.nwc");
  CHECK(read_bytes(dir / "back.nwc") == v1);
  CHECK(read_bytes(dir / "again.nwc") == v2);
  const size_t moff1 = static_cast<size_t>(le64(v1, v1.size() - 40));
  const size_t moff2 = static_cast<size_t>(le64(v2, v2.size() - 40));
  REQUIRE(moff1 == moff2);
  CHECK(std::equal(v1.begin() + 16, v1.begin() + static_cast<std::ptrdiff_t>(moff1),
                   v2.begin() + 16));
  CHECK(v2.size() < v1.size());

  // A damaged stream is not copied silently.
  auto bad = v2;
  bad[20] ^= 1;
  write_bytes(dir / "bad.nwc", bad);
  nwc::ContainerReader rb(dir / "bad.nwc");
  CHECK_THROWS_WITH_AS(nwc::container_rewrite(rb, dir / "out.nwc"),
                       doctest::Contains("checksum mismatch"), nwc::Error);
  CHECK(!std::filesystem::exists(dir / "out.nwc"));
}

TEST_CASE("container: layout and the header share of each tensor") {
  for (uint32_t v : kVersions) {
    INFO("format version " << v);
    TempDir dir;
    write_sample(dir / "m.nwc", version(v));
    nwc::ContainerReader r(dir / "m.nwc");
    const nwc::ContainerLayout l = r.layout();
    CHECK(l.format_version == v);
    CHECK(l.file_size == r.file_size());
    CHECK(l.header_bytes == 16);
    CHECK(l.footer_bytes == 40);
    CHECK(l.header_bytes + l.tensor_stream_bytes + l.unreferenced_bytes + l.manifest_bytes +
              l.footer_bytes ==
          l.file_size);
    CHECK(l.manifest_offset + l.manifest_bytes + 40 == l.file_size);
    CHECK(l.checksums == (v == 1 ? 7u : 5u));
    if (v == 1) CHECK(l.manifest_body_bytes == l.manifest_bytes);
    double header = 0;
    for (const auto &t : r.manifest().tensors) {
      const double h = nwc::container_tensor_header_bytes(r.manifest(), l, t);
      CHECK(h == doctest::Approx(static_cast<double>(l.container_bytes()) *
                                 static_cast<double>(t.numel()) / 51.0));
      header += h;
    }
    CHECK(header == doctest::Approx(static_cast<double>(l.container_bytes())));
  }
}

TEST_CASE("container: version 2 compresses the manifest only when that pays") {
  TempDir dir;
  auto encoding = [&](const std::filesystem::path &p) {
    const auto b = read_bytes(p);
    return b[static_cast<size_t>(le64(b, b.size() - 40))];
  };
  // A real pipeline's text compresses.
  nwc::ContainerManifest m;
  {
    std::ifstream f(nwc::test::source_dir() / "pipelines" / "nwc-l300.toml");
    m.pipeline_text.assign(std::istreambuf_iterator<char>(f), {});
  }
  REQUIRE(m.pipeline_text.size() > 500);
  {
    nwc::ContainerWriter w(dir / "z.nwc");
    w.finish(m);
  }
  CHECK(encoding(dir / "z.nwc") == 1);
  {
    nwc::ContainerWriteOptions o;
    o.compress_manifest = false;
    nwc::ContainerWriter w(dir / "s.nwc", o);
    w.finish(m);
  }
  CHECK(encoding(dir / "s.nwc") == 0);
  // One that would expand more than 8x is stored, so readers can bound the expansion.
  m.pipeline_text = std::string(100000, 'x');
  {
    nwc::ContainerWriter w(dir / "x.nwc");
    w.finish(m);
  }
  CHECK(encoding(dir / "x.nwc") == 0);
  // An empty container does not compress.
  {
    nwc::ContainerWriter w(dir / "e.nwc");
    w.finish({});
  }
  CHECK(encoding(dir / "e.nwc") == 0);
  for (const char *f : {"z.nwc", "s.nwc", "x.nwc", "e.nwc"}) {
    nwc::ContainerReader r(dir / f);
    CHECK(r.manifest().tensors.empty());
  }
  nwc::ContainerReader r(dir / "x.nwc");
  CHECK(r.manifest().pipeline_text == m.pipeline_text);
}

TEST_CASE("container: writer options and strings that are not UTF-8") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(nwc::ContainerWriter(dir / "a.nwc", version(0)),
                       doctest::Contains("cannot write container format version 0"), nwc::Error);
  CHECK_THROWS_WITH_AS(nwc::ContainerWriter(dir / "a.nwc", version(3)),
                       doctest::Contains("this build writes 1 to 2"), nwc::Error);
  CHECK(dir.entries().empty());
  for (uint32_t v : kVersions) {
    INFO("format version " << v);
    nwc::ContainerWriter w(dir / "u.nwc", version(v));
    auto bytes = pattern(3, 1);
    nwc::TensorRecord t;
    t.name = "bad\xff name";
    t.dtype = nwc::DType::U8;
    t.shape = {3};
    t.storage = "raw";
    t.streams = {w.append_stream("raw", -1, bytes.data(), 3)};
    w.add_tensor(t);
    CHECK_THROWS_WITH_AS(w.finish({}), doctest::Contains("cannot encode the manifest"), nwc::Error);
  }
}

TEST_CASE("container: version 2 manifests that lie are rejected") {
  TempDir dir;
  write_sample(dir / "m.nwc");
  const auto full = read_bytes(dir / "m.nwc");
  const v2spec::Body base = v2spec::parse(v2spec::body_of(full));
  const auto p = dir / "lie.nwc";
  // Edits the body; then (unless `keep_sums`) recomputes the unit checksums, so that only the
  // check under test can object, and writes the file with a stored (uncompressed) manifest.
  auto lie = [&](const std::function<void(v2spec::Body &)> &edit, bool keep_sums = false) {
    v2spec::Body b = base;
    edit(b);
    if (!keep_sums) b.sums = v2spec::unit_sums(b, full);
    write_bytes(p, v2spec::with_manifest(full, v2spec::stored(v2spec::encode(b))));
  };

  SUBCASE("an unchanged body, stored or compressed, is accepted") {
    lie([](v2spec::Body &) {});
    CHECK(nwc::ContainerReader(p).manifest().tensors.size() == 3);
    write_bytes(p, v2spec::with_manifest(full, v2spec::zstd(v2spec::encode(base), 1)));
    CHECK(nwc::ContainerReader(p).manifest().tensors.size() == 3);
  }
  SUBCASE("unused strings are allowed") {
    lie([](v2spec::Body &b) { b.strings.push_back("unused"); });
    CHECK(nwc::ContainerReader(p).manifest().tensors.size() == 3);
  }
  SUBCASE("string index out of range") {
    lie([](v2spec::Body &b) { b.tensors[1].name[0] = 999; });
    expect_rejected(p, {"tensor #1", "name component: string 999 is out of range"});
  }
  SUBCASE("role index out of range") {
    lie([](v2spec::Body &b) { streams2(b, "norm.weight")[0]->role = 1000; });
    expect_rejected(p, {"tensor 'norm.weight': stream 0", "role: string 1000 is out of range"});
  }
  SUBCASE("string not UTF-8") {
    lie([](v2spec::Body &b) { b.strings[b.source_model] = "\xc0\xaf"; });
    expect_rejected(p, {"not valid UTF-8"});
  }
  SUBCASE("stream longer than the stream area") {
    lie([](v2spec::Body &b) { streams2(b, "tok_embeddings.weight")[0]->length = 1u << 20; });
    expect_rejected(p, {"tensor 'tok_embeddings.weight': stream 0", "run past the stream area"});
  }
  SUBCASE("stream length near 2^64") {
    lie([](v2spec::Body &b) { streams2(b, kWq)[1]->length = ~uint64_t{0}; });
    expect_rejected(
        p, {"tensor 'layers.0.attention.wq.weight': stream 1", "run past the stream area"});
  }
  SUBCASE("stream table shorter than the stream area") {
    lie([](v2spec::Body &b) { streams2(b, kWq)[4]->length -= 1; });
    expect_rejected(p, {"stream table", "describes the stream area up to offset"});
  }
  SUBCASE("unreferenced bytes past the stream area") {
    lie([](v2spec::Body &b) {
      streams2(b, "norm.weight")[0]->length = 10;
      b.runs.push_back(v2spec::Run{0, 11, {}});
    });
    expect_rejected(p, {"stream table: run 3", "unreferenced bytes [137, +11) run past the "
                                               "stream area, which ends at 147"});
  }
  SUBCASE("empty run of unreferenced bytes") {
    lie([](v2spec::Body &b) { b.runs.insert(b.runs.begin(), v2spec::Run{0, 0, {}}); });
    expect_rejected(p, {"stream table: run 0", "unreferenced byte count 0"});
  }
  SUBCASE("owner out of range") {
    lie([](v2spec::Body &b) { b.runs[1].owner = 4; }, true);
    expect_rejected(p, {"stream table: run 1", "owner 4 is out of range [0, 3]"});
  }
  SUBCASE("run without streams") {
    lie([](v2spec::Body &b) { b.runs.push_back(v2spec::Run{1, 0, {}}); });
    expect_rejected(p, {"stream table: run 3", "stream count 0"});
  }
  SUBCASE("stream block out of range") {
    lie([](v2spec::Body &b) { streams2(b, kWq)[2]->block = 3; });
    expect_rejected(p, {"stream 2", "block + 1 3 is out of range [0, 2]"});
  }
  SUBCASE("checksum table too short or too long") {
    lie([](v2spec::Body &b) { b.sums.pop_back(); }, true);
    expect_rejected(p, {"checksum table", "5 checksum units need 40 bytes, 32 are left"});
    lie([](v2spec::Body &b) { b.sums.push_back(0); }, true);
    expect_rejected(p, {"5 checksum units need 40 bytes, 48 are left"});
  }
  SUBCASE("a wrong unit checksum fails when the unit is read") {
    lie([](v2spec::Body &b) { b.sums[3] ^= 1; }, true); // norm.weight
    nwc::ContainerReader r(p);
    const auto *t = r.find("norm.weight");
    CHECK_THROWS_WITH_AS(r.read_stream(*t, t->streams[0]),
                         doctest::Contains("tensor norm.weight: stream raw block -1 at offset"),
                         nwc::Error);
    const auto *e = r.find("tok_embeddings.weight");
    CHECK(r.read_stream(*e, e->streams[0]).size() == 9);
  }
  SUBCASE("unknown dtype and storage codes") {
    lie([](v2spec::Body &b) { b.tensors[1].dtype = 4; });
    expect_rejected(p, {"tensor 'norm.weight'", "unknown dtype code 4"});
    lie([](v2spec::Body &b) { b.tensors[1].storage = 3; });
    expect_rejected(p, {"tensor 'norm.weight'", "unknown storage code 3"});
  }
  SUBCASE("too many dimensions") {
    lie([](v2spec::Body &b) { b.tensors[1].shape = {1, 1, 1, 1, 1, 1, 1, 1, 5}; });
    expect_rejected(p, {"9 dimensions (at most 8)"});
  }
  SUBCASE("dimension beyond int64") {
    lie([](v2spec::Body &b) { b.tensors[1].shape = {~uint64_t{0}}; });
    expect_rejected(p, {"tensor 'norm.weight'", "dimension 18446744073709551615 is out of range"});
  }
  SUBCASE("huge declared shape fails fast") {
    lie([](v2spec::Body &b) {
      b.tensors[0].shape = {uint64_t{1} << 40, uint64_t{1} << 40};
      b.tensors[0].blocks = {{uint64_t{1} << 40, 1}};
      for (auto *st : streams2(b, kWq)) st->block = std::min<uint64_t>(st->block, 1);
    });
    expect_rejected(p, {"tensor 'layers.0.attention.wq.weight'", "more than 2^40 elements"});
  }
  SUBCASE("blocks do not cover the columns") {
    lie([](v2spec::Body &b) { b.tensors[0].blocks[1].width = 5; });
    expect_rejected(p, {"blocks cover columns [0, 9) but the tensor has 10 columns"});
  }
  SUBCASE("empty block") {
    lie([](v2spec::Body &b) { b.tensors[0].blocks[0].width = 0; });
    expect_rejected(p, {"block 0", "is empty or exceeds"});
  }
  SUBCASE("symbol count beyond 2^40") {
    lie([](v2spec::Body &b) { b.tensors[0].blocks[0].symbols = (uint64_t{1} << 40) + 1; });
    expect_rejected(p, {"symbol_count 1099511627777 is out of range [0, 2^40]"});
  }
  SUBCASE("stage config out of range") {
    lie([](v2spec::Body &b) { b.tensors[0].config = 3; });
    expect_rejected(p, {"stage config + 1 3 is out of range [0, 2]"});
  }
  SUBCASE("pipeline tensor without a stage config, raw tensor with one") {
    lie([](v2spec::Body &b) { b.tensors[0].config = 0; });
    expect_rejected(p, {"stage_config -1 is out of range [0, 2)"});
    lie([](v2spec::Body &b) { b.tensors[1].config = 1; });
    expect_rejected(p, {"raw storage: stage_config must be -1, found 0"});
  }
  SUBCASE("raw stream length mismatch") {
    lie([](v2spec::Body &b) { b.tensors[1].shape = {6}; });
    expect_rejected(p, {"tensor 'norm.weight'", "has 20 bytes, expected 24"});
  }
  SUBCASE("raw tensor with a stream of another role") {
    lie([](v2spec::Body &b) { streams2(b, "norm.weight")[0]->role = string_index(b, "entropy"); });
    expect_rejected(p, {"expected exactly one stream, with role 'raw'", "0 with that role"});
  }
  SUBCASE("empty role") {
    lie([](v2spec::Body &b) { streams2(b, "norm.weight")[0]->role = string_index(b, ""); });
    expect_rejected(p, {"tensor 'norm.weight': stream 0", "empty role"});
  }
  SUBCASE("duplicate and empty tensor names") {
    lie([](v2spec::Body &b) { b.tensors[1].name = b.tensors[0].name; });
    expect_rejected(p, {"duplicate tensor name"});
    lie([](v2spec::Body &b) { b.tensors[1].name = {string_index(b, "")}; });
    expect_rejected(p, {"tensor #1", "empty tensor name"});
    lie([](v2spec::Body &b) { b.tensors[1].name.clear(); });
    expect_rejected(p, {"tensor #1", "name has no components"});
  }
  SUBCASE("stream_version beyond 32 bits") {
    lie([](v2spec::Body &b) { b.configs[0][0].stream_version = uint64_t{1} << 32; });
    expect_rejected(p, {"stage_config 0: stage 0", "stream_version 4294967296 is out of range"});
  }
  SUBCASE("JSON texts that are invalid, not objects or too deep") {
    lie([](v2spec::Body &b) { b.architecture = string_index(b, "{\"dim\": "); });
    expect_rejected(p, {"top level", "architecture: invalid JSON"});
    lie([](v2spec::Body &b) { b.extra = string_index(b, "[1, 2]"); });
    expect_rejected(p, {"extra: expected a JSON object"});
    lie([](v2spec::Body &b) {
      b.configs[1][0].options = string_index(b, std::string(1000, '[') + std::string(1000, ']'));
    });
    expect_rejected(p, {"stage_config 1: stage 0", "options: JSON nested deeper than 64"});
  }
  SUBCASE("a count larger than the bytes that follow") {
    lie([](v2spec::Body &b) { b.tensors.resize(2); }, true);
    // 3 tensor records are expected by the runs; with 2, owner 3 is out of range.
    expect_rejected(p, {"owner 3 is out of range [0, 2]"});
    std::string body = v2spec::encode(base);
    // The tensor count is patched to 2^40 where it is stored: right after the stage configs.
    v2spec::Body cut = base;
    cut.tensors.clear();
    cut.runs.clear();
    cut.sums.clear();
    std::string head = v2spec::encode(cut);
    head.resize(head.size() - 2); // tensor count 0, run count 0
    v2spec::varint(head, uint64_t{1} << 40);
    head += body.substr(head.size() - 6);
    write_bytes(p, v2spec::with_manifest(full, v2spec::stored(head)));
    expect_rejected(p, {"tensor count 1099511627776 cannot fit in the"});
  }
  SUBCASE("strings that expand beyond the budget") {
    // A name of 2^20 components that each reference a 64-byte string: 64 MiB from 1 MiB.
    lie([](v2spec::Body &b) {
      const uint64_t s = string_index(b, std::string(64, 'a'));
      b.tensors[1].name.assign(1u << 20, s);
    });
    expect_rejected(p, {"tensor #1", "expand beyond the limit"});
  }
}

TEST_CASE("container: version 2 varints and manifest encodings") {
  TempDir dir;
  write_sample(dir / "m.nwc");
  const auto full = read_bytes(dir / "m.nwc");
  const auto p = dir / "v.nwc";
  auto with = [&](const std::string &manifest) {
    write_bytes(p, v2spec::with_manifest(full, manifest));
  };
  using v2spec::stored;
  with(stored(""));
  expect_rejected(p, {"string table", "truncated varint (string count)"});
  with(stored("\x80"));
  expect_rejected(p, {"truncated varint (string count)", "(manifest byte 0)"});
  with(stored(std::string("\x80\x00", 2)));
  expect_rejected(p, {"overlong varint (string count)"});
  with(stored(std::string(9, '\xff') + "\x02"));
  expect_rejected(p, {"varint (string count) exceeds 64 bits"});
  with(stored("\x05"));
  expect_rejected(p, {"string count 5 cannot fit in the 0 bytes left"});
  with(stored(std::string("\x01\x10", 2) + "abc"));
  expect_rejected(p, {"string 0", "length 16 cannot fit in the 3 bytes left"});
  with("");
  expect_rejected(p, {"empty (a version 2 manifest starts with its encoding byte)"});
  with("\x02");
  expect_rejected(p, {"unknown encoding 2 (expected 0 stored or 1 zstd)"});
  with("\x01garbage");
  expect_rejected(p, {"encoding 1 (zstd) but no zstd frame follows"});

  const std::string body = v2spec::encode(v2spec::parse(v2spec::body_of(full)));
  const std::string z = v2spec::zstd(body);
  with(z + "x");
  expect_rejected(p, {"1 bytes follow the zstd frame"});
  with(z.substr(0, z.size() - 3));
  expect_rejected(p, {"truncated zstd frame"});
  // A frame that expands more than 8x (a body padded with an unused string of zeros).
  v2spec::Body big = v2spec::parse(body);
  big.strings.push_back(std::string(1 << 20, '0'));
  with(v2spec::zstd(v2spec::encode(big)));
  expect_rejected(p, {"zstd frame declares", "more than the limit of"});
  // A frame without its decompressed size.
  {
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
    std::string out(ZSTD_compressBound(body.size()), '\0');
    const size_t n = ZSTD_compress2(c, out.data(), out.size(), body.data(), body.size());
    ZSTD_freeCCtx(c);
    REQUIRE(!ZSTD_isError(n));
    out.resize(n);
    with("\x01" + out);
    expect_rejected(p, {"does not declare its decompressed size"});
  }
}

TEST_CASE("container: container_fix_checksums makes damaged images readable for fuzzing") {
  TempDir dir;
  write_sample(dir / "m.nwc");
  auto b = read_bytes(dir / "m.nwc");
  nwc::ContainerReader r0(dir / "m.nwc");
  const auto *t0 = r0.find("norm.weight");
  b[t0->streams[0].offset] ^= 0x10;
  CHECK(nwc::container_fix_checksums(b));
  write_bytes(dir / "f.nwc", b);
  nwc::ContainerReader r(dir / "f.nwc");
  const auto *t = r.find("norm.weight");
  CHECK(r.read_stream(*t, t->streams[0])[0] == (pattern(20, 6)[0] ^ 0x10));
  // A damaged manifest gets a matching footer checksum, so its own checks run.
  auto m = read_bytes(dir / "m.nwc");
  std::vector<uint8_t> broken = v2spec::with_manifest(m, v2spec::stored("\x05"));
  broken[broken.size() - 40 + 16] ^= 1; // footer checksum wrong
  CHECK(nwc::container_fix_checksums(broken));
  write_bytes(dir / "g.nwc", broken);
  expect_rejected(dir / "g.nwc", {"string count 5 cannot fit"});
  // Version 1 images and short inputs are left alone.
  std::vector<uint8_t> tiny{1, 2, 3};
  CHECK_FALSE(nwc::container_fix_checksums(tiny));
  write_sample(dir / "v1.nwc", version(1));
  auto v1 = read_bytes(dir / "v1.nwc");
  CHECK_FALSE(nwc::container_fix_checksums(v1));
}
