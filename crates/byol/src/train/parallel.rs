//! Data parallel: one replica of the training state per device (`train.devices`), each taking
//! its slice of the global batch (rank r: images r·B/R … (r+1)·B/R − 1 of the batch a single
//! device would take), the gradients averaged over the replicas before the same optimizer step
//! on every replica, the target updated by EMA on each (its online weights are the same
//! everywhere, so it is too), and, with `model.sync-bn`, BatchNorm over the whole batch.
//!
//! Rank 0 runs on the caller's thread and is the state the loop logs, evaluates and
//! checkpoints; ranks 1… run on threads of their own. The replicas exchange values through
//! [`crate::collective`]: the host collective for CPU replicas on `flex`, burn's (NCCL) on `cuda`.
//! In a run on several processes (an MPI world, feature `mpi`) each process holds one replica,
//! its rank's share of the batch, and no threads ([`Replicas::mpi`]); rank 0's loop decides when
//! the run stops ([`Replicas::agree_continue`]) and the other ranks follow
//! ([`super::follow`]).

use super::TrainState;
use super::step::{Outcome, StepRule, guarded_step};
use crate::collective::Replica;
use crate::config::ExperimentConfig;
use crate::{Error, Result};
use burn::tensor::{Device, Tensor};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// One step's share of a replica.
struct Job {
    view1: Tensor<4>,
    view2: Tensor<4>,
    lr: f64,
    tau: f64,
}

/// A replica of rank ≥ 1 on its thread.
struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Result<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The replicas of a data-parallel run.
pub struct Replicas {
    lead: Replica,
    devices: Vec<Device>,
    sync_bn: bool,
    rule: StepRule,
    workers: Vec<Worker>,
}

/// A step of `replica` under its guard: a failure (an error or a panic) breaks the group so that
/// the other replicas stop waiting for it.
fn replica_step(
    replica: &Replica,
    sync_bn: bool,
    run: impl FnOnce() -> Result<Outcome>,
) -> Result<Outcome> {
    let _entered = replica.enter(sync_bn);
    let failure = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(out)) => return Ok(out),
        Ok(Err(e)) => e.to_string(),
        Err(p) => crate::error::panic_message(p.as_ref()),
    };
    replica.fail(&failure);
    Err(Error::Replica {
        rank: replica.rank(),
        message: failure,
    })
}

impl Replicas {
    /// Start the replicas of ranks 1… with `states` (one per device after the first, each on its
    /// device, equal to rank 0's); `devices[0]` is rank 0's, the caller's.
    pub fn start(
        cfg: &ExperimentConfig,
        devices: Vec<Device>,
        states: Vec<TrainState>,
    ) -> Result<Replicas> {
        let group = group_for(cfg, &devices)?;
        let sync_bn = cfg.model.sync_bn.unwrap_or(true);
        let mut workers = Vec::new();
        for (replica, mut state) in group[1..].iter().cloned().zip(states) {
            state.probe = None; // the probe learns on rank 0
            let (jobs, inbox) = channel::<Job>();
            let (report, done) = channel();
            let rule = StepRule::of(cfg);
            let rank = replica.rank();
            let thread = std::thread::Builder::new()
                .name(format!("replica-{rank}"))
                .spawn(move || {
                    for job in inbox {
                        let out = replica_step(&replica, sync_bn, || {
                            guarded_step(state, job.view1, job.view2, job.lr, job.tau, &rule)
                        });
                        match out {
                            Ok(Outcome::Applied(next, _))
                            | Ok(Outcome::Skipped { state: next, .. }) => {
                                state = next;
                                let _ = report.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = report.send(Err(e));
                                return;
                            }
                        }
                    }
                })
                .map_err(|e| Error::Replica {
                    rank,
                    message: format!("cannot start its thread: {e}"),
                })?;
            workers.push(Worker {
                jobs: Some(jobs),
                done,
                thread: Some(thread),
            });
        }
        Ok(Replicas {
            lead: group[0].clone(),
            devices,
            sync_bn,
            rule: StepRule::of(cfg),
            workers,
        })
    }

    /// This process's replica in the MPI world ([`crate::collective::mpi`]): no threads of its
    /// own; its share of each batch is its rank's. Checks that every rank starts from the same
    /// `state` (a digest of its tensors, gathered: a rank that differs is named).
    #[cfg(feature = "mpi")]
    pub fn mpi(
        cfg: &ExperimentConfig,
        device: Device,
        world: std::sync::Arc<crate::collective::mpi::MpiWorld>,
        state: &TrainState,
    ) -> Result<Replicas> {
        let digests = world.gather_u64(digest(state)?);
        if let Some(r) = digests.iter().position(|&d| d != digests[0]) {
            return Err(Error::Replica {
                rank: r,
                message: format!(
                    "starts from other weights than rank 0 (state digest {:016x} against {:016x})",
                    digests[r], digests[0]
                ),
            });
        }
        let lead = crate::collective::mpi_replica(world);
        Ok(Replicas {
            lead,
            devices: vec![device],
            sync_bn: cfg.model.sync_bn.unwrap_or(true),
            rule: StepRule::of(cfg),
            workers: Vec::new(),
        })
    }

