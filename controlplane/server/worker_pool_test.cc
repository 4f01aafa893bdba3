#include "controlplane/server/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>

namespace pgwarden::server {
namespace {

TEST(WorkerPoolTest, RunsTasksConcurrently) {
  WorkerPool pool(4, 100);
  std::atomic<int> running{0}, peak{0}, done{0};
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(pool.submit([&] {
      int now = ++running;
      int p = peak.load();
      while (now > p && !peak.compare_exchange_weak(p, now)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      --running;
      ++done;
    }));
  }
  while (done.load() < 8) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_GT(peak.load(), 1);
}

TEST(WorkerPoolTest, FullQueueRefusesInsteadOfBlocking) {
  WorkerPool pool(1, 2);
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::promise<void> started;
  ASSERT_TRUE(pool.submit([gate, &started] {
    started.set_value();
    gate.wait();
  }));
  started.get_future().wait();  // the only worker is now busy
  EXPECT_TRUE(pool.submit([] {}));
  EXPECT_TRUE(pool.submit([] {}));
  EXPECT_FALSE(pool.submit([] {}));
  EXPECT_EQ(pool.queued(), 2u);
  release.set_value();
}

}  // namespace
}  // namespace pgwarden::server
