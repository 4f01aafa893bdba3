// Recorder under file-system faults: a file layer that wraps the real one and fails on demand
// (ENOSPC after N bytes with a short write first, EIO, EROFS, a failing fdatasync), in the
// style of LevelDB's fault-injecting log tests. The files are real; only the faults are not.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "controlplane/recording/recorder.h"
#include "controlplane/recording/recording_file.h"

namespace pgwarden::recording {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class FaultyFs final : public RecordingFs {
 public:
  // Bytes pwritev may still write before ENOSPC (< 0: unlimited). A write that crosses the
  // limit is short (it writes up to the limit), the next one fails: like a filling disk.
  std::atomic<int64_t> space{-1};
  std::atomic<int> write_errno{0};  // every pwritev fails with this errno
  std::atomic<int> sync_errno{0};   // every fdatasync fails with this errno
  std::atomic<int> syncs{0};
  std::atomic<int> writes{0};
  // fdatasync of files whose path ends in this fails with EIO (empty: none).
  std::string sync_fail_suffix;
  // When > 1: each fdatasync waits until this many are in flight at once (or 10 s pass, so a
  // recorder that syncs one file after the other fails the test instead of hanging it).
  int sync_rendezvous = 0;
  int max_syncs_in_flight = 0;

  int open(const std::string& path) override {
    int fd = real_->open(path);
    std::lock_guard lock(mu_);
    if (fd >= 0) paths_[fd] = path;
    return fd;
  }
  ssize_t pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) override {
    ++writes;
    if (int e = write_errno.load(); e != 0) {
      errno = e;
      return -1;
    }
    int64_t left = space.load();
    if (left < 0) return real_->pwritev(fd, iov, iovcnt, offset);
    if (left == 0) {
      errno = ENOSPC;
      return -1;
    }
    std::vector<struct iovec> cut;
    int64_t total = 0;
    for (int i = 0; i < iovcnt && total < left; ++i) {
      size_t n = std::min<size_t>(iov[i].iov_len, static_cast<size_t>(left - total));
      cut.push_back({iov[i].iov_base, n});
      total += static_cast<int64_t>(n);
    }
    ssize_t n = real_->pwritev(fd, cut.data(), static_cast<int>(cut.size()), offset);
    if (n > 0) space -= n;
    return n;
  }
  int fdatasync(int fd) override {
    ++syncs;
    bool fail = false;
    {
      std::unique_lock lock(mu_);
      const std::string& path = paths_[fd];
      fail = !sync_fail_suffix.empty() && path.size() >= sync_fail_suffix.size() &&
             path.compare(path.size() - sync_fail_suffix.size(), std::string::npos,
                          sync_fail_suffix) == 0;
      ++in_flight_;
      max_syncs_in_flight = std::max(max_syncs_in_flight, in_flight_);
      if (sync_rendezvous > 1) {
        all_in_.notify_all();
        all_in_.wait_for(lock, 10s, [&] { return max_syncs_in_flight >= sync_rendezvous; });
      }
      --in_flight_;
    }
    if (int e = fail ? EIO : sync_errno.load(); e != 0) {
      errno = e;
      return -1;
    }
    return real_->fdatasync(fd);
  }
  int ftruncate(int fd, off_t length) override { return real_->ftruncate(fd, length); }
  off_t size(int fd) override { return real_->size(fd); }
  int close(int fd) override { return real_->close(fd); }

  std::mutex mu_;  // guards the members above that are not atomic

 private:
  std::shared_ptr<RecordingFs> real_ = posix_recording_fs();
  std::condition_variable all_in_;
  int in_flight_ = 0;
  std::map<int, std::string> paths_;
};

// Collects on_done results.
struct Acks {
  std::mutex mu;
  std::vector<Status> done;
  std::function<void(const Status&)> one() {
    return [this](const Status& s) {
      std::lock_guard lock(mu);
      done.push_back(s);
    };
  }
  std::vector<Status> all() {
    std::lock_guard lock(mu);
    return done;
  }
};

class RecorderFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-recfault-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/recordings";
  }
  void TearDown() override { fs::remove_all(root_); }

  RecorderOptions options(SyncMode mode = SyncMode::kInterval) {
    RecorderOptions o;
    o.dir = dir_;
    o.fs = faulty_;
    o.sync_mode = mode;
    o.retry_interval = 20ms;
    o.clock_ms = [this] { return now_.fetch_add(10); };
    o.audit = [this](const nlohmann::json& j) {
      std::lock_guard lock(audit_mu_);
      audit_.push_back(j);
    };
    return o;
  }
  static SessionStart start(const std::string& id) {
    SessionStart s;
    s.session_id = id;
    s.identity = "agent-7";
    s.target = "crm";
    s.policy = "agents";
    return s;
  }
  std::vector<nlohmann::json> audit_events(const std::string& event) {
    std::lock_guard lock(audit_mu_);
    std::vector<nlohmann::json> out;
    for (const auto& j : audit_) {
      if (j.value("event", "") == event) out.push_back(j);
    }
    return out;
  }
  static std::vector<nlohmann::json> records(const std::string& path) {
    VerifyReport report;
    auto r = read_recording(path, &report);
    EXPECT_TRUE(r.is_ok());
    EXPECT_TRUE(report.ok) << report.reason;
    EXPECT_FALSE(report.torn_tail);
    return r.is_ok() ? *r : std::vector<nlohmann::json>{};
  }
  static std::vector<std::string> kinds(const std::vector<nlohmann::json>& recs) {
    std::vector<std::string> out;
    for (const auto& r : recs) out.push_back(r.value("kind", ""));
    return out;
  }
  // Appends a statement that waits for its record (like a recording-required session).
  static Status statement(Recorder& rec, const std::string& id, const std::string& sql,
                          Acks& acks) {
    return rec.append(id, "statement", {{"sql", sql}}, {.keep = true, .on_done = acks.one()});
  }

  std::string root_, dir_;
  std::shared_ptr<FaultyFs> faulty_ = std::make_shared<FaultyFs>();
  std::atomic<int64_t> now_{1'767'225'600'000};
  std::mutex audit_mu_;
  std::vector<nlohmann::json> audit_;
};

TEST_F(RecorderFaultsTest, AStatementIsAcknowledgedOnlyOnceItsRecordIsInTheFile) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  std::promise<std::string> seen;
  const std::string path = (*rec)->path_for("s");
  ASSERT_TRUE((*rec)
                  ->append("s", "statement", {{"sql", "SELECT 42"}},
                           {.keep = true,
                            .on_done =
                                [&](const Status& st) {
                                  EXPECT_TRUE(st.is_ok());
                                  std::ifstream in(path);
                                  seen.set_value(std::string(std::istreambuf_iterator<char>(in),
                                                             std::istreambuf_iterator<char>()));
                                }})
                  .is_ok());
  std::string at_ack = seen.get_future().get();
  EXPECT_NE(at_ack.find("SELECT 42"), std::string::npos);
  EXPECT_EQ(at_ack.back(), '\n');
  ASSERT_TRUE((*rec)->flush().is_ok());
  Watermark wm = (*rec)->watermark("s");
  EXPECT_EQ(wm.queued, 2u);
  EXPECT_EQ(wm.written, 2u);
  EXPECT_EQ(wm.synced, 2u);
}

TEST_F(RecorderFaultsTest, AlwaysModeAcknowledgesAfterFdatasyncAndRefusesWhenItFails) {
  auto rec = Recorder::open(options(SyncMode::kAlways));
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  std::promise<int> syncs_at_ack;
  ASSERT_TRUE(
      (*rec)
          ->append(
              "s", "statement", {{"sql", "SELECT 1"}},
              {.keep = true,
               .on_done = [&](const Status&) { syncs_at_ack.set_value(faulty_->syncs.load()); }})
          .is_ok());
  EXPECT_GE(syncs_at_ack.get_future().get(), 1);

  faulty_->sync_errno = EIO;
  Acks acks;
  ASSERT_TRUE(statement(**rec, "s", "SELECT 2", acks).is_ok());
  (void)(*rec)->flush();
  ASSERT_EQ(acks.all().size(), 1u);
  EXPECT_EQ(acks.all()[0].sqlstate(), "58030");
  // The unsynced record was cut off again: the statement did not run, so it is not recorded
  // as if it had.
  auto recs = records((*rec)->path_for("s"));
  EXPECT_EQ(kinds(recs), (std::vector<std::string>{"session_start", "statement"}));

  faulty_->sync_errno = 0;
  Acks later;
  ASSERT_TRUE(statement(**rec, "s", "SELECT 3", later).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok() || true);
  ASSERT_EQ(later.all().size(), 1u);
  EXPECT_TRUE(later.all()[0].is_ok());
  recs = records((*rec)->path_for("s"));
  EXPECT_EQ(kinds(recs),
            (std::vector<std::string>{"session_start", "statement", "recording_gap", "statement"}));
  EXPECT_EQ(recs[2]["records"], 1);
  EXPECT_EQ(recs[2]["not_run"], 1);
  EXPECT_EQ(recs[3]["sql"], "SELECT 3");
}

