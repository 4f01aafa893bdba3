#include "dataplane/packet/queue_wait.h"

#include <linux/if_packet.h>
#include <rte_ethdev.h>
#include <sys/socket.h>

#include <ctime>

namespace pgwarden::packet {

bool wants_rx_interrupts(std::string_view driver_name) { return driver_name == "net_tap"; }

namespace {

// net_af_packet's RX queue (struct pkt_rx_queue) begins with its socket's descriptor. That is
// the PMD's private layout, so the descriptor is trusted only if it is an AF_PACKET socket
// bound to the port's interface: anything else (another DPDK version's layout) is refused and
// the worker sleeps instead.
int af_packet_fd(uint16_t port_id, uint16_t queue, const rte_eth_dev_info& info) {
  void** queues = rte_eth_fp_ops[port_id].rxq.data;
  if (queues == nullptr || queue >= info.nb_rx_queues || queues[queue] == nullptr) return -1;
  int fd = *static_cast<const int*>(queues[queue]);
  int domain = 0;
  socklen_t len = sizeof(domain);
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_PACKET) {
    return -1;
  }
  sockaddr_ll sll = {};
  socklen_t sll_len = sizeof(sll);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sll), &sll_len) != 0 ||
      sll.sll_family != AF_PACKET || sll.sll_ifindex != static_cast<int>(info.if_index)) {
    return -1;
  }
  return fd;
}

}  // namespace

int rx_queue_fd(uint16_t port_id, uint16_t queue) {
  rte_eth_dev_info info = {};
  if (rte_eth_dev_info_get(port_id, &info) != 0 || info.driver_name == nullptr) return -1;
  std::string_view driver = info.driver_name;
  if (driver == "net_af_packet") return af_packet_fd(port_id, queue, info);
  if (wants_rx_interrupts(driver)) {
    int fd = rte_eth_dev_rx_intr_ctl_q_get_fd(port_id, queue);
    return fd >= 0 ? fd : -1;
  }
  return -1;
}

bool QueueWaiter::add(uint16_t port_id, uint16_t queue) {
  int fd = rx_queue_fd(port_id, queue);
  if (fd < 0) {
    usable_ = false;
    return false;
  }
  fds_.push_back({fd, POLLIN, 0});
  return true;
}

bool QueueWaiter::wait(uint32_t timeout_us) {
  timespec timeout = {static_cast<time_t>(timeout_us / 1000000),
                      static_cast<long>(timeout_us % 1000000) * 1000};
  int n = ppoll(fds_.data(), fds_.size(), &timeout, nullptr);
  return n > 0;
}

}  // namespace pgwarden::packet
