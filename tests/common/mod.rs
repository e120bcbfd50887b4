//! Shared test support: the GPU under test (or a loud skip), seeded inputs and error-reporting
//! comparisons.
#![allow(dead_code)]

use std::sync::OnceLock;

use cohort::rng::Rng;
use cohort::GpuBackend;

/// The GPU backend for this test binary, created once. `None` means no adapter: the caller skips,
/// loudly. Under `CI=true` a missing adapter fails the test instead.
pub fn gpu() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| match GpuBackend::from_env() {
        Ok(g) => {
            use cohort::Backend;
            eprintln!("GPU adapter under test: {}", g.describe());
            Some(g)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no GPU adapter is available: {e}");
            }
            None
        }
    })
    .as_ref()
    .or_else(|| {
        eprintln!(
            "\n**** SKIPPED: no GPU adapter, so this GPU kernel test did NOT run. \
             Install a Vulkan driver (e.g. mesa-vulkan-drivers) to run it. ****\n"
        );
        None
    })
}

/// `n` seeded floats uniform in [lo, hi).
pub fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    Rng::new(seed).uniform_vec(n, lo, hi)
}
