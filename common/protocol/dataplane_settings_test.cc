#include "common/protocol/dataplane_settings.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace pgwarden::protocol {
namespace {

class DataplaneSettingsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw_dpsettings_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::remove(path().c_str());
    ::rmdir(dir_.c_str());
  }
  std::string path() const { return dir_ + "/pgwarden.json"; }
  Result<DataplaneSettings> load(const std::string& text) {
    std::ofstream(path(), std::ios::trunc) << text;
    return load_dataplane_settings(path());
  }
  std::string dir_;
};

// The control plane's sections are not the dataplane's business: their values (secrets among
// them) are neither read nor judged here, and none of them reaches DataplaneSettings.
constexpr const char* kFile = R"({
  "listeners": {"dataplane": {"address": "127.0.0.1", "port": 7001, "loopback_only": true,
                              "max_connections": 12, "worker_threads": 2,
                              "limits": {"max_pending_logins": 9}}},
  "control_plane": {"socket": "/run/pgwarden/cp.sock", "state_dir": "/var/lib/pgwarden",
                    "admin_principals": "not the dataplane's to judge"},
  "identity": {"service_keys": [{"name": "k", "secret_env": "SOME_SECRET"}]},
  "targets": [{"name": "t", "password": "hunter2"}],
  "recording": {"hold_timeout_ms": 1500, "sync": "always"},
  "limits": {"cp_unavailable_wait_ms": 800},
  "metrics": {"dataplane_listen": "127.0.0.1:9187", "controlplane_listen": "127.0.0.1:9188"},
  "policies": [{"name": "a", "rule_sets": ["deny", "approve"]},
               {"name": "b", "rule_sets": ["deny", "approve"]},
               {"name": "c"}]
})";

TEST_F(DataplaneSettingsTest, ReadsOnlyTheDataplanesParts) {
  auto s = load(kFile);
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s->listener.port, 7001);
  EXPECT_TRUE(s->listener.loopback_only);
  EXPECT_FALSE(s->listener.tls);
  EXPECT_EQ(s->listener.max_connections, 12);
  EXPECT_EQ(s->listener.worker_threads, 2);
  EXPECT_EQ(s->limits.max_pending_logins, 9);
  EXPECT_EQ(s->limits.cp_unavailable_wait_ms, 800);
  EXPECT_EQ(s->controlplane_socket, "/run/pgwarden/cp.sock");
  EXPECT_EQ(s->recording_hold_timeout_ms, 1500);
  EXPECT_EQ(s->metrics_listen, "127.0.0.1:9187");
  // Lists named by several policies are compiled once; a policy without one has the empty list.
  std::vector<std::vector<std::string>> lists = {{"deny", "approve"}, {}};
  EXPECT_EQ(s->rule_set_lists, lists);
}

TEST_F(DataplaneSettingsTest, DefaultsWhenTheFileNamesNone) {
  auto s = load(R"({"listeners": {"dataplane": {"loopback_only": true}},
                    "control_plane": {"socket": "/run/cp.sock"}, "policies": []})");
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  DataplaneSettings d;
  EXPECT_EQ(s->listener.port, d.listener.port);
  EXPECT_EQ(s->recording_hold_timeout_ms, kDefaultRecordingHoldTimeoutMs);
  EXPECT_EQ(s->limits.startup_timeout_ms, d.limits.startup_timeout_ms);
  EXPECT_TRUE(s->metrics_listen.empty());
}

TEST_F(DataplaneSettingsTest, EveryErrorOfTheDataplanesPartsIsNamedWithItsPath) {
  auto s = load(R"({"listeners": {"dataplane": {"port": 70000, "address": "10.0.0.1", "tls": 1,
                                                "color": "blue"}},
                    "control_plane": {"socket": "relative.sock"},
                    "recording": {"hold_timeout_ms": -1},
                    "limits": {"startup_timeout_ms": 1},
                    "metrics": {"dataplane_listen": "nowhere"},
                    "policies": [{"rule_sets": ["bad name!"]}]})");
  ASSERT_FALSE(s.is_ok());
  const std::string& m = s.status().message();
  for (const char* path :
       {"$.listeners.dataplane.port: must be between 1 and 65535",
        "$.listeners.dataplane.color: unknown key \"color\"", "$.listeners.dataplane.tls: ",
        "$.control_plane.socket: must be an absolute path",
        "$.recording.hold_timeout_ms: must be between 0 and 3600000",
        "$.limits.startup_timeout_ms: must be between 100 and 600000",
        "$.metrics.dataplane_listen: \"nowhere\"",
        "$.policies[0].rule_sets[0]: unknown rule set \"bad name!\""}) {
    EXPECT_NE(m.find(path), std::string::npos) << path << " not in:\n" << m;
  }
}

TEST_F(DataplaneSettingsTest, UnreadableOrMalformedFilesAreRefused) {
  EXPECT_FALSE(load_dataplane_settings(dir_ + "/missing.json").is_ok());
  auto s = load(R"({"listeners": {}, "listeners": {}})");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("duplicate key \"listeners\""), std::string::npos);
  s = load("{not json");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("invalid JSON"), std::string::npos);
  s = load("[]");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("$: must be an object"), std::string::npos);
  s = load(R"({"listeners": {"dataplane": {"loopback_only": true}}, "policies": []})");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("$.control_plane: is required"), std::string::npos);
}

}  // namespace
}  // namespace pgwarden::protocol