// Group commit across sessions: the files of one batch are fdatasync'ed concurrently (they
// share journal commits), and a failed sync refuses and cuts only its own file's records.
TEST_F(RecorderFaultsTest, AlwaysModeSyncsTheFilesOfABatchTogetherAndAFailedOneRefusesOnlyItsOwn) {
  std::promise<void> blocked;
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<bool> block_next{false};
  RecorderOptions o = options(SyncMode::kAlways);
  o.before_sync = [&] {
    if (!block_next.exchange(false)) return;
    blocked.set_value();
    gate.wait();
  };
  auto rec = Recorder::open(o);
  ASSERT_TRUE(rec.is_ok());
  const std::vector<std::string> ids = {"s0", "s1", "s2", "s3"};
  for (const auto& id : ids) ASSERT_TRUE((*rec)->start_session(start(id)).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());

  // One batch with a statement of each session: hold the writer, queue them, release.
  block_next = true;
  // The held batch is this record alone (synced alone); the faults apply from the next one.
  Acks held;
  auto held_done = held.one();
  ASSERT_TRUE((*rec)
                  ->append("s0", "statement", {{"sql", "SELECT 'wake'"}},
                           {.keep = true,
                            .on_done =
                                [&](const Status& st) {
                                  {
                                    std::lock_guard lock(faulty_->mu_);
                                    faulty_->sync_fail_suffix = "/s2.jsonl";
                                    faulty_->sync_rendezvous = 4;
                                    faulty_->max_syncs_in_flight = 0;
                                  }
                                  held_done(st);
                                }})
                  .is_ok());
  blocked.get_future().wait();
  std::map<std::string, Acks> acks;
  for (const auto& id : ids) ASSERT_TRUE(statement(**rec, id, "SELECT 1", acks[id]).is_ok());
  release.set_value();
  (void)(*rec)->flush();
  {
    std::lock_guard lock(faulty_->mu_);
    EXPECT_EQ(faulty_->max_syncs_in_flight, 4);  // s0 ... s3: one sync each, all at once
    faulty_->sync_rendezvous = 0;
  }
  for (const auto& id : ids) {
    ASSERT_EQ(acks[id].all().size(), 1u) << id;
    if (id == "s2") {
      EXPECT_EQ(acks[id].all()[0].sqlstate(), "58030");
      EXPECT_EQ(kinds(records((*rec)->path_for(id))), (std::vector<std::string>{"session_start"}));
    } else {
      EXPECT_TRUE(acks[id].all()[0].is_ok()) << id;
      EXPECT_EQ(records((*rec)->path_for(id)).back()["sql"], "SELECT 1") << id;
    }
  }
  ASSERT_EQ(held.all().size(), 1u);
  EXPECT_TRUE(held.all()[0].is_ok());
}

