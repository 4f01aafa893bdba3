// `pgwardenctl rules ...`: offline rule-set tools; they need no running gateway.
//
//   rules check FILE...                     validate + compile; exit 0 ok, 1 errors
//   rules test --set FILE... SQL            print matching rules and the verdict;
//                                           exit 0 allow, 3 deny, 4 approve, 1 bad set
//   rules detect --set FILE... VALUE        print PII detector matches; exit 0
//
// SQL or VALUE `-` reads standard input. Usage errors exit 2.
#pragma once

#include <ostream>
#include <span>
#include <string_view>

namespace pgwarden::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitDeny = 3;
inline constexpr int kExitApprove = 4;

// `args` are the words after `rules`. Writes results to `out`, diagnostics to `err`.
int run_rules_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                      std::ostream& err);

}  // namespace pgwarden::ctl
