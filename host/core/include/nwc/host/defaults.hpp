// nwc/host/defaults.hpp — the plugins the host uses when nothing names one. These are the only
// plugin ids host code names: everything else is chosen by a pipeline file, a flag or a setting,
// and host code asks plugins what they can do (kind, options, interfaces), not who they are.
// A default that is not installed is simply not used (or reported when it is needed).
#pragma once

namespace nwc::host {

// The compensator of a pipeline without a [compensator] table (when installed): no error feedback,
// column blocks left to right with the plugin's defaults.
inline constexpr const char *kDefaultCompensator = "nwc.comp.none";

// The entropy coder that measures real bytes where no pipeline is involved: the held-out samples
// of `nwc train-codec` and the streams of `nwc codec measure`, coded with the codec's CDF tables
// (TrainCodecSettings::measure_entropy, CodecMeasureSettings::measure_entropy).
inline constexpr const char *kDefaultMeasureEntropy = "nwc.entropy.rans";

} // namespace nwc::host
