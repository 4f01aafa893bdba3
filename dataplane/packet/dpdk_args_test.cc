#include "dataplane/packet/dpdk_args.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace pgwarden::packet {
namespace {

std::vector<std::string> base() {
  return {"--dpdk", "-l 0 --no-huge", "--agent-port", "net_a", "--db-port", "net_b"};
}

std::string temp_file(const std::string& content) {
  char path[] = "/tmp/pgw_dpdk_args_XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << content;
  return path;
}

TEST(DpdkArgsTest, MinimalFlagsUseTheDefaultRuleSets) {
  auto o = parse_dpdk_args(base());
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ(o->config.eal_args, "-l 0 --no-huge");
  EXPECT_EQ(o->config.agent_port, "net_a");
  EXPECT_EQ(o->config.database_port, "net_b");
  ASSERT_EQ(o->config.rule_files.size(), 2u);
  EXPECT_EQ(o->config.rule_files[0], "rules/sets/deny.rules");
  EXPECT_EQ(o->config.rule_files[1], "rules/sets/approve.rules");
  // Idle workers rest by default (a polling lcore on a shared host is slow and burns a core).
  EXPECT_EQ(o->config.idle_sleep_us, 100u);
}

TEST(DpdkArgsTest, NameAndStatsIntervalAreAppliedAndBounded) {
  auto a = base();
  for (const char* s : {"--name", "gw-east-1", "--stats-interval-ms", "250"}) a.push_back(s);
  auto o = parse_dpdk_args(a);
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ(o->dp_name, "gw-east-1");
  EXPECT_EQ(o->config.control_interval_ms, 250u);
  auto too_fast = base();
  for (const char* s : {"--stats-interval-ms", "10"}) too_fast.push_back(s);
  EXPECT_FALSE(parse_dpdk_args(too_fast).is_ok());
  auto empty_name = base();
  for (const char* s : {"--name", ""}) empty_name.push_back(s);
  EXPECT_FALSE(parse_dpdk_args(empty_name).is_ok());
}

TEST(DpdkArgsTest, MetricsListenIsANumericAddressAndPort) {
  auto a = base();
  for (const char* s : {"--metrics-listen", "127.0.0.1:9633"}) a.push_back(s);
  auto o = parse_dpdk_args(a);
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ(o->metrics_listen, "127.0.0.1:9633");
  auto bad = base();
  for (const char* s : {"--metrics-listen", "localhost:9633"}) bad.push_back(s);
  auto r = parse_dpdk_args(bad);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--metrics-listen"), std::string::npos);
}

TEST(DpdkArgsTest, EveryValueFlagIsApplied) {
  auto a = base();
  for (const char* s : {"--rule-file",
                        "/r1",
                        "--rule-file",
                        "/r2",
                        "--allow-direct-source",
                        "10.0.0.0/8",
                        "--gateway-address",
                        "192.0.2.1",
                        "--max-statement-bytes",
                        "4096",
                        "--flow-capacity",
                        "128",
                        "--burst",
                        "16",
                        "--cp-socket",
                        "/run/cp.sock",
                        "--audit-log",
                        "/tmp/a.jsonl",
                        "--idle-sleep-us",
                        "250",
                        "--idle-spin-us",
                        "20"}) {
    a.push_back(s);
  }
  auto o = parse_dpdk_args(a);
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ(o->config.rule_files, (std::vector<std::string>{"/r1", "/r2"}));
  EXPECT_EQ(o->config.allowed_direct_sources.size(), 1u);
  EXPECT_EQ(o->config.gateway_addresses.size(), 1u);
  EXPECT_EQ(o->config.prescreen.max_statement_bytes, 4096u);
  EXPECT_EQ(o->config.flow_capacity, 128u);
  EXPECT_EQ(o->config.burst, 16);
  EXPECT_EQ(o->config.idle_sleep_us, 250u);
  EXPECT_EQ(o->config.idle_spin_us, 20u);
  EXPECT_EQ(parse_dpdk_args(base())->config.idle_spin_us, PacketLayerConfig::kIdleSpinAuto);
  EXPECT_EQ(o->cp_socket, "/run/cp.sock");
  EXPECT_EQ(o->audit_log, "/tmp/a.jsonl");
}

TEST(DpdkArgsTest, BadValuesAreErrorsNamingTheFlag) {
  auto a = base();
  a.insert(a.end(), {"--burst", "65"});
  auto o = parse_dpdk_args(a);
  ASSERT_FALSE(o.is_ok());
  EXPECT_NE(o.status().message().find("--burst"), std::string::npos);

  a = base();
  a.insert(a.end(), {"--allow-direct-source", "10.0.0.0/99"});
  EXPECT_FALSE(parse_dpdk_args(a).is_ok());
  a = base();
  a.push_back("--flow-capacity");
  EXPECT_FALSE(parse_dpdk_args(a).is_ok());
  a = base();
  a.insert(a.end(), {"--deny-keyword", "drop"});
  EXPECT_FALSE(parse_dpdk_args(a).is_ok());
}

TEST(DpdkArgsTest, PortsAndEalArgsAreRequired) {
  EXPECT_FALSE(parse_dpdk_args(std::vector<std::string>{"--dpdk", "-l 0"}).is_ok());
  EXPECT_FALSE(
      parse_dpdk_args(std::vector<std::string>{"--agent-port", "a", "--db-port", "b"}).is_ok());
}

TEST(DpdkArgsTest, ConfigFileIsAppliedAndCommandLineOverridesIt) {
  std::string path = temp_file(
      R"({"dpdk": "-l 0", "agent-port": "file_a", "db-port": "file_b",
          "rule-file": ["/file1", "/file2"], "flow-capacity": 64,
          "allow-direct-source": ["10.0.0.1", "10.0.0.2"]})");
  std::vector<std::string> a = {"--dpdk-config", path,          "--agent-port",
                                "cli_a",         "--rule-file", "/cli"};
  auto o = parse_dpdk_args(a);
  std::remove(path.c_str());
  ASSERT_TRUE(o.is_ok()) << o.status().to_string();
  EXPECT_EQ(o->config.eal_args, "-l 0");
  EXPECT_EQ(o->config.agent_port, "cli_a");
  EXPECT_EQ(o->config.database_port, "file_b");
  EXPECT_EQ(o->config.rule_files, std::vector<std::string>{"/cli"});
  EXPECT_EQ(o->config.flow_capacity, 64u);
  EXPECT_EQ(o->config.allowed_direct_sources.size(), 2u);
  EXPECT_TRUE(wants_dpdk_mode(a));
}

TEST(DpdkArgsTest, BadConfigFilesAreErrors) {
  EXPECT_FALSE(
      parse_dpdk_args(std::vector<std::string>{"--dpdk-config", "/nonexistent.json"}).is_ok());
  for (const char* bad : {"[1,2]", "{\"flow-capacity\": -1}", "{\"burst\": {\"x\": 1}}", "{"}) {
    std::string path = temp_file(bad);
    auto a = base();
    a.insert(a.end(), {"--dpdk-config", path});
    EXPECT_FALSE(parse_dpdk_args(a).is_ok()) << bad;
    std::remove(path.c_str());
  }
}

TEST(DpdkArgsTest, SessionModeFlagsDoNotAskForDpdk) {
  EXPECT_FALSE(wants_dpdk_mode(std::vector<std::string>{"--config", "dp.json"}));
}

}  // namespace
}  // namespace pgwarden::packet
