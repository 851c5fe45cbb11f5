// Plugins built only for the host tests. NWC_TEST_PLUGIN selects which one this library carries:
//   1: org.nwc-test.create-fails   a quantizer whose constructor always throws
//   2: org.nwc-test.throws         a quantizer that throws std::runtime_error inside quantize()
//   3: org.nwc-test.dup            a quantizer used to test duplicate ids (version from
//   NWC_TEST_DUP)
//   4: org.nwc-test.slow           a quantizer that sleeps `delay_ms` in every quantize(), so that
//                                  a run can be interrupted part-way
//   5: org.nwc-test.crash          a quantizer that dies of SIGSEGV inside quantize()
#include "nwc/cpp/plugin.hpp"

#include <chrono>
#include <csignal>
#include <stdexcept>
#include <thread>

namespace {

class TestQuantizer : public nwc::Quantizer {
public:
  static constexpr const char *version = NWC_TEST_VERSION;
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "test";
  static constexpr const char *description = "test plugin";
  static constexpr uint32_t flags = 0;
  NWC_OPTIONS(nwc::int_option("level", 1, 0, 9, "a test option"));
  void quantize(const nwc::BlockInfo &, nwc::ConstTensor<float> x, nwc::Tensor<int32_t> s,
                nwc::Tensor<float> d, nwc::Sink &) override {
    for (int64_t i = 0; i < x.size(); ++i) {
      s.data[i] = static_cast<int32_t>(x.data[i]);
      d.data[i] = static_cast<float>(s.data[i]);
    }
  }
  void dequantize(const nwc::BlockInfo &, nwc::ConstTensor<int32_t> s, nwc::Bytes,
                  nwc::Tensor<float> x) override {
    for (int64_t i = 0; i < s.size(); ++i) x.data[i] = static_cast<float>(s.data[i]);
  }
};

#if NWC_TEST_PLUGIN == 1
class CreateFails final : public TestQuantizer {
public:
  static constexpr const char *id = "org.nwc-test.create-fails";
  explicit CreateFails(const nwc::Options &) {
    nwc::fail(NWC_E_DEVICE, "this test plugin never starts");
  }
};
NWC_MODULE(CreateFails)
#elif NWC_TEST_PLUGIN == 2
class Throws final : public TestQuantizer {
public:
  static constexpr const char *id = "org.nwc-test.throws";
  explicit Throws(const nwc::Options &) {}
  void quantize(const nwc::BlockInfo &, nwc::ConstTensor<float>, nwc::Tensor<int32_t>,
                nwc::Tensor<float>, nwc::Sink &) override {
    throw std::runtime_error("deliberate failure inside quantize");
  }
};
NWC_MODULE(Throws)
#elif NWC_TEST_PLUGIN == 4
class Slow final : public nwc::Quantizer {
public:
  static constexpr const char *id = "org.nwc-test.slow";
  static constexpr const char *version = NWC_TEST_VERSION;
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "slow";
  static constexpr const char *description = "rounds latents to integers, slowly";
  static constexpr uint32_t flags = 0;
  NWC_OPTIONS(nwc::int_option("delay_ms", 20, 0, 10000, "sleep per quantize() call"));
  explicit Slow(const nwc::Options &o) : delay_(o.get_int("delay_ms")) {}
  void quantize(const nwc::BlockInfo &, nwc::ConstTensor<float> x, nwc::Tensor<int32_t> s,
                nwc::Tensor<float> d, nwc::Sink &) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_));
    for (int64_t i = 0; i < x.size(); ++i) {
      s.data[i] = static_cast<int32_t>(x.data[i] * 16.0f);
      d.data[i] = static_cast<float>(s.data[i]) / 16.0f;
    }
  }
  void dequantize(const nwc::BlockInfo &, nwc::ConstTensor<int32_t> s, nwc::Bytes,
                  nwc::Tensor<float> x) override {
    for (int64_t i = 0; i < s.size(); ++i) x.data[i] = static_cast<float>(s.data[i]) / 16.0f;
  }

private:
  int64_t delay_;
};
NWC_MODULE(Slow)
#elif NWC_TEST_PLUGIN == 5
class Crash final : public TestQuantizer {
public:
  static constexpr const char *id = "org.nwc-test.crash";
  explicit Crash(const nwc::Options &) {}
  void quantize(const nwc::BlockInfo &, nwc::ConstTensor<float>, nwc::Tensor<int32_t>,
                nwc::Tensor<float>, nwc::Sink &) override {
    // The default action, so that a sanitizer's handler does not turn the crash into an exit.
    std::signal(SIGSEGV, SIG_DFL);
    std::raise(SIGSEGV);
  }
};
NWC_MODULE(Crash)
#else
class Dup final : public TestQuantizer {
public:
  static constexpr const char *id = "org.nwc-test.dup";
  explicit Dup(const nwc::Options &) {}
};
NWC_MODULE(Dup)
#endif

} // namespace
