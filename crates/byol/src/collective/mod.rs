//! The one collective data-parallel training needs: a sum over the replicas of a group, the same
//! result on every replica, differentiable (its backward pass is the same sum of the gradients,
//! so that a loss that depends on other replicas' activations through it, as cross-replica
//! BatchNorm's does, gets the gradient of the sum of all replicas' losses).
//!
//! Three implementations behind [`Replica::all_reduce_sum`]:
//! - **host** ([`host`]): replicas are threads of this process; each sum goes through host memory,
//!   added in rank order (so every replica gets bit-identical values and a run is reproducible).
//!   Differentiable on `flex`, the CPU backend: several CPU replicas train together, which is how
//!   data parallelism is tested here.
//! - **MPI** ([`mpi`], feature `mpi`): one replica per process; the same host-memory sum in rank
//!   order, the values carried by MPI. Differentiable on `flex` and, staged through host memory
//!   (device → host → MPI → device), on the GPU backends (`cuda`, `wgpu`).
//! - **burn** (`cuda`): `burn::tensor::distributed::all_reduce`, NCCL inside one process, one
//!   thread per GPU; burn's autodiff makes it differentiable the same way.
//!
//! A replica's thread is told which group it belongs to by [`Replica::enter`] (the training loop
//! does it around each step): cross-replica BatchNorm ([`current_sync_bn`]), the gradient average
//! and the loss average find it there, so that the model code takes no extra argument.

pub mod host;
#[cfg(feature = "mpi")]
pub mod mpi;

#[cfg(feature = "cuda")]
use burn::tensor::Device;
use burn::tensor::Tensor;
use std::cell::RefCell;
use std::sync::Arc;

/// A sum over a group in host memory: every member calls `sum` with its rank and its values (of
/// the same length), in the same order, and gets Σ over the members in rank order, the same bits
/// on every member.
pub trait Summer: Send + Sync + std::fmt::Debug {
    fn sum(&self, rank: usize, values: Vec<f32>) -> Arc<Vec<f32>>;
}

/// How the replicas of a group exchange values.
enum Link {
    Host(Arc<host::HostGroup>),
    /// One replica per process, linked by MPI.
    #[cfg(feature = "mpi")]
    Mpi(Arc<mpi::MpiWorld>),
    #[cfg(feature = "cuda")]
    Burn(Arc<BurnGroup>),
}

/// burn's collectives: the devices of the group and the communication server they share (closed
/// when the last replica drops it).
#[cfg(feature = "cuda")]
struct BurnGroup {
    devices: Vec<Device>,
    _context: burn::tensor::distributed::DistributedContext,
}

/// One member of a group of replicas: its rank, the group's size and the link between them.
#[derive(Clone)]
pub struct Replica {
    rank: usize,
    replicas: usize,
    link: Arc<Link>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Replica {{ rank: {}, of: {} }}",
            self.rank, self.replicas
        )
    }
}

/// The replicas of a group of `n` threads of this process linked by the host collective.
pub fn host_group(n: usize) -> Vec<Replica> {
    let link = Arc::new(Link::Host(Arc::new(host::HostGroup::new(n))));
    (0..n)
        .map(|rank| Replica {
            rank,
            replicas: n,
            link: link.clone(),
        })
        .collect()
}

/// This process's rank and the number of processes of the run: (0, 1), unless the process is
/// one of an MPI world (a build with the `mpi` feature, started by `mpirun` or `srun`).
pub fn process_rank_and_count() -> (usize, usize) {
    #[cfg(feature = "mpi")]
    if let Some(w) = mpi::world() {
        return (w.rank(), w.size());
    }
    (0, 1)
}

/// This process's replica in the MPI world (one replica per process, rank and size MPI's).
#[cfg(feature = "mpi")]
pub fn mpi_replica(world: Arc<mpi::MpiWorld>) -> Replica {
    Replica {
        rank: world.rank(),
        replicas: world.size(),
        link: Arc::new(Link::Mpi(world)),
    }
}

/// The replicas of a group over `devices` (one each) linked by burn's collectives (NCCL).
#[cfg(feature = "cuda")]
pub fn burn_group(devices: Vec<Device>) -> Vec<Replica> {
    use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
    let n = devices.len();
    let context = DistributedContext::init(
        devices.clone(),
        DistributedConfig {
            all_reduce_op: ReduceOperation::Mean,
        },
    );
    let link = Arc::new(Link::Burn(Arc::new(BurnGroup {
        devices,
        _context: context,
    })));
    (0..n)
        .map(|rank| Replica {
            rank,
            replicas: n,
            link: link.clone(),
        })
        .collect()
}

impl Replica {
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of replicas in the group.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Σ over the group's replicas of `x` (same shape on every replica), on every replica.
    /// Differentiable when `x` is tracked by autodiff. Every replica must call it, in the same
    /// order; a replica that failed breaks the group and the others panic here, naming it.
    pub fn all_reduce_sum<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &*self.link {
            Link::Host(g) => host::all_reduce_sum(&(g.clone() as Arc<dyn Summer>), self.rank, x),
            #[cfg(feature = "mpi")]
            Link::Mpi(w) => host::all_reduce_sum(&(w.clone() as Arc<dyn Summer>), self.rank, x),
            #[cfg(feature = "cuda")]
            Link::Burn(g) => {
                use burn::tensor::distributed::{ReduceOperation, all_reduce};
                all_reduce(x, ReduceOperation::Sum, g.devices.clone()).resolve()
            }
        }
    }

    /// How many all-reduces the group has completed (the host collective counts them; `None`
    /// for burn's).
    pub fn completed(&self) -> Option<u64> {
        match &*self.link {
            Link::Host(g) => Some(g.completed()),
            #[cfg(feature = "mpi")]
            Link::Mpi(w) => Some(w.completed()),
            #[cfg(feature = "cuda")]
            Link::Burn(_) => None,
        }
    }

    /// The mean over the group of `x`.
    pub fn all_reduce_mean<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.all_reduce_sum(x).div_scalar(self.replicas as f64)
    }

    /// Break the group: every replica waiting in a collective, now or later, panics with
    /// `reason` instead of waiting for this one. (burn's collectives have no such call: a failed
    /// GPU replica ends the process.)
    pub fn fail(&self, reason: &str) {
        match &*self.link {
            Link::Host(g) => g.fail(self.rank, reason),
            #[cfg(feature = "mpi")]
            Link::Mpi(w) => w.abort(&format!("rank {} failed: {reason}", self.rank)),
            #[cfg(feature = "cuda")]
            Link::Burn(_) => {}
        }
    }

    /// Make this thread replica `self` until the guard is dropped; `sync_bn`: whether
    /// training-mode BatchNorm uses the statistics of the whole group.
    pub fn enter(&self, sync_bn: bool) -> Entered {
        CURRENT.with(|c| *c.borrow_mut() = Some((self.clone(), sync_bn)));
        Entered(())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<(Replica, bool)>> = const { RefCell::new(None) };
}

/// While alive, this thread is a replica (see [`Replica::enter`]).
pub struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// The replica this thread is, when it is one of a group of several.
pub fn current() -> Option<Replica> {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(r, _)| r.replicas > 1)
            .map(|(r, _)| r.clone())
    })
}

/// The replica this thread is, when its BatchNorm layers are to use the group's statistics.
pub fn current_sync_bn() -> Option<Replica> {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(r, sync)| *sync && r.replicas > 1)
            .map(|(r, _)| r.clone())
    })
}
