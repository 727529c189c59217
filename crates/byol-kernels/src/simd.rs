//! Hot loops compiled three times: for the baseline x86-64 target (SSE2, what a portable binary
//! is built for), for AVX2 + FMA and for AVX-512, the widest the CPU has chosen at run time. The
//! GEMM crate under the convolutions does the same; element-wise loops of our own otherwise run
//! on 128-bit registers. The loops use no fused multiply-add unless written so (Rust does not
//! contract `a * b + c`), and vectorising does not reorder their sums (those that reduce keep
//! explicit lanes), so every build computes the same bits.

/// Defines `fn name(args) -> ret { body }` whose body is compiled for the baseline target, with
/// AVX2 + FMA and with AVX-512 enabled; each call takes the widest build the CPU supports
/// (feature detection is cached by the standard library).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU must support AVX-512 (F, VL, BW, DQ), AVX2 and FMA.
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) $(-> $r)? {
                    body($($a),*)
                }
                /// # Safety
                /// The CPU must support AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) $(-> $r)? {
                    body($($a),*)
                }
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") && has!("avx2") && has!("fma") {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($a),*) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: the CPU has the features `v3` is compiled for.
                    return unsafe { v3($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}

pub(crate) use multiversion;

/// The build of the multiversioned loops this CPU runs (the same test as [`multiversion`]):
/// `x86-64-v4` (AVX-512 F, VL, BW, DQ with AVX2 and FMA), `x86-64-v3` (AVX2 and FMA) or
/// `baseline`. The GEMM crate under the convolutions picks its micro-kernels from the same
/// features, and those round differently from one level to the next: runs on CPUs of different
/// levels are not bit-identical.
pub fn level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512vl")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx2")
            && has!("fma")
        {
            return "x86-64-v4";
        }
        if has!("avx2") && has!("fma") {
            return "x86-64-v3";
        }
    }
    "baseline"
}
