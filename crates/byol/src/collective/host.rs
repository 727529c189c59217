//! The host collective: replicas are threads of one process; a sum is a rendezvous in host
//! memory. Each replica deposits its values, the last to arrive adds them in rank order (f32, so
//! every replica gets the same bits whatever the arrival order), and each takes the result; the
//! next round starts only when every replica has taken the previous one.
//!
//! On `flex` with autodiff the sum is one autodiff node whose backward pass is the same sum of
//! the incoming gradients (d(Σ_q x_q)/dx_r = 1 on every replica: replica r's gradient is the sum
//! of the gradients every replica's loss sends back to the sum). Plain tensors of any backend
//! (the target network's BatchNorm, the gradients, the loss) take the same rendezvous.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::{Tensor, TensorData, read_sync};
use std::sync::{Arc, Condvar, Mutex};

/// The rendezvous of a group's replicas.
pub struct HostGroup {
    n: usize,
    round: Mutex<Round>,
    changed: Condvar,
}

impl std::fmt::Debug for HostGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostGroup {{ replicas: {} }}", self.n)
    }
}

#[derive(Default)]
struct Round {
    /// The values each replica deposited in this round.
    slots: Vec<Option<Vec<f32>>>,
    arrived: usize,
    /// The sum, while the replicas take it.
    result: Option<Arc<Vec<f32>>>,
    taken: usize,
    /// Why the group cannot go on (a replica failed, or deposited a different size).
    broken: Option<String>,
    /// Sums completed so far.
    completed: u64,
}

impl HostGroup {
    pub fn new(n: usize) -> Self {
        HostGroup {
            n,
            round: Mutex::new(Round {
                slots: vec![None; n],
                ..Round::default()
            }),
            changed: Condvar::new(),
        }
    }

    /// Σ over the replicas of `values` (replica `rank`'s), added in rank order.
    ///
    /// # Panics
    /// When the group is broken ([`HostGroup::fail`]) or the replicas' sizes differ: the replica
    /// threads then end, and the training loop reports the first failure.
    pub fn sum(&self, rank: usize, values: Vec<f32>) -> Arc<Vec<f32>> {
        let mut r = self.round.lock().unwrap_or_else(|p| p.into_inner());
        // The previous round's result is still being taken.
        while r.result.is_some() && r.broken.is_none() {
            r = self.changed.wait(r).unwrap_or_else(|p| p.into_inner());
        }
        check(&r);
        r.slots[rank] = Some(values);
        r.arrived += 1;
        if r.arrived == self.n {
            let slots: Vec<Vec<f32>> = r
                .slots
                .iter_mut()
                .map(|s| s.take().expect("every replica deposited"))
                .collect();
            if let Some(other) = slots.iter().position(|s| s.len() != slots[0].len()) {
                r.broken = Some(format!(
                    "replica 0 sent {} values and replica {other} {}: the replicas' models differ",
                    slots[0].len(),
                    slots[other].len()
                ));
                self.changed.notify_all();
                check(&r);
            }
            let mut slots = slots.into_iter();
            let mut sum = slots.next().expect("a group has a replica");
            for s in slots {
                for (a, b) in sum.iter_mut().zip(&s) {
                    *a += b;
                }
            }
            r.arrived = 0;
            r.taken = 0;
            r.result = Some(Arc::new(sum));
            r.completed += 1;
            self.changed.notify_all();
        } else {
            while r.result.is_none() && r.broken.is_none() {
                r = self.changed.wait(r).unwrap_or_else(|p| p.into_inner());
            }
            check(&r);
        }
        let out = r.result.clone().expect("the round's sum");
        r.taken += 1;
        if r.taken == self.n {
            r.result = None;
            self.changed.notify_all();
        }
        out
    }

    /// How many sums the group has completed.
    pub fn completed(&self) -> u64 {
        self.round
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .completed
    }

