#pragma once

// The processes of one run started by an MPI launcher (`mpirun -n N`, Slurm's `srun`): OpenMPI, optional at
// build time (HUSAI_HAVE_MPI). Without a launcher, or without MPI support, husai is one process of one:
// rank() == 0, size() == 1, and every function below is a no-op, so callers need no #ifdef.
//
// Ranks share ROOT on a filesystem every rank sees (docs/cluster.md); they exchange only small messages
// (statuses, error lines), never tensors.

#include <string>
#include <vector>

#include "husai/core/error.hpp"

namespace husai::cluster {

// Starts MPI when this process was launched by an MPI launcher (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK or
// PMI_SIZE in the environment) and husai was built with MPI, and finalises it when destroyed. Throws
// husai::Error when a launcher started more than one process but husai was built without MPI (each process
// would otherwise do the whole run into the same folders).
class Session {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

bool built_with_mpi();
int rank();
int size();
inline bool active() {
  return size() > 1;
}

// Every rank's string, in rank order: a collective that every rank must reach (e.g. each rank's error
// message after a piece of work, empty when it succeeded).
std::vector<std::string> all_gather(const std::string& mine);

// Rank 0's string on every rank (a collective; the other ranks' arguments are ignored).
std::string broadcast(const std::string& from_root);

// In place: rank q holds bytes [offsets[q], offsets[q + 1]) of `buf` (offsets.size() == size() + 1); after
// the call every rank holds every rank's segment (a collective).
void all_gather_segments(void* buf, const std::vector<int64_t>& offsets);

// True on every rank when `mine` is true on any rank (a collective): e.g. a stop request seen by one rank.
bool any(bool mine);

// Prints "husai: error: rank R of N" + `rest` on one line and ends every rank at once with exit code 1
// (MPI_Abort): for a failure one rank alone meets while the others wait in a collective. As one process:
// std::exit(1).
[[noreturn]] void abort_all(const std::string& rest);

// Serving: under `husai experiment` and `husai demo` only rank 0 runs the command; every other rank waits for
// the work rank 0 announces with broadcast() (train_sae's calls: husai/train/sae_run.hpp) and takes its
// share. Rank 0 sets serving while the others wait, so that train_sae knows to announce itself.
void set_serving(bool on);
bool serving();

// A failure every rank has learnt of through all_gather: rank 0 reports it, the others exit non-zero
// without printing it again.
class RankFailure : public Error {
 public:
  using Error::Error;
};

// Runs work() on every rank, then exchanges the outcomes: when any rank threw, every rank throws the same
// RankFailure "rank R of N (what): reason" naming the lowest failing rank (and how many others failed).
// `what` describes this rank's share of the work (e.g. "seeds 3, 5").
template <typename Work>
void run_on_every_rank(const std::string& what, const Work& work) {
  if (!active()) {
    work();
    return;
  }
  std::string error;
  try {
    work();
  } catch (const Error& e) {
    error = e.message().empty() ? "unknown error" : e.message();
  } catch (const std::exception& e) {
    error = *e.what() != '\0' ? e.what() : "unknown error";
  } catch (...) {
    error = "unknown error";
  }
  const std::vector<std::string> shares = all_gather(what);
  const std::vector<std::string> errors = all_gather(error);
  int failed = 0;
  int first = -1;
  for (int r = 0; r < static_cast<int>(errors.size()); ++r) {
    if (errors[static_cast<size_t>(r)].empty()) continue;
    ++failed;
    if (first < 0) first = r;
  }
  if (failed == 0) return;
  const auto f = static_cast<size_t>(first);
  std::string msg = "rank " + std::to_string(first) + " of " + std::to_string(size()) + " (" + shares[f] +
                    "): " + errors[f];
  if (failed > 1) msg += " (and " + std::to_string(failed - 1) + " other rank(s) failed)";
  throw RankFailure(msg);
}

}  // namespace husai::cluster
