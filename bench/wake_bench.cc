// What one cross-process hand-off costs on this machine: the floor under pgwarden's
// write-ahead path (docs/benchmarks.md, "The cost of a hand-off to pgwarden-cp").
//
// Two processes pass a token back and forth and sleep in between, as pgwarden-dp and
// pgwarden-cp do for every write-ahead record (dp publishes, writes cp's eventfd and sleeps in
// epoll_wait; cp wakes, writes dp's eventfd). Reported per round trip: wall time and the CPU
// time of both processes together (user + system, from getrusage of the parent and the
// reaped child). Variants:
//   BM_EventfdRoundTrip   eventfd write + epoll_wait on both sides (pgwarden's mechanism)
//   BM_TcpRoundTrip       one byte each way over loopback TCP with epoll (one proxy hop of a
//                         statement, what pgbouncer pays twice per statement)
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <functional>

namespace {

double cpu_seconds(const rusage& r) {
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

// Blocks in epoll_wait until `fd` is readable (the way both pgwarden processes sleep).
void wait_readable(int ep) {
  epoll_event ev;
  while (epoll_wait(ep, &ev, 1, -1) != 1) {
  }
}

int epoll_on(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) std::abort();
  return ep;
}

// Runs `rounds` round trips: `ping` in the parent, `pong` in a forked child. Sets the
// counters from the parent's and the child's CPU time.
void run_pair(benchmark::State& state, const std::function<void(int64_t)>& ping,
              const std::function<void(int64_t)>& pong) {
  const int64_t rounds = state.range(0);
  for (auto _ : state) {
    rusage self0{};
    getrusage(RUSAGE_SELF, &self0);
    pid_t child = fork();
    if (child == 0) {
      pong(rounds);
      _exit(0);
    }
    ping(rounds);
    int status = 0;
    rusage child_usage{};
    wait4(child, &status, 0, &child_usage);
    rusage self1{};
    getrusage(RUSAGE_SELF, &self1);
    const double cpu = cpu_seconds(self1) - cpu_seconds(self0) + cpu_seconds(child_usage);
    state.counters["cpu_us_per_round_trip"] = cpu * 1e6 / static_cast<double>(rounds);
  }
  state.counters["round_trips_per_s"] =
      benchmark::Counter(static_cast<double>(rounds) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void BM_EventfdRoundTrip(benchmark::State& state) {
  // Edge-triggered-like use: each side reads its eventfd after waking (counter reset).
  int to_child = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int to_parent = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  auto side = [](int in, int out, bool first) {
    return [in, out, first](int64_t rounds) {
      int ep = epoll_on(in);
      uint64_t v = 1;
      for (int64_t i = 0; i < rounds; ++i) {
        if (first) (void)!write(out, &v, sizeof v);
        wait_readable(ep);
        (void)!read(in, &v, sizeof v);
        v = 1;
        if (!first) (void)!write(out, &v, sizeof v);
      }
      close(ep);
    };
  };
  run_pair(state, side(to_parent, to_child, true), side(to_child, to_parent, false));
  close(to_child);
  close(to_parent);
}
BENCHMARK(BM_EventfdRoundTrip)->Arg(20000)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_TcpRoundTrip(benchmark::State& state) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    state.SkipWithError("loopback listener");
    return;
  }
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    state.SkipWithError("connect");
    return;
  }
  int server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  int one = 1;
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto side = [](int fd, bool first) {
    return [fd, first](int64_t rounds) {
      int ep = epoll_on(fd);
      char b = 'x';
      for (int64_t i = 0; i < rounds; ++i) {
        if (first) (void)!send(fd, &b, 1, 0);
        wait_readable(ep);
        (void)!recv(fd, &b, 1, 0);
        if (!first) (void)!send(fd, &b, 1, 0);
      }
      close(ep);
    };
  };
  run_pair(state, side(client, true), side(server, false));
  close(client);
  close(server);
  close(listener);
}
BENCHMARK(BM_TcpRoundTrip)->Arg(20000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