TEST_F(RecorderFaultsTest, DiskFullCutsTheShortWriteRefusesWith53100AndHealsWithAGapRecord) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  Acks first;
  ASSERT_TRUE(statement(**rec, "s", "SELECT 'before'", first).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  const std::string path = (*rec)->path_for("s");
  const auto good_size = fs::file_size(path);

  faulty_->space = 30;  // the next record is written in part, then the disk is full
  Acks refused;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(statement(**rec, "s", "INSERT " + std::to_string(i), refused).is_ok());
    ASSERT_TRUE((*rec)->try_append("s", "rows", {{"columns", {"a"}}, {"rows", {{1}}}}).is_ok());
    (void)(*rec)->flush();
  }
  ASSERT_EQ(refused.all().size(), 3u);
  for (const Status& st : refused.all()) {
    EXPECT_EQ(st.sqlstate(), "53100");
    EXPECT_NE(st.message().find("No space left on device"), std::string::npos) << st.message();
  }
  // No torn record is left as the end of the file.
  EXPECT_EQ(fs::file_size(path), good_size);
  RecorderHealth h = (*rec)->health();
  EXPECT_TRUE(h.failing);
  EXPECT_NE(h.last_error.find("ENOSPC"), std::string::npos) << h.last_error;
  EXPECT_EQ(h.records_refused, 6u);
  EXPECT_EQ(h.gaps_pending, 1u);
  EXPECT_EQ(h.to_json()["state"], "failing");
  ASSERT_EQ(audit_events("recording_write_failed").size(), 1u);  // once per failing streak

  faulty_->space = -1;  // space freed: the next statement writes the gap first
  Acks after;
  ASSERT_TRUE(statement(**rec, "s", "SELECT 'after'", after).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok() || true);
  ASSERT_EQ(after.all().size(), 1u);
  EXPECT_TRUE(after.all()[0].is_ok());
  auto recs = records(path);
  ASSERT_EQ(kinds(recs),
            (std::vector<std::string>{"session_start", "statement", "recording_gap", "statement"}));
  const auto& gap = recs[2];
  EXPECT_EQ(gap["records"], 6);
  EXPECT_EQ(gap["not_run"], 3);
  EXPECT_EQ(gap["kinds"]["statement"], 3);
  EXPECT_EQ(gap["kinds"]["rows"], 3);
  EXPECT_LT(gap["first_ts"].get<int64_t>(), gap["last_ts"].get<int64_t>());
  EXPECT_NE(gap["reason"].get<std::string>().find("ENOSPC"), std::string::npos);
  EXPECT_FALSE((*rec)->health().failing);
  EXPECT_EQ((*rec)->health().gaps_written, 1u);
  EXPECT_EQ(audit_events("recording_write_resumed").size(), 1u);
  EXPECT_EQ(audit_events("recording_gap").size(), 1u);
}

TEST_F(RecorderFaultsTest, IoErrorsAndReadOnlyFilesystemsRefuseWith58030) {
  for (int err : {EIO, EROFS}) {
    auto rec = Recorder::open(options());
    ASSERT_TRUE(rec.is_ok());
    const std::string id = "s" + std::to_string(err);
    ASSERT_TRUE((*rec)->start_session(start(id)).is_ok());
    ASSERT_TRUE((*rec)->flush().is_ok());
    faulty_->write_errno = err;
    Acks acks;
    ASSERT_TRUE(statement(**rec, id, "UPDATE t SET x = 1", acks).is_ok());
    (void)(*rec)->flush();
    ASSERT_EQ(acks.all().size(), 1u);
    EXPECT_EQ(acks.all()[0].sqlstate(), "58030");
    EXPECT_NE(acks.all()[0].message().find(err == EIO ? "EIO" : "EROFS"), std::string::npos);
    faulty_->write_errno = 0;
  }
}

TEST_F(RecorderFaultsTest, RecordingResumesByItselfWithoutANewStatement) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  faulty_->write_errno = ENOSPC;
  Acks acks;
  ASSERT_TRUE(statement(**rec, "s", "SELECT 1", acks).is_ok());
  (void)(*rec)->flush();
  EXPECT_TRUE((*rec)->health().failing);
  faulty_->write_errno = 0;
  // The writer retries every retry_interval while a gap is pending: wait for that event.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((*rec)->health().failing && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_FALSE((*rec)->health().failing);
  EXPECT_EQ((*rec)->health().gaps_pending, 0u);
  auto recs = records((*rec)->path_for("s"));
  EXPECT_EQ(kinds(recs), (std::vector<std::string>{"session_start", "recording_gap"}));
}

TEST_F(RecorderFaultsTest, ASessionThatEndsWhileTheDiskIsFullIsSealedOnceItHasSpace) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  faulty_->space = 0;
  ASSERT_TRUE((*rec)->try_append("s", "statement", {{"sql", "SELECT 1"}}).is_ok());
  ASSERT_TRUE((*rec)->try_append("s", "session_end", {{"reason", "client closed"}}).is_ok());
  (void)(*rec)->flush();
  faulty_->space = -1;
  (void)(*rec)->flush();  // a flush retries what is pending at once
  auto recs = records((*rec)->path_for("s"));
  EXPECT_EQ(kinds(recs),
            (std::vector<std::string>{"session_start", "recording_gap", "session_end", "seal"}));
  auto v = verify_session((*rec)->path_for("s"), nullptr, false);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->state, "sealed");
}

