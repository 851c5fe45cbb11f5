// Fuzz target: the `.nwc` container reader, versions 1 and 2 (header, footer, the JSON manifest
// and its schema or the binary manifest, zstd-compressed or stored, with its string table, tensor
// and stream tables and checksum table; stream bounds and overlaps, block geometry), reading every
// stream, then the decode path of `nwc decompress`/`eval`: a ContainerDecoder over the built
// plugins decoding every tensor on one thread (embedded codecs are extracted and loaded as the CLI
// does).
//
// Each input is read twice. First as it is: open and read every stream, so the checksum checks
// (manifest, streams, version 2 units) see the mutations. Then repaired, because checksums would
// stop almost every mutation at the door: version 1 - when the footer is intact and its manifest
// parses as JSON, every stream's "xxh64" (tensor streams and embedded resources) is set to the
// checksum of the bytes it points at, and the footer's to the re-serialized manifest's; version 2 -
// nwc::container_fix_checksums sets the footer's checksum and, when the manifest decodes, every
// unit checksum. Mutations of the manifest and of stream bytes thus reach the semantic checks and
// the decoders. Inputs that cannot be repaired are used as they are.
#include "fuzz_common.hpp"
#include "fuzz_registry.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/registry.hpp"

#include <cstdio>
#include <cstring>
#include <vector>

namespace {

using nwc::fuzz::registry;

uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}
void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Sets o["xxh64"] to the checksum of the bytes o's offset/length point at, when they are inside.
void fix_stream(nlohmann::json &o, const std::vector<uint8_t> &file, uint64_t area_end) {
  if (!o.is_object()) return;
  const auto off = o.find("offset"), len = o.find("length");
  if (off == o.end() || len == o.end() || !off->is_number_unsigned() || !len->is_number_unsigned())
    return;
  const auto a = off->get<uint64_t>(), n = len->get<uint64_t>();
  if (a > area_end || n > area_end - a) return;
  o["xxh64"] = hex64(nwc::container_checksum(file.data() + a, static_cast<size_t>(n)));
}

// The input with its checksums made to match (see above), or unchanged when that is not possible.
std::vector<uint8_t> repair(const uint8_t *data, size_t size) {
  std::vector<uint8_t> file(data, data + size);
  if (size < nwc::kContainerHeaderSize + nwc::kContainerFooterSize) return file;
  if (data[8] == 2 && data[9] == 0 && data[10] == 0 && data[11] == 0) { // version 2
    nwc::container_fix_checksums(file);
    return file;
  }
  const uint8_t *foot = data + size - nwc::kContainerFooterSize;
  if (std::memcmp(foot + 32, "NWCFOOT1", 8) != 0) return file;
  const uint64_t moff = le64(foot), mlen = le64(foot + 8);
  const uint64_t end = size - nwc::kContainerFooterSize;
  if (moff > end || mlen != end - moff) return file;
  nlohmann::json j = nlohmann::json::parse(data + moff, data + end, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return file;
  if (auto ts = j.find("tensors"); ts != j.end() && ts->is_array())
    for (auto &t : *ts)
      if (t.is_object())
        if (auto ss = t.find("streams"); ss != t.end() && ss->is_array())
          for (auto &s : *ss) fix_stream(s, file, moff);
  if (auto ex = j.find("extra"); ex != j.end() && ex->is_object())
    if (auto rs = ex->find("resources"); rs != ex->end() && rs->is_array())
      for (auto &r : *rs)
        if (r.is_object())
          if (auto st = r.find("stream"); st != r.end()) {
            fix_stream(*st, file, moff);
            if (st->is_object() && st->contains("xxh64") && r.contains("xxh64"))
              r["xxh64"] = (*st)["xxh64"];
          }
  const std::string text = j.dump();
  file.resize(static_cast<size_t>(moff));
  file.insert(file.end(), text.begin(), text.end());
  uint8_t footer[nwc::kContainerFooterSize];
  std::memcpy(footer, foot, sizeof footer);
  put_le64(footer + 8, text.size());
  put_le64(footer + 16, nwc::container_checksum(text.data(), text.size()));
  file.insert(file.end(), footer, footer + sizeof footer);
  return file;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static nwc::fuzz::ScratchFile scratch(".nwc");
  try { // as it is: the checksums see the mutation
    const nwc::ContainerReader reader(scratch.write(data, size));
    for (const auto &t : reader.manifest().tensors)
      for (const auto &s : t.streams) (void)reader.read_stream(t, s);
  } catch (const nwc::Error &e) {
    nwc::fuzz::note(e.what());
  }
  const std::vector<uint8_t> file = repair(data, size);
  const auto &path = scratch.write(file.data(), file.size());
  try {
    const nwc::ContainerReader reader(path);
    for (const auto &t : reader.manifest().tensors)
      for (const auto &s : t.streams) (void)reader.read_stream(t, s);
    const nwc::host::ContainerDecoder decoder(reader, registry());
    // No size cap here: a declared shape the streams cannot hold must be refused before the
    // decoder allocates for it (libFuzzer's -malloc_limit_mb reports it otherwise).
    for (const auto &t : reader.manifest().tensors) (void)decoder.decode_tensor(t, 1);
  } catch (const nwc::Error &e) {
    nwc::fuzz::note(e.what());
  }
  return 0;
}
