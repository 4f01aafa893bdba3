#include "dataplane/packet/audit_forwarder.h"

#include <chrono>
#include <cstdio>

#include "common/protocol/client.h"
#include "common/protocol/frame.h"

namespace pgwarden::packet {
namespace {

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

class AuditForwarder::Connection {
 public:
  protocol::BlockingClient client;
};

nlohmann::json AuditForwarderStats::to_json() const {
  return {{"sent_to_cp", sent_to_cp},
          {"written_to_file", written_to_file},
          {"cp_unreachable", cp_unreachable},
          {"lost", lost},
          {"queue_dropped", queue_dropped},
          {"cp_connects", cp_connects},
          {"cp_connect_failures", cp_connect_failures},
          {"stats_sent", stats_sent},
          {"stats_unsent", stats_unsent}};
}

AuditForwarder::AuditForwarder(AuditForwarderOptions options)
    : options_(std::move(options)), cp_(std::make_unique<Connection>()) {}

Result<std::unique_ptr<AuditForwarder>> AuditForwarder::start(AuditForwarderOptions options) {
  std::unique_ptr<AuditForwarder> f(new AuditForwarder(std::move(options)));
  if (!f->options_.fallback_path.empty()) {
    f->file_.open(f->options_.fallback_path, std::ios::app);
    if (!f->file_) {
      return invalid_argument("cannot open audit log " + f->options_.fallback_path);
    }
  }
  f->thread_ = std::thread([p = f.get()] { p->run(); });
  return f;
}

AuditForwarder::~AuditForwarder() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AuditForwarder::submit(nlohmann::json event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++submitted_;
    if (queue_.size() >= options_.max_queue) {
      ++stats_.queue_dropped;
      ++finished_;
      done_.notify_all();
      return;
    }
    queue_.push_back(std::move(event));
  }
  wake_.notify_one();
}

void AuditForwarder::publish_stats(nlohmann::json snapshot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_stats_ = std::move(snapshot);
  }
  wake_.notify_one();
}

void AuditForwarder::flush() {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t target = submitted_;
  done_.wait(lock, [&] { return finished_ >= target; });
}

AuditForwarderStats AuditForwarder::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void AuditForwarder::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty() || pending_stats_.has_value(); });
    if (queue_.empty() && !pending_stats_) break;  // stop_ and nothing left
    std::deque<nlohmann::json> batch;
    batch.swap(queue_);
    std::optional<nlohmann::json> snapshot;
    snapshot.swap(pending_stats_);
    lock.unlock();
    for (const nlohmann::json& ev : batch) {
      deliver(ev);
      std::lock_guard<std::mutex> relock(mu_);
      ++finished_;
      done_.notify_all();
    }
    if (snapshot) {
      bool sent = !options_.cp_socket.empty() && send_to_cp(*snapshot);
      std::lock_guard<std::mutex> relock(mu_);
      ++(sent ? stats_.stats_sent : stats_.stats_unsent);
    }
    // cp may send us events (policy_version); nothing here needs them: discard, and notice
    // a closed connection early.
    while (cp_->client.connected()) {
      Result<nlohmann::json> r = cp_->client.receive(1);
      if (r.is_ok()) continue;
      if (r.status().code() != StatusCode::kDeadlineExceeded) cp_->client.close();
      break;
    }
    lock.lock();
  }
}

bool AuditForwarder::send_to_cp(const nlohmann::json& event) {
  protocol::BlockingClient& c = cp_->client;
  if (!c.connected()) {
    int64_t now = steady_ms();
    if (now < next_connect_ms_) return false;
    next_connect_ms_ = now + options_.reconnect_interval_ms;
    Status st = c.connect(options_.cp_socket);
    Result<uint64_t> hello = st.is_ok() ? c.hello(options_.dp_name) : Result<uint64_t>(st);
    std::lock_guard<std::mutex> lock(mu_);
    if (!hello.is_ok()) {
      c.close();
      if (stats_.cp_connect_failures++ == 0) {
        std::fprintf(stderr, "pgwarden-dp: audit: cannot reach cp at %s (%s); writing %s\n",
                     options_.cp_socket.c_str(), hello.status().message().c_str(),
                     options_.fallback_path.empty() ? "nothing" : options_.fallback_path.c_str());
      }
      return false;
    }
    ++stats_.cp_connects;
  }
  std::string frame;
  if (!protocol::append_message(frame, event).is_ok()) return false;
  if (!c.send_raw(frame).is_ok()) {
    c.close();
    return false;
  }
  return true;
}

void AuditForwarder::deliver(const nlohmann::json& event) {
  bool have_cp = !options_.cp_socket.empty();
  if (have_cp && send_to_cp(event)) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.sent_to_cp;
    return;
  }
  bool written = false;
  if (file_.is_open()) {
    file_ << event.dump() << '\n';
    file_.flush();
    written = static_cast<bool>(file_);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (written) {
    ++stats_.written_to_file;
    if (have_cp) ++stats_.cp_unreachable;
  } else {
    ++stats_.lost;
  }
}

}  // namespace pgwarden::packet
