#include "husai/core/cluster.hpp"

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>

#if defined(HUSAI_HAVE_MPI)
#include <mpi.h>
#endif

namespace husai::cluster {
namespace {

int g_rank = 0;
int g_size = 1;
bool g_started = false;

#if !defined(HUSAI_HAVE_MPI)
// The number of processes a launcher says it started, 0 when none did.
int launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return std::atoi(v);
  }
  return std::getenv("PMIX_RANK") != nullptr || std::getenv("PMI_RANK") != nullptr ? 1 : 0;
}
#endif

// Launched by an MPI launcher (srun sets SLURM_NTASKS in every job step, so it alone does not count).
bool under_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

}  // namespace

bool built_with_mpi() {
#if defined(HUSAI_HAVE_MPI)
  return true;
#else
  return false;
#endif
}

Session::Session() {
  if (!under_launcher()) return;
#if defined(HUSAI_HAVE_MPI)
  int provided = 0;
  // Only the main thread calls MPI; OpenMP threads never do.
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_started = true;
#else
  const int n = launcher_size();
  if (n > 1) {
    throw Error("started as one of " + std::to_string(n) +
                " processes by an MPI launcher, but this husai was built without MPI: every process would do "
                "the whole run into the same folders. Install libopenmpi-dev and rebuild (cmake finds it), "
                "or run one process");
  }
#endif
}

Session::~Session() {
#if defined(HUSAI_HAVE_MPI)
  if (g_started) MPI_Finalize();
#endif
  g_started = false;
  g_rank = 0;
  g_size = 1;
}

bool g_serving = false;

void set_serving(bool on) {
  g_serving = on;
}

bool serving() {
  return g_serving;
}

std::string broadcast(const std::string& from_root) {
#if defined(HUSAI_HAVE_MPI)
  if (g_started && g_size > 1) {
    int len = g_rank == 0 ? static_cast<int>(from_root.size()) : 0;
    MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
    std::string out = g_rank == 0 ? from_root : std::string(static_cast<size_t>(len), '\0');
    MPI_Bcast(out.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
    return out;
  }
#endif
  return from_root;
}

void all_gather_segments(void* buf, const std::vector<int64_t>& offsets) {
#if defined(HUSAI_HAVE_MPI)
  if (g_started && g_size > 1) {
    std::vector<int> counts(static_cast<size_t>(g_size)), displs(static_cast<size_t>(g_size));
    if (offsets.back() > std::numeric_limits<int>::max()) {
      throw Error("a rank exchange of " + std::to_string(offsets.back()) +
                  " bytes exceeds MPI's 2 GiB message limit; use a smaller batch");
    }
    for (int r = 0; r < g_size; ++r) {
      const auto i = static_cast<size_t>(r);
      displs[i] = static_cast<int>(offsets[i]);
      counts[i] = static_cast<int>(offsets[i + 1] - offsets[i]);
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_BYTE, buf, counts.data(), displs.data(), MPI_BYTE, MPI_COMM_WORLD);
  }
#else
  (void)buf;
  (void)offsets;
#endif
}

bool any(bool mine) {
#if defined(HUSAI_HAVE_MPI)
  if (g_started && g_size > 1) {
    int in = mine ? 1 : 0;
    int out = 0;
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return out != 0;
  }
#endif
  return mine;
}

void abort_all(const std::string& rest) {
  std::fprintf(stderr, "husai: error: rank %d of %d%s\n", g_rank, g_size, rest.c_str());
  std::fflush(stderr);
#if defined(HUSAI_HAVE_MPI)
  if (g_started && g_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::exit(1);
}

int rank() {
  return g_rank;
}

int size() {
  return g_size;
}

std::vector<std::string> all_gather(const std::string& mine) {
#if defined(HUSAI_HAVE_MPI)
  if (g_started && g_size > 1) {
    const int len = static_cast<int>(mine.size());
    std::vector<int> lens(static_cast<size_t>(g_size));
    MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
    std::vector<int> offsets(static_cast<size_t>(g_size), 0);
    for (int r = 1; r < g_size; ++r)
      offsets[static_cast<size_t>(r)] =
          offsets[static_cast<size_t>(r - 1)] + lens[static_cast<size_t>(r - 1)];
    std::string all(static_cast<size_t>(std::accumulate(lens.begin(), lens.end(), 0)), '\0');
    MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR,
                   MPI_COMM_WORLD);
    std::vector<std::string> out;
    out.reserve(static_cast<size_t>(g_size));
    for (int r = 0; r < g_size; ++r) {
      out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                               static_cast<size_t>(lens[static_cast<size_t>(r)])));
    }
    return out;
  }
#endif
  return {mine};
}

}  // namespace husai::cluster
