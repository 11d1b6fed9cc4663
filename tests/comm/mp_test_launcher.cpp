// poseidon-run and multi-process jobs: output prefixes, failure propagation, Ctrl-C forwarding,
// a rank killed by SIGKILL mid-exchange, and authenticated jobs with intruders (127.0.0.1 only).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

struct Result {
  int status = -1;  // exit code, or 128 + signal
  std::string output;
};

// Runs argv with extra environment, stdout and stderr merged; kills it if it outlives `limit`.
Result run(std::vector<std::string> argv, std::vector<std::string> env = {}, int signal_when_ready = 0,
           std::vector<std::string> ready_markers = {}, std::chrono::seconds limit = std::chrono::seconds(90)) {
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    ::close(pipefd[0]);
    for (auto& e : env) ::putenv(e.data());
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  Result res;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool signalled = false;
  for (;;) {
    pollfd p{pipefd[0], POLLIN, 0};
    ::poll(&p, 1, 200);
    if (p.revents) {
      char buf[4096];
      const ssize_t n = ::read(pipefd[0], buf, sizeof buf);
      if (n <= 0) break;
      res.output.append(buf, static_cast<std::size_t>(n));
    }
    bool ready = signal_when_ready != 0 && !signalled;
    for (const auto& m : ready_markers) ready = ready && res.output.find(m) != std::string::npos;
    if (ready) {
      ::kill(pid, signal_when_ready);
      signalled = true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      res.output += "\n<test harness: killed the launcher at its time limit>\n";
      break;
    }
  }
  ::close(pipefd[0]);
  int ws = 0;
  ::waitpid(pid, &ws, 0);
  res.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
  return res;
}

bool has(const Result& r, const std::string& s) { return r.output.find(s) != std::string::npos; }

// Joins the parts (GCC 12 warns falsely about "literal" + std::to_string(...)).
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string s;
  (s.append(parts), ...);
  return s;
}

const std::vector<std::string> fast_deadlines{"POSEIDON_RENDEZVOUS_TIMEOUT=30", "POSEIDON_MESSAGE_TIMEOUT=100"};

}  // namespace

TEST_CASE("poseidon-run: every rank runs with its environment, output prefixed by rank") {
  auto r = run({POSEIDON_RUN_PATH, "-n", "3", "--", "sh", "-c",
                "echo \"out $POSEIDON_RANK/$POSEIDON_WORLD_SIZE $POSEIDON_MASTER\"; echo err-$POSEIDON_RANK >&2; "
                "printf no-newline"});
  CAPTURE(r.output);
  CHECK(r.status == 0);
  for (int k = 0; k < 3; ++k) {
    const auto ks = std::to_string(k);
    CHECK(has(r, cat("[", ks, "] out ", ks, "/3 127.0.0.1:")));
    CHECK(has(r, cat("[", ks, "] err-", ks, "\n")));
    CHECK(has(r, cat("[", ks, "] no-newline\n")));
  }
}

TEST_CASE("poseidon-run: a failing rank stops the others and its status is the launcher's") {
  auto r = run({POSEIDON_RUN_PATH, "-n", "3", "--grace", "0.2", "--", "sh", "-c",
                "if [ $POSEIDON_RANK = 1 ]; then exit 7; fi; sleep 60"});
  CAPTURE(r.output);
  CHECK(r.status == 7);
  CHECK(has(r, "poseidon-run: rank 1 exited with status 7; stopping the other ranks"));
  CHECK(has(r, "poseidon-run: rank 0 was killed by signal 15"));
  CHECK(has(r, "poseidon-run: rank 2 was killed by signal 15"));
}

TEST_CASE("poseidon-run: Ctrl-C is forwarded to every rank") {
  auto r = run({POSEIDON_RUN_PATH, "-n", "2", "--", "sh", "-c",
                "trap 'echo got-INT; exit 0' INT; echo ready; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"},
               {}, SIGINT, {"[0] ready", "[1] ready"});  // both traps are set
  CAPTURE(r.output);
  CHECK(has(r, "[0] got-INT"));
  CHECK(has(r, "[1] got-INT"));
  CHECK(r.status == 130);  // interrupted, even though the ranks exited cleanly
}

TEST_CASE("poseidon-run: usage errors") {
  CHECK(run({POSEIDON_RUN_PATH, "--", "true"}).status == 2);
  auto r = run({POSEIDON_RUN_PATH, "-n", "0", "true"});
  CHECK(r.status == 2);
  CHECK(has(r, "-n expects a rank count"));
  r = run({POSEIDON_RUN_PATH, "-n", "1", "/nonexistent/program"});
  CHECK(r.status == 127);
  CHECK(has(r, "[0] poseidon-run: cannot run /nonexistent/program"));
}

TEST_CASE("SIGKILL mid-exchange: every other rank exits non-zero naming the dead rank") {
  // The message deadline (100 s) is far beyond the launcher's grace (30 s): only the control
  // channel can make the survivors exit on their own, which "exited with status 3" proves.
  for (const auto& [n, victim] : {std::pair{"4", "2"}, std::pair{"2", "0"}}) {
    CAPTURE(n);
    auto r = run({POSEIDON_RUN_PATH, "-n", n, "--grace", "30", "--", POSEIDON_MP_WORKER, "sigkill", victim},
                 fast_deadlines);
    CAPTURE(r.output);
    CHECK(r.status == 128 + SIGKILL);
    CHECK(has(r, cat("poseidon-run: rank ", victim, " was killed by signal 9")));
    for (int k = 0; k < std::atoi(n); ++k) {
      if (k == std::atoi(victim)) continue;
      const auto ks = std::to_string(k);
      CHECK(has(r, cat("[", ks, "] rank ", ks, ": FAILED: rank ", ks, ": rank ", victim, " died")));
      CHECK(has(r, cat("poseidon-run: rank ", ks, " exited with status 3")));
    }
  }
}

TEST_CASE("authenticated job: intruders with a wrong or no token are refused and logged; the job runs") {
  auto env = fast_deadlines;
  env.emplace_back("POSEIDON_JOB_TOKEN=correct horse battery staple");
  auto r = run({POSEIDON_RUN_PATH, "-n", "2", "--", POSEIDON_MP_WORKER, "auth"}, env);
  CAPTURE(r.output);
  CHECK(r.status == 0);
  CHECK(has(r, "[1] rank 1: intruders refused"));
  CHECK(has(r, "[0] poseidon[rank 0]: refused a join from 127.0.0.1:"));
  CHECK(has(r, "claims rank 1: wrong job token proof"));
  CHECK(has(r, "[0] rank 0: auth ok"));
  CHECK(has(r, "[1] rank 1: auth ok"));
}

TEST_CASE("a rank with the wrong token is refused and the job fails cleanly, naming it") {
  auto r = run({POSEIDON_RUN_PATH, "-n", "2", "--grace", "5", "--", "sh", "-c",
                "if [ $POSEIDON_RANK = 1 ]; then export POSEIDON_JOB_TOKEN=wrong; fi; exec " POSEIDON_MP_WORKER
                " exchange"},
               {"POSEIDON_JOB_TOKEN=right", "POSEIDON_RENDEZVOUS_TIMEOUT=3", "POSEIDON_MESSAGE_TIMEOUT=5"});
  CAPTURE(r.output);
  CHECK(r.status == 3);
  CHECK(has(r, "[1] rank 1: FAILED: rank 1: rank 0 at 127.0.0.1:"));
  CHECK(has(r, "refused this rank: authentication failed"));
}
