//! The MPI collective (cargo feature `mpi`, through rsmpi and the system's MPI library): one
//! replica per process, started by `mpirun`/`srun`; MPI gives the rank, the size and the local
//! rank, and carries the sums.
//!
//! A sum is an `MPI_Allgather` of every rank's values followed by the sum in rank order on each
//! rank, not an `MPI_Allreduce`: MPI does not fix the order of a reduction (Open MPI's choice
//! depends on the message size and the process layout), and a fixed order gives every rank the
//! same bits and a run the same result at every launch, as the host collective does. It moves
//! R × n values per rank instead of about 2n: the price of reproducibility, small at the world
//! sizes of CPU runs; the gradient buckets ([`crate::optim`]) keep it to one call per step.
//!
//! MPI is initialised by [`init`] (the front end calls it once, first) and finalised when the
//! [`Session`] it returns is dropped. A rank that fails calls `MPI_Abort`, which ends every rank
//! of the job (no rank waits on a dead peer); the checkpoints, written atomically by rank 0,
//! stay intact.

use crate::{Error, Result};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// This process's place in the MPI job.
pub struct MpiWorld {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    local_rank: usize,
    completed: AtomicU64,
}

// SAFETY: MPI is initialised with `Threading::Serialized` or more ([`init`] refuses less), and
// every call on the communicator is made under its mutex, so no two threads call MPI at once.
unsafe impl Send for MpiWorld {}
// SAFETY: as for `Send`: shared access reaches MPI only through the mutex.
unsafe impl Sync for MpiWorld {}

impl std::fmt::Debug for MpiWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MpiWorld {{ rank: {}, size: {}, local rank: {} }}",
            self.rank, self.size, self.local_rank
        )
    }
}

/// MPI while it is initialised: dropping it finalises MPI.
pub struct Session {
    _universe: mpi::environment::Universe,
}

static WORLD: OnceLock<Arc<MpiWorld>> = OnceLock::new();

/// Whether this process was started by an MPI launcher: Open MPI's `mpirun`
/// (`OMPI_COMM_WORLD_SIZE`), a PMI launcher such as MPICH's or Slurm's `srun --mpi=pmi2`
/// (`PMI_SIZE`), or PMIx (`srun --mpi=pmix`, `PMIX_RANK`).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// The rank of this process among those of its node: the launcher's variable
/// (`OMPI_COMM_WORLD_LOCAL_RANK`, `MPI_LOCALRANKID`, `SLURM_LOCALID`), else 0.
fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

/// Initialise MPI when the process was started by an MPI launcher ([`launched_by_mpi`]);
/// `None` otherwise (a plain run, one process). Call it once, before anything else uses MPI.
pub fn init() -> Result<Option<Session>> {
    if !launched_by_mpi() {
        return Ok(None);
    }
    let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        .ok_or_else(|| {
            Error::Mpi("MPI was already initialised in this process (init is called once)".into())
        })?;
    if threading < mpi::Threading::Serialized {
        return Err(Error::Mpi(format!(
            "the MPI library gives thread support {threading:?}; byol needs Serialized or more"
        )));
    }
    let comm = universe.world();
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let world = MpiWorld {
        comm: Mutex::new(comm),
        rank,
        size,
        local_rank: local_rank(),
        completed: AtomicU64::new(0),
    };
    WORLD
        .set(Arc::new(world))
        .map_err(|_| Error::Mpi("MPI was already initialised in this process".into()))?;
    Ok(Some(Session {
        _universe: universe,
    }))
}

/// The MPI world of this process, when [`init`] found one.
pub fn world() -> Option<Arc<MpiWorld>> {
    WORLD.get().cloned()
}

impl MpiWorld {
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The rank among the processes of this node (which GPU a rank takes: `cuda:<local rank>`).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// How many sums the world has completed.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    fn comm(&self) -> std::sync::MutexGuard<'_, SimpleCommunicator> {
        self.comm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every rank's `values` (of the same length on every rank), in rank order.
    fn gather<T: mpi::datatype::Equivalence + Default + Clone>(&self, values: &[T]) -> Vec<T> {
        let mut all = vec![T::default(); values.len() * self.size];
        self.comm().all_gather_into(values, &mut all[..]);
        all
    }

    /// Each rank's `value`, in rank order.
    pub fn gather_u64(&self, value: u64) -> Vec<u64> {
        self.gather(&[value])
    }

    /// Rank 0's `value`, on every rank.
    pub fn broadcast_u64(&self, value: u64) -> u64 {
        let mut v = value;
        let comm = self.comm();
        comm.process_at_rank(0).broadcast_into(&mut v);
        v
    }

    /// End every process of the job: print `reason` and call `MPI_Abort`.
    pub fn abort(&self, reason: &str) -> ! {
        tracing::error!(
            "MPI rank {} of {}: {reason}; ending every rank of the job",
            self.rank,
            self.size
        );
        self.comm().abort(1)
    }
}

impl super::Summer for MpiWorld {
    /// # Panics
    /// When the ranks' lengths differ (their models differ): a bug, reported before the sum.
    fn sum(&self, rank: usize, values: Vec<f32>) -> Arc<Vec<f32>> {
        debug_assert_eq!(rank, self.rank);
        let n = values.len();
        let lengths = self.gather(&[n as u64]);
        if let Some(other) = lengths.iter().position(|&l| l != n as u64) {
            self.abort(&format!(
                "rank {} sends {n} values to a sum and rank {other} {}: the ranks' models differ",
                self.rank, lengths[other]
            ));
        }
        let all = self.gather(&values);
        let mut sum = all[..n].to_vec();
        for r in 1..self.size {
            for (a, b) in sum.iter_mut().zip(&all[r * n..(r + 1) * n]) {
                *a += b;
            }
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        Arc::new(sum)
    }
}
