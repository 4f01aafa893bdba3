#include "dataplane/session/server_pool.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

namespace pgwarden::session {
namespace {

// A "server" connection: one end of a socketpair (the test keeps the other end as the server).
std::unique_ptr<PooledServer> connected(const std::string& key, int* peer) {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  auto s = std::make_unique<PooledServer>();
  s->key = key;
  s->stream.set_fd(sv[0]);
  *peer = sv[1];
  return s;
}

TEST(ServerPoolTest, OpensUpToPoolSizeThenQueuesWaitersInOrder) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  ServerPool pool(&loop);
  std::unique_ptr<PooledServer> out;
  EXPECT_EQ(pool.acquire("k", 2, 1, nullptr, &out), ServerPool::Outcome::kOpen);
  EXPECT_EQ(pool.acquire("k", 2, 2, nullptr, &out), ServerPool::Outcome::kOpen);
  std::vector<uint64_t> served;
  std::vector<std::unique_ptr<PooledServer>> got;
  auto waiter = [&](uint64_t id) {
    return [&, id](std::unique_ptr<PooledServer> s) {
      served.push_back(id);
      got.push_back(std::move(s));
    };
  };
  EXPECT_EQ(pool.acquire("k", 2, 3, waiter(3), &out), ServerPool::Outcome::kWait);
  EXPECT_EQ(pool.acquire("k", 2, 4, waiter(4), &out), ServerPool::Outcome::kWait);
  EXPECT_EQ(pool.acquire("k", 2, 5, waiter(5), &out), ServerPool::Outcome::kWait);
  EXPECT_EQ(pool.waiting("k"), 3u);
  pool.cancel_wait("k", 4);  // gave up (timeout)

  int peer = -1;
  pool.release(connected("k", &peer));  // session 1's transaction ended
  ASSERT_EQ(served, std::vector<uint64_t>{3});
  ASSERT_NE(got[0], nullptr);
  // Session 2's connection broke: its slot goes to the next waiter as "open one".
  pool.discard("k");
  ASSERT_EQ(served, (std::vector<uint64_t>{3, 5}));
  EXPECT_EQ(got[1], nullptr);
  EXPECT_EQ(pool.live("k"), 2);
  EXPECT_EQ(pool.waiting("k"), 0u);
  close(peer);
}

TEST(ServerPoolTest, IdleConnectionIsReusedAndKeysDoNotMix) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  ServerPool pool(&loop);
  std::unique_ptr<PooledServer> out;
  ASSERT_EQ(pool.acquire("a", 1, 1, nullptr, &out), ServerPool::Outcome::kOpen);
  int peer = -1;
  auto s = connected("a", &peer);
  PooledServer* raw = s.get();
  pool.release(std::move(s));
  EXPECT_EQ(pool.idle("a"), 1u);
  // Another parameter set is another pool.
  EXPECT_EQ(pool.acquire("b", 1, 2, nullptr, &out), ServerPool::Outcome::kOpen);
  EXPECT_EQ(pool.acquire("a", 1, 3, nullptr, &out), ServerPool::Outcome::kServer);
  EXPECT_EQ(out.get(), raw);
  EXPECT_EQ(pool.idle("a"), 0u);
  close(peer);
}

TEST(ServerPoolTest, IdleConnectionThatTheServerClosesLeavesThePool) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  ServerPool pool(&loop);
  std::unique_ptr<PooledServer> out;
  ASSERT_EQ(pool.acquire("k", 1, 1, nullptr, &out), ServerPool::Outcome::kOpen);
  int peer = -1;
  pool.release(connected("k", &peer));
  ASSERT_EQ(pool.idle("k"), 1u);
  close(peer);  // pg_terminate_backend, server restart
  for (int i = 0; i < 100 && pool.idle("k") > 0; ++i) loop.run_once(10);
  EXPECT_EQ(pool.idle("k"), 0u);
  EXPECT_EQ(pool.live("k"), 0);
  EXPECT_EQ(pool.closed_idle(), 1u);
  // The slot is free again.
  EXPECT_EQ(pool.acquire("k", 1, 2, nullptr, &out), ServerPool::Outcome::kOpen);
}

TEST(ServerPoolTest, ConnectionWithTooManyPreparedStatementsIsClosedOnRelease) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  ServerPool pool(&loop);
  std::unique_ptr<PooledServer> out;
  ASSERT_EQ(pool.acquire("k", 1, 1, nullptr, &out), ServerPool::Outcome::kOpen);
  int peer = -1;
  auto s = connected("k", &peer);
  for (size_t i = 0; i <= kMaxPreparedPerServer; ++i) s->prepared.insert(std::to_string(i));
  pool.release(std::move(s));
  EXPECT_EQ(pool.idle("k"), 0u);
  EXPECT_EQ(pool.live("k"), 0);
  char c;
  EXPECT_EQ(read(peer, &c, 1), 0);  // closed
  close(peer);
}

}  // namespace
}  // namespace pgwarden::session
