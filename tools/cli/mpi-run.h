// `llmthreads run` across MPI ranks (`mpirun -n K llmthreads run ...`, `srun llmthreads run ...`):
// one engine per rank, one output file written by rank 0, byte for byte what one process writes.
//
// Rank 0 opens the input and the resumable output exactly as run_batch() does (so resume, the
// fingerprint and "already complete" are the same), and hands out input lines, unparsed, in
// chunks on demand: a rank asks for more when its queue runs low, so a slow or busy rank gets
// less (guided scheduling: a chunk is at most half the rank's window and at most the unassigned
// rest / 2K, so the tail is spread over every rank). Every rank (rank 0 too, on a thread of its
// job) parses its lines, runs them through its own Job (splitting, threads, merges, priorities:
// the same TaskSpec), renders each result into its output line and sends the lines back; rank 0
// puts them into the one OutputWriter, which orders them and makes them durable in batches. A
// result line depends only on the record and the document's result (batch invariance makes that
// independent of what shared a step with it), never on the rank, so 1, 2 or K ranks write the
// same bytes, and a run may be resumed with another K (the fingerprint has no rank count).
// Engine flags (--threads, --max-running, --window, ...) may differ per rank (MPMD command
// lines); the job parameters (the fingerprint) must agree, or the job stops naming the rank.
//
// Faults: a rank's own fatal error (e.g. no model on its node) ends the job with that error
// naming the rank and host; a rank that dies is reported by the launcher (Open MPI's mpirun names
// the rank and node), which then stops every rank: rank 0 takes the SIGTERM, makes what is
// complete durable at once and exits; rerunning resumes after the last durable line. Signals:
// rank 0's first signal (or one forwarded by another rank) flushes durable output at once, stops
// handing out lines and lets the documents in flight finish for up to --grace; a second signal
// or the end of the grace cancels them. (mpirun's own Ctrl-C sends SIGTERM to every rank and
// SIGKILL 1 s later: the immediate flush is what keeps the output durable then.)
//
// MPI is used by the main thread only (MPI_THREAD_FUNNELED), with non-blocking sends and probes,
// so no rank spins in a blocking call while its engine computes.
//
// Thread-safety: mpi_launch_size() any thread; run_batch_mpi() once per process, from its main
// thread, before any other thread exists (it installs the SignalWatcher, then MPI_Init).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>

#include "batch-run.h"

namespace llmt::cli {

// Whether this process was started by an MPI launcher: 0 no; else the number of ranks, or -1
// when the launcher does not say (PMIx). Read from the environment (Open MPI's mpirun,
// MPICH/Hydra and Slurm's srun with PMI/PMI2/PMIx), without initializing MPI.
inline int mpi_launch_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* s = std::getenv(v); s && *s) return std::max(1, std::atoi(s));
  }
  if (const char* s = std::getenv("PMIX_RANK"); s && *s) return -1;
  return 0;
}

#if LLMT_HAVE_MPI
// Runs the job across the ranks (see the top of this file); returns this rank's exit code (rank
// 0: as run_batch(); others 0, or 1 after their own fatal error).
int run_batch_mpi(const BatchRunOptions& opt);
#endif

}  // namespace llmt::cli
