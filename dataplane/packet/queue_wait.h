// QueueWaiter: lets an idle worker block until a frame arrives on one of its RX queues
// ("interrupt mode") instead of polling or sleeping for a fixed time, on ports whose queues
// are file descriptors: af_packet sockets (readable when the socket's RX ring holds a frame
// for user space) and TAP queues (readable when the host stack sent a frame).
//
// rx_queue_fd() finds a queue's descriptor after rte_eth_dev_start(): for net_tap through
// DPDK's Rx interrupt API (the port must be configured with intr_conf.rxq = 1, see
// wants_rx_interrupts()); for net_af_packet from the PMD's queue, whose first member is its
// socket (not an API: the descriptor is used only if it is verified to be an AF_PACKET socket
// bound to the port's interface). Every other driver: no descriptor, the worker sleeps.
//
// Thread-safety: a QueueWaiter belongs to one worker; rx_queue_fd() is safe after the port
// started.
#pragma once

#include <poll.h>

#include <cstdint>
#include <string_view>
#include <vector>

namespace pgwarden::packet {

// True for drivers whose RX queues get a descriptor only when the port is configured with
// Rx interrupts (rte_eth_conf::intr_conf.rxq = 1): net_tap.
bool wants_rx_interrupts(std::string_view driver_name);

// The descriptor that polls readable when RX queue `queue` of `port_id` holds a frame, or -1.
int rx_queue_fd(uint16_t port_id, uint16_t queue);

class QueueWaiter {
 public:
  // Adds a queue to wait on; false if it has no descriptor (the waiter is then not usable:
  // a frame on that queue would not wake it).
  bool add(uint16_t port_id, uint16_t queue);
  bool usable() const { return usable_ && !fds_.empty(); }
  size_t size() const { return fds_.size(); }
  // Blocks until one of the queues is readable or `timeout_us` passed; true if one is.
  bool wait(uint32_t timeout_us);
  // After wait(): whether the i-th queue added was readable.
  bool ready(size_t i) const { return fds_[i].revents != 0; }

 private:
  std::vector<pollfd> fds_;
  bool usable_ = true;
};

}  // namespace pgwarden::packet