    /// Mark the group broken by replica `rank` for `reason` and wake every waiting replica.
    pub fn fail(&self, rank: usize, reason: &str) {
        let mut r = self.round.lock().unwrap_or_else(|p| p.into_inner());
        r.broken
            .get_or_insert_with(|| format!("replica {rank} failed: {reason}"));
        self.changed.notify_all();
    }
}

fn check(r: &Round) {
    if let Some(why) = &r.broken {
        panic!("the replica group is broken ({why})");
    }
}

/// Σ over the group of a backend tensor, staged through host memory: the device's values are
/// read back, summed in rank order by `g`, and written to a new tensor on the same device with
/// the same element type.
fn primitive_sum<B: Backend>(
    g: &dyn super::Summer,
    rank: usize,
    t: FloatTensor<B>,
) -> FloatTensor<B> {
    let (device, shape, dtype) = (t.device(), t.shape(), t.dtype());
    let data = read_sync(B::float_into_data(t))
        .unwrap_or_else(|e| panic!("reading a tensor back for the collective: {e:?}"));
    let values = data
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values");
    let sum = g.sum(rank, values);
    B::float_from_data(
        TensorData::new(sum.as_ref().clone(), shape).convert_dtype(dtype),
        &device,
    )
}

impl super::Summer for HostGroup {
    fn sum(&self, rank: usize, values: Vec<f32>) -> Arc<Vec<f32>> {
        HostGroup::sum(self, rank, values)
    }
}

/// Σ over the group of `$x` when it is an autodiff tensor of backend `$B`, recorded as one node
/// whose backward pass is the same sum (returned from the enclosing function); otherwise `$x`.
macro_rules! tracked_sum {
    ($B:ty, $g:expr, $rank:expr, $x:expr) => {
        match $x.clone().try_into_primitive::<Autodiff<$B>>() {
            Ok(xp) => {
                let out = primitive_sum::<$B>($g.as_ref(), $rank, xp.primitive().clone());
                let out = match SumBackward
                    .prepare::<NoCheckpointing>([xp.node()])
                    .compute_bound()
                    .stateful()
                {
                    OpsKind::Tracked(prep) => prep.finish(($g.clone(), $rank), out),
                    OpsKind::UnTracked(prep) => prep.finish(out),
                };
                return Tensor::from_primitive::<Autodiff<$B>>(out);
            }
            Err(_) => $x,
        }
    };
}

/// See [`super::Replica::all_reduce_sum`]: through `g`, the host rendezvous or another
/// [`super::Summer`] (MPI), differentiable on `flex` and on the GPU backends (`cuda`, `wgpu`:
/// burn's `Cube`), whose values are staged through host memory.
pub(super) fn all_reduce_sum<const D: usize>(
    g: &Arc<dyn super::Summer>,
    rank: usize,
    x: Tensor<D>,
) -> Tensor<D> {
    let x = tracked_sum!(Flex, g, rank, x);
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    let x = tracked_sum!(burn::backend::Cube, g, rank, x);
    assert!(
        !x.is_autodiff(),
        "the host collective differentiates on `flex`, `cuda` and `wgpu` only"
    );
    let (device, dims) = (x.device(), x.dims());
    let values = x
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values");
    let sum = g.sum(rank, values);
    Tensor::from_data(TensorData::new(sum.as_ref().clone(), dims), &device)
}

/// The backward pass of the sum: the same sum of the gradients.
#[derive(Debug)]
struct SumBackward;

