// Blocking dp -> cp client for tests and pgwardenctl. (pgwarden-dp drives FrameDecoder from
// its own epoll loop instead.)
//
// call() sends one request and waits for the response with the same id; responses to other
// ids that arrive meanwhile are kept for their own receive_for(). Not thread-safe: one
// thread per client.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/protocol/frame.h"
#include "common/status.h"

namespace pgwarden::protocol {

class BlockingClient {
 public:
  BlockingClient() = default;
  ~BlockingClient();
  BlockingClient(const BlockingClient&) = delete;
  BlockingClient& operator=(const BlockingClient&) = delete;

  Status connect(const std::string& socket_path);
  void close();
  bool connected() const { return fd_ >= 0; }

  // hello with protocol kProtocolVersion; returns the cp's policy_version.
  Result<uint64_t> hello(const std::string& dp_name = "pgwarden-test/0.1");

  // Fresh id for a request (1, 2, ...; hello uses the first).
  uint64_t next_id() { return ++last_id_; }
  // Sends `request` as one frame. If it lacks "id" one is assigned (returned); if it lacks
  // "deadline_ms" it gets now + default_deadline_ms().
  Result<uint64_t> send(json request);
  // Sends raw bytes (tests use this to send malformed frames).
  Status send_raw(const std::string& bytes);
  // The next frame from cp, whatever its id.
  Result<json> receive(int timeout_ms = 10000);
  // The response for `id` (earlier frames for other ids stay queued).
  Result<json> receive_for(uint64_t id, int timeout_ms = 10000);
  // send + receive_for.
  Result<json> call(json request, int timeout_ms = 10000);

  void set_default_deadline_ms(int64_t ms) { default_deadline_ms_ = ms; }
  // The longest frame accepted from cp (default kMaxFrameBytes; pgwardenctl takes the admin
  // API's kMaxAdminReplyBytes). Applies from the next connect().
  void set_max_frame_bytes(size_t n) { max_frame_bytes_ = n; }
  int64_t default_deadline_ms() const { return default_deadline_ms_; }

 private:
  int fd_ = -1;
  uint64_t last_id_ = 0;
  int64_t default_deadline_ms_ = 10000;
  size_t max_frame_bytes_ = kMaxFrameBytes;
  FrameDecoder decoder_;
  std::map<uint64_t, json> pending_;
};

}  // namespace pgwarden::protocol
