//! Run-time dispatch of element kernels to the widest vector registers the CPU has.
//!
//! masksub builds for baseline x86-64 (SSE2) so one binary runs everywhere; loops that the
//! compiler vectorizes well gain 2-4x from AVX2 or AVX-512. [`simd_kernel!`] compiles one body
//! for each level and [`cpu_level`] picks at run time. Shared by the model ops and the image
//! transforms, which is why it is its own crate.

/// `fn name(args) body`, compiled three times — for AVX-512, for AVX2 + FMA and for the
/// baseline target — and dispatched on the CPU's features at run time, so element loops
/// vectorize to the widest registers the machine has while the binary stays portable.
/// The arithmetic is the same in every version (Rust never contracts a * b + c into an FMA
/// by itself), so results are bitwise equal whichever runs.
#[macro_export]
macro_rules! simd_kernel {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) {
            #[inline(always)]
            fn imp($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) {
                    imp($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) {
                    imp($($a),*)
                }
                if $crate::cpu_level() >= 4 {
                    // SAFETY: cpu_level checked the features v4 was compiled for.
                    return unsafe { v4($($a),*) };
                }
                if $crate::cpu_level() >= 3 {
                    // SAFETY: as above, for v3's.
                    return unsafe { v3($($a),*) };
                }
            }
            imp($($a),*)
        }
    };
}

/// The x86-64 micro-architecture level this CPU supports: 4 (AVX-512 F/VL/BW/DQ), 3 (AVX2 +
/// FMA) or 0 (baseline); detected once.
pub fn cpu_level() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<u8> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let v3 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            let v4 = v3
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq");
            if v4 {
                4
            } else if v3 {
                3
            } else {
                0
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    simd_kernel! {
        /// A kernel as the crates write them: writes through a slice.
        fn scaled_sum(xs: &[f32], k: f32, out: &mut f32) {
            *out = xs.iter().map(|x| x * k).sum();
        }
    }

    #[test]
    fn dispatched_kernel_matches_the_plain_loop() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32).sin()).collect();
        let mut got = 0.0;
        scaled_sum(&xs, 0.5, &mut got);
        let want: f32 = xs.iter().map(|x| x * 0.5).sum();
        assert_eq!(got.to_bits(), want.to_bits());
        assert!(super::cpu_level() == 0 || super::cpu_level() >= 3);
    }
}
