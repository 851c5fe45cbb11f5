// MappedFile and AtomicFile: errors name the path, output appears only on commit, temporaries are
// removed on every path.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <doctest/doctest.h>

using namespace nwc;
using nwc::test::TempDir;

TEST_CASE("MappedFile maps a file and reports bad paths") {
  TempDir dir;
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 5};
  nwc::test::write_bytes(dir / "a.bin", bytes);
  {
    MappedFile f(dir / "a.bin");
    REQUIRE(f.size() == 5);
    CHECK(std::equal(bytes.begin(), bytes.end(), f.data()));
    CHECK(f.path() == dir / "a.bin");
  }
  nwc::test::write_bytes(dir / "empty", nullptr, 0);
  {
    MappedFile f(dir / "empty");
    CHECK(f.size() == 0);
  }
  try {
    MappedFile f(dir / "missing.bin");
    FAIL("expected an error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_IO);
    CHECK(std::string(e.what()) == (dir / "missing.bin").string() + ": no such file or directory");
  }
  try {
    MappedFile f(dir.path());
    FAIL("expected an error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_IO);
    CHECK(std::string(e.what()).find("is a directory") != std::string::npos);
  }
}

TEST_CASE("AtomicFile writes, overwrites and commits") {
  TempDir dir;
  const auto target = dir / "out.bin";
  {
    AtomicFile f(target);
    CHECK(f.temporary().parent_path() == dir.path());
    CHECK(f.temporary().filename().string().rfind(".out.bin.tmp.", 0) == 0);
    CHECK(std::filesystem::exists(f.temporary()));
    CHECK_FALSE(std::filesystem::exists(target));
    f.write("hello world", 11);
    CHECK(f.size() == 11);
    f.write_at(6, "WORLD", 5);
    CHECK_THROWS_AS(f.write_at(8, "xyzw", 4), Error); // past the written bytes
    f.commit();
  }
  const auto got = nwc::test::read_bytes(target);
  CHECK(std::string(got.begin(), got.end()) == "hello WORLD");
  CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
}

TEST_CASE("AtomicFile destroyed without commit leaves nothing and keeps the old target") {
  TempDir dir;
  const auto target = dir / "keep.txt";
  nwc::test::write_bytes(target, "old", 3);
  {
    AtomicFile f(target);
    f.write("new content", 11);
  }
  CHECK(dir.entries() == std::vector<std::string>{"keep.txt"});
  const auto got = nwc::test::read_bytes(target);
  CHECK(std::string(got.begin(), got.end()) == "old");
}

TEST_CASE("remove_pending_temporaries unlinks live temporaries only") {
  TempDir dir;
  AtomicFile a(dir / "a");
  AtomicFile b(dir / "b");
  {
    AtomicFile done(dir / "done");
    done.write("x", 1);
    done.commit();
  }
  CHECK(dir.entries().size() == 3);
  remove_pending_temporaries();
  CHECK(dir.entries() == std::vector<std::string>{"done"});
}

TEST_CASE("AtomicFile in a missing directory names the path") {
  TempDir dir;
  const auto target = dir / "no" / "such" / "out.bin";
  try {
    AtomicFile f(target);
    FAIL("expected an error");
  } catch (const Error &e) {
    CHECK(e.code() == NWC_E_IO);
    CHECK(std::string(e.what()).rfind(target.string() + ":", 0) == 0);
  }
}