TEST_F(RecorderFaultsTest, QueueFullDropsOfAnUnrequiredSessionLeaveAGapRecordWithCounts) {
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<bool> blocked{false};
  std::atomic<bool> block_once{true};
  RecorderOptions o = options();
  o.queue_capacity = 4;
  o.before_sync = [&] {
    if (!block_once.exchange(false)) return;
    blocked = true;
    gate.wait();
  };
  auto rec = Recorder::open(o);
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  while (!blocked) std::this_thread::sleep_for(1ms);  // the writer holds the start record
  int dropped = 0;
  for (int i = 0; i < 10; ++i) {
    if (!(*rec)->try_append("s", "statement", {{"sql", "SELECT " + std::to_string(i)}}).is_ok()) {
      ++dropped;
    }
  }
  EXPECT_EQ(dropped, 6);
  // A recording-required record is never refused for a full queue.
  Acks acks;
  EXPECT_TRUE(statement(**rec, "s", "SELECT 'kept'", acks).is_ok());
  release.set_value();
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto recs = records((*rec)->path_for("s"));
  ASSERT_EQ(recs.size(), 1u + 4u + 1u + 1u);
  EXPECT_EQ(recs[5]["kind"], "recording_gap");
  EXPECT_EQ(recs[5]["records"], 6);
  EXPECT_EQ(recs[5]["kinds"]["statement"], 6);
  EXPECT_EQ(recs[5]["reason"], "recording queue full");
  EXPECT_EQ(recs[6]["sql"], "SELECT 'kept'");
  EXPECT_EQ((*rec)->health().records_dropped, 6u);
}

TEST_F(RecorderFaultsTest, IntervalModeSyncsAndCheckpointsWithoutAFlush) {
  RecorderOptions o = options();
  o.sync_interval = 20ms;
  o.checkpoint_interval = 50ms;
  auto rec = Recorder::open(o);
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  Acks acks;
  ASSERT_TRUE(statement(**rec, "s", "SELECT 1", acks).is_ok());
  // Both happen on the writer's timers: wait for the events (a sync, the checkpoint file).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  auto head = [&]() -> uint64_t {
    auto cp = read_checkpoint((*rec)->checkpoint_path());
    return cp.is_ok() && cp->heads.count("s") != 0 ? cp->heads["s"].seq : 0;
  };
  while (std::chrono::steady_clock::now() < deadline && (faulty_->syncs == 0 || head() < 2)) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_GE(faulty_->syncs.load(), 1);
  EXPECT_EQ(head(), 2u);
  EXPECT_EQ((*rec)->watermark("s").synced, 2u);
  ASSERT_EQ(acks.all().size(), 1u);
  EXPECT_TRUE(acks.all()[0].is_ok());
}

// A deferred statement: written by the caller's commit() (the ring-drain path of pgwarden-cp).
static Status deferred(Recorder& rec, const std::string& id, const std::string& sql,
                       std::function<void(const Status&)> done) {
  return rec.append(id, "statement", {{"sql", sql}},
                    {.keep = true, .on_done = std::move(done), .defer = true});
}

TEST_F(RecorderFaultsTest, CommitWritesDeferredRecordsOnTheCallingThreadAndTheWriterSyncsThem) {
  RecorderOptions o = options();
  o.sync_interval = 20ms;
  o.checkpoint_interval = 20ms;
  auto rec = Recorder::open(o);
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  // Everything synced and checkpointed: the writer thread sleeps without a deadline.
  ASSERT_TRUE((*rec)->flush().is_ok());
  const int syncs_before = faulty_->syncs.load();
  std::vector<std::thread::id> threads;
  std::vector<Status> done;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(deferred(**rec, "s", "SELECT " + std::to_string(i), [&](const Status& st) {
                  threads.push_back(std::this_thread::get_id());
                  done.push_back(st);
                }).is_ok());
  }
  EXPECT_TRUE(done.empty());  // deferred: nothing written before commit()
  (*rec)->commit();
  // Written and acknowledged before commit() returned, on this thread, in one pwritev.
  ASSERT_EQ(done.size(), 3u);
  for (size_t i = 0; i < done.size(); ++i) {
    EXPECT_TRUE(done[i].is_ok()) << done[i].to_string();
    EXPECT_EQ(threads[i], std::this_thread::get_id());
  }
  EXPECT_EQ((*rec)->watermark("s").written, 4u);
  auto recs = records((*rec)->path_for("s"));
  ASSERT_EQ(kinds(recs),
            (std::vector<std::string>{"session_start", "statement", "statement", "statement"}));
  EXPECT_EQ(recs[3]["sql"], "SELECT 2");
  // The interval sync and the checkpoint of what commit() wrote still happen: commit() woke
  // the sleeping writer thread for its timers. Wait for those events.
  auto head = [&]() -> uint64_t {
    auto cp = read_checkpoint((*rec)->checkpoint_path());
    return cp.is_ok() && cp->heads.count("s") != 0 ? cp->heads["s"].seq : 0;
  };
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline &&
         ((*rec)->watermark("s").synced < 4 || head() < 4)) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ((*rec)->watermark("s").synced, 4u);
  EXPECT_GT(faulty_->syncs.load(), syncs_before);
  EXPECT_EQ(head(), 4u);
}

