//! MoCo's queue of negative keys (He et al. 2020): a ring buffer of the last K L2-normalised
//! target keys, first in first out, initialised with random unit vectors as in MoCo's code.
#![allow(
    clippy::single_range_in_vec_init,
    reason = "burn's `slice` takes one range per dimension: `[a..b]` is rows a..b"
)]

use crate::loss::l2_normalize;
use crate::rng::{Stream, rng};
use burn::tensor::{Device, Tensor, TensorData};

pub struct Queue {
    /// [K, P], L2-normalised rows, on the plain device.
    pub keys: Tensor<2>,
    /// The row the next key is written to (the oldest key).
    pub ptr: usize,
}

impl Queue {
    /// K random unit vectors of dimension `dim`, drawn from `seed`.
    pub fn new(size: usize, dim: usize, seed: u64, device: &Device) -> Self {
        let mut r = rng(seed, Stream::MocoQueue, &[]);
        // Normal draws: isotropic after normalisation.
        let v: Vec<f32> = (0..size * dim)
            .map(|_| crate::rng::normal(&mut r, 1.0) as f32)
            .collect();
        let keys = l2_normalize(Tensor::from_data(TensorData::new(v, [size, dim]), device));
        Self { keys, ptr: 0 }
    }

    pub fn len(&self) -> usize {
        self.keys.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enqueue `new` [N, P] (normalised here), overwriting the N oldest keys. With N > K only the
    /// last K are kept.
    pub fn push(&mut self, new: Tensor<2>) {
        let k = self.len();
        let [n, _] = new.dims();
        let new = l2_normalize(new.detach());
        let (new, n) = if n > k {
            (new.slice([n - k..n]), k)
        } else {
            (new, n)
        };
        let first = n.min(k - self.ptr);
        self.keys = self
            .keys
            .clone()
            .slice_assign([self.ptr..self.ptr + first], new.clone().slice([0..first]));
        if first < n {
            self.keys = self
                .keys
                .clone()
                .slice_assign([0..n - first], new.slice([first..n]));
        }
        self.ptr = (self.ptr + n) % k;
    }

    /// The keys from the oldest to the newest: [K, P].
    pub fn ordered(&self) -> Tensor<2> {
        let k = self.len();
        if self.ptr == 0 {
            return self.keys.clone();
        }
        Tensor::cat(
            vec![
                self.keys.clone().slice([self.ptr..k]),
                self.keys.clone().slice([0..self.ptr]),
            ],
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
        let [_, p] = t.dims();
        let v: Vec<f32> = t.into_data().try_into_vec().unwrap();
        v.chunks(p).map(|c| c.to_vec()).collect()
    }

    #[test]
    fn queue_is_fifo_with_the_configured_length() {
        let d = Device::flex();
        let mut q = Queue::new(5, 2, 1, &d);
        assert_eq!(q.len(), 5);
        for r in rows(q.keys.clone()) {
            assert!(
                ((r[0] * r[0] + r[1] * r[1]).sqrt() - 1.0).abs() < 1e-5,
                "unit rows"
            );
        }
        // Key i is (i, 1) before normalisation; push 3, then 4 (wrapping), then 2.
        let keys = |a: usize, b: usize| {
            let v: Vec<f32> = (a..b).flat_map(|i| [i as f32, 1.0]).collect();
            Tensor::<2>::from_data(TensorData::new(v, [b - a, 2]), &d)
        };
        let unit = |i: usize| {
            let n = ((i * i + 1) as f32).sqrt();
            [i as f32 / n, 1.0 / n]
        };
        q.push(keys(0, 3));
        q.push(keys(3, 7));
        assert_eq!(q.ptr, 2);
        // The last five pushed, oldest first: 2, 3, 4, 5, 6.
        let got = rows(q.ordered());
        for (row, i) in got.iter().zip(2..7) {
            let u = unit(i);
            assert!(
                (row[0] - u[0]).abs() < 1e-6 && (row[1] - u[1]).abs() < 1e-6,
                "{got:?}"
            );
        }
        q.push(keys(7, 9));
        let got = rows(q.ordered());
        for (row, i) in got.iter().zip(4..9) {
            let u = unit(i);
            assert!((row[0] - u[0]).abs() < 1e-6, "{got:?}");
        }
        // More keys than the queue holds: only the last five stay.
        q.push(keys(10, 17));
        let got = rows(q.ordered());
        for (row, i) in got.iter().zip(12..17) {
            assert!((row[0] - unit(i)[0]).abs() < 1e-6, "{got:?}");
        }
    }
}
