// Pending approval requests, waited on without holding a thread each.
//
// submit() registers a request and returns at once; the completion callback runs exactly
// once: when decide() is called for it (a reviewer's verdict, from the admin API), when its
// timeout passes (verdict deny, "approval timed out"), when its deadline passes first
// (Status deadline_exceeded) or at shutdown (deny). One timer thread serves all waits.
// Callbacks run on the timer thread or the decide() caller's thread and must not block.
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace pgwarden::server {

struct ApprovalTicket {
  std::string session_id;
  std::string requester;  // identity subject; may never decide its own request
  std::vector<std::string> approver_groups;
  std::string target;
  std::string sql;
  std::string rule;
  std::string reason;
};

struct ApprovalDecision {
  bool allow = false;
  std::string approval_id;
  std::string reason;
  std::string reviewer;
};

class ApprovalBroker {
 public:
  using Clock = std::chrono::system_clock;
  // Result: a decision, or deadline_exceeded when the request's deadline came first.
  using Callback = std::function<void(Result<ApprovalDecision>)>;

  ApprovalBroker();
  ~ApprovalBroker();
  ApprovalBroker(const ApprovalBroker&) = delete;
  ApprovalBroker& operator=(const ApprovalBroker&) = delete;

  // Returns the approval id. Times out (deny) at `timeout`, unless `deadline` is earlier.
  std::string submit(ApprovalTicket ticket, Clock::time_point timeout, Clock::time_point deadline,
                     Callback done);
  // A reviewer's decision. Errors: not_found (unknown/finished id), permission_denied
  // (reviewer is the requester or not in an approver group).
  Status decide(const std::string& approval_id, bool allow, const std::string& reviewer,
                const std::vector<std::string>& reviewer_groups, const std::string& reason);
  // Ids and tickets currently waiting (for the admin API).
  std::vector<std::pair<std::string, ApprovalTicket>> pending() const;
  size_t pending_count() const;
  void stop();

 private:
  struct Pending {
    ApprovalTicket ticket;
    Clock::time_point timeout;
    Clock::time_point deadline;
    Callback done;
  };
  void run();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Pending> pending_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::thread timer_;
};

}  // namespace pgwarden::server
