#include "common/protocol/event_ring.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace pgwarden::protocol {
namespace {

std::string payload_for(uint64_t i) {
  // Lengths 0..300, content derived from i so a torn or misplaced record is detected.
  std::string s(static_cast<size_t>((i * 7919) % 301), '\0');
  for (size_t k = 0; k < s.size(); ++k) s[k] = static_cast<char>('a' + (i + k) % 26);
  return s;
}

TEST(EventRing, RecordsComeOutInOrderWithTheirHeaders) {
  auto region = RingRegion::create(4096, 4096);
  ASSERT_TRUE(region.is_ok()) << region.status().message();
  SpscRing& ring = region->forward();
  ASSERT_TRUE(ring.try_write(2, 42, 7, {"hello", " ", "world"}));
  ASSERT_TRUE(ring.try_write(3, 43, 8, {}));
  RecordView v;
  EXPECT_FALSE(ring.peek(&v)) << "nothing is visible before publish()";
  ring.publish();
  ASSERT_TRUE(ring.peek(&v));
  EXPECT_EQ(v.header.type, 2);
  EXPECT_EQ(v.header.session, 42u);
  EXPECT_EQ(v.header.seq, 7u);
  EXPECT_EQ(v.payload, "hello world");
  ring.advance();
  ASSERT_TRUE(ring.peek(&v));
  EXPECT_EQ(v.header.type, 3);
  EXPECT_EQ(v.payload, "");
  ring.advance();
  EXPECT_FALSE(ring.peek(&v));
  ring.release();
  EXPECT_TRUE(ring.empty());
}

TEST(EventRing, FullRingRefusesUntilTheConsumerReleases) {
  auto region = RingRegion::create(4096, 4096);
  ASSERT_TRUE(region.is_ok());
  SpscRing& ring = region->forward();
  std::string big(1000, 'x');
  int written = 0;
  while (ring.try_write(1, 1, 0, {big})) ++written;
  EXPECT_EQ(written, 4);  // 4 x 1024 bytes
  ring.publish();
  RecordView v;
  ASSERT_TRUE(ring.peek(&v));
  ring.advance();
  EXPECT_FALSE(ring.try_write(1, 1, 0, {big})) << "space is returned only by release()";
  ring.release();
  EXPECT_TRUE(ring.try_write(1, 1, 0, {big}));
}

TEST(EventRing, OversizedPayloadIsRefused) {
  auto region = RingRegion::create(4096, 4096);
  ASSERT_TRUE(region.is_ok());
  std::string huge(region->forward().max_payload() + 1, 'x');
  EXPECT_FALSE(region->forward().try_write(1, 1, 0, {huge}));
  std::string fits(region->forward().max_payload(), 'x');
  EXPECT_TRUE(region->forward().try_write(1, 1, 0, {fits}));
}

TEST(EventRing, WrapsAroundManyTimesWithPadsAndShortTails) {
  auto region = RingRegion::create(4096, 4096);
  ASSERT_TRUE(region.is_ok());
  SpscRing& ring = region->forward();
  uint64_t next_in = 0, next_out = 0;
  // Lengths chosen so that the write position hits every 8-byte offset near the end, including
  // tails of 8 and 16 bytes where no header fits.
  while (next_out < 5000) {
    while (next_in < next_out + 20 && ring.try_write(1, next_in, next_in, {payload_for(next_in)})) {
      ++next_in;
    }
    ring.publish();
    RecordView v;
    int taken = 0;
    while (taken < 7 && ring.peek(&v)) {
      ASSERT_EQ(v.header.seq, next_out);
      ASSERT_EQ(v.payload, payload_for(next_out));
      ring.advance();
      ++next_out;
      ++taken;
    }
    ring.release();
    ASSERT_FALSE(ring.corrupt());
  }
}

TEST(EventRing, ParkedConsumerIsReportedOnceByPublish) {
  auto region = RingRegion::create(4096, 4096);
  ASSERT_TRUE(region.is_ok());
  SpscRing& ring = region->forward();
  EXPECT_TRUE(ring.park());
  ASSERT_TRUE(ring.try_write(1, 1, 0, {"a"}));
  EXPECT_TRUE(ring.publish()) << "the consumer was parked: the producer must wake it";
  ASSERT_TRUE(ring.try_write(1, 1, 0, {"b"}));
  EXPECT_FALSE(ring.publish()) << "already woken";
  EXPECT_FALSE(ring.park()) << "records are waiting: parking must fail";
}

TEST(EventRing, ConsumerDetectsALyingLength) {
  auto region = RingRegion::create(4096, 4096);
  ASSERT_TRUE(region.is_ok());
  SpscRing& ring = region->forward();
  ASSERT_TRUE(ring.try_write(1, 1, 0, {"abc"}));
  ring.publish();
  // The producer (a broken peer) rewrites the length in place.
  char* base = static_cast<char*>(
      mmap(nullptr, region->bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, region->fd(), 0));
  ASSERT_NE(base, MAP_FAILED);
  uint32_t lie = 100000;
  memcpy(base + 4096, &lie, sizeof lie);
  RecordView v;
  EXPECT_FALSE(ring.peek(&v));
  EXPECT_TRUE(ring.corrupt());
  munmap(base, region->bytes());
}

TEST(EventRing, AttachValidatesTheMemfd) {
  auto region = RingRegion::create(8192, 4096);
  ASSERT_TRUE(region.is_ok());
  auto attached = RingRegion::attach(dup(region->fd()));
  ASSERT_TRUE(attached.is_ok()) << attached.status().message();
  ASSERT_TRUE(region->forward().try_write(5, 9, 1, {"over shared memory"}));
  region->forward().publish();
  RecordView v;
  ASSERT_TRUE(attached->forward().peek(&v));
  EXPECT_EQ(v.payload, "over shared memory");
  EXPECT_EQ(attached->forward().capacity(), 8192u);

  int plain = memfd_create("unsealed", MFD_CLOEXEC);
  ASSERT_GE(plain, 0);
  ASSERT_EQ(ftruncate(plain, static_cast<off_t>(region->bytes())), 0);
  EXPECT_FALSE(RingRegion::attach(plain).is_ok()) << "an unsealed memfd could shrink under cp";
}

// One producer thread, one consumer thread, eventfd-free: the consumer spins, parks and is
// woken through the parked flag; every record arrives once, in order, intact.
TEST(EventRing, TwoThreadStress) {
  auto region = RingRegion::create(1 << 14, 4096);
  ASSERT_TRUE(region.is_ok());
  SpscRing& producer = region->forward();
  auto attached = RingRegion::attach(dup(region->fd()));
  ASSERT_TRUE(attached.is_ok());
  SpscRing& consumer = attached->forward();
  constexpr uint64_t kRecords = 100000;
  std::atomic<uint64_t> wakes{0};
  std::atomic<bool> woken{false};
  std::thread prod([&] {
    for (uint64_t i = 0; i < kRecords;) {
      if (producer.try_write(1, i, i, {payload_for(i)})) {
        ++i;
        if (i % 16 == 0 && producer.publish()) {
          wakes.fetch_add(1);
          woken.store(true);
        }
      } else if (producer.publish()) {
        wakes.fetch_add(1);
        woken.store(true);
      }
    }
    if (producer.publish()) woken.store(true);
  });
  uint64_t next = 0;
  bool ok = true;
  while (next < kRecords && ok) {
    RecordView v;
    int n = 0;
    while (ok && consumer.peek(&v)) {
      ok = v.header.seq == next && v.payload == payload_for(next);
      consumer.advance();
      ++next;
      if (++n == 64) break;
    }
    consumer.release();
    if (n == 0 && consumer.park()) {
      while (!woken.exchange(false)) std::this_thread::yield();
    }
  }
  prod.join();
  EXPECT_TRUE(ok) << "record " << next - 1 << " out of order or torn";
  EXPECT_EQ(next, kRecords);
  EXPECT_FALSE(consumer.corrupt());
}

}  // namespace
}  // namespace pgwarden::protocol
