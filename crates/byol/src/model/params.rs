//! Parameters addressed by their path in the module tree (`encoder.layer1.0.conv1.weight`).
//!
//! burn's optimizers and records identify parameters by `ParamId`; the EMA, the checkpoint and
//! the deep copy need to match a parameter of one network with the same parameter of another,
//! which only the path does. Tensors are handed around flattened to rank 1 (a free reshape) so
//! that one map can hold parameters of every rank.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use std::collections::BTreeMap;

/// BatchNorm running statistics are buffers: visited like parameters, never trained or averaged.
pub fn is_buffer(path: &str) -> bool {
    path.ends_with("running_mean") || path.ends_with("running_var")
}

/// A parameter flattened to rank 1 with its original shape.
#[derive(Clone, Debug)]
pub struct Named {
    pub flat: Tensor<1>,
    pub shape: Vec<usize>,
}

/// What is handed each float tensor of a module (parameters and BatchNorm buffers) with its
/// path, through [`visit_paths`].
pub trait PathVisitor {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>);
}

/// What maps each float tensor of a module, told its path, through [`map_paths`].
pub trait PathMapper {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>>;
}

/// Hand every float tensor of `module` to `visitor` with its path.
pub fn visit_paths<M: Module, V: PathVisitor>(module: &M, visitor: &mut V) {
    module.visit(&mut Tracked {
        path: Vec::new(),
        inner: visitor,
    });
}

/// `module` with every float tensor replaced by what `mapper` makes of it, told its path.
pub fn map_paths<M: Module, P: PathMapper>(module: M, mapper: &mut P) -> M {
    module.map(&mut Tracked {
        path: Vec::new(),
        inner: mapper,
    })
}

/// burn's visitor and mapper, tracking the path of the module being walked: the one place that
/// does (the collector, the mappers, the optimizer's update and the gradients' take use it).
struct Tracked<'a, T> {
    path: Vec<String>,
    inner: &'a mut T,
}

impl<T> Tracked<'_, T> {
    /// An enum module's variant (`Encoder::ResNet`) is not a step of the path: a tensor's name
    /// is the same whichever kind holds it, and a ResNet's names are those it had before the
    /// encoder was a choice.
    fn enter(&mut self, name: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }
    fn exit(&mut self, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.pop();
        }
    }
}

impl<V: PathVisitor> ModuleVisitor for Tracked<'_, V> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, container: &str) {
        self.exit(container);
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.inner.visit(&self.path.join("."), param);
    }
}

impl<P: PathMapper> ModuleMapper for Tracked<'_, P> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.enter(name, container);
    }
    fn exit_module(&mut self, _: &str, container: &str) {
        self.exit(container);
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.inner.map(&self.path.join("."), param)
    }
}

struct Collector(BTreeMap<String, Named>);

impl PathVisitor for Collector {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        let t = param.val().without_autodiff();
        let shape = t.dims().to_vec();
        let n: usize = shape.iter().product();
        self.0.insert(
            path.to_string(),
            Named {
                flat: t.reshape([n]),
                shape,
            },
        );
    }
}

/// Tensors by name as files hold them: (shape, row-major values).
pub type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The values of a rank-1 tensor, on the host.
pub fn values(t: &Tensor<1>) -> crate::Result<Vec<f32>> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .map_err(|e| crate::Error::checkpoint("<memory>", format!("{e:?}")))
}

/// The tensors of `tensors` whose name starts with `prefix`, by the rest of their name, on
/// `device` (what [`load`] takes).
pub fn named_from(
    tensors: &HostTensors,
    prefix: &str,
    device: &burn::tensor::Device,
) -> BTreeMap<String, Named> {
    tensors
        .iter()
        .filter_map(|(k, (shape, v))| {
            k.strip_prefix(prefix).map(|path| {
                let flat = Tensor::<1>::from_data(
                    burn::tensor::TensorData::new(v.clone(), [v.len()]),
                    device,
                );
                (
                    path.to_string(),
                    Named {
                        flat,
                        shape: shape.clone(),
                    },
                )
            })
        })
        .collect()
}

