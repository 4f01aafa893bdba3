#include "dataplane/session/dp_config.h"

#include <gtest/gtest.h>
#include <sched.h>

namespace pgwarden::session {
namespace {

TEST(DataplaneConfigTest, TakesListenerLimitsSocketAndRuleSetListsFromTheSettings) {
  protocol::DataplaneSettings s;
  s.listener.address = "127.0.0.1";
  s.listener.port = 7000;
  s.listener.tls = true;
  s.listener.tls_cert_file = "/etc/dp.crt";
  s.listener.tls_key_file = "/etc/dp.key";
  s.listener.auth_timeout_s = 3;
  s.listener.idle_timeout_s = 60;
  s.listener.max_connections = 10;
  s.listener.worker_threads = 3;
  s.controlplane_socket = "/run/cp.sock";
  s.recording_hold_timeout_ms = 250;
  s.limits.cp_unavailable_wait_ms = 70;
  s.rule_set_lists = {{"deny", "approve"}, {}};
  DataplaneConfig d = dataplane_config_from(s);
  ASSERT_EQ(d.listeners.size(), 1u);
  EXPECT_EQ(d.listeners[0].port, 7000);
  EXPECT_EQ(d.listeners[0].tls_cert_file, "/etc/dp.crt");
  EXPECT_EQ(d.workers, 3);
  EXPECT_EQ(d.controlplane_socket, "/run/cp.sock");
  EXPECT_EQ(d.limits.auth_timeout_ms, 3000);
  EXPECT_EQ(d.limits.idle_timeout_ms, 60000);
  EXPECT_EQ(d.limits.max_connections, 10);
  EXPECT_EQ(d.limits.recording_hold_timeout_ms, 250);
  EXPECT_EQ(d.limits.cp_unavailable_wait_ms, 70);
  EXPECT_EQ(d.rule_set_lists, s.rule_set_lists);
}

TEST(DataplaneConfigTest, NoTlsWhenTheListenerHasNone) {
  protocol::DataplaneSettings s;
  s.listener.tls = false;
  s.listener.tls_cert_file = "ignored";
  DataplaneConfig d = dataplane_config_from(s);
  EXPECT_TRUE(d.listeners[0].tls_cert_file.empty());
}

TEST(DataplaneConfigTest, WorkersDefaultToHalfTheCpusThisProcessMayUse) {
  protocol::DataplaneSettings s;  // no worker_threads in the file
  EXPECT_EQ(dataplane_config_from(s).workers, 0);
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  EXPECT_EQ(usable_cpus(), CPU_COUNT(&saved));
  EXPECT_EQ(default_worker_threads(), std::max(1, CPU_COUNT(&saved) / 2));
  // Pinned to one CPU (taskset, a cgroup cpuset): one worker, never zero.
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &saved)) {
      CPU_SET(i, &one);
      break;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  EXPECT_EQ(usable_cpus(), 1);
  EXPECT_EQ(default_worker_threads(), 1);
  ASSERT_EQ(sched_setaffinity(0, sizeof(saved), &saved), 0);
}

TEST(DataplaneConfigTest, InvalidFileIsRejected) {
  EXPECT_FALSE(load_dataplane_config("/nonexistent/pgwarden.json").is_ok());
}

}  // namespace
}  // namespace pgwarden::session