TEST_F(RecorderFaultsTest, AnAppendThatIsNotDeferredKeepsTheOrderOfDeferredOnes) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  std::vector<Status> done;
  ASSERT_TRUE(deferred(**rec, "s", "SELECT 'first'", [&](const Status& st) {
                done.push_back(st);
              }).is_ok());
  // Another thread's record of the same session (a kill's session_end, say) before commit().
  ASSERT_TRUE((*rec)->try_append("s", "session_end", {{"reason", "killed"}}).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  (*rec)->commit();  // nothing left to write
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].is_ok());
  auto recs = records((*rec)->path_for("s"));
  ASSERT_EQ(kinds(recs),
            (std::vector<std::string>{"session_start", "statement", "session_end", "seal"}));
  EXPECT_EQ(recs[1]["sql"], "SELECT 'first'");
}

TEST_F(RecorderFaultsTest, CommitLeavesRecordsThatWaitForAnFdatasyncToTheWriterThread) {
  auto rec = Recorder::open(options(SyncMode::kAlways));
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  std::promise<std::thread::id> acked;
  ASSERT_TRUE(deferred(**rec, "s", "UPDATE t SET x = 1", [&](const Status& st) {
                EXPECT_TRUE(st.is_ok()) << st.to_string();
                acked.set_value(std::this_thread::get_id());
              }).is_ok());
  const int syncs_before = faulty_->syncs.load();
  (*rec)->commit();
  // Acknowledged by the writer thread after its fdatasync, never by the caller's commit().
  auto ack = acked.get_future();
  ASSERT_EQ(ack.wait_for(10s), std::future_status::ready);
  EXPECT_NE(ack.get(), std::this_thread::get_id());
  EXPECT_GT(faulty_->syncs.load(), syncs_before);
  ASSERT_TRUE((*rec)->flush().is_ok());
  EXPECT_EQ((*rec)->watermark("s").synced, 2u);

  // A session_end (its seal is synced) goes to the writer thread too, in interval mode.
  auto rec2 = Recorder::open(options());
  ASSERT_TRUE(rec2.is_ok());
  ASSERT_TRUE((*rec2)->start_session(start("e")).is_ok());
  ASSERT_TRUE(
      (*rec2)->append("e", "session_end", {{"reason", "client closed"}}, {.defer = true}).is_ok());
  (*rec2)->commit();
  ASSERT_TRUE((*rec2)->flush().is_ok());
  EXPECT_EQ(kinds(records((*rec2)->path_for("e"))),
            (std::vector<std::string>{"session_start", "session_end", "seal"}));
}

TEST_F(RecorderFaultsTest, ACommittedWriteErrorRefusesAtOnceAndTheWriterHealsItWithAGap) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  const std::string path = (*rec)->path_for("s");
  const auto good_size = fs::file_size(path);
  faulty_->space = 10;  // a short write, then the disk is full
  std::vector<Status> done;
  ASSERT_TRUE(
      deferred(**rec, "s", "INSERT 1", [&](const Status& st) { done.push_back(st); }).is_ok());
  (*rec)->commit();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].sqlstate(), "53100");
  EXPECT_EQ(fs::file_size(path), good_size);  // the torn write was cut off
  EXPECT_TRUE((*rec)->health().failing);
  faulty_->space = -1;
  // No new statement and no flush: the writer thread's retry timer (which commit() armed)
  // writes the gap record. Wait for that event.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((*rec)->health().failing && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_FALSE((*rec)->health().failing);
  EXPECT_EQ(kinds(records(path)), (std::vector<std::string>{"session_start", "recording_gap"}));
}

class VerifySessionTest : public RecorderFaultsTest {};

