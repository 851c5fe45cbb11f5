// The handlers of the command table (command_table.cpp), one file each under commands/. Those
// that need the model runtime are compiled only in builds with it (NWC_WITH_RUNTIME).
#pragma once

#include "../command.hpp"

#include <string>
#include <vector>

namespace nwc::cli {

using Args = std::vector<std::string>;

int cmd_compress(const Command &self, const Args &args);
int cmd_decompress(const Command &self, const Args &args);
int cmd_inspect(const Command &self, const Args &args);
int cmd_convert(const Command &self, const Args &args);
int cmd_synth(const Command &self, const Args &args);
int cmd_codec_info(const Command &self, const Args &args);
int cmd_codec_measure(const Command &self, const Args &args);
int cmd_plugins_list(const Command &self, const Args &args);
int cmd_plugins_show(const Command &self, const Args &args);
int cmd_plugins_check(const Command &self, const Args &args);
int cmd_plugin_check_child(const Command &self, const Args &args);
int cmd_tokenize(const Command &self, const Args &args); // tokenizers need no runtime

// The model runtime's commands.
int cmd_eval(const Command &self, const Args &args);
int cmd_generate(const Command &self, const Args &args);
int cmd_calibrate(const Command &self, const Args &args);
int cmd_bench(const Command &self, const Args &args);
int cmd_train_codec(const Command &self, const Args &args);

} // namespace nwc::cli
