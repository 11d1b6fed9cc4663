// poseidon-run: starts N ranks of a program on this host for a Poseidon job (see
// include/poseidon/comm/launcher.hpp for the logic and docs/transport.md for mpirun and srun).
#include <poseidon/comm/launcher.hpp>

int main(int argc, char** argv) { return poseidon::launcher_main(argc, argv); }
