// nwc — the command-line front end. The commands live in commands/, one file each, and the command
// table (command_table.cpp) drives dispatch and help; this file handles what comes before a
// command runs (signals, --help, --version, mpirun) and turns exceptions into one-line errors.
//
// Exit codes: 0 success, 1 runtime failure, 2 usage error. Every error is one line on stderr.
#include "command.hpp"
#include "common.hpp"

#include "nwc/abi.h"
#include "nwc/formats/container.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/host/distributed.hpp"
#include "nwc/tools/convert.hpp"
#include "nwc/tools/synth.hpp"

#include <csignal>
#include <iostream>
#include <unistd.h>

using namespace nwc;
using namespace nwc::cli;

namespace {

// Async-signal-safe only: unlink/rmdir of paths registered beforehand, write, _exit.
void on_signal(int sig) {
  remove_pending_temporaries();
  tools::remove_pending_hf_directory();
  tools::remove_pending_synth_directory();
  const char msg[] = "nwc: interrupted; no output written\n";
  ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
  (void)ignored;
  _exit(128 + sig);
}

// `nwc`, `nwc --help`, `nwc help [COMMAND [SUBCOMMAND]]`.
int help(const std::vector<std::string> &args) {
  const Command *c = args.size() > 1 ? find_command(commands(), args[1]) : nullptr;
  if (c && c->is_group()) {
    const Command *sub = args.size() > 2 ? find_command(c->subcommands, args[2]) : nullptr;
    if (!sub) {
      print_group_help(*c, std::cout);
      return 0;
    }
    c = sub;
  }
  if (c && !c->hidden) return run_command(*c, {"--help"});
  print_help(std::cout);
  return args.empty() ? 2 : 0;
}

} // namespace

int main(int argc, char **argv) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help")
    return help(args);
  if (args[0] == "--version") {
    std::cout << "nwc " << kVersion << " (plugin ABI " << NWC_ABI_VERSION_MAJOR << "."
              << NWC_ABI_VERSION_MINOR << ", container v" << kContainerVersion << ")\n";
    return 0;
  }
  std::string name = args[0];
  args.erase(args.begin());
  const Command *command = find_command(commands(), name);
  host::Job *job = nullptr;
  int rc = 1;
  std::string where = "nwc";
  try {
    job = host::current_job();
    if (job) {
      where =
          "nwc (rank " + std::to_string(job->rank()) + " of " + std::to_string(job->size()) + ")";
      // Anything else would run N copies writing the same files.
      if (!command || !command->mpi)
        throw UsageError("nwc " + name + " runs in one process; under mpirun, " + mpi_clause());
    }
    if (!command) throw UsageError("unknown command '" + name + "' (try nwc --help)");
    rc = run_command(*command, args);
    host::finish_job();
    return rc;
  } catch (const UsageError &e) {
    std::cerr << where + ": usage error: " + e.what() + "\n"; // one write: ranks interleave
    rc = 2;
  } catch (const std::exception &e) { // nwc::Error and anything else
    std::cerr << where + ": error: " + e.what() + "\n";
  }
  if (job) job->abort(rc); // the other ranks would wait for this one forever
  return rc;
}
