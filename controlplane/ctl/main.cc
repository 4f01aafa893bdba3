// pgwardenctl: the operators' CLI. Each subcommand group lives in its own file
// (<group>_command.{h,cc}) and registers one line in kGroups below.
#include <algorithm>
#include <iostream>
#include <span>
#include <sstream>
#include <string_view>
#include <vector>

#include "controlplane/ctl/admin_commands.h"
#include "controlplane/ctl/login_command.h"
#include "controlplane/ctl/rules_command.h"

namespace {

struct CommandGroup {
  std::string_view name;
  std::string_view summary;
  int (*run)(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
             std::ostream& err);
};

constexpr CommandGroup kGroups[] = {
    {"status", "control plane status: versions, uptime, connections, approvals, counters",
     pgwarden::ctl::run_status_command},
    {"dataplane", "dataplanes' latest stats: ports, link state, lcore counters, rule generation",
     pgwarden::ctl::run_dataplane_command},
    {"sessions", "sessions: list, show, replay, verify; kill live ones",
     pgwarden::ctl::run_sessions_command},
    {"identities", "revoked identities and keys: list, revoke, unrevoke",
     pgwarden::ctl::run_identities_command},
    {"budgets", "per-identity budgets: list usage, show one identity, reset",
     pgwarden::ctl::run_budgets_command},
    {"approvals", "statements waiting for a human: list, show, approve, deny",
     pgwarden::ctl::run_approvals_command},
    {"rules", "rule sets: list, show, add, remove, reload; offline check, test, detect",
     pgwarden::ctl::run_rules_group},
    {"policies", "configured policies: list, show", pgwarden::ctl::run_policies_command},
    {"config", "reload the configuration file", pgwarden::ctl::run_config_command},
    {"tokens", "inspect a token: decode, validate, explain why it fails",
     pgwarden::ctl::run_tokens_command},
    {"login", "log in to an HTTPS admin API (--server URL): device code or a pasted token",
     pgwarden::ctl::run_login_command},
};

int usage(std::ostream& os) {
  os << "usage: pgwardenctl [--server URL [--cacert FILE] [--token-file FILE]] GROUP COMMAND"
        " [ARGS...] [--json] [--socket PATH] [--principal NAME] [--credential-file PATH]\n\n"
        "groups:\n";
  for (const CommandGroup& g : kGroups) os << "  " << g.name << "\t" << g.summary << "\n";
  return pgwarden::ctl::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  // Connection options may come before the group (`pgwardenctl --server URL approvals list`):
  // they are moved behind it, where every group parses its options.
  std::vector<std::string_view> global;
  while (args.size() >= 2 && (args[0] == "--server" || args[0] == "--cacert" ||
                              args[0] == "--token-file" || args[0] == "--socket")) {
    global.insert(global.end(), args.begin(), args.begin() + 2);
    args.erase(args.begin(), args.begin() + 2);
  }
  args.insert(args.end(), global.begin(), global.end());
  if (args.empty() || args[0] == "-h" || args[0] == "--help") return usage(std::cerr);
  for (const CommandGroup& g : kGroups) {
    if (g.name == args[0]) {
      if (std::any_of(args.begin() + 1, args.end(),
                      [](std::string_view a) { return a == "--help" || a == "-h"; })) {
        // Help for one group: its own usage (what it prints without a command), on stdout.
        if (g.name == "status" || g.name == "dataplane") {
          std::cout << "usage: pgwardenctl " << g.name << " [--json]\n  " << g.summary << "\n";
          return 0;
        }
        std::istringstream no_input;
        (void)g.run({}, no_input, std::cout, std::cout);
        return 0;
      }
      return g.run(std::span<const std::string_view>(args).subspan(1), std::cin, std::cout,
                   std::cerr);
    }
  }
  std::cerr << "pgwardenctl: unknown group '" << args[0] << "'\n";
  return usage(std::cerr);
}