/// Every float tensor of `module` (parameters and BatchNorm buffers) by path, without autodiff.
///
/// Call it on `module.valid()` (or a module whose BatchNorm updates are synced): burn applies
/// running-statistics updates lazily and a plain visit can see them one step late.
pub fn collect<M: Module>(module: &M) -> BTreeMap<String, Named> {
    let mut c = Collector(BTreeMap::new());
    visit_paths(module, &mut c);
    c.0
}

/// Number of trainable scalars (buffers excluded).
pub fn count_trainable<M: Module>(module: &M) -> usize {
    collect(module)
        .iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(_, v)| v.shape.iter().product::<usize>())
        .sum()
}

/// A mapper that hands each float tensor (flattened, without autodiff), its path and its shape to
/// `f`, and puts back what `f` returns, keeping the parameter's id and autodiff settings.
pub struct MapNamed<F: FnMut(&str, &[usize], Tensor<1>) -> Tensor<1>> {
    f: F,
}

impl<F: FnMut(&str, &[usize], Tensor<1>) -> Tensor<1>> MapNamed<F> {
    pub fn new(f: F) -> Self {
        Self { f }
    }

    /// `module` with each float tensor mapped by `f`.
    pub fn apply<M: Module>(mut self, module: M) -> M {
        map_paths(module, &mut self)
    }
}

impl<F: FnMut(&str, &[usize], Tensor<1>) -> Tensor<1>> PathMapper for MapNamed<F> {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let autodiff = tensor.is_autodiff();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let flat = tensor.without_autodiff().reshape([n]);
        let out = (self.f)(path, &dims, flat).reshape(dims);
        let mut out = if autodiff {
            Tensor::from_inner(out)
        } else {
            out
        };
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

/// `module` with every parameter an autodiff tensor that requires a gradient (BatchNorm running
/// statistics aside). burn's `Module::fork` to an autodiff device and `Module::set_require_grad`
/// leave the tensors of a module loaded on a plain device without autodiff (the second only
/// records the wish), so such a module's parameters would stay frozen.
pub fn require_grad<M: Module>(module: M) -> M {
    struct RequireGrad;
    impl PathMapper for RequireGrad {
        fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if is_buffer(path) || param.is_require_grad() {
                return param;
            }
            let (id, tensor, mapper) = param.consume();
            let tensor = if tensor.is_autodiff() {
                tensor.detach()
            } else {
                tensor.autodiff()
            };
            Param::from_mapped_value(id, tensor.require_grad(), mapper)
        }
    }
    map_paths(module, &mut RequireGrad)
}

/// Overwrite every float tensor of `module` with the tensor of the same path in `values`,
/// moved to the module's device. Returns the paths of `module` that `values` did not hold.
pub fn load<M: Module>(module: M, values: &BTreeMap<String, Named>) -> (M, Vec<String>) {
    let mut missing = Vec::new();
    let module = MapNamed::new(|path, _, old| match values.get(path) {
        Some(v) if v.flat.dims() == old.dims() => v.flat.clone().to_device(&old.device()),
        _ => {
            missing.push(path.to_string());
            old
        }
    })
    .apply(module);
    (module, missing)
}

/// A copy of `module` with state of its own: `fresh`, a module of the same structure made by its
/// config, holding every float tensor of `module`. (`Module::clone` shares BatchNorm's running
/// statistics, so a network trained from a clone would change the original's.)
///
/// # Panics
/// When `fresh` has a tensor `module` lacks or of another shape: the two structures differ.
pub fn copy_into<M: Module>(fresh: M, module: &M) -> M {
    let (copy, missing) = load(fresh, &collect(module));
    assert!(
        missing.is_empty(),
        "the copy has tensors the module lacks: {missing:?}"
    );
    copy
}

