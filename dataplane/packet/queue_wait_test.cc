// QueueWaiter on real descriptors: DPDK's af_packet on the loopback interface and a TAP, in a
// network namespace of the test's own (needs root; skipped otherwise), and a ring port, which
// has none.
#include "dataplane/packet/queue_wait.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>

#include "dataplane/packet/eal_for_tests.h"

namespace pgwarden::packet {
namespace {

constexpr char kTap[] = "pgwqt0";

bool set_up(const char* ifname, const char* address = nullptr) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0) return false;
  ifreq ifr = {};
  std::strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  bool ok = ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags |= IFF_UP;
  ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
  if (ok && address != nullptr) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, address, &sin->sin_addr);
    ok = ioctl(s, SIOCSIFADDR, &ifr) == 0;
    inet_pton(AF_INET, "255.255.255.0", &sin->sin_addr);
    ok = ok && ioctl(s, SIOCSIFNETMASK, &ifr) == 0;
  }
  close(s);
  return ok;
}

class QueueWaitTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) return;  // tests skip
    // A fresh namespace: only the test's own frames on lo and on the TAP.
    if (!set_up("lo")) return;
    const Status& eal = init_eal_for_tests("--vdev=net_af_packet0,iface=lo --vdev=net_tap0,iface=" +
                                           std::string(kTap));
    ASSERT_TRUE(eal.is_ok()) << eal.to_string();
    pool_ = rte_pktmbuf_pool_create("qw_frames", 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool_, nullptr);
    ASSERT_EQ(rte_eth_dev_get_port_by_name("net_af_packet0", &af_packet_), 0);
    ASSERT_EQ(rte_eth_dev_get_port_by_name("net_tap0", &tap_), 0);
    start(af_packet_, false);
    std::ofstream(std::string("/proc/sys/net/ipv6/conf/") + kTap + "/disable_ipv6") << "1";
    start(tap_, true);
    ASSERT_TRUE(set_up(kTap, "198.18.99.1"));
    ready_ = true;
  }

  static void start(uint16_t port, bool rx_interrupts) {
    rte_eth_conf conf = {};
    conf.intr_conf.rxq = rx_interrupts ? 1 : 0;
    ASSERT_EQ(rte_eth_dev_configure(port, 1, 1, &conf), 0);
    ASSERT_EQ(rte_eth_rx_queue_setup(port, 0, 128, 0, nullptr, pool_), 0);
    ASSERT_EQ(rte_eth_tx_queue_setup(port, 0, 128, 0, nullptr), 0);
    ASSERT_EQ(rte_eth_dev_start(port), 0);
  }

  void SetUp() override {
    if (!ready_) GTEST_SKIP() << "needs root and a network namespace of its own";
    drain(af_packet_);
    drain(tap_);
  }

  static unsigned drain(uint16_t port) {
    unsigned total = 0;
    rte_mbuf* pkts[32];
    for (uint16_t n; (n = rte_eth_rx_burst(port, 0, pkts, 32)) > 0; total += n) {
      rte_pktmbuf_free_bulk(pkts, n);
    }
    return total;
  }

  // One Ethernet frame onto lo from a packet socket of the test's own.
  static void send_on_lo() {
    int s = socket(AF_PACKET, SOCK_RAW, 0);
    ASSERT_GE(s, 0);
    sockaddr_ll to = {};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = static_cast<int>(if_nametoindex("lo"));
    to.sll_halen = 6;
    uint8_t frame[60] = {0x02, 0, 0, 0, 0, 1,    0x02,
                         0,    0, 0, 0, 2, 0x88, 0xb5};  // local experimental
    ASSERT_EQ(sendto(s, frame, sizeof(frame), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
              static_cast<ssize_t>(sizeof(frame)));
    close(s);
  }

  static inline rte_mempool* pool_ = nullptr;
  static inline uint16_t af_packet_ = 0, tap_ = 0;
  static inline bool ready_ = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST_F(QueueWaitTest, AfPacketQueueDescriptorIsTheSocketOnItsInterface) {
  int fd = rx_queue_fd(af_packet_, 0);
  ASSERT_GE(fd, 0);
  sockaddr_ll sll = {};
  socklen_t len = sizeof(sll);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&sll), &len), 0);
  EXPECT_EQ(sll.sll_ifindex, static_cast<int>(if_nametoindex("lo")));
  EXPECT_EQ(rx_queue_fd(af_packet_, 1), -1) << "a queue the port does not have";
}

TEST_F(QueueWaitTest, IdleAfPacketQueueTimesOutAndAFrameWakesTheWaiterAtOnce) {
  QueueWaiter w;
  ASSERT_TRUE(w.add(af_packet_, 0));
  ASSERT_TRUE(w.usable());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(w.wait(20000)) << "nothing was sent";
  EXPECT_GE(seconds_since(t0), 0.015);

  send_on_lo();
  t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(w.wait(5000000));
  EXPECT_LT(seconds_since(t0), 1.0) << "the frame must end the wait, not the timeout";
  EXPECT_GE(drain(af_packet_), 1u);
  EXPECT_FALSE(w.wait(1000)) << "drained: readable again only with a new frame";
}

TEST_F(QueueWaitTest, TapQueueWithRxInterruptsWakesTheWaiterWhenTheHostSends) {
  QueueWaiter w;
  ASSERT_TRUE(w.add(tap_, 0)) << "net_tap configured with intr_conf.rxq has a queue descriptor";
  ASSERT_TRUE(w.add(af_packet_, 0));
  EXPECT_FALSE(w.wait(1000));
  // The host stack resolves a neighbour on the TAP's subnet: an ARP request to DPDK.
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_in to = {};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  inet_pton(AF_INET, "198.18.99.2", &to.sin_addr);
  ASSERT_EQ(sendto(s, "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 1);
  close(s);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(w.wait(5000000));
  EXPECT_LT(seconds_since(t0), 1.0);
  EXPECT_TRUE(w.ready(0)) << "the TAP woke it";
  EXPECT_FALSE(w.ready(1)) << "nothing on lo";
  EXPECT_GE(drain(tap_), 1u);
}

TEST_F(QueueWaitTest, RingPortHasNoDescriptorSoTheWaiterIsNotUsable) {
  rte_ring* r = rte_ring_create("qw_ring", 64, 0, 0);
  ASSERT_NE(r, nullptr);
  int port = rte_eth_from_rings("qw_ring_port", &r, 1, &r, 1, 0);
  ASSERT_GE(port, 0);
  start(static_cast<uint16_t>(port), false);
  QueueWaiter w;
  ASSERT_TRUE(w.add(af_packet_, 0));
  EXPECT_FALSE(w.add(static_cast<uint16_t>(port), 0));
  EXPECT_FALSE(w.usable()) << "a frame on the ring would not wake it";
  EXPECT_EQ(rx_queue_fd(tap_, 5), -1);
  rte_eth_dev_stop(static_cast<uint16_t>(port));
  rte_eth_dev_close(static_cast<uint16_t>(port));
  rte_ring_free(r);
}

}  // namespace
}  // namespace pgwarden::packet
