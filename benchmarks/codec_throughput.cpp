// Encode and decode throughput of pipelines on one model, with 1 and N threads, measured side by
// side in one run (weights of the coded tensors per second; best of --repeat runs).
//
//   nwc_codec_throughput --model M [--threads N] [--repeat R] PIPELINE.toml...
//
// Encode = compress_model (tensors in parallel). Decode = every column block of every coded tensor
// through ContainerDecoder, blocks spread over the threads. Prints a Markdown table; asserts
// nothing.
#include "nwc/formats/container.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/host/registry.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using namespace nwc;
using namespace nwc::host;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Decodes every block of every pipeline tensor once; returns the coded weights.
double decode_all(const ContainerReader &reader, const ContainerDecoder &decoder,
                  unsigned threads) {
  std::vector<std::pair<const TensorRecord *, size_t>> work;
  double weights = 0;
  for (const auto &t : reader.manifest().tensors) {
    if (t.storage != "pipeline") continue;
    weights += static_cast<double>(t.numel());
    for (size_t b = 0; b < t.blocks.size(); ++b) work.emplace_back(&t, b);
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < threads; ++i)
    pool.emplace_back([&] {
      for (size_t k; (k = next.fetch_add(1)) < work.size();)
        decoder.decode_block(*work[k].first, work[k].second);
    });
  for (auto &t : pool) t.join();
  return weights;
}

} // namespace

int main(int argc, char **argv) {
  std::string model_path;
  unsigned max_threads = 2;
  int repeat = 3;
  std::vector<std::string> pipelines;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--model" && i + 1 < argc)
      model_path = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      max_threads = static_cast<unsigned>(std::stoul(argv[++i]));
    else if (a == "--repeat" && i + 1 < argc)
      repeat = std::stoi(argv[++i]);
    else
      pipelines.push_back(a);
  }
  if (model_path.empty() || pipelines.empty() || max_threads < 1 || repeat < 1) {
    std::cerr << "usage: nwc_codec_throughput --model M [--threads N] [--repeat R] PIPELINE...\n";
    return 2;
  }
  try {
    set_log_level(NWC_LOG_ERROR);
    Registry registry;
    registry.scan(Registry::search_path({}, true));
    Model model = load_model(model_path);
    const fs::path out = fs::temp_directory_path() / ("nwc-throughput-" + std::to_string(getpid()));
    std::vector<unsigned> counts{1};
    if (max_threads > 1) counts.push_back(max_threads);
    std::cout << "| pipeline | bits/w (coded) |";
    for (unsigned t : counts) std::cout << " encode " << t << "T (Mw/s) |";
    for (unsigned t : counts) std::cout << " decode " << t << "T (Mw/s) |";
    std::cout << "\n|---|---:|" << std::string(2 * counts.size(), ' ');
    for (size_t i = 0; i < 2 * counts.size(); ++i) std::cout << "---:|";
    std::cout << "\n";
    for (const auto &p : pipelines) {
      Pipeline pipeline = load_pipeline(p, registry);
      std::vector<double> enc, dec;
      double coded_bits = 0, coded_weights = 0;
      for (unsigned t : counts) {
        double best = 0;
        for (int r = 0; r < repeat; ++r) {
          CompressSettings s;
          s.threads = t;
          auto t0 = std::chrono::steady_clock::now();
          CompressResult res = compress_model(model, pipeline, registry, out, s);
          const double secs = seconds_since(t0);
          coded_bits = coded_weights = 0;
          for (const auto &ct : res.tensors)
            if (ct.storage == "pipeline") {
              coded_bits += 8.0 * static_cast<double>(ct.stream_bytes);
              coded_weights += static_cast<double>(ct.numel);
            }
          best = std::max(best, coded_weights / secs);
        }
        enc.push_back(best);
      }
      ContainerReader reader(out);
      ContainerDecoder decoder(reader, registry);
      decode_all(reader, decoder, 1); // warm: plugin instances created, pages mapped
      for (unsigned t : counts) {
        double best = 0;
        for (int r = 0; r < repeat; ++r) {
          auto t0 = std::chrono::steady_clock::now();
          const double w = decode_all(reader, decoder, t);
          best = std::max(best, w / seconds_since(t0));
        }
        dec.push_back(best);
      }
      fs::remove(out);
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f", coded_weights > 0 ? coded_bits / coded_weights : 0.0);
      std::cout << "| " << pipeline.name << " | " << buf << " |";
      for (double v : enc) {
        std::snprintf(buf, sizeof buf, " %.3f |", v / 1e6);
        std::cout << buf;
      }
      for (double v : dec) {
        std::snprintf(buf, sizeof buf, " %.3f |", v / 1e6);
        std::cout << buf;
      }
      std::cout << std::endl;
    }
  } catch (const std::exception &e) {
    std::cerr << "nwc_codec_throughput: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