    /// The number of replicas.
    pub fn count(&self) -> usize {
        self.lead.replicas()
    }

    /// Whether the run goes on: rank 0's `go`, on every rank (the others of an MPI world follow
    /// rank 0's loop, which alone knows of an interrupt, a time budget or `--max-steps`).
    pub fn agree_continue(&self, go: bool) -> bool {
        #[cfg(feature = "mpi")]
        if self.workers.is_empty()
            && let Some(w) = crate::collective::mpi::world()
        {
            return w.broadcast_u64(u64::from(go)) == 1;
        }
        go
    }

    /// One step of every replica on its slice of `view1`, `view2` ([B, 3, S, S], the global
    /// batch); returns rank 0's outcome (its metrics: the group's loss, rank 0's other values).
    pub fn step(
        &mut self,
        state: TrainState,
        view1: Tensor<4>,
        view2: Tensor<4>,
        lr: f64,
        tau: f64,
    ) -> Result<Outcome> {
        let share = view1.dims()[0] / self.count();
        for (i, w) in self.workers.iter().enumerate() {
            let (rank, device) = (i + 1, &self.devices[i + 1]);
            let job = Job {
                view1: view1
                    .clone()
                    .narrow(0, rank * share, share)
                    .to_device(device), // [B/R, 3, S, S]
                view2: view2
                    .clone()
                    .narrow(0, rank * share, share)
                    .to_device(device), // [B/R, 3, S, S]
                lr,
                tau,
            };
            let sent = w.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
            if !sent {
                self.lead.fail("a replica stopped");
                return Err(self.first_failure(rank));
            }
        }
        let at = self.lead.rank() * share; // 0, but for a process of an MPI world
        let (v1, v2) = (view1.narrow(0, at, share), view2.narrow(0, at, share)); // [B/R, 3, S, S]
        let rule = &self.rule;
        let mine = replica_step(&self.lead, self.sync_bn, || {
            guarded_step(state, v1, v2, lr, tau, rule)
        });
        let mut first_error = mine.as_ref().err().map(ToString::to_string);
        for (i, w) in self.workers.iter().enumerate() {
            match w.done.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e.to_string());
                }
                Err(_) => {
                    first_error.get_or_insert(format!("replica {} stopped", i + 1));
                }
            }
        }
        match (mine, first_error) {
            (Ok(out), None) => Ok(out),
            (Err(e), _) => Err(e),
            (Ok(_), Some(e)) => Err(Error::Replica {
                rank: 0,
                message: format!("another replica failed: {e}"),
            }),
        }
    }

    /// The error a replica that stopped reported.
    fn first_failure(&self, rank: usize) -> Error {
        let w = &self.workers[rank - 1];
        match w.done.try_recv() {
            Ok(Err(e)) => e,
            _ => Error::Replica {
                rank,
                message: "stopped".into(),
            },
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs.take();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The processes of this run: the MPI world's size, or 1.
pub(crate) fn world_size() -> usize {
    crate::collective::process_rank_and_count().1
}

/// This process's replica when the run has several processes (an MPI world), else none.
pub(crate) fn mpi_replicas(
    cfg: &ExperimentConfig,
    device: &Device,
    state: &TrainState,
) -> Result<Option<Replicas>> {
    #[cfg(feature = "mpi")]
    if let Some(w) = crate::collective::mpi::world().filter(|w| w.size() > 1) {
        return Replicas::mpi(cfg, device.clone(), w, state).map(Some);
    }
    let _ = (cfg, device, state);
    Ok(None)
}

/// A digest of a state's tensors (online network, target, optimizer slots) and step.
#[cfg(feature = "mpi")]
fn digest(state: &TrainState) -> Result<u64> {
    let hex = super::checkpoint::digest(state)?;
    u64::from_str_radix(&hex[..16], 16).map_err(|e| Error::checkpoint("<state>", e.to_string()))
}

/// The replicas of `devices` linked by the collective of `cfg.backend`.
fn group_for(cfg: &ExperimentConfig, devices: &[Device]) -> Result<Vec<Replica>> {
    match cfg.backend {
        crate::backend::BackendKind::Flex => Ok(crate::collective::host_group(devices.len())),
        #[cfg(feature = "cuda")]
        crate::backend::BackendKind::Cuda => Ok(crate::collective::burn_group(devices.to_vec())),
        other => Err(Error::config(
            "train.devices",
            format!(
                "several devices on `{}` need a collective it does not have: burn's collectives run on `cuda` (NCCL), the host collective on `flex`",
                other.name()
            ),
        )),
    }
}
