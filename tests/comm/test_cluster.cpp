// Cluster::from_env: every launcher convention, precedence, and errors that name the variable.
#include <doctest/doctest.h>
#include <poseidon/comm/cluster.hpp>

#include <map>
#include <string>

namespace pd = poseidon;

namespace {
pd::Cluster from(const std::map<std::string, std::string>& env) {
  return pd::Cluster::from_env([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}
std::string error_of(const std::map<std::string, std::string>& env) {
  try {
    from(env);
  } catch (const pd::Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("nothing set: a world of one") {
  const auto c = from({});
  CHECK(c.rank == 0);
  CHECK(c.size() == 1);
  CHECK(c.provider == "tcp");
  CHECK(c.deadlines.rendezvous == std::chrono::seconds(120));
  CHECK(c.deadlines.message == std::chrono::seconds(60));
  CHECK(c.job_token.empty());
  CHECK_FALSE(c.payload_checksum.has_value());
}

TEST_CASE("POSEIDON_* variables") {
  const auto c = from({{"POSEIDON_RANK", "2"},
                       {"POSEIDON_WORLD_SIZE", "4"},
                       {"POSEIDON_MASTER", "10.0.0.7:1234"},
                       {"POSEIDON_PROVIDER", "verbs"},
                       {"POSEIDON_IFACE", "ib0"},
                       {"POSEIDON_JOB_TOKEN", "s3cret"},
                       {"POSEIDON_RENDEZVOUS_TIMEOUT", "2.5"},
                       {"POSEIDON_MESSAGE_TIMEOUT", "3"},
                       {"POSEIDON_PAYLOAD_CHECKSUM", "on"}});
  CHECK(c.rank == 2);
  CHECK(c.size() == 4);
  CHECK(c.master_host == "10.0.0.7");
  CHECK(c.master_port == 1234);
  CHECK(c.provider == "verbs");
  CHECK(c.iface == "ib0");
  CHECK(c.job_token == "s3cret");
  CHECK(c.deadlines.rendezvous == std::chrono::milliseconds(2500));
  CHECK(c.deadlines.message == std::chrono::seconds(3));
  CHECK(c.payload_checksum == true);
  CHECK(c.source == "POSEIDON_*");
  for (const char* on : {"1", "on", "true", "yes"}) CHECK(from({{"POSEIDON_PAYLOAD_CHECKSUM", on}}).payload_checksum == true);
  for (const char* off : {"0", "off", "false", "no"})
    CHECK(from({{"POSEIDON_PAYLOAD_CHECKSUM", off}}).payload_checksum == false);
}

TEST_CASE("torchrun, mpirun and srun conventions") {
  auto c = from({{"RANK", "1"}, {"WORLD_SIZE", "3"}, {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29400"},
                 {"LOCAL_RANK", "1"}});
  CHECK(c.rank == 1);
  CHECK(c.size() == 3);
  CHECK(c.master_host == "node0");
  CHECK(c.master_port == 29400);
  CHECK(c.local_rank == 1);
  CHECK(c.source == "torchrun");

  c = from({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"}, {"POSEIDON_MASTER", "h:1"}});
  CHECK(c.rank == 5);
  CHECK(c.size() == 8);
  CHECK(c.source == "mpirun (Open MPI)");

  c = from({{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"POSEIDON_MASTER", "h:1"}});
  CHECK(c.size() == 2);
  CHECK(c.source == "mpirun (PMI)");

  c = from({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "1"}, {"POSEIDON_MASTER", "[::1]:9"}});
  CHECK(c.rank == 3);
  CHECK(c.local_rank == 1);
  CHECK(c.master_host == "::1");
  CHECK(c.source == "srun");
}

TEST_CASE("POSEIDON_* wins over the launchers' variables") {
  const auto c = from({{"POSEIDON_RANK", "0"}, {"POSEIDON_WORLD_SIZE", "2"}, {"RANK", "1"}, {"WORLD_SIZE", "9"},
                       {"POSEIDON_MASTER", "a:5"}, {"MASTER_ADDR", "b"}});
  CHECK(c.size() == 2);
  CHECK(c.rank == 0);
  CHECK(c.master_host == "a");
}

TEST_CASE("bad environments fail with the variable's name") {
  CHECK(error_of({{"POSEIDON_RANK", "x"}, {"POSEIDON_WORLD_SIZE", "2"}, {"POSEIDON_MASTER", "h:1"}})
            .find("POSEIDON_RANK=\"x\" is not an integer") != std::string::npos);
  CHECK(error_of({{"POSEIDON_RANK", "2"}, {"POSEIDON_WORLD_SIZE", "2"}, {"POSEIDON_MASTER", "h:1"}})
            .find("POSEIDON_RANK=2 is outside [0, 1]") != std::string::npos);
  CHECK(error_of({{"RANK", "0"}}).find("WORLD_SIZE is not set") != std::string::npos);
  CHECK(error_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}).find("set POSEIDON_MASTER") != std::string::npos);
  CHECK(error_of({{"POSEIDON_MASTER", "nohost"}}).find("must be host:port") != std::string::npos);
  CHECK(error_of({{"POSEIDON_MASTER", "h:70000"}}).find("POSEIDON_MASTER=70000") != std::string::npos);
  CHECK(error_of({{"POSEIDON_MESSAGE_TIMEOUT", "-1"}}).find("positive number of seconds") != std::string::npos);
  CHECK(error_of({{"POSEIDON_PAYLOAD_CHECKSUM", "maybe"}}).find("POSEIDON_PAYLOAD_CHECKSUM=\"maybe\" is not one of") !=
        std::string::npos);
}