TEST_F(VerifySessionTest, CheckpointRevealsTruncationDeletedLastRecordAndCrashes) {
  const std::string cp_path = root_ + "/recording_checkpoint.json";
  {
    auto rec = Recorder::open(options());
    ASSERT_TRUE(rec.is_ok());
    EXPECT_EQ((*rec)->checkpoint_path(), cp_path);
    for (const char* id : {"sealed", "crashed", "cut", "lastline"}) {
      ASSERT_TRUE((*rec)->start_session(start(id)).is_ok());
      for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(
            (*rec)->try_append(id, "statement", {{"sql", "SELECT " + std::to_string(i)}}).is_ok());
      }
    }
    ASSERT_TRUE((*rec)->try_append("sealed", "session_end", {{"reason", "client closed"}}).is_ok());
    ASSERT_TRUE((*rec)->flush().is_ok());
    auto cp = read_checkpoint(cp_path);
    ASSERT_TRUE(cp.is_ok());
    EXPECT_EQ(cp->heads["crashed"].seq, 6u);
    EXPECT_TRUE(cp->heads["sealed"].sealed);
    EXPECT_EQ(cp->heads["sealed"].seq, 8u);
    EXPECT_FALSE(audit_events("recording_checkpoint").empty());
    // The recorder goes away without ending the other sessions: a crash, as far as the files
    // can tell.
  }
  auto cp = read_checkpoint(cp_path);
  ASSERT_TRUE(cp.is_ok());
  auto verify = [&](const std::string& id, std::optional<bool> live) {
    auto v = verify_session(dir_ + "/" + id + ".jsonl", &*cp, live);
    EXPECT_TRUE(v.is_ok());
    return *v;
  };
  EXPECT_EQ(verify("sealed", false).state, "sealed");
  EXPECT_TRUE(verify("sealed", false).ok);
  VerifyReport crashed = verify("crashed", false);
  EXPECT_EQ(crashed.state, "unsealed");
  EXPECT_NE(crashed.detail.find("crash"), std::string::npos);
  EXPECT_EQ(verify("crashed", true).state, "open");

  // Cut in the middle of the last record: a torn tail that drops below the checkpoint.
  const std::string cut = dir_ + "/cut.jsonl";
  fs::resize_file(cut, fs::file_size(cut) - 10);
  VerifyReport c = verify("cut", false);
  EXPECT_EQ(c.state, "truncated");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.detail.find("checkpoint recorded seq 6"), std::string::npos) << c.detail;

  // Delete the last complete line: the chain itself still verifies, the checkpoint does not.
  const std::string ll = dir_ + "/lastline.jsonl";
  std::vector<std::string> lines;
  {
    std::ifstream in(ll);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  lines.pop_back();
  {
    std::ofstream out(ll, std::ios::trunc);
    for (const auto& l : lines) out << l << "\n";
  }
  ASSERT_TRUE(verify_recording(ll)->ok);
  EXPECT_EQ(verify("lastline", false).state, "truncated");

  // Delete the seal of a sealed session.
  const std::string sp = dir_ + "/sealed.jsonl";
  lines.clear();
  {
    std::ifstream in(sp);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  lines.pop_back();
  {
    std::ofstream out(sp, std::ios::trunc);
    for (const auto& l : lines) out << l << "\n";
  }
  EXPECT_EQ(verify("sealed", false).state, "truncated");
}

TEST_F(VerifySessionTest, ARecordAfterTheSealOrAForgedSealIsTampering) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  ASSERT_TRUE((*rec)->try_append("s", "session_end", {{"reason", "x"}}).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  const std::string path = (*rec)->path_for("s");
  auto recs = records(path);
  ASSERT_EQ(recs.back()["kind"], "seal");
  // Append a correctly chained record after the seal.
  nlohmann::json extra = {{"seq", recs.size() + 1}, {"ts", 1},
                          {"session_id", "s"},      {"kind", "statement"},
                          {"sql", "DROP ..."},      {"prev", recs.back()["hash"]}};
  extra["hash"] = chain_hash(recs.back()["hash"].get<std::string>(), canonical_bytes(extra));
  { std::ofstream(path, std::ios::app) << extra.dump() << "\n"; }
  auto v = verify_session(path, nullptr, false);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->state, "tampered");
  EXPECT_EQ(v->reason, "record after seal");
  // And the recorder refuses to continue a sealed session.
  EXPECT_EQ((*rec)->resume_session(start("s"), "restart").code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace pgwarden::recording
