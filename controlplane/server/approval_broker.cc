#include "controlplane/server/approval_broker.h"

#include <algorithm>

namespace pgwarden::server {

ApprovalBroker::ApprovalBroker() : timer_([this] { run(); }) {}

ApprovalBroker::~ApprovalBroker() { stop(); }

std::string ApprovalBroker::submit(ApprovalTicket ticket, Clock::time_point timeout,
                                   Clock::time_point deadline, Callback done) {
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = "apr-" +
         std::to_string(
             std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
                 .count()) +
         "-" + std::to_string(next_id_++);
    if (!stopping_) {
      pending_[id] = Pending{std::move(ticket), timeout, deadline, std::move(done)};
      cv_.notify_all();
      return id;
    }
  }
  done(ApprovalDecision{false, id, "control plane is shutting down", ""});
  return id;
}

Status ApprovalBroker::decide(const std::string& approval_id, bool allow,
                              const std::string& reviewer,
                              const std::vector<std::string>& reviewer_groups,
                              const std::string& reason) {
  Callback done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(approval_id);
    if (it == pending_.end()) return not_found("no pending approval " + approval_id);
    const ApprovalTicket& t = it->second.ticket;
    if (reviewer == t.requester) {
      return permission_denied("a requester may not approve their own statement");
    }
    bool in_group =
        std::any_of(reviewer_groups.begin(), reviewer_groups.end(), [&](const std::string& g) {
          return std::find(t.approver_groups.begin(), t.approver_groups.end(), g) !=
                 t.approver_groups.end();
        });
    if (!in_group) return permission_denied(reviewer + " is not in an approver group");
    done = std::move(it->second.done);
    pending_.erase(it);
  }
  done(ApprovalDecision{allow, approval_id, reason, reviewer});
  return Status::ok();
}

std::vector<std::pair<std::string, ApprovalTicket>> ApprovalBroker::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, ApprovalTicket>> out;
  for (const auto& [id, p] : pending_) out.emplace_back(id, p.ticket);
  return out;
}

size_t ApprovalBroker::pending_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.size();
}

void ApprovalBroker::stop() {
  std::map<std::string, Pending> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    left.swap(pending_);
  }
  cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  for (auto& [id, p] : left) {
    p.done(ApprovalDecision{false, id, "control plane is shutting down", ""});
  }
}

void ApprovalBroker::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    auto now = Clock::now();
    auto next = Clock::time_point::max();
    std::vector<std::pair<std::string, Pending>> expired;
    for (auto it = pending_.begin(); it != pending_.end();) {
      auto when = std::min(it->second.timeout, it->second.deadline);
      if (when <= now) {
        expired.emplace_back(it->first, std::move(it->second));
        it = pending_.erase(it);
      } else {
        next = std::min(next, when);
        ++it;
      }
    }
    if (!expired.empty()) {
      lock.unlock();
      for (auto& [id, p] : expired) {
        if (p.deadline <= p.timeout) {
          p.done(deadline_exceeded("approval " + id + " still undecided at the deadline"));
        } else {
          p.done(ApprovalDecision{false, id, "approval timed out", ""});
        }
      }
      lock.lock();
      continue;
    }
    if (next == Clock::time_point::max()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, next);
    }
  }
}

}  // namespace pgwarden::server
