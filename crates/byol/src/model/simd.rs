//! Hot loops compiled twice: for the baseline x86-64 target (SSE2, what a portable binary is
//! built for) and for AVX-512, chosen at run time. The GEMM crate under the convolutions does the
//! same; element-wise loops of our own otherwise run on 128-bit registers.

/// Defines `fn name(args) -> ret { body }` whose body is compiled both for the baseline target
/// and with AVX-512 enabled, the latter taken when the CPU has it. The body must not `return`
/// early (it becomes the body of an inner function, so `return` would still work, but keep it
/// simple).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) $(-> $r)? {
                    body($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}

pub(super) use multiversion;
