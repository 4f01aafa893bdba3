// pgwardenctl groups that talk to a running pgwarden-cp over its admin socket (docs/cli.md):
//
//   status
//   dataplane                  (latest stats snapshot of every dataplane)
//   sessions list | show ID | replay ID [--speed X] | verify ID      [--state-dir DIR]
//            | kill ID | --identity SUBJECT | --key KEY-ID [--reason TEXT]
//   identities list [--all] | revoke NAME [--identity|--key] [--until TIME] [--reason TEXT]
//              | unrevoke NAME [--identity|--key]
//   budgets list | show IDENTITY | reset IDENTITY [--budget NAME]
//   approvals list [--state S] | show ID | approve ID [--scope once|shape --for 1h]
//             [--reason R] | deny ID --reason R
//   rules list | show SET | add SET [--file F|-] | remove SET RULE | reload
//             (check | test | detect stay offline: rules_command.h)
//   policies list | show NAME
//   config reload
//   tokens inspect TOKEN|- [--offline]
//
// Exit codes: admin_client.h (0 ok, 1 failure, 2 usage, 3 denied, 4 not found,
// 5 cp unreachable).
#pragma once

#include <istream>
#include <ostream>
#include <span>
#include <string_view>

namespace pgwarden::ctl {

using GroupFn = int (*)(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                        std::ostream& err);

int run_status_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                       std::ostream& err);
int run_dataplane_command(std::span<const std::string_view> args, std::istream& in,
                          std::ostream& out, std::ostream& err);
int run_sessions_command(std::span<const std::string_view> args, std::istream& in,
                         std::ostream& out, std::ostream& err);
int run_identities_command(std::span<const std::string_view> args, std::istream& in,
                           std::ostream& out, std::ostream& err);
int run_budgets_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                        std::ostream& err);
int run_approvals_command(std::span<const std::string_view> args, std::istream& in,
                          std::ostream& out, std::ostream& err);
// rules list|show|add|remove|reload here; everything else goes to run_rules_command.
int run_rules_group(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                    std::ostream& err);
int run_policies_command(std::span<const std::string_view> args, std::istream& in,
                         std::ostream& out, std::ostream& err);
int run_config_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                       std::ostream& err);
int run_tokens_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                       std::ostream& err);

}  // namespace pgwarden::ctl