impl<B: Backend> Backward<B, 1> for SumBackward {
    type State = (Arc<dyn super::Summer>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (g, rank) = ops.state;
        // Every replica's tape has this node (the graphs are the same), so every replica joins
        // this round even when its input needs no gradient.
        let dx = primitive_sum::<B>(g.as_ref(), rank, dy);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, dx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// Sums arrive in rank order on every replica, over many rounds, whatever the arrival order.
    /// The second element's inputs (1, −1, 0.001 from ranks 0, 1, 2) give three different f32
    /// sums for the three ways of pairing them first: (1 − 1) + 0.001 in rank order, and
    /// (1 + 0.001) − 1 and (−1 + 0.001) + 1 each round 0.001 differently; the order within the
    /// first pair does not change a sum. So a sum in any order but rank order fails the bit
    /// comparison (checked below on the inputs themselves).
    #[test]
    fn every_replica_gets_the_rank_ordered_sum_round_after_round() {
        let g = Arc::new(HostGroup::new(3));
        let out: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|rank| {
                    let g = g.clone();
                    s.spawn(move || {
                        let second = [1.0f32, -1.0, 0.001][rank];
                        // Ranks arrive in a different order in different rounds.
                        (0..50)
                            .map(|k| {
                                if (k + rank) % 3 == 0 {
                                    std::thread::yield_now();
                                }
                                g.sum(rank, vec![rank as f32 + k as f32, second])
                                    .as_ref()
                                    .clone()
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let in_rank_order = (1.0f32 + -1.0) + 0.001;
        for other in [(1.0f32 + 0.001) + -1.0, (-1.0f32 + 0.001) + 1.0] {
            assert_ne!(
                in_rank_order.to_bits(),
                other.to_bits(),
                "the inputs do not tell the orders apart"
            );
        }
        for k in 0..50 {
            for r in &out {
                assert_eq!(r[k][0], (3 * k + 3) as f32, "round {k}");
                assert_eq!(
                    r[k][1].to_bits(),
                    in_rank_order.to_bits(),
                    "round {k}: {} is not the rank-ordered sum",
                    r[k][1]
                );
            }
        }
    }

    /// A failed replica wakes the others with its reason instead of leaving them waiting.
    #[test]
    fn a_failed_replica_breaks_the_group() {
        let g = Arc::new(HostGroup::new(2));
        let waiting = {
            let g = g.clone();
            std::thread::spawn(move || {
                std::panic::catch_unwind(move || g.sum(0, vec![1.0]))
                    .err()
                    .map(|e| e.downcast_ref::<String>().cloned())
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        g.fail(1, "out of memory");
        let message = waiting.join().unwrap().expect("it panicked").unwrap();
        assert!(
            message.contains("replica 1 failed: out of memory"),
            "{message}"
        );
    }

    /// The gradient of a loss that depends on every replica's input through the sum is the
    /// gradient of the sum of the replicas' losses (checked against one process holding both).
    #[test]
    fn the_backward_pass_sums_the_replicas_gradients() {
        let d = Device::flex().autodiff();
        let xs = [vec![1.0f32, 2.0], vec![-3.0f32, 0.5]];
        let ws = [vec![0.5f32, -1.0], vec![2.0f32, 3.0]];
        let t = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [2]), &d);
        // One process: L = Σ_r Σ_i w_r,i · (x_r,i · S_i), S = x_0 + x_1.
        let x0 = t(&xs[0]).require_grad();
        let x1 = t(&xs[1]).require_grad();
        let s = x0.clone() + x1.clone();
        let l = (t(&ws[0]) * x0.clone() * s.clone()).sum() + (t(&ws[1]) * x1.clone() * s).sum();
        let grads = l.backward();
        let expect = [
            x0.grad(&grads).unwrap().into_data(),
            x1.grad(&grads).unwrap().into_data(),
        ];
        // Two replicas, each with its own x and loss.
        let g = Arc::new(HostGroup::new(2));
        let got: Vec<TensorData> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|rank| {
                    let (g, xs, ws, d) = (g.clone(), xs.clone(), ws.clone(), d.clone());
                    sc.spawn(move || {
                        let t = |v: &[f32]| {
                            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [2]), &d)
                        };
                        let x = t(&xs[rank]).require_grad();
                        let g: Arc<dyn crate::collective::Summer> = g;
                        let s = all_reduce_sum(&g, rank, x.clone());
                        let grads = (t(&ws[rank]) * x.clone() * s).sum().backward();
                        x.grad(&grads).unwrap().into_data()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in 0..2 {
            got[r].assert_approx_eq::<f32>(&expect[r], burn::tensor::Tolerance::absolute(1e-6));
        }
    }
}
