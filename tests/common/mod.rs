//! Shared test support: the GPU under test (or a loud skip) and seeded inputs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use cohort::rng::Rng;
use cohort::GpuBackend;

/// Prints to the real stderr, past the test harness's output capture, so a skip is seen even
/// when the test passes.
pub fn loud(message: &str) {
    let _ = writeln!(std::io::stderr(), "\n**** {message} ****\n");
}

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false` (CI services set
/// `true`, `1` or their own name). There a missing adapter or tool fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// Says loudly that a check did not run for want of `features` (a comma list of `f16`,
/// `subgroup`, `timestamp`, `vulkan`, `lavapipe`, `device-select`, `torch`, `console-events`,
/// `native`, `f16-conversions`); fails instead
/// where the comma list `COHORT_EXPECT` names one of them (`.ci/run` lists what its machine
/// has), so that a capability lost to a driver or detection change cannot turn checks into
/// passing skips.
pub fn skip(features: &str, message: &str) {
    let expected = std::env::var("COHORT_EXPECT").unwrap_or_default();
    let named = |f: &str| expected.split(',').any(|e| e.trim() == f);
    if let Some(feature) = features.split(',').find(|f| named(f)) {
        panic!("COHORT_EXPECT names {feature}, but: {message}");
    }
    loud(&format!("SKIPPED: {message}"));
}

/// Whether the tests run under a user-mode emulator (`.ci/qemu-arm` sets `COHORT_EMULATED`):
/// if so, says loudly that the check (one of a process's resource limits, which bind the
/// emulator too) did not run, or fails where `COHORT_EXPECT` names `native`.
pub fn emulated(message: &str) -> bool {
    let emulated = std::env::var_os("COHORT_EMULATED").is_some_and(|v| !v.is_empty());
    if emulated {
        skip("native", &format!("under an emulator: {message}"));
    }
    emulated
}

/// The GPU backend for this test binary, created once. `None` means no adapter: the caller skips,
/// loudly. Under `CI=true` a missing adapter fails the test instead, as does any other error
/// opening it everywhere.
pub fn gpu() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Result<GpuBackend, String>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| match GpuBackend::from_env() {
        Ok(g) => {
            use cohort::Backend;
            loud(&format!("GPU adapter under test: {}", g.describe()));
            Ok(g)
        }
        // No adapter at all, or none that COHORT_HARDWARE_ONLY lets through (the error names
        // those passed over).
        Err(
            e @ cohort::CohortError::NoAdapter {
                requested: None, ..
            },
        ) => {
            if in_ci() {
                panic!("CI is set but no GPU adapter is available: {e}");
            }
            Err(e.to_string())
        }
        // A named adapter missing, or an option the environment sets that this device cannot
        // honour: a failure, not a skip.
        Err(e) => panic!("cannot open the GPU as the environment asks: {e}"),
    });
    if let Err(why) = gpu {
        loud(&format!(
            "SKIPPED: this GPU test did NOT run ({why}). Install a Vulkan driver (e.g. \
             mesa-vulkan-drivers) to run it"
        ));
    }
    gpu.as_ref().ok()
}

/// A GPU backend opened with the options the environment gives (`GpuOptions::from_env`), changed
/// as `build` says.
pub fn gpu_with(build: impl FnOnce(&mut cohort::GpuOptions)) -> cohort::Result<GpuBackend> {
    let mut options = cohort::GpuOptions::from_env().expect("the environment's GPU options");
    build(&mut options);
    GpuBackend::new(&options)
}

/// A backend like the one under test with its kernels built with unrolling hints
/// (`GpuOptions::unroll_hints`), where the adapter is a Vulkan one (they need wgpu's SPIR-V
/// passthrough); elsewhere a loud skip and `None`. On a Vulkan adapter the hints must work.
pub fn hinted_gpu(g: &GpuBackend) -> Option<GpuBackend> {
    let info = g.runtime().info();
    if info.backend != wgpu::Backend::Vulkan {
        skip(
            "vulkan",
            &format!(
                "unrolling hints need a Vulkan adapter; {} is {:?}, so this test did NOT run",
                info.name, info.backend
            ),
        );
        return None;
    }
    let options = cohort::GpuOptions {
        adapter: Some(info.name.clone()),
        unroll_hints: true,
        ..cohort::GpuOptions::from_env().unwrap()
    };
    Some(GpuBackend::new(&options).expect("unrolling hints on a Vulkan adapter"))
}

/// `n` seeded floats uniform in [lo, hi).
pub fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    Rng::new(seed).uniform_vec(n, lo, hi)
}

/// The crate root that holds `path`: the build's, or the working directory where the test was
/// built elsewhere (the GPU machine runs the staged tests from a copy of the repository).
pub fn crate_root(path: &str) -> &'static Path {
    [Path::new(env!("CARGO_MANIFEST_DIR")), Path::new(".")]
        .into_iter()
        .find(|root| root.join(path).exists())
        .unwrap_or_else(|| panic!("{path} not found in the crate root or the working directory"))
}

/// `path` (relative to the crate root) in the [`crate_root`] that holds it.
pub fn crate_path(path: &str) -> PathBuf {
    crate_root(path).join(path)
}

/// Runs `python3 SCRIPT ARGS…` from the [`crate_root`] that holds the script.
/// `None` when python3 cannot run: a loud skip, or a failure under `CI=true` (`.ci/run` installs
/// python3).
pub fn python(script: &str, args: &[String]) -> Option<Output> {
    let root = crate_root(script);
    match Command::new("python3")
        .arg(script)
        .args(args)
        .current_dir(root)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            if in_ci() {
                panic!("CI is set but python3 cannot run: {e}");
            }
            loud(&format!(
                "SKIPPED: python3 cannot run ({e}), so {script} was NOT checked"
            ));
            None
        }
    }
}
