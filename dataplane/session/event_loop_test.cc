#include "dataplane/session/event_loop.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace pgwarden::session {
namespace {

TEST(EventLoopTest, TimersFireInDeadlineOrderAndCancelledOnesNever) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  std::vector<int> fired;
  int64_t now = monotonic_ms();
  loop.add_timer(now + 30, [&] { fired.push_back(2); });
  loop.add_timer(now + 10, [&] { fired.push_back(1); });
  EventLoop::TimerId gone = loop.add_timer(now + 20, [&] { fired.push_back(99); });
  loop.cancel_timer(gone);
  while (fired.size() < 2 && monotonic_ms() < now + 2000) loop.run_once(50);
  EXPECT_EQ(fired, (std::vector<int>{1, 2}));
}

TEST(EventLoopTest, ReusedTimerNodesKeepOrderIdsAndCancellation) {
  // Fired and cancelled timers hand their nodes to later add_timer() calls: the reused nodes
  // must carry the new deadline, id and callback, and a cancelled callback's captures must be
  // released at cancel time, not when its node is reused.
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  auto held = std::make_shared<int>(0);
  int64_t now = monotonic_ms();
  EventLoop::TimerId first = loop.add_timer(now + 100000, [held] {});
  EXPECT_EQ(held.use_count(), 2);
  loop.cancel_timer(first);
  EXPECT_EQ(held.use_count(), 1);
  std::vector<int> fired;
  for (int round = 0; round < 3; ++round) {
    fired.clear();
    now = monotonic_ms();
    std::vector<EventLoop::TimerId> ids;
    for (int i = 0; i < 8; ++i) {
      ids.push_back(loop.add_timer(now + 8 - i, [&fired, i] { fired.push_back(i); }));
    }
    loop.cancel_timer(ids[3]);
    loop.cancel_timer(first);  // an id already cancelled (its node reused) is a no-op
    while (fired.size() < 7 && monotonic_ms() < now + 2000) loop.run_once(20);
    EXPECT_EQ(fired, (std::vector<int>{7, 6, 5, 4, 2, 1, 0})) << "round " << round;
  }
}

TEST(EventLoopTest, DeferredWorkRunsAfterTheBatchEvenWhenAddedByDeferredWork) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  int runs = 0;
  loop.defer([&] {
    ++runs;
    loop.defer([&] { ++runs; });
  });
  loop.run_once(0);
  EXPECT_EQ(runs, 2);
}

class CountingHandler : public IoHandler {
 public:
  void on_io(int, uint32_t events) override {
    if (events & EPOLLIN) ++reads;
  }
  int reads = 0;
};

TEST(EventLoopTest, ReadableSocketIsDispatchedToItsHandler) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  CountingHandler h;
  ASSERT_TRUE(loop.add(sv[0], EPOLLIN, &h).is_ok());
  loop.run_once(0);
  EXPECT_EQ(h.reads, 0);
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  loop.run_once(1000);
  EXPECT_EQ(h.reads, 1);
  loop.remove(sv[0]);
  close(sv[0]);
  close(sv[1]);
}

TEST(EventLoopTest, WakeFromAnotherThreadInterruptsTheWait) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  std::atomic<bool> woken{false};
  loop.set_on_wake([&] { woken = true; });
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    loop.wake();
  });
  int64_t start = monotonic_ms();
  loop.run_once(5000);
  t.join();
  EXPECT_TRUE(woken.load());
  EXPECT_LT(monotonic_ms() - start, 4000);
}

TEST(EventLoopTest, AWakeIsConsumedOnceAndTheIdleLoopThenSleeps) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  int wakes = 0;
  loop.set_on_wake([&] { ++wakes; });
  loop.wake();
  loop.wake();
  loop.run_once(1000);
  EXPECT_EQ(wakes, 1);
  // The eventfd was drained: nothing is ready, so these waits dispatch nothing (an undrained
  // eventfd made every wait return at once and the worker spin at 100% CPU).
  for (int i = 0; i < 3; ++i) loop.run_once(10);
  EXPECT_EQ(wakes, 1);
}

// The wake eventfd is edge-triggered and never read: every wake() after a dispatch is a new
// edge and is delivered again (the dp's watermark eventfd and cp's ring eventfd rely on the
// same), and the loop still sleeps in between.
TEST(EventLoopTest, EveryWakeAfterADispatchIsDeliveredAgain) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  int wakes = 0;
  loop.set_on_wake([&] { ++wakes; });
  for (int round = 1; round <= 3; ++round) {
    loop.wake();
    loop.run_once(1000);
    EXPECT_EQ(wakes, round);
    loop.run_once(10);
    EXPECT_EQ(wakes, round);
  }
  // A wake from inside the handler (as another thread's, between two waits) is not lost.
  loop.set_on_wake([&] {
    if (++wakes == 4) loop.wake();
  });
  loop.wake();
  loop.run_once(1000);
  loop.run_once(1000);
  EXPECT_EQ(wakes, 5);
}

}  // namespace
}  // namespace pgwarden::session
