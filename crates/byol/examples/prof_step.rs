//! Where the time of one training step goes on `flex`: the r18c32 configuration of
//! `byol bench step` at batch 64, each part ended by reading a value back.
//! Run: cargo run --release -p byol --example prof_step
use burn::tensor::{Distribution, Tensor};
use byol::bench::StepArch;
use byol::train::TrainState;
use std::time::Instant;
fn main() {
    byol_kernels::alloc::keep_freed_memory();
    let setup = StepArch::Resnet18Cifar
        .setup(
            64,
            byol::backend::BackendKind::Flex,
            Default::default(),
            &[],
        )
        .unwrap();
    let device = burn::tensor::Device::flex();
    let mut state = TrainState::init(setup.config(), &device);
    let x1 = Tensor::<4>::random([64, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let x2 = Tensor::<4>::random([64, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    for it in 0..3 {
        let t = Instant::now();
        let o1 = state.online.forward(x1.clone().autodiff());
        let o2 = state.online.forward(x2.clone().autodiff());
        let _ = o2.prediction.clone().sum().into_scalar::<f32>();
        let t_on = t.elapsed();
        let t = Instant::now();
        let tg = state.target.as_ref().unwrap();
        let z1 = tg.forward(x1.clone());
        let z2 = tg.forward(x2.clone());
        let _ = z2.clone().sum().into_scalar::<f32>();
        let t_tg = t.elapsed();
        let t = Instant::now();
        let loss = byol::loss::byol_loss(o1.prediction, o2.prediction, z1, z2);
        let mut grads = loss.backward();
        let t_bw = t.elapsed();
        let t = Instant::now();
        let online = state
            .optim
            .step(state.online, &mut grads, 0.05, 1)
            .expect("every parameter trains");
        let _ = byol::model::params::collect(&online)
            .values()
            .next()
            .unwrap()
            .flat
            .clone()
            .sum()
            .into_scalar::<f32>();
        let t_opt = t.elapsed();
        let t = Instant::now();
        let target = byol::ema::update(state.target.unwrap(), &online, 0.99);
        let _ = byol::model::params::collect(&target)
            .values()
            .next()
            .unwrap()
            .flat
            .clone()
            .sum()
            .into_scalar::<f32>();
        let t_ema = t.elapsed();
        state = TrainState {
            online,
            target: Some(target),
            ..state
        };
        println!(
            "iter {it}: online fwd {t_on:?} target fwd {t_tg:?} loss+backward {t_bw:?} optim {t_opt:?} ema {t_ema:?}"
        );
    }
}
