// resources.cpp — files behind bitstream-affecting path options (codecs): recorded with their
// XXH64 hash at compression, found by hash at decoding.
#include "resources.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"

#include <boost/dll/runtime_symbol_info.hpp>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <variant>

namespace nwc::host::detail {

namespace {

std::string file_hash(const std::filesystem::path &p) {
  MappedFile f(p);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(container_checksum(f.data(), f.size())));
  return hex;
}

} // namespace

// Files behind bitstream-affecting path options (a codec): recorded in manifest.extra.resources
// as {config, slot, option, file, path, bytes, xxh64[, stream]} so decoding can find and verify
// them; with `embed`, their bytes go into the container as a stream.
void record_resources(const Plugin &p, const OptionValues &resolved, size_t config,
                      const std::string &slot, bool embed, ContainerWriter &writer,
                      nlohmann::json &resources) {
  for (const auto &spec : p.options) {
    if (spec.type != NWC_OPT_PATH || !(spec.flags & NWC_OPTF_AFFECTS_BITSTREAM)) continue;
    const OptionValue *v = resolved.find(spec.key);
    if (!v) continue;
    const std::string path = std::filesystem::absolute(std::get<std::string>(v->value)).string();
    MappedFile f(path);
    const uint64_t hash = container_checksum(f.data(), f.size());
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
    nlohmann::json r = {{"config", config},
                        {"slot", slot},
                        {"plugin", p.id},
                        {"option", spec.key},
                        {"file", std::filesystem::path(path).filename().string()},
                        {"path", path},
                        {"bytes", f.size()},
                        {"xxh64", hex}};
    if (embed) {
      StreamRef ref = writer.append_stream("resource", -1, f.data(), f.size());
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(ref.xxh64));
      r["stream"] = {{"offset", ref.offset}, {"length", ref.length}, {"xxh64", hex}};
    }
    resources.push_back(std::move(r));
  }
}

// Where a recorded resource is on this machine (see ContainerDecoder), verified by hash.
std::string resolve_resource(const ContainerReader &reader, const nlohmann::json &r,
                             std::vector<std::filesystem::path> &extracted) {
  namespace fs = std::filesystem;
  const std::string file = reader.path().string();
  auto str = [&](const char *key) {
    if (!r.contains(key) || !r[key].is_string())
      fail(NWC_E_CORRUPT_STREAM, file + ": manifest resource lacks string '" + key + "'");
    return r[key].get<std::string>();
  };
  const std::string want = str("xxh64"), name = str("file"), recorded = str("path");
  const std::string what = "plugin " + str("plugin") + " option " + str("option");
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    fail(NWC_E_CORRUPT_STREAM, file + ": " + what + ": bad resource file name '" + name + "'");
  if (r.contains("stream")) {
    const auto &js = r["stream"];
    StreamRef ref;
    ref.role = "resource";
    try {
      ref.offset = js.at("offset").get<uint64_t>();
      ref.length = js.at("length").get<uint64_t>();
      ref.xxh64 = std::stoull(js.at("xxh64").get<std::string>(), nullptr, 16);
    } catch (const std::exception &) {
      fail(NWC_E_CORRUPT_STREAM, file + ": " + what + ": malformed embedded resource record");
    }
    std::vector<uint8_t> bytes = reader.read_stream_at(ref, "embedded " + name);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(container_checksum(bytes.data(), bytes.size())));
    if (want != hex)
      fail(NWC_E_CORRUPT_STREAM,
           file + ": embedded " + name + " hashes to " + hex + ", the manifest expects " + want);
    std::string tmpl = (fs::temp_directory_path() / ("nwc-resource-XXXXXX-" + name)).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    int fd = mkstemps(buf.data(), static_cast<int>(name.size() + 1));
    if (fd < 0) fail(NWC_E_IO, file + ": cannot create a temporary file for embedded " + name);
    fs::path out(buf.data());
    extracted.push_back(out);
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (w <= 0) {
        ::close(fd);
        fail(NWC_E_IO, out.string() + ": write failed");
      }
      done += static_cast<size_t>(w);
    }
    ::close(fd);
    return out.string();
  }
  std::vector<fs::path> candidates{recorded, reader.path().parent_path() / name};
  if (const char *env = std::getenv("NWC_CODEC_PATH")) {
    std::string dirs = env;
    for (size_t a = 0; a <= dirs.size();) {
      size_t b = dirs.find(':', a);
      if (b == std::string::npos) b = dirs.size();
      if (b > a) candidates.push_back(fs::path(dirs.substr(a, b - a)) / name);
      a = b + 1;
    }
  }
  boost::system::error_code bec;
  auto exe = boost::dll::program_location(bec);
  if (!bec)
    candidates.push_back(fs::path(exe.parent_path().string()) / ".." / "share" / "nwc" / "codecs" /
                         name);
  std::string mismatch;
  std::error_code ec;
  for (const auto &c : candidates) {
    if (!fs::is_regular_file(c, ec)) continue;
    const std::string got = file_hash(c);
    if (got == want) return c.string();
    if (mismatch.empty()) mismatch = c.string() + " hashes to " + got;
  }
  if (!mismatch.empty())
    fail(NWC_E_VERSION, file + ": " + what + " needs " + name + " with xxh64 " + want + ", but " +
                            mismatch + " (a different codec); put the right one on NWC_CODEC_PATH");
  fail(NWC_E_IO, file + ": " + what + " needs " + name + " (xxh64 " + want + "), not found at " +
                     recorded +
                     ", next to the container or on NWC_CODEC_PATH (compress with "
                     "--embed-codec to carry it inside the container)");
}

} // namespace nwc::host::detail