/// Re-draw every parameter of `module` from a generator seeded by (`seed`, parameter path), so
/// that initialisation is reproducible whatever else runs in the process (burn's device RNG is
/// shared by all threads). The distributions are those of the layers' own initialisers:
/// convolutions He-normal with fan-out (std √(2/fan_out), as torchvision's ResNet), linear
/// weights and biases uniform in ±1/√fan_in (burn's and PyTorch's default); BatchNorm
/// parameters and buffers are deterministic and kept.
pub fn reinit<M: Module>(module: M, seed: u64) -> M {
    use rand::Rng;
    let mut fan_in = 1usize;
    MapNamed::new(|path, shape, old| {
        let name = path.rsplit('.').next().unwrap_or("");
        if is_buffer(path) || name == "gamma" || name == "beta" {
            return old;
        }
        let mut r = crate::rng::rng(
            seed,
            crate::rng::Stream::Init,
            &[crate::rng::hash_str(path)],
        );
        let n: usize = shape.iter().product();
        if in_vit(path) {
            let device = old.device();
            return Tensor::from_data(
                burn::tensor::TensorData::new(vit_init(&mut r, name, n), [n]),
                &device,
            );
        }
        let values: Vec<f32> = match shape.len() {
            4 => {
                let std = (2.0 / (shape[0] * shape[2] * shape[3]) as f64).sqrt();
                (0..n)
                    .map(|_| crate::rng::normal(&mut r, std) as f32)
                    .collect()
            }
            2 => {
                fan_in = shape[0]; // burn's Linear weight is [d_input, d_output]
                let b = 1.0 / (fan_in as f32).sqrt();
                (0..n).map(|_| r.random_range(-b..b)).collect()
            }
            _ => {
                // A bias: follows its layer's weight, visited just before it.
                let b = 1.0 / (fan_in as f32).sqrt();
                (0..n).map(|_| r.random_range(-b..b)).collect()
            }
        };
        Tensor::from_data(burn::tensor::TensorData::new(values, [n]), &old.device())
    })
    .apply(module)
}

/// Whether `path` names a tensor of a Vision Transformer (timm's names: `patch_embed`,
/// `blocks.N`, `cls_token`; [`crate::model::Vit`]).
fn in_vit(path: &str) -> bool {
    path.split('.')
        .any(|s| s == "patch_embed" || s == "blocks" || s == "cls_token" || s == "pos_embed")
}

/// A ViT tensor's initial values, as timm's `init_weights_vit_timm`: weights (the patch
/// projection treated as a linear layer, as MoCo v3 does), the class token and learned position
/// embeddings from a normal
/// with σ 0.02 truncated to ±2 (timm's `trunc_normal_(std=.02)`, whose bounds are absolute, so
/// at this σ nothing is cut), biases 0.
fn vit_init(r: &mut impl rand::Rng, name: &str, n: usize) -> Vec<f32> {
    if name == "bias" {
        return vec![0.0; n];
    }
    (0..n)
        .map(|_| {
            loop {
                let x = crate::rng::normal(r, 0.02);
                if x.abs() <= 2.0 {
                    break x as f32;
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, ResNetConfig, Stem};
    use burn::tensor::Device;

    #[test]
    fn reinit_is_seeded_and_has_the_initialisers_scale() {
        let device = Device::flex();
        let cfg = ResNetConfig {
            arch: Arch::Resnet18,
            width_multiplier: 1,
            base_width: 16,
            stem: Stem::Cifar,
            residual_gamma: Default::default(),
        };
        let a = collect(&reinit(cfg.init(&device), 1));
        let b = collect(&reinit(cfg.init(&device), 1));
        let c = collect(&reinit(cfg.init(&device), 2));
        let v = |m: &BTreeMap<String, Named>, k: &str| -> Vec<f32> {
            m[k].flat.clone().into_data().try_into_vec().unwrap()
        };
        let k = "layer3.0.conv1.weight"; // [64, 32, 3, 3]: fan-out 576
        assert_eq!(v(&a, k), v(&b, k));
        assert_ne!(v(&a, k), v(&c, k));
        let w = v(&a, k);
        // 18,432 draws: the sample std's relative standard error is 1/√(2n) ≈ 0.52 %, so 3 % is
        // a 6σ bound (a wrong fan, 3× or 1/3 of the variance, is off by 42 % or more).
        let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        let want = (2.0f32 / 576.0).sqrt();
        assert!((std / want - 1.0).abs() < 0.03, "{std} vs {want}");
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        assert!(
            mean.abs() < 6.0 * want / (w.len() as f32).sqrt(),
            "mean {mean}"
        );
        // BatchNorm of a basic block: γ = 1, β = 0, also in the last of each block (haiku's BlockV1).
        assert!(v(&a, "layer3.0.bn1.gamma").iter().all(|&x| x == 1.0));
        assert!(v(&a, "layer3.0.bn2.gamma").iter().all(|&x| x == 1.0));
        assert!(v(&a, "layer3.0.bn2.beta").iter().all(|&x| x == 0.0));
    }
}
