//! Every kernel on the GPU adapter against its CPU twin (`cohort::validate`), for seeded random
//! inputs over many shapes: 1×1×1, primes, just above and below the 64-wide tiles, K ≫ M and N,
//! batch counts 1 and 3 with shared operands, all transpose combinations, and numerical edge cases.
//! Tolerances are documented in `src/validate.rs`.

mod common;

use cohort::gpu::shaders::MatmulStorage;
use cohort::ops::{Activation, CrossEntropySpec, DmlLossSpec, KlSpec, MatmulSpec, OptimizerStep};
use cohort::validate::{self, Batching, Inputs, KernelCheck};

const F32: Inputs = Inputs::F32;
const ROUNDED: Inputs = Inputs::ROUNDED;
use common::{gpu, loud, uniform};

fn assert_passed(c: &KernelCheck) {
    assert!(
        c.passed(),
        "{} {}: worst at {} ({:.1}× the tolerance)",
        c.kernel,
        c.case,
        c.worst,
        c.worst_ratio
    );
}

/// Asserts every check and prints the largest error, for the record.
fn report(kernel: &str, checks: &[KernelCheck]) {
    checks.iter().for_each(assert_passed);
    let worst = checks.iter().map(|c| c.max_abs_error).fold(0.0, f64::max);
    eprintln!(
        "{kernel}: {} cases passed, max |gpu - cpu| = {worst:.3e}",
        checks.len()
    );
}

#[test]
fn matmul_matches_cpu_over_shapes_batches_and_transposes() {
    let Some(g) = gpu() else { return };
    let shapes = [
        (1, 1, 1),
        (7, 13, 29),
        (63, 65, 64),
        (64, 64, 64),
        (65, 63, 17),
        (1, 100, 1),
        (33, 1, 70),
        (3, 5, 1000),
        (129, 70, 31),
        // Every side a multiple of 4 but not of the tile: the vec4-load paths with part-filled
        // tiles, for all transposes.
        (4, 4, 4),
        (68, 132, 36),
        (132, 20, 68),
    ];
    let batchings = [
        Batching::None,
        Batching::All(1),
        Batching::All(3),
        Batching::SharedA(3),
        Batching::SharedB(3),
    ];
    let mut checks = Vec::new();
    for (si, &dims) in shapes.iter().enumerate() {
        for (bi, &batching) in batchings.iter().enumerate() {
            for t in 0..4 {
                let mut spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2);
                if (si + bi + t) % 3 == 0 {
                    spec.alpha = 0.5;
                    spec.beta = 1.0;
                }
                checks.push(
                    validate::matmul(g, batching, dims, &spec, (si * 100 + bi * 10 + t) as u64)
                        .unwrap(),
                );
            }
        }
    }
    report("matmul", &checks);
}

/// f16 inputs with f32 accumulation: the tensor-core kernel where the adapter has one, otherwise
/// the tiled kernel rounding its loads to f16. Both are checked against the f16-rounding twin.
fn f16_matmul_checks(g: &cohort::GpuBackend) -> Vec<KernelCheck> {
    let shapes = [
        (1, 1, 1),
        (7, 13, 29),
        (64, 64, 64),
        (65, 63, 33),
        (31, 97, 300),
        (128, 64, 1000),
    ];
    product_checks(g, &shapes, |_, _| true, 0)
}

/// Every product of `shapes` unbatched, with A shared across 3 and batched by 2, in all four
/// transposes, every other one accumulating (alpha 0.5, beta 1); `f16(shape, transposes)` says
/// which multiply in f16. Seeds from `seed`.
fn product_checks(
    g: &cohort::GpuBackend,
    shapes: &[(usize, usize, usize)],
    f16: impl Fn(usize, usize) -> bool,
    seed: u64,
) -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for (si, &dims) in shapes.iter().enumerate() {
        for (bi, batching) in [Batching::None, Batching::SharedA(3), Batching::All(2)]
            .into_iter()
            .enumerate()
        {
            for t in 0..4 {
                let mut spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(f16(si, t));
                if (si + bi + t) % 2 == 0 {
                    spec.alpha = 0.5;
                    spec.beta = 1.0;
                }
                let seed = seed + (si * 100 + bi * 10 + t) as u64;
                checks.push(validate::matmul(g, batching, dims, &spec, seed).unwrap());
            }
        }
    }
    checks
}

/// Products of [`f16_tensor_checks`]: shared and batched operands, vec4 loads (all sides
/// multiples of 4), and a long K.
const F16_TENSOR_PRODUCTS: &[(Batching, (usize, usize, usize))] = &[
    (Batching::SharedA(2), (7, 13, 29)),
    (Batching::All(2), (68, 132, 36)),
    (Batching::None, (65, 63, 300)),
];

/// Products on F16 tensors: every combination of A, B and the epilogues' aux stored as F16,
/// with f32 operands multiplied as they are or rounded (`rounded`), in all transposes, with and
/// without vec4 loads, for the `products` given. Which kernel runs follows the backend: f16
/// products (both operands F16, or rounded) go to the cooperative-matrix kernel where it has one.
fn f16_tensor_checks(
    g: &cohort::GpuBackend,
    rounded: bool,
    products: &[(Batching, (usize, usize, usize))],
) -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for (si, storage) in MatmulStorage::all().enumerate() {
        for (di, &(batching, dims)) in products.iter().enumerate() {
            for t in 0..4 {
                let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(rounded);
                let seed = (si * 40 + di * 4 + t) as u64;
                checks.push(
                    validate::matmul_stored(g, batching, dims, &spec, storage, seed).unwrap(),
                );
            }
        }
        let inputs = Inputs::stored(storage, rounded);
        let seed = 400 + si as u64;
        for (batch, dims) in [(2, (65, 70, 100)), (1, (4, 8, 12))] {
            checks.push(
                validate::matmul_bias_act(g, batch, dims, true, Activation::Gelu, inputs, seed)
                    .unwrap(),
            );
            checks.push(
                validate::matmul_act_grad(g, batch, dims, Activation::Tanh, inputs, seed).unwrap(),
            );
        }
    }
    checks
}

/// Asserts that every check ran on the cooperative-matrix kernel.
fn assert_ran_on_coop(checks: &[KernelCheck]) {
    for c in checks {
        assert!(
            c.kernel.starts_with("matmul_coop"),
            "{} ran on {}",
            c.case,
            c.kernel
        );
    }
}

/// Both fused epilogues of f32 products `dims` for 2 weight matrices, with identity, ReLU and
/// GELU (the ReLU case with a bias per matrix), seeds from `seed`.
fn f32_epilogue_checks(
    g: &cohort::GpuBackend,
    dims: (usize, usize, usize),
    seed: u64,
) -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    for (i, act) in [Activation::Identity, Activation::Relu, Activation::Gelu]
        .into_iter()
        .enumerate()
    {
        let seed = seed + i as u64;
        checks.push(validate::matmul_bias_act(g, 2, dims, i == 1, act, F32, seed).unwrap());
        checks.push(validate::matmul_act_grad(g, 2, dims, act, F32, seed).unwrap());
    }
    checks
}

/// Whether `g` offers F16 tensors (f16 shaders); says loudly that the F16-tensor checks were
/// skipped if not.
fn has_f16_tensors(g: &cohort::GpuBackend) -> bool {
    let has = cohort::Backend::f16_tensors(g);
    if !has {
        common::skip(
            "f16",
            &format!(
                "{} offers no F16 tensors (f16 shaders {}), so kernels on F16 tensors did NOT run",
                cohort::Backend::describe(g),
                g.runtime().caps().shader_f16
            ),
        );
    }
    has
}

#[test]
fn matmul_on_f16_tensors_matches_cpu() {
    let Some(g) = gpu() else { return };
    if !has_f16_tensors(g) {
        return;
    }
    // With the f32 kernel only (no cooperative matrices), so that every combination runs on
    // matmul.wgsl whatever the adapter has.
    let plain = cohort::GpuBackend::new(&cohort::GpuOptions {
        coop: cohort::gpu::CoopChoice::Off,
        ..cohort::GpuOptions::from_env().unwrap()
    })
    .unwrap();
    let mut checks = f16_tensor_checks(&plain, false, F16_TENSOR_PRODUCTS);
    checks.extend(f16_tensor_checks(&plain, true, F16_TENSOR_PRODUCTS));
    for c in &checks {
        assert!(!c.kernel.starts_with("matmul_coop"), "{}", c.case);
    }
    report("matmul on F16 tensors", &checks);
}

#[test]
fn convert_between_f32_and_f16_matches_cpu() {
    let Some(g) = gpu() else { return };
    if !has_f16_tensors(g) {
        return;
    }
    let checks: Vec<_> = [(1, 1), (2, 2), (255, 3), (1001, 4), (70001, 5)]
        .iter()
        .map(|&(n, seed)| validate::convert(g, n, seed).unwrap())
        .collect();
    report("convert", &checks);
}

#[test]
fn matmul_with_f16_inputs_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut checks = f16_matmul_checks(g);
    // The device-open self-test of the tensor-core kernel, here on whichever kernel runs f16.
    checks.push(validate::coop_self_test(g).unwrap());
    checks.extend(f16_rounding_checks(g));
    report("matmul f16 inputs", &checks);
}

/// That f16 products round their inputs, and to the nearest f16 with ties to even, on the
/// tiled kernel and (one column) the narrow one.
fn f16_rounding_checks(g: &cohort::GpuBackend) -> Vec<KernelCheck> {
    let mut checks = vec![validate::matmul_f16_rounding(g).unwrap()];
    for columns in [1, 64] {
        checks.push(validate::matmul_f16_ties(g, columns).unwrap());
    }
    checks
}

#[test]
fn f16_products_match_cpu_with_the_other_f16_rounding() {
    // The f32 matmuls round f16 products' inputs with WGSL's packing conversions where the
    // adapter allows them, else in integer operations (shaders/include/f16_rounding*.wgsl):
    // here the form the adapter does not pick by default, where it allows it.
    let Some(g) = gpu() else { return };
    let integer = !g.runtime().integer_f16_rounding();
    let options = cohort::GpuOptions {
        integer_f16_rounding: Some(integer),
        ..cohort::GpuOptions::from_env().unwrap()
    };
    let g = match cohort::GpuBackend::new(&options) {
        Ok(g) => g,
        Err(e) => {
            // Only the conversions can be refused, and only where the adapter lacks them.
            assert!(!integer, "{e}");
            assert!(matches!(e, cohort::CohortError::Unsupported(_)), "{e}");
            common::skip(
                "f16-conversions",
                &format!("the adapter does not allow WGSL's f16 conversions: {e}"),
            );
            return;
        }
    };
    assert_eq!(g.runtime().integer_f16_rounding(), integer);
    let mut checks = f16_matmul_checks(&g);
    checks.extend(f16_rounding_checks(&g));
    report(
        &format!("matmul f16 inputs, integer rounding {integer}"),
        &checks,
    );
}

/// Checks of the cooperative-matrix kernel on a backend that runs f16 products there, in
/// `layout`: ragged shapes that cross the big tile in all transposes, both fused epilogues, and
/// with `full` every f16 product of `f16_matmul_checks` too. Asserts each ran on `matmul_coop`.
fn coop_checks(g: &cohort::GpuBackend, layout: &str, full: bool) {
    let mut checks = if full {
        let mut all = f16_matmul_checks(g);
        // F16 tensors: every operand-type build of the kernel (rounding the f32 operands makes
        // every combination an f16 product), on the smaller products.
        if has_f16_tensors(g) {
            all.extend(f16_tensor_checks(g, true, &F16_TENSOR_PRODUCTS[..2]));
        }
        all
    } else {
        Vec::new()
    };
    for (i, &(batch, dims)) in [(1, (1, 1, 1)), (2, (70, 65, 33)), (2, (130, 129, 100))]
        .iter()
        .enumerate()
    {
        for t in 0..4 {
            let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(true);
            let batching = validate::Batching::All(batch);
            checks
                .push(validate::matmul(g, batching, dims, &spec, 70 + (i * 4 + t) as u64).unwrap());
        }
        for act in [Activation::Identity, Activation::Relu, Activation::Gelu] {
            let seed = 80 + i as u64;
            checks.push(
                validate::matmul_bias_act(g, batch, dims, i == 1, act, ROUNDED, seed).unwrap(),
            );
            checks.push(validate::matmul_act_grad(g, batch, dims, act, ROUNDED, seed).unwrap());
        }
    }
    checks.push(validate::matmul_f16_rounding(g).unwrap());
    assert_ran_on_coop(&checks);
    report(
        &format!("matmul_coop {:?} layout {layout}", g.matmul_coop()),
        &checks,
    );
}

/// A backend whose f16 products run on `matmul_coop.wgsl` built as `coop` says, in `layout`
/// (otherwise built as the environment says, e.g. COHORT_COOP_UNROLL).
fn coop_backend(coop: cohort::gpu::CoopChoice, layout: &str) -> cohort::Result<cohort::GpuBackend> {
    coop_backend_with(coop, layout, |_| {})
}

/// [`coop_backend`], with the kernel's other build options as `build` sets them.
fn coop_backend_with(
    coop: cohort::gpu::CoopChoice,
    layout: &str,
    build: impl FnOnce(&mut cohort::GpuOptions),
) -> cohort::Result<cohort::GpuBackend> {
    let coop_layout = Some(layout.parse()?);
    common::gpu_with(|options| {
        options.coop = coop;
        options.coop_layout = coop_layout;
        // The small products too (e.g. 1×1×1) on this kernel, not the narrow one.
        options.no_narrow_kernel = true;
        build(options);
    })
}

#[test]
fn matmul_coop_with_emulated_cooperative_matrices_matches_cpu() {
    // The cooperative-matrix kernel with its five matrix operations written out in plain WGSL:
    // its tiling, staging, double buffering and epilogues checked on any adapter with f16
    // shaders (lavapipe in CI), in the default small layout, layouts with 4x1, 1x4 and 1x2
    // fragments per subgroup, the tuner's quarter layout of one each, and one of 8 subgroups.
    // (The default big layout, 128 wide, needs 48 KiB of workgroup memory, more than
    // lavapipe's 32: it runs where the device allows.)
    let Some(g) = gpu() else { return };
    if !has_f16_shaders(g, "the emulated cooperative-matrix kernel") {
        return;
    }
    for layout in [
        "2x2:2x2", "1x4:4x1", "4x1:1x4", "4x2:1x2", "2x2:1x1", "4x2:2x4",
    ] {
        let g = match coop_backend(cohort::gpu::CoopChoice::Emulate, layout) {
            Err(cohort::CohortError::InvalidConfig(why)) if layout == "4x2:2x4" => {
                common::loud(&format!("SKIPPED layout {layout} here: {why}"));
                continue;
            }
            other => other.unwrap(),
        };
        assert_eq!(
            g.matmul_coop(),
            Some(cohort::gpu::shaders::CoopOps::Emulated)
        );
        assert!(g.coop_check().is_some_and(|c| c.passed()));
        coop_checks(&g, layout, true);
    }
    // The k-step written out (COHORT_COOP_UNROLL=1): in the small layout (2x2 fragments, so
    // accumulators indexed by FC and past it) and with 4 fragments down or across, which
    // reach every one of its guarded products.
    let emulate = cohort::gpu::CoopChoice::Emulate;
    for layout in ["2x2:2x2", "1x4:4x1", "4x1:1x4"] {
        let g = coop_backend_with(emulate, layout, |o| o.coop_unroll = true).unwrap();
        assert!(g.coop_check().is_some_and(|c| c.passed()));
        coop_checks(&g, &format!("{layout}, unrolled"), false);
    }
    // Staged one f16 per store (COHORT_COOP_STORES=scalar), as before vec4 stores.
    let g = coop_backend_with(emulate, "2x2:2x2", |o| o.coop_scalar_stores = true).unwrap();
    assert!(g.coop_check().is_some_and(|c| c.passed()));
    coop_checks(&g, "2x2:2x2, scalar stores", false);
    // Every operand staged k-contiguous (COHORT_COOP_STAGING=k), as before 2026-11-30: the
    // transposed operands' other staging.
    let g = coop_backend_with(emulate, "2x2:2x2", |o| o.coop_k_staging = true).unwrap();
    assert!(g.coop_check().is_some_and(|c| c.passed()));
    coop_checks(&g, "2x2:2x2, staged k-contiguous", false);
    // Two k-slices read ahead (COHORT_COOP_PREFETCH=2).
    let g = coop_backend_with(emulate, "2x2:2x2", |o| o.coop_deep_prefetch = true).unwrap();
    assert!(g.coop_check().is_some_and(|c| c.passed()));
    coop_checks(&g, "2x2:2x2, two slices ahead", false);
    slice_count_checks(&g, "2x2:2x2, two slices ahead");
    // 64 k per step (COHORT_COOP_K_STEP=64) in the tuner's quarter layout, whose deeper
    // slices fit lavapipe's 32 KiB (the small layout's take 40).
    let g = coop_backend_with(emulate, "2x2:1x1", |o| o.coop_deep_k_step = true).unwrap();
    assert!(g.coop_check().is_some_and(|c| c.passed()));
    if runs_deep_k_step(&g, "2x2:1x1", false) {
        coop_checks(&g, "2x2:1x1, 64 k per step", false);
        slice_count_checks(&g, "2x2:1x1, 64 k per step");
    }
    deep_emulated_products();
}

/// f16 products whose K takes 1 to 6 of the cooperative-matrix kernel's k-slices (32 deep; 1 to
/// 3 at 64 k per step), in each transpose of A: reading two slices ahead, its two register sets
/// take turns, and the range may end after either (or before the second is needed).
fn slice_count_checks(g: &cohort::GpuBackend, label: &str) {
    let mut checks = Vec::new();
    for (i, k) in [20, 64, 65, 128, 150, 192].into_iter().enumerate() {
        for trans_a in [false, true] {
            let spec = MatmulSpec::new(trans_a, false).f16(true);
            let seed = 90 + 2 * i as u64 + trans_a as u64;
            checks.push(validate::matmul(g, Batching::None, (40, 36, k), &spec, seed).unwrap());
        }
    }
    assert_ran_on_coop(&checks);
    report(&format!("matmul_coop {label}, 1 to 6 k-slices"), &checks);
}

/// Products deeper than lavapipe runs the emulated kernel's loops in one dispatch (it stops
/// every loop of an invocation after 65535 iterations in all): once came out short from
/// K ≈ 1700 with no error. Now split along K on software adapters: right, in two launches, and
/// past 16 splits' worth an error.
fn deep_emulated_products() {
    let g = coop_backend(cohort::gpu::CoopChoice::Emulate, "2x2:2x2").unwrap();
    let mut checks = Vec::new();
    for (i, k) in [2048, 4096].into_iter().enumerate() {
        let spec = MatmulSpec::new(i == 1, false).f16(true);
        checks
            .push(validate::matmul(&g, Batching::None, (16, 32, k), &spec, 60 + i as u64).unwrap());
    }
    assert!(checks.iter().all(|c| c.kernel == "matmul_coop"));
    report("matmul_coop emulated, K 2048 and 4096", &checks);
    if !g.is_software() {
        common::skip(
            "lavapipe",
            "the emulated kernel's K limit (its split launches and refusals) is a software \
             adapter's; this one is hardware",
        );
        return;
    }
    use cohort::Backend;
    let shape = |k| {
        let a = g.zeros(&[4, k], cohort::DType::F32).unwrap();
        let b = g.zeros(&[k, 8], cohort::DType::F32).unwrap();
        (a, b, g.zeros(&[4, 8], cohort::DType::F32).unwrap())
    };
    let (a, b, mut c) = shape(4096);
    let before = g.runtime().work_counts().dispatches;
    g.matmul(&a, &b, &mut c, &MatmulSpec::default().f16(true))
        .unwrap();
    assert_eq!(
        g.runtime().work_counts().dispatches - before,
        2,
        "split along K"
    );
    let (a, b, mut c) = shape(16 * 512 + 1);
    let err = g
        .matmul(&a, &b, &mut c, &MatmulSpec::default().f16(true))
        .unwrap_err();
    assert!(matches!(err, cohort::CohortError::Unsupported(_)), "{err}");
}

#[test]
fn matmul_coop_on_the_adapters_cooperative_matrices_matches_cpu() {
    let Some(g) = gpu() else { return };
    let caps = g.runtime().caps();
    let Some(ops) = caps.coop_ops else {
        common::loud(&format!(
            "SKIPPED: {} has no usable f16 cooperative matrices (configs {:?}, shader-f16 {}, \
             subgroup width {:?}), so shaders/matmul_coop.wgsl did NOT run on real ones here; \
             f16 products were checked on the fallback kernel and the emulated build instead",
            cohort::Backend::describe(g),
            caps.cooperative_matrix,
            caps.shader_f16,
            caps.subgroup_size
        ));
        return;
    };
    // The host's two default layouts for these fragments and the tuner's quarter layout,
    // forced in turn.
    let layouts = match ops {
        cohort::gpu::shaders::CoopOps::Native8 => ["2x2:2x2", "4x4:2x2", "2x2:1x1"],
        _ => ["2x2:2x2", "4x2:2x4", "2x2:1x1"],
    };
    // Each also with its k-step written out (COHORT_COOP_UNROLL=1), staged one f16 per store
    // (COHORT_COOP_STORES=scalar), every operand staged k-contiguous (COHORT_COOP_STAGING=k),
    // reading two k-slices ahead (COHORT_COOP_PREFETCH=2), both written out and two ahead, and
    // at 64 k per step (COHORT_COOP_K_STEP=64; in the layouts that fit it here) reading one
    // and two slices ahead: the ragged cases (and, two ahead or 64 deep, K of 1 to 6 slices of
    // 32).
    type Build = fn(&mut cohort::GpuOptions);
    let builds: [(&str, Build); 8] = [
        ("", |_| {}),
        (", unrolled", |o| o.coop_unroll = true),
        (", scalar stores", |o| o.coop_scalar_stores = true),
        (", staged k-contiguous", |o| o.coop_k_staging = true),
        (", two slices ahead", |o| o.coop_deep_prefetch = true),
        (", unrolled, two slices ahead", |o| {
            o.coop_unroll = true;
            o.coop_deep_prefetch = true;
        }),
        (", 64 k per step", |o| o.coop_deep_k_step = true),
        (", 64 k per step, two slices ahead", |o| {
            o.coop_deep_k_step = true;
            o.coop_deep_prefetch = true;
        }),
    ];
    let mut deep_k_layouts = 0;
    for (layout, (build, set)) in layouts
        .iter()
        .flat_map(|l| builds.iter().map(move |b| (*l, *b)))
    {
        let mut options = cohort::GpuOptions::default();
        set(&mut options);
        let (deep_prefetch, deep_k) = (options.coop_deep_prefetch, options.coop_deep_k_step);
        let g = coop_backend_with(cohort::gpu::CoopChoice::On, layout, set).unwrap();
        if deep_k && !runs_deep_k_step(&g, layout, false) {
            continue;
        }
        deep_k_layouts += deep_k as usize;
        assert_eq!(
            g.matmul_coop(),
            Some(ops),
            "the adapter offers {ops:?} cooperative matrices but shaders/matmul_coop.wgsl failed \
             its self-test ({layout}{build}): {:?}",
            g.coop_check()
        );
        // Every case in the default build; the ragged ones in the others.
        coop_checks(&g, &format!("{layout}{build}"), build.is_empty());
        if deep_prefetch || deep_k {
            slice_count_checks(&g, &format!("{layout}{build}"));
        }
    }
    assert!(
        deep_k_layouts > 0,
        "no layout ran at 64 k per step (the quarter one needs 24 KiB of workgroup memory)"
    );
    for deep_prefetch in [false, true] {
        let g = split_f32_backend(cohort::gpu::CoopChoice::On, None, |o| {
            o.coop_deep_prefetch = deep_prefetch
        })
        .unwrap();
        assert_eq!(
            g.f32_matmul(),
            cohort::gpu::F32Matmul::SplitF16,
            "f32 products split into f16 parts failed their self-test \
             (two slices ahead: {deep_prefetch}): {:?}",
            g.coop_check()
        );
        let ahead = if deep_prefetch { 2 } else { 1 };
        split_f32_checks(
            &g,
            &format!("matmul_coop split f32 on {ops:?}, k-slices read ahead: {ahead}"),
        );
    }
    // Split f32 at 64 k per step, in the quarter layout (the small one's split slices at 64
    // take more than devices give).
    let g = split_f32_backend(cohort::gpu::CoopChoice::On, None, |o| {
        o.coop_layout = Some("2x2:1x1".parse().unwrap());
        o.coop_deep_k_step = true;
    })
    .unwrap();
    if runs_deep_k_step(&g, "2x2:1x1", true) {
        split_f32_checks(
            &g,
            &format!("matmul_coop split f32 on {ops:?}, 2x2:1x1, 64 k per step"),
        );
    }
}

/// Whether `g` runs the cooperative-matrix kernel in `layout` at 64 k per step
/// (COHORT_COOP_K_STEP=64) for f16 products or (`split_f32`) split f32 ones; says loudly where
/// the layout's deeper slices do not fit this device (it then runs at 32, tested elsewhere).
fn runs_deep_k_step(g: &cohort::GpuBackend, layout: &str, split_f32: bool) -> bool {
    let parsed: cohort::gpu::CoopLayout = layout.parse().unwrap();
    let Some(ops) = g.matmul_coop() else {
        panic!(
            "no cooperative-matrix kernel on {}",
            cohort::Backend::describe(g)
        );
    };
    match g.coop_k_step(&parsed, split_f32) {
        Some(64) => true,
        other => {
            // Why, by the rule the backend applies (emulated subgroups are 32 wide).
            let caps = g.runtime().caps();
            let sg_size = match ops {
                cohort::gpu::shaders::CoopOps::Emulated => 32,
                _ => caps.subgroup_size.unwrap_or(32),
            };
            let why = parsed
                .check(ops.frag(), sg_size, caps, split_f32, 64)
                .err()
                .map_or("no reason found".into(), |e| e.to_string());
            common::loud(&format!(
                "SKIPPED 64 k per step in layout {layout} (split f32: {split_f32}) on {}: it \
                 runs at {other:?} k per step here ({why})",
                cohort::Backend::describe(g),
            ));
            false
        }
    }
}

#[test]
fn fused_matmul_epilogues_match_the_twins_in_turn() {
    // The layer forward (product, bias, activation) and the hidden-layer backward (product, then
    // the activation's gradient), each fused into the matmul, over the same activations and shapes.
    let Some(g) = gpu() else { return };
    let (mut forward, mut backward) = (Vec::new(), Vec::new());
    for act in [
        Activation::Identity,
        Activation::Relu,
        Activation::Gelu,
        Activation::Tanh,
    ] {
        for (i, &(batch, dims)) in [
            (1, (1, 1, 1)),
            (2, (7, 13, 29)),
            (3, (65, 63, 64)),
            (2, (64, 10, 300)),
            (2, (64, 132, 10)),
        ]
        .iter()
        .enumerate()
        {
            for per_group in [false, true] {
                forward.push(
                    validate::matmul_bias_act(g, batch, dims, per_group, act, F32, i as u64)
                        .unwrap(),
                );
            }
            backward
                .push(validate::matmul_act_grad(g, batch, dims, act, F32, 50 + i as u64).unwrap());
        }
    }
    report("matmul_bias_act", &forward);
    report("matmul_act_grad", &backward);
}

#[test]
fn matmul_with_128_wide_tiles_matches_cpu() {
    // The 128×128 variant is what large products get; forced here, on a backend of its own,
    // for small and ragged shapes too (by shape they would run 64×64 tiles).
    if gpu().is_none() {
        return;
    }
    let options = cohort::GpuOptions {
        matmul_tile: cohort::gpu::TileChoice::Fixed(128),
        no_narrow_kernel: true,
        ..cohort::GpuOptions::from_env().unwrap()
    };
    let g = cohort::GpuBackend::new(&options).unwrap();
    // Plain, A shared and all batched, alpha and beta in half the cases.
    let shapes = [
        (1, 1, 1),
        (127, 129, 17),
        (128, 128, 128),
        (130, 7, 40),
        (132, 260, 36),
        (5, 300, 64),
    ];
    let mut checks = product_checks(&g, &shapes, |si, t| si == 2 && t == 0, 0);
    checks.push(
        validate::matmul_bias_act(&g, 2, (130, 129, 33), true, Activation::Gelu, F32, 3).unwrap(),
    );
    checks
        .push(validate::matmul_act_grad(&g, 2, (130, 129, 33), Activation::Gelu, F32, 4).unwrap());
    report("matmul 128x128 tiles", &checks);
    assert!(cohort::GpuBackend::new(&cohort::GpuOptions {
        matmul_tile: cohort::gpu::TileChoice::Fixed(96),
        ..Default::default()
    })
    .is_err());
}

#[test]
fn narrow_matmul_matches_cpu_for_every_width_up_to_16() {
    // matmul_narrow.wgsl (C at most 16 columns wide: output layers and their weight gradients),
    // the default for such products: every column count's vec4 groups (1 to 4, part-filled),
    // rows past a workgroup's, K shorter than one lane round, ragged and over several staged
    // rounds, in all transposes and batchings, f16 rounding, F16 operands and both epilogues.
    let Some(g) = gpu() else { return };
    let shapes = [
        (1, 1, 1),
        (5, 3, 7),
        (17, 4, 63),
        (67, 10, 300),
        (130, 13, 130),
        (33, 16, 1100),
        (3, 10, 2000),
    ];
    let batchings = [
        Batching::None,
        Batching::SharedA(3),
        Batching::SharedB(2),
        Batching::All(2),
    ];
    let mut checks = Vec::new();
    for (si, &dims) in shapes.iter().enumerate() {
        for (bi, &batching) in batchings.iter().enumerate() {
            for t in 0..4 {
                let mut spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16((si + t) % 5 == 0);
                if (si + bi + t) % 3 == 0 {
                    spec.alpha = 0.5;
                    spec.beta = 1.0;
                }
                let seed = (si * 100 + bi * 10 + t) as u64;
                checks.push(validate::matmul(g, batching, dims, &spec, seed).unwrap());
            }
        }
    }
    checks.extend(f32_epilogue_checks(g, (67, 10, 300), 500));
    checks.extend(f32_epilogue_checks(g, (5, 16, 33), 510));
    // Every width from 1 to 16 (each a pipeline of its own) in each row count a workgroup can
    // take (COHORT_NARROW_ROWS; by shape a software adapter takes 16 and a hardware one, at these
    // sizes, 4 or 8), all transposes: the shapes above reach only some of them.
    for rows in [4, 8, 16] {
        let forced = common::gpu_with(|o| o.narrow_rows = Some(rows)).unwrap();
        for n in 1..=16 {
            for t in 0..4 {
                let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2);
                let dims = cohort::ops::MatmulDims {
                    batch: 2,
                    m: 37,
                    n,
                    k: 150,
                    stride_a: 37 * 150,
                    stride_b: n * 150,
                    trans_a: spec.trans_a,
                    trans_b: spec.trans_b,
                    f16_inputs: false,
                };
                let plan = forced.matmul_plan_by_shape(&dims).unwrap();
                let want = if spec.trans_a { rows.max(8) } else { rows };
                assert_eq!(plan.tile, want, "{dims:?}: {}", plan.label(150));
                let seed = (700 + rows * 100 + n * 4 + t) as u64;
                let check = validate::matmul(&forced, Batching::All(2), (37, n, 150), &spec, seed);
                checks.push(check.unwrap());
            }
        }
    }
    let err = common::gpu_with(|o| o.narrow_rows = Some(5)).unwrap_err();
    assert!(
        matches!(err, cohort::CohortError::InvalidConfig(_)),
        "{err}"
    );
    if has_f16_tensors(g) {
        let narrow_products = [
            (Batching::All(2), (67, 10, 300)),
            (Batching::None, (5, 3, 7)),
        ];
        checks.extend(f16_tensor_checks(g, false, &narrow_products));
    }
    for c in &checks {
        // (f16_tensor_checks adds epilogues of 2 × 65×70×100, 70 wide, and of 4×8×12.)
        let narrow = !c.case.starts_with("2x65x70x100");
        assert_eq!(
            c.kernel.starts_with("matmul_narrow"),
            narrow,
            "{} ran on {}",
            c.case,
            c.kernel
        );
    }
    report("matmul_narrow", &checks);

    // One dispatch for a product K 1024 deep (the tiled kernel splits its K on hardware
    // adapters: two), and the tiled kernel where the narrow one is declined.
    let declined = cohort::GpuBackend::new(&cohort::GpuOptions {
        no_narrow_kernel: true,
        ..cohort::GpuOptions::from_env().unwrap()
    })
    .unwrap();
    // Counted on a device of its own: the other tests dispatch on `g` in parallel.
    let own = common::gpu_with(|_| {}).unwrap();
    let spec = MatmulSpec::default();
    let a = cohort::Backend::zeros(&own, &[2, 64, 1024], cohort::DType::F32).unwrap();
    let b = cohort::Backend::zeros(&own, &[2, 1024, 10], cohort::DType::F32).unwrap();
    let mut c = cohort::Backend::zeros(&own, &[2, 64, 10], cohort::DType::F32).unwrap();
    let before = own.runtime().work_counts().dispatches;
    cohort::Backend::matmul(&own, &a, &b, &mut c, &spec).unwrap();
    assert_eq!(own.runtime().work_counts().dispatches - before, 1);
    let check = validate::matmul(&declined, Batching::All(2), (64, 10, 1024), &spec, 7).unwrap();
    assert_passed(&check);
    assert_eq!(check.kernel, "matmul");
}

/// A backend whose products run on `shaders/matmul.wgsl` in its `tile` (the small ones too, not
/// on the narrow kernel), built as `build` sets the options, else as the environment says.
fn tiled_backend_with(
    tile: usize,
    build: impl FnOnce(&mut cohort::GpuOptions),
) -> cohort::GpuBackend {
    let mut options = cohort::GpuOptions {
        matmul_tile: cohort::gpu::TileChoice::Fixed(tile),
        no_narrow_kernel: true,
        ..cohort::GpuOptions::from_env().unwrap()
    };
    build(&mut options);
    cohort::GpuBackend::new(&options).unwrap()
}

#[test]
fn matmul_reading_two_slices_ahead_matches_cpu() {
    // COHORT_MATMUL_PREFETCH=2 (a candidate: two register sets take turns, each stored at the
    // start of a slice's step and refilled with the slice three on), in both tiles, with K of
    // 1 to 7 slices of 16 (the range may end after either set, or before the second is
    // needed) and ragged, in every transpose, with the epilogues, and split along K.
    if gpu().is_none() {
        return;
    }
    let mut checks = Vec::new();
    for (ti, tile) in [64, 128].into_iter().enumerate() {
        let open = |k_splits| {
            tiled_backend_with(tile, |o| {
                o.matmul_deep_prefetch = true;
                o.matmul_single_buffer = false;
                // Every product on the tiled kernel (its f16 ones rounding as loaded).
                o.coop = cohort::gpu::CoopChoice::Off;
                o.k_splits = k_splits;
            })
        };
        let g = open(None);
        let d = cohort::ops::MatmulDims {
            batch: 1,
            m: 64,
            n: 64,
            k: 64,
            stride_a: 0,
            stride_b: 0,
            trans_a: false,
            trans_b: false,
            f16_inputs: false,
        };
        let plan = g.matmul_plan_by_shape(&d).unwrap();
        assert_eq!(
            plan.kernel,
            cohort::gpu::MatmulKernel::Tiled {
                buffers: 2,
                prefetch: 2
            },
            "{}",
            plan.label(64)
        );
        for (ki, k) in [1, 16, 17, 32, 48, 64, 80, 100, 112]
            .into_iter()
            .enumerate()
        {
            for t in 0..4 {
                let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(ki == 7 && t == 0);
                let seed = (ti * 1000 + ki * 10 + t) as u64;
                let dims = (65, 70, k);
                checks.push(validate::matmul(&g, Batching::SharedA(2), dims, &spec, seed).unwrap());
            }
        }
        checks.extend(f32_epilogue_checks(&g, (130, 129, 100), 11 + ti as u64));
        let split = open(Some(3));
        let spec = MatmulSpec::new(false, true);
        checks.push(validate::matmul(&split, Batching::None, (70, 65, 300), &spec, 5).unwrap());
    }
    let tiled = ["matmul", "matmul_bias_act", "matmul_act_grad"];
    for c in &checks {
        assert!(
            tiled.contains(&c.kernel),
            "{} {}: not the tiled kernel",
            c.kernel,
            c.case
        );
    }
    report("matmul reading two slices ahead", &checks);
}

#[test]
fn matmul_with_single_buffered_slices_matches_cpu() {
    // COHORT_MATMUL_BUFFERS=1 (an experiment: one workgroup buffer per operand, two barriers
    // per k-slice), in both tiles, on products several slices deep in every transpose.
    if gpu().is_none() {
        return;
    }
    let mut checks = Vec::new();
    for (ti, tile) in [64, 128].into_iter().enumerate() {
        let g = tiled_backend_with(tile, |o| o.matmul_single_buffer = true);
        for (si, &dims) in [(65, 70, 100), (130, 129, 40), (1, 1, 1)]
            .iter()
            .enumerate()
        {
            for t in 0..4 {
                let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2);
                let seed = (ti * 100 + si * 10 + t) as u64;
                checks.push(validate::matmul(&g, Batching::SharedA(2), dims, &spec, seed).unwrap());
            }
        }
    }
    report("matmul single-buffered slices", &checks);
}

#[test]
fn tuned_matmuls_match_cpu_and_keep_the_fastest_plan() {
    // COHORT_MATMUL_TUNE=1: each product shape's candidate plans timed once, the fastest kept.
    // The plan kept must give the twin's results (each other candidate is held to the shape's
    // own plan's result as it is timed: gpu::plan's results_agree), the tiled kernel's
    // candidates must cover both tiles and both buffer counts, and a shape met before must not
    // be timed again.
    let Some(env) = gpu() else { return };
    let tuned_backend = |coop| {
        cohort::GpuBackend::new(&cohort::GpuOptions {
            tune_matmuls: true,
            coop,
            ..cohort::GpuOptions::from_env().unwrap()
        })
        .unwrap()
    };
    let g = tuned_backend(cohort::gpu::CoopChoice::Off);
    let mut checks = Vec::new();
    for (si, &dims) in [(65, 70, 100), (130, 129, 40), (1, 1, 1), (7, 300, 600)]
        .iter()
        .enumerate()
    {
        for (bi, batching) in [Batching::None, Batching::All(2)].into_iter().enumerate() {
            for t in 0..4 {
                let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(si == 1 && t == 0);
                let seed = (si * 100 + bi * 10 + t) as u64;
                checks.push(validate::matmul(&g, batching, dims, &spec, seed).unwrap());
            }
        }
    }
    checks.extend(f32_epilogue_checks(&g, (130, 129, 33), 7));
    report("matmul, tuned plans", &checks);
    let tuned = g.tuned_matmuls();
    assert_no_plan_rejected(&tuned);
    assert!(tuned.len() >= 32, "{} shapes tuned", tuned.len());
    // (tile, buffers, k-slices read ahead): two ahead only with two buffers, and the only
    // depth where the environment asks for it.
    let deep = cohort::GpuOptions::from_env().unwrap().matmul_deep_prefetch;
    let variants = [(64, 2, 1 + deep as u32), (64, 1, 1), (128, 1, 1)];
    for t in &tuned {
        let timed: Vec<_> = t
            .timings
            .iter()
            .filter_map(|(plan, _)| match plan.kernel {
                cohort::gpu::MatmulKernel::Tiled { buffers, prefetch } => {
                    Some((plan.tile, buffers, prefetch))
                }
                cohort::gpu::MatmulKernel::Coop { .. } => panic!("coop plan without coop: {t}"),
                cohort::gpu::MatmulKernel::Narrow => None,
            })
            .collect();
        for variant in &variants {
            assert!(timed.contains(variant), "{variant:?} not timed: {t}");
        }
        // Each tile with two buffers (where they fit) at both depths, or only two ahead where
        // the environment asks for it; never two ahead with one buffer.
        for tile in [64, 128] {
            let one_ahead = timed.contains(&(tile, 2, 1));
            let two_ahead = timed.contains(&(tile, 2, 2));
            match deep {
                true => assert!(!one_ahead, "{t}"),
                false => assert_eq!(two_ahead, one_ahead, "{t}"),
            }
            assert!(
                !timed.contains(&(tile, 1, 2)),
                "two ahead with one buffer: {t}"
            );
        }
        // C at most 16 wide: the narrow kernel's plan is the shape's own, timed first, and
        // the tuner times it with each of its row counts.
        let narrow = t.dims.n <= cohort::gpu::plan::NARROW_MAX_COLUMNS;
        let narrow_timed = t
            .timings
            .iter()
            .filter(|(plan, _)| plan.kernel == cohort::gpu::MatmulKernel::Narrow);
        let row_counts = cohort::gpu::plan::narrow_row_choices(t.dims.trans_a).len();
        assert_eq!(narrow_timed.count(), narrow as usize * row_counts, "{t}");
        let fastest = t.timings.iter().min_by_key(|(_, time)| *time).unwrap();
        assert_eq!(t.plan, fastest.0, "{t}");
        // What tuning gained: the shape's own plan (timed first) against the plan kept.
        assert_eq!(
            t.own_and_tuned_times(),
            Some((t.timings[0].1, fastest.1)),
            "{t}"
        );
        assert!(
            t.to_string()
                .contains("× as fast as the shape's own plan (timed: by shape "),
            "{t}"
        );
        // The shape's own tile by default: 128 on software adapters for products at least 128
        // each way (where lavapipe runs them faster), else 64.
        if narrow {
            assert_eq!(t.timings[0].0.kernel, cohort::gpu::MatmulKernel::Narrow);
        } else if std::env::var("COHORT_MATMUL_TILE").is_err() {
            let d = t.dims;
            let big = g.is_software() && d.m >= 128 && d.n >= 128;
            assert_eq!(t.timings[0].0.tile, if big { 128 } else { 64 }, "{t}");
        }
    }
    eprintln!("tuned plans on {}:", cohort::Backend::describe(env));
    tuned.iter().take(4).for_each(|t| eprintln!("  {t}"));
    // Met before: its tuned plan runs at once, in one launch (two where it splits K).
    let nn_7x300x600 = |t: &&cohort::gpu::TunedMatmul| {
        let d = t.dims;
        (d.batch, d.m, d.n, d.k, d.trans_a, d.trans_b) == (1, 7, 300, 600, false, false)
    };
    let splits = tuned.iter().find(nn_7x300x600).unwrap().plan.splits(600);
    let before = g.runtime().work_counts().dispatches;
    let spec = MatmulSpec::new(false, false);
    assert_passed(&validate::matmul(&g, Batching::None, (7, 300, 600), &spec, 9).unwrap());
    let launches = g.runtime().work_counts().dispatches - before;
    assert_eq!(launches, if splits > 1 { 2 } else { 1 });
    assert_eq!(g.tuned_matmuls().len(), tuned.len());

    // f16 products tune among the cooperative-matrix kernel's layouts and builds (emulated
    // where the adapter has none; only the small and quarter layouts fit lavapipe's workgroup
    // memory) and the tiled kernel's variants rounding to f16. Two of the four transpositions:
    // each is its own set of pipelines, a dozen of which lavapipe takes seconds each to build
    // (the tensor-core builds are checked in every transposition by the tests above).
    if !has_f16_shaders(env, "tuned plans on matmul_coop") {
        return;
    }
    let coop = match env.runtime().caps().coop_ops {
        Some(_) => cohort::gpu::CoopChoice::On,
        None => cohort::gpu::CoopChoice::Emulate,
    };
    let g = tuned_backend(coop);
    let mut checks = Vec::new();
    for (i, &dims) in [(65, 70, 100), (130, 129, 40)].iter().enumerate() {
        for t in [0, 3] {
            let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(true);
            let seed = 50 + (i * 4 + t) as u64;
            checks.push(validate::matmul(&g, Batching::SharedA(2), dims, &spec, seed).unwrap());
        }
    }
    report("f16 matmul, tuned plans", &checks);
    let tuned = g.tuned_matmuls();
    assert_no_plan_rejected(&tuned);
    assert_eq!(tuned.len(), 4);
    // Each layout in every build that fits: each k per step with each read-ahead depth (but
    // what the environment forces).
    let options = cohort::GpuOptions::from_env().unwrap();
    let depths: &[u32] = if options.coop_deep_prefetch {
        &[2]
    } else {
        &[1, 2]
    };
    let mut deep_steps_timed = false;
    for t in &tuned {
        let mut builds: std::collections::BTreeMap<String, Vec<(u32, u32)>> = Default::default();
        for (plan, _) in &t.timings {
            if let cohort::gpu::MatmulKernel::Coop {
                layout,
                k_step,
                prefetch,
            } = plan.kernel
            {
                let layout_builds = builds.entry(layout.to_string()).or_default();
                if !layout_builds.contains(&(k_step, prefetch)) {
                    layout_builds.push((k_step, prefetch));
                }
            }
        }
        let tiled = |p: &(cohort::gpu::MatmulPlan, _)| {
            matches!(p.0.kernel, cohort::gpu::MatmulKernel::Tiled { .. })
        };
        assert!(t.timings.iter().any(tiled), "{t}");
        // The layout only the tuner tries: 4 subgroups of one accumulator each.
        assert!(builds.contains_key("2x2:1x1"), "{t}");
        for (layout, timed) in &mut builds {
            let steps = g.coop_k_steps(&layout.parse().unwrap(), false);
            let steps = match options.coop_deep_k_step {
                true => vec![*steps.last().unwrap()],
                false => steps,
            };
            deep_steps_timed |= steps.contains(&64);
            let mut expected: Vec<_> = steps
                .iter()
                .flat_map(|&k| depths.iter().map(move |&p| (k, p)))
                .collect();
            expected.sort();
            timed.sort();
            assert_eq!(*timed, expected, "layout {layout}: {t}");
        }
        let fastest = t.timings.iter().min_by_key(|(_, time)| *time).unwrap();
        assert_eq!(t.plan, fastest.0, "{t}");
    }
    // The quarter layout's 64-deep slices take 24 KiB of workgroup memory.
    assert!(
        deep_steps_timed,
        "no layout timed at 64 k per step on {}",
        cohort::Backend::describe(env)
    );
    tuned.iter().take(2).for_each(|t| eprintln!("  {t}"));
}

/// Every candidate the tuner met computed what the shape's own plan computes (it checks them
/// all, slower ones too, and leaves out any that disagree).
fn assert_no_plan_rejected(tuned: &[cohort::gpu::TunedMatmul]) {
    for t in tuned {
        assert!(
            t.rejected.is_empty(),
            "a candidate's product disagreed: {t}"
        );
    }
}

#[test]
fn checks_name_the_kernel_of_the_tuned_plan() {
    // A narrow product (C 10 wide) whose plan file keeps a tiled plan: the check names the
    // kernel that ran it (the tiled one), not the shape's own (the narrow one).
    if gpu().is_none() {
        return;
    }
    let path =
        std::env::temp_dir().join(format!("cohort-kernel-names-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let open = || {
        cohort::GpuBackend::new(&cohort::GpuOptions {
            tune_file: Some(path.clone()),
            no_narrow_kernel: false,
            ..cohort::GpuOptions::from_env().unwrap()
        })
        .unwrap()
    };
    let (dims, spec) = ((33, 10, 100), MatmulSpec::new(false, false));
    let d = cohort::ops::MatmulDims {
        batch: 1,
        m: dims.0,
        n: dims.1,
        k: dims.2,
        stride_a: 0,
        stride_b: 0,
        trans_a: false,
        trans_b: false,
        f16_inputs: false,
    };
    let g = open();
    let own = g.matmul_plan_by_shape(&d).unwrap();
    assert_eq!(
        own.kernel,
        cohort::gpu::MatmulKernel::Narrow,
        "{}",
        own.label(dims.2)
    );
    assert_passed(&validate::matmul(&g, Batching::None, dims, &spec, 1).unwrap());
    drop(g);
    // The file edited so that a tiled plan is the fastest timed, and kept.
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = &mut file["plans"][0];
    let timings = entry["timings"].as_array_mut().unwrap();
    let tiled = timings
        .iter_mut()
        .find(|t| t[0]["kernel"] != "Narrow")
        .expect("a tiled plan among the candidates");
    tiled[1] = serde_json::json!({"secs": 0, "nanos": 0});
    let tiled = tiled[0].clone();
    entry["plan"] = tiled;
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();

    let g = open();
    let kept = g.current_matmul_plan(&d, false, false).unwrap();
    assert!(
        matches!(kept.kernel, cohort::gpu::MatmulKernel::Tiled { .. }),
        "the edited plan was not read back: {}",
        kept.label(dims.2)
    );
    let check = validate::matmul(&g, Batching::None, dims, &spec, 1).unwrap();
    assert_passed(&check);
    assert_eq!(check.kernel, "matmul", "{}", check.case);
    // A and B batched (other strides), the product is another shape to the tuner: its own plan.
    let batched = cohort::ops::MatmulDims {
        stride_a: 33 * 100,
        stride_b: 1000,
        ..d
    };
    assert_eq!(
        g.current_matmul_plan(&batched, false, false)
            .unwrap()
            .kernel,
        own.kernel
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn tuned_plans_are_kept_in_their_file_between_runs() {
    // COHORT_MATMUL_TUNE_FILE: a second backend on the same adapter reads the first one's plans
    // and times nothing; a plan it could not choose (an edited file) is timed again, a file for
    // another adapter or build is started afresh, and a file that is not a plan file is an error.
    if gpu().is_none() {
        return;
    }
    let path = std::env::temp_dir().join(format!("cohort-plans-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let open = || {
        cohort::GpuBackend::new(&cohort::GpuOptions {
            tune_file: Some(path.clone()),
            ..cohort::GpuOptions::from_env().unwrap()
        })
    };
    let shapes = [(65, 70, 100), (7, 300, 600)];
    let spec = MatmulSpec::new(false, true);
    let g = open().unwrap();
    assert!(g.tuned_matmuls().is_empty());
    for (i, &dims) in shapes.iter().enumerate() {
        assert_passed(&validate::matmul(&g, Batching::None, dims, &spec, i as u64).unwrap());
    }
    let tuned = g.tuned_matmuls();
    assert_no_plan_rejected(&tuned);
    assert_eq!(tuned.len(), 2);
    assert!(tuned.iter().all(|t| t.timings.len() >= 4));
    // A plan built by hand with K ranges 0 deep reads as unsplit (not a division by zero).
    let unsplit = cohort::gpu::MatmulPlan {
        k_per_split: 0,
        ..tuned[0].plan
    };
    assert_eq!(unsplit.splits(600), 1);
    assert!(
        unsplit.label(600).ends_with("K whole"),
        "{}",
        unsplit.label(600)
    );
    drop(g);

    let g = open().unwrap();
    assert_eq!(g.tuned_matmuls(), tuned, "read back as written");
    for (i, &dims) in shapes.iter().enumerate() {
        let before = g.runtime().work_counts().dispatches;
        assert_passed(&validate::matmul(&g, Batching::None, dims, &spec, i as u64).unwrap());
        let launches = g.runtime().work_counts().dispatches - before;
        let plan = tuned
            .iter()
            .find(|t| (t.dims.m, t.dims.n, t.dims.k) == dims)
            .unwrap();
        let splits = plan.plan.splits(dims.2);
        assert_eq!(launches, if splits > 1 { 2 } else { 1 }, "no timing");
    }
    drop(g);
    // Options of other kernels and of step scheduling share the plans; one that changes how
    // products run (one workgroup buffer per operand) tunes afresh.
    let with = |options: cohort::GpuOptions| {
        cohort::GpuBackend::new(&cohort::GpuOptions {
            tune_file: Some(path.clone()),
            ..options
        })
        .unwrap()
        .tuned_matmuls()
    };
    let env = cohort::GpuOptions::from_env().unwrap();
    let other_kernels = cohort::GpuOptions {
        fused_layer_update: Some(env.fused_layer_update != Some(true)),
        one_pass: !env.one_pass,
        row_classes_per_lane: Some(env.row_classes_per_lane.unwrap_or(1) + 2),
        row_subgroups: Some(false),
        no_f16_tensors: !env.no_f16_tensors,
        max_storage_buffers_per_stage: Some(8),
        ..env.clone()
    };
    assert_eq!(
        with(other_kernels),
        tuned,
        "shared with other kernels' options"
    );
    let single_buffer = cohort::GpuOptions {
        matmul_single_buffer: !env.matmul_single_buffer,
        ..env
    };
    assert!(
        with(single_buffer).is_empty(),
        "a matmul option's own plans"
    );

    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut file);
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    };
    // A plan the tuner could not have kept is left out: its own plan edited, a timed plan no
    // candidate (a K range 0 deep), or a timed plan faster than the one kept.
    let written = std::fs::read(&path).unwrap();
    let quicker = |file: &mut serde_json::Value| {
        let plan = file["plans"][0]["plan"].clone();
        let timings = file["plans"][0]["timings"].as_array_mut().unwrap();
        let other = timings.iter_mut().find(|t| t[0] != plan).unwrap();
        other[1] = serde_json::json!({"secs": 0, "nanos": 0});
    };
    let edits: [&dyn Fn(&mut serde_json::Value); 3] = [
        &|file| file["plans"][0]["plan"]["tile"] = 96.into(),
        &|file| file["plans"][0]["timings"][1][0]["k_per_split"] = 0.into(),
        &quicker,
    ];
    for (i, change) in edits.into_iter().enumerate() {
        std::fs::write(&path, &written).unwrap();
        edit(change);
        assert_eq!(
            open().unwrap().tuned_matmuls(),
            tuned[1..],
            "edit {i}: the edited plan left out"
        );
    }
    edit(&|file| file["plans"][0]["plan"]["tile"] = 96.into());
    assert_eq!(
        open().unwrap().tuned_matmuls(),
        tuned[1..],
        "the edited plan left out"
    );
    edit(&|file| file["tuned_on"] = "another adapter".into());
    assert!(
        open().unwrap().tuned_matmuls().is_empty(),
        "another adapter's file"
    );
    // An older cohort's plan file (format 1 named a tensor-core plan by its layout alone) is
    // tuned afresh, and then rewritten in the current format.
    edit(&|file| {
        file["format"] = "cohort-matmul-plans-1".into();
        file["plans"][0]["plan"]["kernel"] = serde_json::json!({"Coop": {"sg_rows": 2,
            "sg_cols": 2, "fr": 2, "fc": 2}});
    });
    let g = open().unwrap();
    assert!(g.tuned_matmuls().is_empty(), "an older format's file");
    assert_passed(&validate::matmul(&g, Batching::None, shapes[0], &spec, 0).unwrap());
    drop(g);
    let rewritten: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(rewritten["format"], "cohort-matmul-plans-2");
    assert_eq!(rewritten["plans"].as_array().map(Vec::len), Some(1));
    std::fs::write(&path, "{\"format\": \"cohort-checkpoint-1\"}").unwrap();
    let err = open().unwrap_err();
    assert!(
        matches!(err, cohort::CohortError::CorruptFile { .. }),
        "{err}"
    );
    std::fs::write(&path, "plans").unwrap();
    let err = open().unwrap_err();
    assert!(
        matches!(err, cohort::CohortError::CorruptFile { .. }),
        "{err}"
    );
    // Two runs sharing the file, each tuning a shape the other has not: the file keeps both
    // (each save adds what the other wrote since it read the file; the last save won before).
    std::fs::remove_file(&path).unwrap();
    let (first, second) = (open().unwrap(), open().unwrap());
    assert_passed(&validate::matmul(&first, Batching::None, shapes[0], &spec, 0).unwrap());
    assert_passed(&validate::matmul(&second, Batching::None, shapes[1], &spec, 1).unwrap());
    drop((first, second));
    let both = open().unwrap().tuned_matmuls();
    let mut tuned_dims: Vec<_> = both
        .iter()
        .map(|t| (t.dims.m, t.dims.n, t.dims.k))
        .collect();
    tuned_dims.sort();
    let mut want = shapes.to_vec();
    want.sort();
    assert_eq!(tuned_dims, want, "both runs' plans kept");
    std::fs::remove_file(&path).unwrap();
}

/// A backend that splits K of every matmul into `splits` ranges (as real GPUs do for products
/// with few tiles), its f16 products on `coop` (`None`: the default).
fn split_k_backend(
    splits: usize,
    coop: Option<cohort::gpu::CoopChoice>,
) -> cohort::Result<cohort::GpuBackend> {
    let env = cohort::GpuOptions::from_env().unwrap();
    cohort::GpuBackend::new(&cohort::GpuOptions {
        k_splits: Some(splits),
        coop: coop.unwrap_or(env.coop),
        no_narrow_kernel: true,
        ..env
    })
}

#[test]
fn matmul_split_along_k_matches_cpu() {
    // Split-K products (partial products per K range, then a reduction with alpha, beta and the
    // epilogue): chosen on hardware adapters for products with few tiles, so forced here, with
    // 3 and 16 splits, over K shorter than one split, ragged and long.
    if gpu().is_none() {
        return;
    }
    let shapes = [
        (1, 1, 1),
        (7, 13, 200),
        (65, 63, 129),
        (33, 10, 1000),
        (68, 132, 300),
    ];
    for splits in [3, 16] {
        let g = split_k_backend(splits, None).unwrap();
        // A product deeper than one 64-aligned split launches the partial products and the
        // reduction; a shallower one, the product alone.
        for (k, launches) in [(1000, 2), (64, 1)] {
            let b = cohort::Backend::zeros(&g, &[k, 8], cohort::DType::F32).unwrap();
            let a = cohort::Backend::zeros(&g, &[4, k], cohort::DType::F32).unwrap();
            let mut c = cohort::Backend::zeros(&g, &[4, 8], cohort::DType::F32).unwrap();
            let before = g.runtime().work_counts().dispatches;
            cohort::Backend::matmul(&g, &a, &b, &mut c, &MatmulSpec::default()).unwrap();
            assert_eq!(g.runtime().work_counts().dispatches - before, launches);
        }
        let f16 = |si, t| si == 2 && t < 2;
        let mut checks = product_checks(&g, &shapes, f16, splits as u64 * 1000);
        checks.extend(f32_epilogue_checks(&g, (64, 10, 300), (splits * 10) as u64));
        if splits == 3 && cohort::Backend::f16_tensors(&g) {
            // F16 operands and an F16 aux: the reduction's f16 build.
            checks.extend(f16_tensor_checks(&g, false, &F16_TENSOR_PRODUCTS[2..]));
        }
        report(&format!("matmul split along K in {splits}"), &checks);
    }
    // The cooperative-matrix kernel's partial products: emulated (f16 shaders needed), and on
    // the adapter's own cooperative matrices where it has them.
    if !has_f16_shaders(gpu().unwrap(), "split-K on matmul_coop") {
        return;
    }
    let mut coops = vec![cohort::gpu::CoopChoice::Emulate];
    match gpu().unwrap().runtime().caps().coop_ops {
        Some(_) => coops.push(cohort::gpu::CoopChoice::On),
        None => common::loud(
            "SKIPPED split-K on the adapter's own cooperative matrices: it has none (checked \
             on the emulated ones only)",
        ),
    }
    for coop in coops {
        let g = split_k_backend(3, Some(coop)).unwrap();
        let mut checks = Vec::new();
        for (i, &(batch, dims)) in [(1, (7, 13, 200)), (2, (70, 65, 300))].iter().enumerate() {
            for t in 0..4 {
                let spec = MatmulSpec::new(t & 1 == 1, t & 2 == 2).f16(true);
                let batching = Batching::All(batch);
                let seed = 90 + (i * 4 + t) as u64;
                checks.push(validate::matmul(&g, batching, dims, &spec, seed).unwrap());
            }
            let seed = 95 + i as u64;
            let relu = Activation::Relu;
            checks.push(
                validate::matmul_bias_act(&g, batch, dims, true, relu, ROUNDED, seed).unwrap(),
            );
            checks.push(
                validate::matmul_act_grad(&g, batch, dims, Activation::Gelu, ROUNDED, seed)
                    .unwrap(),
            );
        }
        assert_ran_on_coop(&checks);
        report(
            &format!("matmul_coop {:?} split along K in 3", g.matmul_coop()),
            &checks,
        );
    }
    assert!(split_k_backend(17, None).is_err());
    assert!(split_k_backend(0, None).is_err());
}

#[test]
fn a_split_whose_partial_products_would_pass_the_buffer_limit_multiplies_unsplit() {
    // A product split along K keeps every split's partial product in one scratch buffer; where
    // that buffer would be larger than the device's largest storage binding (or not fit its
    // memory), the product runs unsplit instead of failing. The smallest such product is 16
    // splits of 64 k each over a C just past a sixty-fourth of the limit: cheap on software
    // adapters' 128 MiB, too slow for a test past 256 MiB.
    let Some(gpu) = gpu() else { return };
    let caps = gpu.runtime().caps();
    let limit = caps.max_storage_binding.min(caps.max_buffer_size);
    if limit > 256 << 20 {
        common::loud(&format!(
            "SKIPPED: split-K's fallback past the buffer limit needs a product of {} MiB of \
             partial products here; this test did NOT run on this adapter",
            limit >> 20
        ));
        return;
    }
    let splits = 16;
    let edge = ((limit / 4 / splits as u64) as f64).sqrt() as usize + 1;
    let dims = (edge, edge, 64 * splits);
    let g = split_k_backend(splits, None).unwrap();
    let before = g.runtime().work_counts().dispatches;
    let check = validate::matmul(&g, Batching::None, dims, &MatmulSpec::default(), 7).unwrap();
    assert_eq!(
        g.runtime().work_counts().dispatches - before,
        1,
        "{dims:?} in {splits} splits: the product alone, not partial products and a reduction"
    );
    report(
        &format!("matmul {dims:?}, split-K scratch past {limit} bytes"),
        &[check],
    );
}

#[test]
fn every_kernel_matches_cpu_with_its_grids_folded_under_a_small_grid_limit() {
    // A device that allows 16 workgroups per grid dimension (the suite's largest product, 1024
    // rows, takes 16 tiled ones): every elementwise, row and reduction kernel given more runs on
    // a grid folded into two dimensions (each rebuilds its index from both), and the narrow
    // kernel's products whose rows need more run on the tiled kernel. The device itself
    // enforces the limit: a grid past it would be a validation error.
    let Some(own) = gpu() else { return };
    let g = common::gpu_with(|o| o.max_workgroups_per_dimension = Some(16)).unwrap();
    assert_eq!(g.runtime().caps().max_workgroups_per_dim, 16);
    whole_suite_matches_cpu(&g, "at most 16 workgroups per grid dimension");
    // The suite's elementwise, row, reduction and bias cases fit 16 workgroups: these need more
    // (256 threads a workgroup elementwise; at most 64 rows a workgroup in the row kernels), so
    // their grids fold and each kernel rebuilds its index from both dimensions.
    let (n, rows) = (16 * 256 * 3 + 5, 16 * 64 * 2 + 3);
    let mut folded = vec![
        validate::axpby(&g, n).unwrap(),
        validate::count_correct(&g, &[2, rows, 10], 1).unwrap(),
        validate::softmax_ce(&g, &[2, rows, 10], 0.1, 2).unwrap(),
        // 16 columns a workgroup: 126 of them (at most 16 x 16 fit this device at all).
        validate::reduce_sum(&g, &[2, 3, 1000], 1, true, 2, 3).unwrap(),
    ];
    if cohort::Backend::f16_tensors(&g) {
        folded.push(validate::convert(&g, n, 4).unwrap());
    }
    let index: Vec<u32> = (0..300).map(|i| (i * 7) % 300).collect();
    folded.push(validate::gather(&g, 300, 50, &index, 0, false).unwrap().0);
    let kl = KlSpec {
        temperature: 2.0,
        grad_scale: 0.5,
        accumulate: true,
        peers: 0..2,
    };
    folded.push(validate::kl_div(&g, &[2, rows, 10], &kl, 5).unwrap());
    let dml = DmlLossSpec {
        label_smoothing: 0.1,
        ce_scale: 1.0 / rows as f32,
        temperature: 2.0,
        kl_scale: 0.5,
        peers: 0..2,
    };
    folded.push(validate::dml_loss(&g, &[2, rows, 10], &dml, 6).unwrap());
    let sgd = OptimizerStep::Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 5e-4,
        grad_scale: 1.0,
    };
    // 16 columns a workgroup, as in reduce_sum.
    folded.push(validate::bias_optimizer(&g, &sgd, &[2, 8, 1000], 2).unwrap());
    report("grids folded past 16 workgroups", &folded);
    // A limit above the adapter's is the adapter's; none is refused.
    let own_limit = own.runtime().caps().max_workgroups_per_dim;
    let above = common::gpu_with(|o| o.max_workgroups_per_dimension = Some(u32::MAX)).unwrap();
    assert_eq!(above.runtime().caps().max_workgroups_per_dim, own_limit);
    let err = common::gpu_with(|o| o.max_workgroups_per_dimension = Some(0)).unwrap_err();
    assert!(
        matches!(err, cohort::CohortError::InvalidConfig(_)),
        "{err}"
    );
    // A limit too small for the self-tests at opening says so (it named a grid of the test's
    // own, with "a smaller batch or shape fits").
    let err = common::gpu_with(|o| o.max_workgroups_per_dimension = Some(1)).unwrap_err();
    assert!(
        matches!(err, cohort::CohortError::InvalidConfig(_))
            && err.to_string().contains(
                "max_workgroups_per_dimension 1 (COHORT_MAX_WORKGROUPS) is too few for the"
            ),
        "{err}"
    );
}

#[test]
fn a_small_grid_limit_gives_up_k_splits_and_the_narrow_kernel_or_refuses_the_work() {
    use cohort::{Backend, CohortError, DType};
    let Some(_) = gpu() else { return };
    // Split K in 4: a batch of 2 products (8 workgroups deep) runs the partial products and the
    // reduction; a batch of 3 (12) would pass the limit, so it multiplies unsplit.
    let g = common::gpu_with(|o| {
        o.max_workgroups_per_dimension = Some(8);
        o.k_splits = Some(4);
        o.no_narrow_kernel = true;
    })
    .unwrap();
    let mut checks = Vec::new();
    for (batch, launches) in [(2, 2), (3, 1)] {
        let a = g.zeros(&[batch, 4, 1000], DType::F32).unwrap();
        let b = g.zeros(&[batch, 1000, 8], DType::F32).unwrap();
        let mut c = g.zeros(&[batch, 4, 8], DType::F32).unwrap();
        let before = g.runtime().work_counts().dispatches;
        g.matmul(&a, &b, &mut c, &MatmulSpec::default()).unwrap();
        let launched = g.runtime().work_counts().dispatches - before;
        assert_eq!(launched, launches, "a batch of {batch} split in 4");
        let spec = MatmulSpec::default();
        let batching = Batching::All(batch);
        checks.push(validate::matmul(&g, batching, (4, 8, 1000), &spec, batch as u64).unwrap());
    }
    // The narrow kernel takes at most 16 rows a workgroup: 100 rows fit 8 workgroups, 200 run on
    // the tiled kernel's 64-row tiles instead.
    let g = common::gpu_with(|o| {
        o.max_workgroups_per_dimension = Some(8);
        o.no_narrow_kernel = false;
    })
    .unwrap();
    for (m, kernel) in [(100, "matmul_narrow"), (200, "matmul")] {
        let check =
            validate::matmul(&g, Batching::None, (m, 10, 64), &MatmulSpec::default(), 3).unwrap();
        assert!(
            check.kernel.starts_with(kernel),
            "{m} rows ran on {}",
            check.kernel
        );
        checks.push(check);
    }
    report("matmul under a grid limit of 8", &checks);
    // What no plan fits is refused, and the backend goes on working: 513 rows need 9 tiles of
    // 64 (and 33 narrow workgroups); an elementwise kernel folds 8 × 8 workgroups of 256
    // threads, not one element more.
    let refused = |err: CohortError| {
        assert!(matches!(err, CohortError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("allows at most 8"), "{err}");
    };
    let a = g.zeros(&[513, 8], DType::F32).unwrap();
    let b = g.zeros(&[8, 8], DType::F32).unwrap();
    let mut c = g.zeros(&[513, 8], DType::F32).unwrap();
    refused(
        g.matmul(&a, &b, &mut c, &MatmulSpec::default())
            .unwrap_err(),
    );
    let step = cohort::ops::Axpby {
        a: 0.0,
        b: 2.0,
        c: 1.0,
    };
    let folded = 8 * 8 * 256;
    let values: Vec<f32> = (0..folded).map(|i| i as f32).collect();
    let mut y = g.tensor(&[folded], &values).unwrap();
    g.axpby(None, &mut y, &step).unwrap();
    let doubled = g.read(&y).unwrap();
    assert!(
        (0..folded).all(|i| doubled[i] == 2.0 * values[i] + 1.0),
        "axpby over a grid of 8 × 8"
    );
    let mut y = g.zeros(&[folded + 1], DType::F32).unwrap();
    refused(g.axpby(None, &mut y, &step).unwrap_err());
    assert_eq!(
        g.read(&g.tensor(&[2], &[1.0, 2.0]).unwrap()).unwrap(),
        [1.0, 2.0]
    );
}

/// A backend whose f32 products are split into f16 parts on the cooperative-matrix kernel built
/// as `coop` says, K split as `k_splits` says.
fn split_f32_backend(
    coop: cohort::gpu::CoopChoice,
    k_splits: Option<usize>,
    build: impl FnOnce(&mut cohort::GpuOptions),
) -> cohort::Result<cohort::GpuBackend> {
    let mut options = cohort::GpuOptions {
        coop,
        k_splits,
        f32_matmul: cohort::gpu::F32Matmul::SplitF16,
        no_narrow_kernel: true,
        ..cohort::GpuOptions::from_env().unwrap()
    };
    build(&mut options);
    cohort::GpuBackend::new(&options)
}

/// Every check of f32 products split into f16 parts on `g`: the products of
/// `matmul_matches_cpu`'s kind (batched, shared, transposed, accumulating) and both epilogues,
/// each asserted to have run on `matmul_coop`. Then the point of it: over a long K, the split
/// product is at least 100 times closer to the f32 product than the f16 product of the same
/// operands is.
fn split_f32_checks(g: &cohort::GpuBackend, label: &str) {
    let shapes = [(1, 1, 1), (7, 13, 29), (65, 63, 33), (33, 70, 300)];
    let mut checks = product_checks(g, &shapes, |_, _| false, 5000);
    checks.extend(f32_epilogue_checks(g, (70, 65, 100), 5100));
    checks.push(validate::split_f32_self_test(g).unwrap());
    assert_ran_on_coop(&checks);
    report(label, &checks);

    let (m, n, k) = (64, 48, 1000);
    let a = uniform(5200, m * k, -1.0, 1.0);
    let b = uniform(5201, k * n, -1.0, 1.0);
    let product = |f16| MatmulSpec::default().f16(f16);
    let exact = product_of(&cohort::CpuBackend, (m, n, k), [&a, &b], &product(false));
    let error = |c: Vec<f32>| {
        c.iter()
            .zip(&exact)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let on_gpu = |f16| product_of(g, (m, n, k), [&a, &b], &product(f16));
    let (split, f16) = (error(on_gpu(false)), error(on_gpu(true)));
    eprintln!("{label}: {m}x{n}x{k} max |gpu - f32 cpu|: split {split:.3e}, f16 product {f16:.3e}");
    assert!(
        split * 100.0 < f16,
        "split {split:e} is not 100x closer to f32 than the f16 product ({f16:e})"
    );

    // Values that their two f16 parts hold exactly come back exactly from a product with the
    // identity, on either side: 22 significant bits from 2⁻³ to 2¹⁰ (the lo parts stay f16
    // normals), ties of the hi rounding, and values below f16's normal range with 11 bits (all in
    // the lo part). A lost or mismatched lo part, a flushed tiny value, would show.
    let values = exact_split_values(16 * 32);
    let eye: Vec<f32> = (0..32 * 32)
        .map(|i| if i / 32 == i % 32 { 1.0 } else { 0.0 })
        .collect();
    let plain = MatmulSpec::default();
    for (c, side) in [
        (product_of(g, (16, 32, 32), [&values, &eye], &plain), "A·I"),
        (product_of(g, (32, 16, 32), [&eye, &values], &plain), "I·B"),
    ] {
        for (i, (x, v)) in c.iter().zip(&values).enumerate() {
            assert_eq!(
                x.to_bits(),
                v.to_bits(),
                "{label}: {side}[{i}] = {x:e}, not {v:e}"
            );
        }
    }
}

#[test]
fn f32_products_stay_far_closer_to_the_twin_than_f16_ones_over_long_sums() {
    // The checks' rounding bounds grow with K (the worst case of any summation order), so at
    // K = 1000 an f32 path that rounded its operands to f16 would still pass them. Here, on
    // every f32 kernel path (tiles of 64 and 128, K split in 3, the narrow kernel, both fused
    // epilogues), the error must be 100 times below that of the f16 product of the same
    // operands (the twin's, so the same on every adapter). On lavapipe f32 paths err ~1e-5 here
    // and the f16 product ~1e-2.
    let Some(_) = gpu() else { return };
    let k = 1000;
    let tiled = |tile, k_splits| cohort::GpuOptions {
        matmul_tile: cohort::gpu::TileChoice::Fixed(tile),
        k_splits,
        no_narrow_kernel: true,
        ..f32_options()
    };
    let backends = [
        ("tile 64", tiled(64, Some(1)), 48, "matmul"),
        ("tile 128", tiled(128, Some(1)), 48, "matmul"),
        ("tile 64, K split in 3", tiled(64, Some(3)), 48, "matmul"),
        ("narrow", f32_options(), 10, "matmul_narrow"),
    ];
    for (label, options, n, kernel) in backends {
        let b = &cohort::GpuBackend::new(&options).unwrap();
        let dims = (64, n, k);
        let plain = MatmulSpec::default();
        let ran = validate::matmul(b, Batching::None, dims, &plain, 5300).unwrap();
        assert_eq!(
            (ran.kernel, ran.passed()),
            (kernel, true),
            "{label}: {}",
            ran.worst
        );
        let x = uniform(5300, 64 * k, -1.0, 1.0);
        let w = uniform(5301, k * n, -1.0, 1.0);
        let twin = |f16| {
            product_of(
                &cohort::CpuBackend,
                dims,
                [&x, &w],
                &MatmulSpec::default().f16(f16),
            )
        };
        let exact = twin(false);
        let f16_error = max_difference(&twin(true), &exact);
        let [pre, y] = fused_forward_of(b, dims, [&x, &w]);
        let results = [
            (
                "product",
                product_of(b, dims, [&x, &w], &MatmulSpec::default()),
            ),
            ("fused forward pre", pre),
            ("fused forward y", y),
            ("fused backward", fused_backward_of(b, dims, [&x, &w])),
        ];
        for (what, got) in results {
            let error = max_difference(&got, &exact);
            eprintln!("{label} {what}: max |gpu - twin| {error:.2e}, f16 product {f16_error:.2e}");
            assert!(
                error * 100.0 < f16_error,
                "{label} {what}: {error:e} is not 100x below the f16 product's {f16_error:e}"
            );
        }
    }
}

/// The GPU options from the environment with the narrow kernel allowed and f32 products on the
/// f32 kernels (whatever `COHORT_NARROW` and `COHORT_F32_MATMUL` say).
fn f32_options() -> cohort::GpuOptions {
    cohort::GpuOptions {
        no_narrow_kernel: false,
        f32_matmul: cohort::gpu::F32Matmul::Plain,
        ..cohort::GpuOptions::from_env().unwrap()
    }
}

/// The largest |x − y| of two results; infinite where either holds a NaN (which `f32::max`
/// would pass over).
fn max_difference(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |worst, d| {
            if d.is_nan() {
                f32::INFINITY
            } else {
                worst.max(d)
            }
        })
}

/// `[pre, y]` of the fused layer forward of X `[m, k]` and one W `[k, n]`, zero bias and the
/// identity, so both are X·W.
fn fused_forward_of<B: cohort::Backend>(
    b: &B,
    (m, n, k): (usize, usize, usize),
    [x, w]: [&[f32]; 2],
) -> [Vec<f32>; 2] {
    let f32 = cohort::DType::F32;
    let (tx, tw) = (
        b.tensor(&[m, k], x).unwrap(),
        b.tensor(&[1, k, n], w).unwrap(),
    );
    let bias = b.zeros(&[n], f32).unwrap();
    let (mut pre, mut y) = (
        b.zeros(&[1, m, n], f32).unwrap(),
        b.zeros(&[1, m, n], f32).unwrap(),
    );
    let spec = MatmulSpec::default();
    b.matmul_bias_act(
        &tx,
        &tw,
        &bias,
        &mut pre,
        &mut y,
        &spec,
        Activation::Identity,
    )
    .unwrap();
    [b.read(&pre).unwrap(), b.read(&y).unwrap()]
}

/// The fused hidden-layer backward of dY = X `[m, k]` and Wᵀ (W stored `[n, k]`, the values of
/// `w` transposed), zero pre-activation and bias, and the identity: X·W again.
fn fused_backward_of<B: cohort::Backend>(
    b: &B,
    (m, n, k): (usize, usize, usize),
    [x, w]: [&[f32]; 2],
) -> Vec<f32> {
    let f32 = cohort::DType::F32;
    let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
    let (dy, tw) = (
        b.tensor(&[1, m, k], x).unwrap(),
        b.tensor(&[1, n, k], &wt).unwrap(),
    );
    let (pre, bias) = (
        b.zeros(&[1, m, n], f32).unwrap(),
        b.zeros(&[1, n], f32).unwrap(),
    );
    let mut dpre = b.zeros(&[1, m, n], f32).unwrap();
    let spec = MatmulSpec::new(false, true);
    b.matmul_act_grad(
        &dy,
        &tw,
        &pre,
        &bias,
        &mut dpre,
        &spec,
        Activation::Identity,
    )
    .unwrap();
    b.read(&dpre).unwrap()
}

/// `n` f32 values of both signs that split f32 products hold exactly in their two f16 parts (hi,
/// zero below 2⁻¹⁴, and lo = f16((v − hi)·2¹¹); see `split_f32_checks`).
fn exact_split_values(n: usize) -> Vec<f32> {
    let tie = 2f32.powi(-11); // half an f16 ulp at 1
    let mut values = vec![0.0, 1.0 + tie, -(1.0 + 3.0 * tie), 1000.0 + 2f32.powi(-12)];
    let mut bits = 12345u32;
    while values.len() < n {
        bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let i = values.len() as i32;
        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
        let v = if i % 5 == 0 {
            // Below 2⁻¹⁴, 11 bits: 2⁻²⁴ to just under 2⁻¹⁴.
            (1024 + (bits >> 22)) as f32 * 2f32.powi(-34 + i % 10)
        } else {
            (1.0 + (bits >> 11) as f32 * 2f32.powi(-21)) * 2f32.powi(-3 + i % 14)
        };
        values.push(sign * v);
    }
    values
}

/// C = A·B of `(m, n, k)` on `b`, from the values given.
fn product_of<B: cohort::Backend>(
    b: &B,
    (m, n, k): (usize, usize, usize),
    [a, w]: [&[f32]; 2],
    spec: &MatmulSpec,
) -> Vec<f32> {
    let mut c = b.zeros(&[m, n], cohort::DType::F32).unwrap();
    let (ta, tw) = (b.tensor(&[m, k], a).unwrap(), b.tensor(&[k, n], w).unwrap());
    b.matmul(&ta, &tw, &mut c, spec).unwrap();
    b.read(&c).unwrap()
}

/// Whether `g` has f16 shaders; says loudly that `what` did NOT run if not.
fn has_f16_shaders(g: &cohort::GpuBackend, what: &str) -> bool {
    let has = g.runtime().caps().shader_f16;
    if !has {
        common::skip(
            "f16",
            &format!(
                "{} has no f16 shaders, so {what} did NOT run",
                cohort::Backend::describe(g)
            ),
        );
    }
    has
}

#[test]
fn f32_matmul_split_into_f16_parts_matches_cpu() {
    // f32 products on the cooperative-matrix kernel, as hi·hi + hi·lo + lo·hi of their f16
    // parts: emulated here (any adapter with f16 shaders), on real cooperative matrices in
    // `matmul_coop_on_the_adapters_cooperative_matrices_matches_cpu`. Unsplit and split along K,
    // and split reading two k-slices ahead (COHORT_COOP_PREFETCH=2).
    let Some(g) = gpu() else { return };
    if !has_f16_shaders(g, "f32 products split into f16 parts") {
        return;
    }
    for (k_splits, deep_prefetch) in [(None, false), (Some(3), false), (Some(3), true)] {
        let g = split_f32_backend(cohort::gpu::CoopChoice::Emulate, k_splits, |o| {
            o.coop_deep_prefetch = deep_prefetch
        })
        .unwrap();
        assert_eq!(g.f32_matmul(), cohort::gpu::F32Matmul::SplitF16);
        assert!(g.coop_check().is_some_and(|c| c.passed()));
        split_f32_checks(
            &g,
            &format!(
                "matmul_coop split f32, emulated, K splits {k_splits:?}, two slices ahead \
                 {deep_prefetch}"
            ),
        );
    }
    // Without a cooperative-matrix kernel there is nothing to split onto: an error, not a
    // silent f32 kernel.
    let err = split_f32_backend(cohort::gpu::CoopChoice::Off, None, |_| {}).unwrap_err();
    assert!(
        matches!(&err, cohort::CohortError::Unsupported(why) if why.contains("cooperative")),
        "{err}"
    );
}

#[test]
fn tuned_split_f32_products_time_only_layouts_whose_split_fits() {
    // A tuned f32 product split into f16 parts times the cooperative-matrix kernel in its split
    // layout only, also where the shape's own plan is the narrow kernel (C at most 16 wide):
    // the other layouts were checked unsplit, and split they may need more workgroup memory
    // than the device has (the big layout on an H100: 96 KiB of 48).
    let Some(env) = gpu() else { return };
    if !has_f16_shaders(env, "tuned f32 products split into f16 parts") {
        return;
    }
    let g = split_f32_backend(cohort::gpu::CoopChoice::Emulate, None, |o| {
        o.tune_matmuls = true;
        o.no_narrow_kernel = false;
    })
    .unwrap();
    let spec = MatmulSpec::new(false, false);
    let check = validate::matmul(&g, Batching::None, (40, 10, 70), &spec, 11).unwrap();
    report("split f32, tuned, narrow shape", &[check]);
    let tuned = g.tuned_matmuls();
    assert_no_plan_rejected(&tuned);
    assert_eq!(tuned.len(), 1);
    let layouts: Vec<_> = (tuned[0].timings.iter())
        .filter_map(|(plan, _)| match plan.kernel {
            cohort::gpu::MatmulKernel::Coop { layout, .. } => Some(layout),
            _ => None,
        })
        .collect();
    assert!(!layouts.is_empty(), "no coop candidate: {}", tuned[0]);
    for layout in layouts {
        assert!(
            !g.coop_k_steps(&layout, true).is_empty(),
            "layout {layout} does not fit split: {}",
            tuned[0]
        );
    }
}

#[test]
fn tuning_leaves_out_candidates_the_adapter_cannot_run_not_the_product() {
    // On a software adapter the cooperative-matrix kernel takes at most 16 K splits of 512:
    // an f16 product 10,000 deep is past it. Its own plan (the narrow kernel, C 10 wide) runs
    // it, so tuning must time the others and leave the tensor-core candidates out (it refused
    // the whole product).
    let Some(env) = gpu() else { return };
    if !env.is_software() {
        common::skip(
            "lavapipe",
            "the cooperative-matrix kernel's K limit is a software adapter's",
        );
        return;
    }
    if !has_f16_shaders(
        env,
        "tuned f16 products past the tensor-core kernel's K limit",
    ) {
        return;
    }
    let g = cohort::GpuBackend::new(&cohort::GpuOptions {
        tune_matmuls: true,
        coop: cohort::gpu::CoopChoice::Emulate,
        ..cohort::GpuOptions::from_env().unwrap()
    })
    .unwrap();
    let spec = MatmulSpec::new(false, false).f16(true);
    let check = validate::matmul(&g, Batching::None, (4, 10, 10_000), &spec, 12).unwrap();
    report("f16, tuned, past the coop kernel's K limit", &[check]);
    let tuned = g.tuned_matmuls();
    assert_no_plan_rejected(&tuned);
    assert_eq!(tuned.len(), 1);
    let t = &tuned[0];
    assert_eq!(
        t.timings[0].0.kernel,
        cohort::gpu::MatmulKernel::Narrow,
        "{t}"
    );
    let coop = |p: &&(cohort::gpu::MatmulPlan, _)| {
        matches!(p.0.kernel, cohort::gpu::MatmulKernel::Coop { .. })
    };
    assert!(!t.timings.iter().any(|p| coop(&p)), "{t}");
    assert!(t.timings.len() > 1, "the other candidates were timed: {t}");
}

#[test]
fn every_kernel_matches_cpu_with_wgpu_runtime_checks_forced() {
    // The other tests run the kernels as cohort ships them: without wgpu's loop bounding, each
    // with or without its index clamping as `Shader::bounds_checks` says.
    // Force loop bounding on, then off, with the clamping everywhere, then drop the clamping
    // everywhere, and run the whole validation suite each way: every way must match the CPU
    // twins.
    if gpu().is_none() {
        return;
    }
    for (forced, unchecked_indexing) in [(true, false), (false, false), (false, true)] {
        let options = cohort::GpuOptions {
            loop_bounding: forced,
            unchecked_indexing: Some(unchecked_indexing),
            ..cohort::GpuOptions::from_env().unwrap()
        };
        let g = cohort::GpuBackend::new(&options).unwrap();
        whole_suite_matches_cpu(
            &g,
            &format!("loop bounding {forced}, unchecked indexing {unchecked_indexing}"),
        );
    }
}

#[test]
fn every_kernel_matches_cpu_with_unrolling_hints() {
    // GpuOptions::unroll_hints builds every kernel from SPIR-V that cohort writes itself, as
    // wgpu would (bounds checks, loop bounding, binding numbers), with its loops marked for
    // unrolling: run the whole validation suite that way too.
    let Some(g) = gpu() else { return };
    let Some(hinted) = common::hinted_gpu(g) else {
        return;
    };
    whole_suite_matches_cpu(&hinted, "unrolling hints");
}

/// Runs the whole validation suite on `g` (at least 20 checks) and reports it as `what`,
/// after checking that `g` runs the paths the backend under test runs: a self-test that failed
/// under `what` (the row kernels in subgroups, the tensor cores, f32 products split on them)
/// would otherwise hand its products to a fallback, said only on stderr, and the suite would
/// pass without the path it was meant to check.
fn whole_suite_matches_cpu(g: &cohort::GpuBackend, what: &str) {
    let base = gpu().expect("the backend under test");
    let self_tests = [
        ("row kernels", g.row_check()),
        ("tensor cores", g.coop_check()),
    ];
    for (path, check) in self_tests {
        if let Some(check) = check {
            assert!(
                check.passed(),
                "{what}: the {path}' self-test failed: {check:?}"
            );
        }
    }
    assert_eq!(
        g.row_subgroups(),
        base.row_subgroups(),
        "{what}: row kernels"
    );
    assert_eq!(g.matmul_coop(), base.matmul_coop(), "{what}: tensor cores");
    assert_eq!(g.f32_matmul(), base.f32_matmul(), "{what}: f32 products");
    let checks = validate::run_all(g).unwrap();
    assert!(
        checks.len() >= 20,
        "the whole suite: {} checks",
        checks.len()
    );
    report(&format!("all kernels, {what}"), &checks);
}

#[test]
fn every_kernel_matches_cpu_with_its_parameters_in_the_other_kind_of_buffer() {
    // The other tests read the kernels' parameters as the adapter's default says (a storage
    // buffer on lavapipe before Mesa 23.1, as in CI; a uniform buffer elsewhere): run the whole
    // validation suite the other way too, so both declarations are checked on every adapter.
    let Some(g) = gpu() else { return };
    let other = !g.runtime().params_in_storage();
    let options = cohort::GpuOptions {
        params_in_storage: Some(other),
        ..cohort::GpuOptions::from_env().unwrap()
    };
    let g = cohort::GpuBackend::new(&options).unwrap();
    assert_eq!(g.runtime().params_in_storage(), other);
    whole_suite_matches_cpu(&g, &format!("parameters in a storage buffer {other}"));
}

#[test]
fn bias_act_forward_backward_and_bias_grad_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut checks = Vec::new();
    for act in [
        Activation::Identity,
        Activation::Relu,
        Activation::Gelu,
        Activation::Tanh,
    ] {
        for (i, shape) in [vec![1, 1], vec![7, 13], vec![3, 33, 257], vec![2, 64, 10]]
            .iter()
            .enumerate()
        {
            checks.push(validate::bias_act(g, shape, false, act, i as u64).unwrap());
            if shape.len() == 3 {
                checks.push(validate::bias_act(g, shape, true, act, i as u64).unwrap());
            }
        }
    }
    report("bias_act", &checks);
}

#[test]
fn activations_stay_finite_and_match_cpu_for_extreme_pre_activations() {
    use cohort::{Backend, CpuBackend, DType};
    let Some(g) = gpu() else { return };
    // Beyond ±5e19 the GELU derivative's polynomial overflows f32; beyond ±7e12 so does its
    // tanh argument. Zero, ±15 and ±20 sit on either side of the clamp in the derivative.
    let z: Vec<f32> = vec![
        0.0, 1.0, -1.0, 15.0, -15.0, 20.0, -20.0, 1e13, -1e13, 6e19, -6e19, 3e38, -3e38,
    ];
    fn run<B: Backend>(b: &B, z: &[f32], act: Activation) -> [Vec<f32>; 2] {
        let shape = [1, z.len()];
        let x = b.tensor(&shape, z).unwrap();
        let bias = b.tensor(&[z.len()], &vec![0.0; z.len()]).unwrap();
        let dy = b.tensor(&shape, &vec![1.0; z.len()]).unwrap();
        let mut y = b.zeros(&shape, DType::F32).unwrap();
        let mut dx = b.zeros(&shape, DType::F32).unwrap();
        b.bias_act(&x, &bias, &mut y, act).unwrap();
        b.bias_act_backward(&x, &bias, &dy, &mut dx, act).unwrap();
        [b.read(&y).unwrap(), b.read(&dx).unwrap()]
    }
    for act in [Activation::Relu, Activation::Gelu, Activation::Tanh] {
        let [gy, gdx] = run(g, &z, act);
        let [cy, cdx] = run(&CpuBackend, &z, act);
        for i in 0..z.len() {
            for (what, gv, cv) in [("y", gy[i], cy[i]), ("dx", gdx[i], cdx[i])] {
                assert!(
                    gv.is_finite(),
                    "{act:?} {what} at z = {}: GPU gave {gv}",
                    z[i]
                );
                let tol = 1e-5 * cv.abs().max(1.0);
                assert!(
                    (gv - cv).abs() <= tol,
                    "{act:?} {what} at z = {}: GPU {gv}, CPU {cv}",
                    z[i]
                );
            }
        }
        if act == Activation::Gelu {
            assert_eq!(&cdx[7..], &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        }
    }
    eprintln!("activations at extreme pre-activations: finite and equal to the CPU twin");
}

#[test]
fn terms_of_zero_weight_stay_zero_beside_overflowing_ones() {
    // Where a term's weight is 0 and its other factor overflows f32 or is infinite, the
    // shaders and the CPU twins skip it: a class of no target weight in the CE (lse - z =
    // 6e38), a class a peer gives no probability in the KL (log 0), and Nesterov's look-ahead
    // without momentum. Each gave NaN on the GPU before.
    use cohort::{Backend, CpuBackend, DType};
    let Some(g) = gpu() else { return };
    let far = [-3e38f32, 3e38, -3e38, -3e38];
    let spec = CrossEntropySpec {
        label_smoothing: 0.0,
        grad_scale: 1.0,
    };
    let ce = validate::softmax_ce_on(g, &far, &[1, 4], &[1], &spec, 1e-6).unwrap();
    let mut logits = vec![1e-40f32, 0.0, 0.0, 0.0];
    logits.extend(far);
    let kl_spec = KlSpec {
        temperature: 1.0,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..1,
    };
    let kl = validate::kl_div_on(g, &logits, &[2, 1, 4], &kl_spec).unwrap();
    // Logits of -inf: a class of no target weight and no probability (the CPU twins gave NaN
    // for 0 · ∞ where the shaders skip the term), in the peer whose KL is taken (an infinite
    // KL) and in the other peer (a term skipped); the fused loss alike.
    let minus_inf = [f32::NEG_INFINITY, 0.0, 1.0];
    let ce_inf = validate::softmax_ce_on(g, &minus_inf, &[1, 3], &[1], &spec, 1e-6).unwrap();
    let two_peers = [minus_inf, [0.5, 0.0, -1.0]].concat();
    // And +inf, whose row is NaN (∞ − ∞): the other peer's KL is NaN on both sides, not 0.
    let plus_inf = [[0.5, 0.0, -1.0], [f32::INFINITY, 0.0, 1.0]].concat();
    let kl_inf: Vec<_> = [(0..1, &two_peers), (1..2, &two_peers), (0..1, &plus_inf)]
        .into_iter()
        .map(|(peers, logits)| {
            let spec = KlSpec {
                peers,
                ..kl_spec.clone()
            };
            validate::kl_div_on(g, logits, &[2, 1, 3], &spec).unwrap()
        })
        .collect();
    let dml_spec = DmlLossSpec {
        label_smoothing: 0.0,
        ce_scale: 1.0,
        temperature: 1.0,
        kl_scale: 1.0,
        peers: 0..2,
    };
    let dml_inf = validate::dml_loss_on(g, &two_peers, &[2, 1, 3], &[1], &dml_spec).unwrap();
    report(
        "zero-weight terms",
        &[&[ce, kl, ce_inf, dml_inf][..], &kl_inf].concat(),
    );
    fn nesterov<B: Backend>(b: &B) -> Vec<f32> {
        let step = OptimizerStep::Sgd {
            lr: 1.0,
            momentum: 0.0,
            nesterov: true,
            weight_decay: 0.0,
            grad_scale: 1e30,
        };
        let mut w = b.tensor(&[2], &[1.0, 2.0]).unwrap();
        let grad = b.tensor(&[2], &[1e20, 0.5]).unwrap();
        let mut states = vec![b.zeros(&[2], DType::F32).unwrap()];
        b.optimizer_step(&step, &mut w, &grad, &mut states).unwrap();
        b.read(&w).unwrap()
    }
    let (gw, cw) = (nesterov(g), nesterov(&CpuBackend));
    assert_eq!(cw[0], f32::NEG_INFINITY);
    assert_eq!(gw[0], cw[0], "GPU {gw:?}, CPU {cw:?}");
    assert!(
        (gw[1] - cw[1]).abs() <= 1e-6 * cw[1].abs(),
        "GPU {gw:?}, CPU {cw:?}"
    );
}

#[test]
fn losses_hold_for_logits_near_f32s_largest() {
    // Log-probabilities are (z - M) - log Σ exp(z - M), M the row's largest logit, on both
    // sides: formed as z - (M + log Σ), the log-sum vanishes beside an M of 3e38 (even in f64),
    // and two tied classes each got probability 1. And differences that pass f32's largest
    // though the loss does not are taken from halves in the shaders. The CPU twins are checked
    // against the exact answers on validate::f32_edge's rows, then the shaders against the
    // twins (validate::losses_at_f32s_edge, which `cohort check` runs too).
    use cohort::cpu::{count_correct::count_correct, kl_div::kl_div, softmax_ce::softmax_ce};
    use cohort::ops::LogitDims;
    use validate::f32_edge::{ENSEMBLE, FAR, NEAR, SATURATED, TIED_PEERS, TIES};
    let close = |got: &[f32], want: &[f64], what: &str| {
        for (g, w) in got.iter().zip(want) {
            let ok = ((*g as f64) - w).abs() <= 1e-6 * w.abs().max(1.0);
            assert!(ok, "CPU twin's {what}: {got:?}, exactly {want:?}");
        }
    };
    let dims = |groups, classes| LogitDims {
        groups,
        rows: 1,
        classes,
    };
    let ce = |logits: &[f32], label: u32, label_smoothing: f32| {
        let spec = CrossEntropySpec {
            label_smoothing,
            grad_scale: 1.0,
        };
        let (mut loss, mut grad) = ([0.0f32], [0.0f32; 4]);
        softmax_ce(logits, &[label], &mut loss, &mut grad, &dims(1, 4), &spec);
        (loss, grad)
    };
    let (loss, grad) = ce(&TIES, 0, 0.0);
    close(&loss, &[2f64.ln()], "CE of ties");
    close(&grad, &[-0.5, 0.5, 0.0, 0.0], "CE gradient of ties");
    let (loss, _) = ce(&FAR, 1, 0.1);
    close(&loss, &[3.0 * (0.1 / 4.0) * 6e38], "smoothed CE far apart");
    let kl = |logits: &[f32]| {
        let spec = KlSpec {
            temperature: 1.0,
            grad_scale: 1.0,
            accumulate: false,
            peers: 0..2,
        };
        let (mut loss, mut grad) = ([0.0f32; 2], [0.0f32; 8]);
        kl_div(logits, &mut loss, &mut grad, &dims(2, 4), &spec);
        (loss, grad)
    };
    let third = 1.0 / 3.0;
    let (_, grad) = kl(&TIED_PEERS);
    close(
        &grad[..4],
        &[0.0, -third, 0.0, third],
        "KL gradient of ties",
    );
    let (loss, _) = kl(&[FAR, NEAR].concat());
    let sum: f64 = NEAR.iter().map(|&z| (z as f64).exp()).sum();
    let exact: f64 = (0..4)
        .map(|k| {
            let log_p1 = NEAR[k] as f64 - sum.ln();
            let log_p0 = FAR[k] as f64 - FAR[1] as f64;
            log_p1.exp() * (log_p1 - log_p0)
        })
        .sum();
    close(&loss[..1], &[exact], "KL far apart");
    assert!(exact > 3e38 && loss[0].is_finite(), "{exact:e}");
    let mut counts = [0u32; 3];
    count_correct(&ENSEMBLE, &[2], &mut counts, &dims(2, 3));
    assert_eq!(counts, [0, 1, 1], "CPU twin's counts");
    let mut counts = [0u32; 3];
    count_correct(&SATURATED, &[1], &mut counts, &dims(2, 4));
    assert_eq!(counts, [0, 1, 1], "CPU twin's counts of confident peers");
    let Some(g) = gpu() else { return };
    report(
        "losses near f32's largest",
        &validate::losses_at_f32s_edge(g).unwrap(),
    );
}

#[test]
fn reduce_sum_matches_cpu() {
    let Some(g) = gpu() else { return };
    let cases: &[(&[usize], usize)] = &[
        (&[1], 0),
        (&[1000], 0),
        (&[5, 17], 0),
        (&[5, 17], 1),
        (&[3, 300, 7], 1),
        (&[2, 3, 40], 2),
        (&[70000, 2], 0),
        // More rows, and more tiles of 16 outputs, than one grid dimension holds (65535): the
        // workgroups fold into two dimensions.
        (&[70000, 2], 1),
        (&[2, 1_100_000], 0),
    ];
    let mut checks = Vec::new();
    for (i, &(shape, axis)) in cases.iter().enumerate() {
        for accumulate in [false, true] {
            // Into an output of one result, and into the last of a stack of three.
            for stack in [1, 3] {
                let seed = i as u64;
                checks.push(validate::reduce_sum(g, shape, axis, accumulate, stack, seed).unwrap());
            }
        }
    }
    report("reduce_sum", &checks);
}

/// Class counts that give the row kernels every row layout: 1 to 64 threads per row reduced
/// through workgroup memory, up to the subgroup's width reduced in subgroups (67 rows leave the
/// last workgroup part-filled in each).
const ROW_LAYOUT_CLASSES: [usize; 10] = [2, 3, 5, 10, 17, 40, 100, 200, 300, 1000];

#[test]
fn the_row_layout_classes_cover_every_lane_count() {
    // Through workgroup memory; in subgroups of 64 or 8 on hardware adapters (a thread per
    // class); in lavapipe's subgroups of 8 (16 classes per thread).
    let lanes = |per_lane: usize, max: usize| {
        ROW_LAYOUT_CLASSES
            .iter()
            .map(|&c| cohort::gpu::row_lanes(c, per_lane, max))
            .collect::<std::collections::BTreeSet<usize>>()
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(lanes(16, 64), [1, 2, 4, 8, 16, 32, 64]);
    assert_eq!(lanes(1, 64), [2, 4, 8, 16, 32, 64]);
    assert_eq!(lanes(1, 8), [2, 4, 8]);
    assert_eq!(lanes(16, 8), [1, 2, 4, 8]);
}

#[test]
fn softmax_ce_matches_cpu_with_and_without_smoothing() {
    let Some(g) = gpu() else { return };
    report("softmax_ce", &softmax_ce_checks(g));
}

fn softmax_ce_checks(g: &cohort::GpuBackend) -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    let mut shapes = vec![
        vec![1, 1],
        vec![1, 10],
        vec![7, 3],
        vec![64, 10],
        vec![2, 33, 100],
        vec![3, 5, 1000],
    ];
    shapes.extend(ROW_LAYOUT_CLASSES.iter().map(|&c| vec![2, 67, c]));
    for (i, shape) in shapes.iter().enumerate() {
        for smoothing in [0.0, 0.1] {
            checks.push(validate::softmax_ce(g, shape, smoothing, i as u64).unwrap());
        }
    }
    checks
}

#[test]
fn softmax_ce_is_stable_for_huge_logits_one_class_batches_and_batch_one() {
    let Some(g) = gpu() else { return };
    for check in softmax_ce_edge_checks(g) {
        assert_passed(&check);
    }
}

fn softmax_ce_edge_checks(g: &cohort::GpuBackend) -> Vec<KernelCheck> {
    let spec = CrossEntropySpec {
        label_smoothing: 0.0,
        grad_scale: 0.25,
    };
    // Logits of ±1e4: finite losses; an f32 logit of 1e4 is exact only to ~1e-3, so the loss gets
    // that much absolute slack, while the gradient keeps the usual tolerance.
    let z = [
        1e4, -1e4, 0.0, 5e3, -1e4, 1e4, 1e4, 0.0, -1e4, 1e4, 1e4, 1e4,
    ];
    let huge = validate::softmax_ce_on(g, &z, &[4, 3], &[0, 0, 2, 1], &spec, 2e-3);
    // One class for the whole batch, and a batch of one row.
    let z = uniform(3, 20, -2.0, 2.0);
    let one_class = validate::softmax_ce_on(g, &z, &[5, 4], &[2; 5], &spec, 1e-5);
    let one_row = validate::softmax_ce_on(g, &z[..4], &[1, 4], &[3], &spec, 1e-5);
    // An out-of-range label gives a NaN loss and a zero gradient on both backends (the check
    // demands NaN matches NaN; softmax_ce_reference_values pins the CPU's values).
    let bad_label = validate::softmax_ce_on(g, &z[..6], &[2, 3], &[1, 3], &spec, 1e-5);
    [huge, one_class, one_row, bad_label]
        .into_iter()
        .map(|check| check.unwrap())
        .collect()
}

#[test]
fn softmax_ce_reference_values() {
    // The CPU twin itself, on hand-computed values: these anchor what the GPU is compared with.
    use cohort::{Backend, CpuBackend, DType};
    let cpu = CpuBackend;
    let z = cpu
        .tensor(&[3, 3], &[1e4, -1e4, 0.0, 1e4, 0.0, -1e4, 1.0, 1.0, 1.0])
        .unwrap();
    let y = cpu.tensor_u32(&[3], &[0, 2, 1]).unwrap();
    let mut l = cpu.zeros(&[3], DType::F32).unwrap();
    let mut d = cpu.zeros(&[3, 3], DType::F32).unwrap();
    cpu.softmax_ce(
        &z,
        &y,
        &mut l,
        &mut d,
        &CrossEntropySpec {
            label_smoothing: 0.0,
            grad_scale: 1.0,
        },
    )
    .unwrap();
    let l = cpu.read(&l).unwrap();
    assert!(
        l[0].abs() < 1e-6,
        "a confident right answer costs 0: {}",
        l[0]
    );
    assert!(
        (l[1] - 2e4).abs() < 1.0,
        "a confident wrong answer costs 2e4: {}",
        l[1]
    );
    assert!(
        (l[2] - 3f32.ln()).abs() < 1e-6,
        "equal logits cost ln 3: {}",
        l[2]
    );
    let d = cpu.read(&d).unwrap();
    assert!(
        (d[5] + 1.0).abs() < 1e-6 && (d[3] - 1.0).abs() < 1e-6,
        "gradient softmax − onehot: {d:?}"
    );
    // A label past the classes (which the trainer refuses before a step) gives that row a NaN
    // loss and a zero gradient, the others their values: what the GPU check with such a label
    // in softmax_ce_edge_checks matches against.
    let y = cpu.tensor_u32(&[3], &[0, 3, 1]).unwrap();
    let mut l = cpu.zeros(&[3], DType::F32).unwrap();
    let mut d = cpu.zeros(&[3, 3], DType::F32).unwrap();
    let spec = CrossEntropySpec {
        label_smoothing: 0.0,
        grad_scale: 1.0,
    };
    cpu.softmax_ce(&z, &y, &mut l, &mut d, &spec).unwrap();
    let (l, d) = (cpu.read(&l).unwrap(), cpu.read(&d).unwrap());
    assert!(
        l[0].is_finite() && l[1].is_nan() && l[2].is_finite(),
        "{l:?}"
    );
    assert!(
        d[3..6] == [0.0; 3] && (d[7] + 2.0 / 3.0).abs() < 1e-6,
        "{d:?}"
    );
}

#[test]
fn kl_div_matches_cpu_for_two_and_more_peers() {
    let Some(g) = gpu() else { return };
    report("kl_div", &kl_div_checks(g));
}

fn kl_div_checks(g: &cohort::GpuBackend) -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    let mut shapes = vec![
        [2usize, 1, 1],
        [2, 1, 10],
        [2, 64, 10],
        [3, 17, 7],
        [4, 9, 300],
        [2, 5, 1000],
    ];
    shapes.extend(ROW_LAYOUT_CLASSES.iter().map(|&c| [3, 67, c]));
    for (i, shape) in shapes.iter().enumerate() {
        for (t, accumulate, peers) in [
            (1.0, false, 0..shape[0]),
            (3.0, true, 0..shape[0]),
            (2.0, false, 1..2),
        ] {
            let spec = KlSpec {
                temperature: t,
                grad_scale: 0.5 / shape[1] as f32,
                accumulate,
                peers,
            };
            checks.push(validate::kl_div(g, shape, &spec, i as u64).unwrap());
        }
    }
    checks
}

#[test]
fn kl_terms_keep_their_accuracy_up_to_the_largest_temperature() {
    // At high temperatures the peers' distributions are nearly equal: their log-ratios r are
    // ~1e-4 at T = 1000 and the KL, of order r², is what is left when terms of order r cancel.
    // Summed as p_j·r in f32 it came out several percent off the twin's f64 (a cohort's
    // reported KL at T = 1000 differed between the backends by 7%); the kernels sum terms of
    // order r² instead. The checks hold the T²-scaled KL rows (of order one at any temperature)
    // to the twin's within 1e-4 of their value; the gradients, differences of nearly equal
    // probabilities, to a slack that grows with T (validate.rs says why).
    let Some(g) = gpu() else { return };
    let mut checks = Vec::new();
    // Every peer's KL (and, fused, its CE) at temperature t, as a step takes them.
    let specs = |shape: [usize; 3], t: f32| {
        let kl = KlSpec {
            temperature: t,
            grad_scale: 0.5 / shape[1] as f32,
            accumulate: false,
            peers: 0..shape[0],
        };
        let dml = DmlLossSpec {
            label_smoothing: 0.0,
            ce_scale: 1.0 / shape[1] as f32,
            temperature: t,
            kl_scale: 1.0 / shape[1] as f32,
            peers: 0..shape[0],
        };
        (kl, dml)
    };
    // Peers that nearly agree (logits 0.1 apart): r ~ 1e-4 at T = 1000, where log-ratios taken
    // from two rounded log-probabilities were ~1e-3 of themselves off, and so the KL. And the
    // same peers 1e4 apart in every logit (the same distributions), where log-ratios taken from
    // the logits' differences would be as far off (those are 1e-3 off in f32).
    for (shape, offset) in [
        ([2usize, 64, 10], 0.0),
        ([3, 17, 100], 0.0),
        ([2, 64, 10], 1e4),
    ] {
        let n = shape[1] * shape[2];
        let base = uniform(5, n, -6.0, 6.0);
        let mut logits = base.clone();
        for p in 1..shape[0] {
            let nudge = uniform(5 + p as u64, n, -0.1, 0.1);
            logits.extend(base.iter().zip(nudge).map(|(z, d)| z + offset + d));
        }
        for t in [1.0, 10.0, 1000.0] {
            let (kl, dml) = specs(shape, t);
            checks.push(validate::kl_div_on(g, &logits, &shape, &kl).unwrap());
            if offset != 0.0 {
                // (The cross-entropy of logits near 1e4 keeps f32's ~1e-3 of them: not the
                // KL's concern.)
                continue;
            }
            let labels: Vec<u32> = (0..shape[1] as u32).map(|r| r % shape[2] as u32).collect();
            checks.push(validate::dml_loss_on(g, &logits, &shape, &labels, &dml).unwrap());
        }
    }
    for (i, shape) in [[2usize, 64, 10], [3, 17, 7], [2, 5, 1000]]
        .iter()
        .enumerate()
    {
        for t in [10.0, 100.0, 1000.0] {
            let (kl, dml) = specs(*shape, t);
            checks.push(validate::kl_div(g, shape, &kl, i as u64).unwrap());
            checks.push(validate::dml_loss(g, shape, &dml, i as u64).unwrap());
        }
    }
    report("KL at high temperatures", &checks);
}

#[test]
fn fused_dml_loss_matches_cpu() {
    let Some(g) = gpu() else { return };
    report("dml_loss", &dml_loss_checks(g));
}

fn dml_loss_checks(g: &cohort::GpuBackend) -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    let mut shapes = vec![
        [1usize, 1, 2],
        [1, 33, 10],
        [2, 64, 10],
        [3, 17, 7],
        [4, 9, 300],
        [2, 5, 1000],
    ];
    shapes.extend(ROW_LAYOUT_CLASSES.iter().map(|&c| [2, 67, c]));
    for (i, shape) in shapes.iter().enumerate() {
        let p = shape[0];
        for (t, eps, alpha, peers) in [
            (1.0, 0.0, 1.0, 0..p),
            (3.0, 0.1, 0.5, 0..p),
            (2.0, 0.0, 0.0, p - 1..p),
        ] {
            let spec = DmlLossSpec {
                label_smoothing: eps,
                ce_scale: 1.0 / shape[1] as f32,
                temperature: t,
                kl_scale: alpha / shape[1] as f32,
                peers,
            };
            checks.push(validate::dml_loss(g, shape, &spec, i as u64).unwrap());
        }
    }
    checks
}

#[test]
fn row_kernels_match_cpu_with_rows_reduced_the_other_way() {
    // The tests run the loss and accuracy kernels as the adapter's default says (rows reduced by
    // subgroup shuffles where it has subgroups, as lavapipe in CI, else through workgroup
    // memory): run them all the other way too.
    // Then in subgroups with a thread per class, as hardware adapters run them, so that rows
    // with more threads than classes run everywhere too.
    let Some(g) = gpu() else { return };
    let subgroups = g.runtime().caps().subgroup;
    for (reduce_in_subgroups, classes_per_lane) in [(!g.row_subgroups(), None), (true, Some(1))] {
        let rows = format!(
            "{} rows, {} classes per thread",
            if reduce_in_subgroups {
                format!("subgroup ({} lanes)", g.runtime().info().subgroup_min_size)
            } else {
                "workgroup".to_string()
            },
            classes_per_lane.map_or("default".to_string(), |n| n.to_string())
        );
        if reduce_in_subgroups && !subgroups {
            common::skip(
                "subgroup",
                &format!(
                    "{} has no subgroup operations, so the row kernels in {rows} did NOT run",
                    g.runtime().info().name
                ),
            );
            continue;
        }
        let g = cohort::GpuBackend::new(&cohort::GpuOptions {
            row_subgroups: Some(reduce_in_subgroups),
            row_classes_per_lane: classes_per_lane,
            ..cohort::GpuOptions::from_env().unwrap()
        })
        .unwrap();
        assert_eq!(g.row_subgroups(), reduce_in_subgroups);
        // The backend checked rows reduced in subgroups when it opened (and keeps them only
        // where they passed, as here).
        if reduce_in_subgroups {
            assert_passed(g.row_check().expect("the row kernels' self-test ran"));
        } else {
            assert!(g.row_check().is_none());
        }
        report(&format!("softmax_ce, {rows}"), &softmax_ce_checks(&g));
        report(
            &format!("softmax_ce edge cases, {rows}"),
            &softmax_ce_edge_checks(&g),
        );
        report(&format!("kl_div, {rows}"), &kl_div_checks(&g));
        report(&format!("dml_loss, {rows}"), &dml_loss_checks(&g));
        report(&format!("count_correct, {rows}"), &count_correct_checks(&g));
    }
}

/// llvmpipe's SIMD width, which sets lavapipe's subgroup width (bits / 32 lanes), read once
/// per process when the driver loads.
const LLVMPIPE_WIDTH: &str = "LP_NATIVE_VECTOR_WIDTH";

#[test]
fn row_kernels_match_cpu_for_rows_past_software_adapters_loop_limit() {
    // lavapipe silently ends a kernel invocation's loops after 65535 iterations in all. A
    // thread of 8 (its subgroup) walking rows of these shapes would pass that (32 peers of
    // 1000 classes: ~144k in dml_loss; 2 of 50000: ~75k; 1 of 200000: ~75k in softmax_ce; 32 of
    // 8000: ~96k counting), so software adapters give such rows more threads, then dispatch
    // fewer peers at a time. Before, these came out wrong (zeros from the cut-off threads on).
    let Some(g) = gpu() else { return };
    let mut checks = Vec::new();
    for shape in [[32usize, 3, 1000], [2, 3, 50000]] {
        let p = shape[0];
        for peers in [0..p, p - 1..p] {
            let spec = DmlLossSpec {
                label_smoothing: 0.1,
                ce_scale: 1.0 / 3.0,
                temperature: 2.0,
                kl_scale: 0.5 / 3.0,
                peers: peers.clone(),
            };
            checks.push(validate::dml_loss(g, &shape, &spec, p as u64).unwrap());
            let spec = KlSpec {
                temperature: 2.0,
                grad_scale: 1.0 / 3.0,
                accumulate: true,
                peers,
            };
            checks.push(validate::kl_div(g, &shape, &spec, p as u64).unwrap());
        }
    }
    checks.push(validate::count_correct(g, &[32, 3, 8000], 7).unwrap());
    let spec = CrossEntropySpec {
        label_smoothing: 0.0,
        grad_scale: 1.0 / 3.0,
    };
    let z = uniform(8, 3 * 200_000, -6.0, 6.0);
    checks.push(
        validate::softmax_ce_on(g, &z, &[3, 200_000], &[0, 199_999, 77], &spec, 1e-3).unwrap(),
    );
    report("row kernels past a software adapter's loop limit", &checks);
    // Past what 64 threads a row and one peer a dispatch keep under it: an error there, not
    // wrong numbers (~77k iterations at 32 peers of 50000 classes); a hardware GPU runs it.
    let spec = DmlLossSpec {
        label_smoothing: 0.0,
        ce_scale: 0.5,
        temperature: 1.0,
        kl_scale: 0.5,
        peers: 0..32,
    };
    match validate::dml_loss(g, &[32, 2, 50_000], &spec, 9) {
        Err(e) => {
            assert!(g.is_software(), "{e}");
            assert!(matches!(e, cohort::CohortError::Unsupported(_)), "{e}");
            assert!(e.to_string().contains("after 65535"), "{e}");
        }
        Ok(check) => {
            assert!(!g.is_software(), "a software adapter ran {}", check.case);
            assert_passed(&check);
        }
    }
}

#[test]
fn deep_products_and_long_sums_match_cpu_or_are_refused_past_a_software_adapters_loop_limit() {
    // The tiled product loops once per 16 k and the column sums once per 16 rows: on a
    // software adapter (lavapipe stops a kernel's loops after 65535) 950000 still fits under
    // cohort's budget of 60000 and matches the twin; 970000 is refused there, not computed
    // wrong. The narrow kernel loops three times per 128 k at 4 columns: 2550000 fits, 2600000
    // does not (unguarded, lavapipe got 2790000 right and 3000000 wrong). A hardware GPU runs
    // them all. The products are of -1, 0 and 1, compared exactly: at this depth the rounding
    // bound of random operands is a third of the sum of |terms|, which a product cut short
    // (even all zeros) would pass.
    let Some(g) = gpu() else { return };
    let spec = MatmulSpec::new(false, false);
    for (depth, fits) in [(2_550_000, true), (2_600_000, !g.is_software())] {
        match validate::matmul_integers(g, Batching::All(1), (4, 4, depth), &spec, 5) {
            Ok(check) => {
                assert!(fits, "narrow product of {depth} ran: {}", check.case);
                // (A hardware GPU may split so deep a product on the tiled kernel instead.)
                assert!(check.kernel == "matmul_narrow" || !g.is_software());
                assert_passed(&check);
            }
            Err(e) => {
                assert!(!fits, "narrow product of {depth}: {e}");
                assert!(e.to_string().contains("after 65535"), "{e}");
            }
        }
    }
    // The 128 tile's loop over a k-slice is not unrolled there (17.5 to 19 loops a slice: it
    // cut 60,000 short, silently, when counted as one): 48,000 fits, 49,000 is refused; the
    // default takes the 64 tile past it (it chose the 128 tile for 128 × 128 and got it
    // wrong). The tuner leaves out candidates past the limit (it once stopped at the tiled
    // one, 62,500 loops, though the narrow kernel runs the product).
    let big = tiled_backend_with(128, |_| {});
    for (depth, fits) in [(48_000, true), (49_000, !g.is_software())] {
        match validate::matmul_integers(&big, Batching::All(1), (4, 4, depth), &spec, 6) {
            Ok(check) => {
                assert!(fits, "128 tile, {depth} deep, ran: {}", check.case);
                assert_passed(&check);
            }
            Err(e) => {
                assert!(!fits, "128 tile, {depth} deep: {e}");
                assert!(e.to_string().contains("after 65535"), "{e}");
            }
        }
    }
    assert_passed(
        &validate::matmul_integers(g, Batching::All(1), (128, 128, 60_000), &spec, 7).unwrap(),
    );
    let tuned = cohort::GpuBackend::new(&cohort::GpuOptions {
        tune_matmuls: true,
        ..cohort::GpuOptions::from_env().unwrap()
    })
    .unwrap();
    let check = validate::matmul_integers(&tuned, Batching::All(1), (1, 10, 1_000_000), &spec, 8);
    assert_passed(&check.unwrap());
    assert_no_plan_rejected(&tuned.tuned_matmuls());
    let tiled = tiled_backend_with(64, |_| {});
    for (depth, fits) in [(950_000, true), (970_000, !g.is_software())] {
        let product = validate::matmul_integers(&tiled, Batching::All(1), (4, 4, depth), &spec, 3);
        let sum = validate::reduce_sum(g, &[depth, 3], 0, false, 1, 4);
        for (what, result) in [("product", product), ("sum", sum)] {
            match result {
                Ok(check) => {
                    assert!(fits, "{what} of {depth} ran: {}", check.case);
                    assert_passed(&check);
                }
                Err(e) => {
                    assert!(!fits, "{what} of {depth}: {e}");
                    assert!(matches!(e, cohort::CohortError::Unsupported(_)), "{e}");
                    assert!(e.to_string().contains("after 65535"), "{e}");
                }
            }
        }
    }
}

#[test]
fn row_kernels_match_cpu_in_llvmpipes_other_subgroup_widths() {
    // Hardware adapters reduce rows in subgroups of 32 or 64 lanes with a thread per class;
    // lavapipe runs the test above in its subgroups of 8 (or 4 on CPUs without AVX). Run that
    // test again in child processes with llvmpipe's vectors set to 128 and 512 bits, so that
    // rows of 4 and 16 lanes and subgroups of those widths are checked without a GPU too.
    // (1024 bits, for 32 lanes, is past llvmpipe's limit of 512: there even rows of 2 lanes
    // come out wrong, which says nothing about these kernels.)
    let Some(g) = gpu() else { return };
    let info = g.runtime().info();
    if !info.name.starts_with("llvmpipe") || !g.runtime().caps().subgroup {
        common::skip(
            "lavapipe,subgroup",
            &format!(
                "{} is not lavapipe with subgroups, whose subgroup width {LLVMPIPE_WIDTH} sets, \
                 so the row kernels ran in its own subgroups only",
                info.name
            ),
        );
        return;
    }
    let test = "row_kernels_match_cpu_with_rows_reduced_the_other_way";
    for bits in [128, 512] {
        let lanes = bits / 32;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(LLVMPIPE_WIDTH, bits.to_string())
            // Tensor cores play no part in the row kernels, and Mesa 26.2's lavapipe crashes
            // (SIGSEGV) running its 8×8 cooperative matrices in 512-bit vectors.
            .env("COHORT_COOP", "off")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} with {LLVMPIPE_WIDTH}={bits}:\n{stdout}\n{stderr}"
        );
        // Each kernel in subgroups of the width asked for, a thread per class (rows of up to
        // that many lanes), and passed.
        for kernel in ["softmax_ce", "kl_div", "dml_loss", "count_correct"] {
            let line = format!("{kernel}, subgroup ({lanes} lanes) rows, 1 classes per thread:");
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with(&line) && l.contains("cases passed")),
                "no `{line}` report with {LLVMPIPE_WIDTH}={bits}:\n{stderr}"
            );
        }
        eprintln!(
            "row kernels in lavapipe's subgroups of {lanes} ({LLVMPIPE_WIDTH}={bits}): passed"
        );
    }
}

#[test]
fn a_self_test_runs_once_per_adapter_and_options() {
    // The row kernels' self-test runs at the first backend opened on an adapter with given
    // options; a second one like it reports that check without running a kernel, and one with
    // other options runs its own.
    let Some(g) = gpu() else { return };
    if !g.row_subgroups() {
        common::skip(
            "subgroup",
            &format!(
                "{} does not reduce rows in subgroups by default, so no self-test runs when it \
                 opens",
                g.runtime().info().name
            ),
        );
        return;
    }
    // Options no other test opens a backend with (7 classes per thread), twice.
    let options = cohort::GpuOptions {
        row_classes_per_lane: Some(7),
        ..cohort::GpuOptions::from_env().unwrap()
    };
    let dispatches = |g: &cohort::GpuBackend| g.runtime().work_counts().dispatches;
    let first = cohort::GpuBackend::new(&options).unwrap();
    let second = cohort::GpuBackend::new(&options).unwrap();
    let (a, b) = (first.row_check().unwrap(), second.row_check().unwrap());
    assert_passed(a);
    assert!(
        dispatches(&first) > 0,
        "the first backend ran the self-test"
    );
    assert_eq!(
        dispatches(&second),
        0,
        "the second reused the first's check"
    );
    assert_eq!(
        (a.case.as_str(), a.max_abs_error),
        (b.case.as_str(), b.max_abs_error)
    );
    // Other options (8 classes per thread): checked again.
    let other = cohort::GpuBackend::new(&cohort::GpuOptions {
        row_classes_per_lane: Some(8),
        ..options
    })
    .unwrap();
    assert!(dispatches(&other) > 0, "other options, another check");
    assert_passed(other.row_check().unwrap());
}

#[test]
fn fused_dml_loss_equals_softmax_ce_plus_kl_div() {
    // The fused kernel's twin against the two separate kernels' twins, so the three agree.
    use cohort::{Backend, CpuBackend, DType};
    let cpu = CpuBackend;
    let shape = [3, 20, 7];
    let z = cpu
        .tensor(&shape, &uniform(4, 3 * 20 * 7, -5.0, 5.0))
        .unwrap();
    let labels: Vec<u32> = (0..20).map(|i| (i * 3 % 7) as u32).collect();
    let y = cpu.tensor_u32(&[20], &labels).unwrap();
    let zeros = |s: &[usize]| cpu.zeros(s, DType::F32).unwrap();
    let (mut losses, mut fused) = (zeros(&[2, 3, 20]), zeros(&shape));
    let spec = DmlLossSpec {
        label_smoothing: 0.1,
        ce_scale: 0.05,
        temperature: 2.5,
        kl_scale: 0.03,
        peers: 0..3,
    };
    cpu.dml_loss(&z, &y, &mut losses, &mut fused, &spec)
        .unwrap();
    let losses = cpu.read(&losses).unwrap();
    let (ce, kl) = losses.split_at(60);
    let (mut ce2, mut kl2, mut split) = (zeros(&[3, 20]), zeros(&[3, 20]), zeros(&shape));
    cpu.softmax_ce(
        &z,
        &y,
        &mut ce2,
        &mut split,
        &CrossEntropySpec {
            label_smoothing: 0.1,
            grad_scale: 0.05,
        },
    )
    .unwrap();
    cpu.kl_div(
        &z,
        &mut kl2,
        &mut split,
        &KlSpec {
            temperature: 2.5,
            grad_scale: 0.03,
            accumulate: true,
            peers: 0..3,
        },
    )
    .unwrap();
    let fused = cpu.read(&fused).unwrap();
    for (a, b) in [(ce, &ce2), (kl, &kl2), (&fused[..], &split)] {
        let b = cpu.read(b).unwrap();
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs())),
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn kl_div_of_identical_peers_is_zero_with_zero_gradient() {
    use cohort::{Backend, CpuBackend};
    let row = uniform(5, 20, -5.0, 5.0);
    let z: Vec<f32> = row.iter().chain(&row).chain(&row).copied().collect();
    let spec = KlSpec {
        temperature: 2.0,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..3,
    };
    fn run<B: Backend>(b: &B, z: &[f32], spec: &KlSpec) -> (Vec<f32>, Vec<f32>) {
        let t = b.tensor(&[3, 2, 10], z).unwrap();
        // Filled with values the kernel must overwrite (accumulate is off), so a kernel that
        // wrote nothing fails.
        let mut l = b.tensor(&[3, 2], &[f32::NAN; 6]).unwrap();
        let mut d = b.tensor(&[3, 2, 10], &[7.0; 60]).unwrap();
        b.kl_div(&t, &mut l, &mut d, spec).unwrap();
        (b.read(&l).unwrap(), b.read(&d).unwrap())
    }
    let mut runs = vec![("cpu", run(&CpuBackend, &z, &spec))];
    if let Some(g) = gpu() {
        runs.push(("gpu", run(g, &z, &spec)));
    }
    for (name, (l, d)) in runs {
        assert!(l.iter().all(|v| v.abs() < 1e-6), "{name} loss {l:?}");
        assert!(d.iter().all(|v| v.abs() < 1e-6), "{name} grad {d:?}");
    }
}

#[test]
fn optimizers_match_cpu_over_several_steps() {
    let Some(g) = gpu() else { return };
    let adam = |weight_decay, decoupled, grad_scale| OptimizerStep::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay,
        decoupled,
        t: 1,
        grad_scale,
    };
    let steps = [
        OptimizerStep::Sgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            grad_scale: 1.0,
        },
        OptimizerStep::Sgd {
            lr: 0.05,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-3,
            grad_scale: 0.25,
        },
        OptimizerStep::Sgd {
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            grad_scale: 1.0,
        },
        // Gradient scales other than 1: mixed precision's loss scaling undone in the update.
        adam(0.0, false, 1.0),
        adam(1e-2, false, 1.0 / 256.0),
        adam(1e-2, true, 1.0),
        // Moments' decays and ε of their own (a kernel that took PyTorch's defaults as
        // constants would pass every case above); ε large enough to move the update.
        OptimizerStep::Adam {
            lr: 1e-2,
            beta1: 0.5,
            beta2: 0.9,
            eps: 0.05,
            weight_decay: 1e-2,
            decoupled: true,
            t: 1,
            grad_scale: 0.5,
        },
    ];
    let mut checks = Vec::new();
    for step in &steps {
        for n in [1, 257, 5000] {
            checks.push(validate::optimizer(g, step, n, 5, false).unwrap());
            // The update that also writes the f16 copy of the weights (mixed precision).
            if cohort::Backend::f16_tensors(g) {
                checks.push(validate::optimizer(g, step, n, 5, true).unwrap());
            }
        }
        // Bias updates from dpre: one row, ragged widths, shared and per-group biases.
        for shape in [&[1, 1][..], &[3, 17], &[2, 256, 100], &[3, 70, 1030]] {
            checks.push(validate::bias_optimizer(g, step, shape, 4).unwrap());
        }
    }
    report("optimizer", &checks);
    // Whole layers (the same biases with weights of 1 to 60,000 elements, with and without the
    // f16 copy) in one dispatch (the `*_layer` entries) and in two (weights, then bias), each
    // forced whatever this adapter's default, on backends of their own (for the launch counts).
    for (fused, launches) in [(true, 1), (false, 2)] {
        let own = cohort::GpuBackend::new(&cohort::GpuOptions {
            fused_layer_update: Some(fused),
            ..cohort::GpuOptions::from_env().unwrap()
        })
        .unwrap();
        let mut checks = Vec::new();
        for step in &steps {
            for (i, (shape, inputs)) in [
                (&[1, 1][..], 1),
                (&[3, 17], 5),
                (&[2, 256, 100], 300),
                (&[3, 70, 1030], 7),
            ]
            .into_iter()
            .enumerate()
            {
                let copy = i % 2 == 1 && cohort::Backend::f16_tensors(&own);
                checks.push(validate::layer_update(&own, step, shape, inputs, copy, 4).unwrap());
            }
        }
        report(
            &format!("optimizer, layer in {launches} launch(es)"),
            &checks,
        );
        let t = |shape: &[usize]| cohort::Backend::zeros(&own, shape, cohort::DType::F32).unwrap();
        let (mut w, dw, mut b, dpre) = (t(&[8, 4]), t(&[8, 4]), t(&[4]), t(&[16, 4]));
        let (mut w_state, mut b_state) = ([t(&[8, 4])], [t(&[4])]);
        let before = own.runtime().work_counts().dispatches;
        let layer = cohort::backend::LayerUpdate {
            weight: &mut w,
            weight_grad: &dw,
            weight_states: &mut w_state,
            weight_f16: None,
            bias: &mut b,
            dpre: &dpre,
            bias_states: &mut b_state,
        };
        cohort::Backend::update_layer(&own, &steps[1], layer).unwrap();
        assert_eq!(own.runtime().work_counts().dispatches - before, launches);
    }
}

#[test]
fn layer_updates_whose_buffers_do_not_fit_the_device_run_in_two_dispatches() {
    use cohort::{Backend, DType, GpuBackend, GpuOptions};
    let Some(g) = gpu() else { return };
    let sgd = OptimizerStep::Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 1e-3,
        grad_scale: 1.0,
    };
    let adam = OptimizerStep::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-2,
        decoupled: true,
        t: 1,
        grad_scale: 1.0,
    };
    // The one-dispatch update binds 4 storage buffers, 1 or 2 states for each of weights and
    // bias, the f16 copy, and the parameters where they are in a storage buffer: on a device of
    // 8 storage buffers per kernel (WebGPU's least), Adam with a copy (9) goes in two
    // dispatches; on one of 9 with the parameters in storage, Adam with a copy (10) does.
    for (cap, params_in_storage) in [(8, false), (9, true)] {
        if g.runtime().caps().max_storage_buffers < cap {
            loud(&format!(
                "SKIPPED: {cap} storage buffers: this adapter has fewer"
            ));
            continue;
        }
        let own = GpuBackend::new(&GpuOptions {
            fused_layer_update: Some(true),
            max_storage_buffers_per_stage: Some(cap),
            params_in_storage: Some(params_in_storage),
            ..GpuOptions::from_env().unwrap()
        })
        .unwrap();
        // Builds every pipeline a launch may use, and none that does not fit.
        own.warm_up().unwrap();
        let mut checks = Vec::new();
        for (step, copy, launches) in [
            (&sgd, false, 1),
            (&sgd, true, 1),
            (&adam, false, 1),
            (&adam, true, 2),
        ] {
            if copy && !own.f16_tensors() {
                common::skip(
                    "f16",
                    "the f16-copy updates: this adapter has no F16 tensors",
                );
                continue;
            }
            let t = |shape: &[usize], dtype| own.zeros(shape, dtype).unwrap();
            let (mut w, dw, mut b, dpre) = (
                t(&[8, 4], DType::F32),
                t(&[8, 4], DType::F32),
                t(&[4], DType::F32),
                t(&[16, 4], DType::F32),
            );
            let states = step.state_count();
            let mut w_state: Vec<_> = (0..states).map(|_| t(&[8, 4], DType::F32)).collect();
            let mut b_state: Vec<_> = (0..states).map(|_| t(&[4], DType::F32)).collect();
            let mut w16 = copy.then(|| t(&[8, 4], DType::F16));
            let before = own.runtime().work_counts();
            let layer = cohort::backend::LayerUpdate {
                weight: &mut w,
                weight_grad: &dw,
                weight_states: &mut w_state,
                weight_f16: w16.as_mut(),
                bias: &mut b,
                dpre: &dpre,
                bias_states: &mut b_state,
            };
            own.update_layer(step, layer).unwrap();
            let after = own.runtime().work_counts();
            let what = format!("{cap} storage buffers, {step:?}, f16 copy {copy}");
            assert_eq!(after.dispatches - before.dispatches, launches, "{what}");
            // The warm-up built every pipeline the update launches.
            assert_eq!(after.pipelines, before.pipelines, "{what}: built at launch");
            checks.push(validate::layer_update(&own, step, &[2, 70, 33], 5, copy, 3).unwrap());
        }
        report(&format!("layer update, {cap} storage buffers"), &checks);
    }
    let err = GpuBackend::new(&GpuOptions {
        max_storage_buffers_per_stage: Some(7),
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("bind up to 8 storage buffers"),
        "{err}"
    );
}

#[test]
fn axpby_fill_and_copy_match_cpu() {
    let Some(g) = gpu() else { return };
    let checks: Vec<_> = [1, 300, 70000]
        .into_iter()
        .map(|n| validate::axpby(g, n).unwrap())
        .collect();
    report("axpby", &checks);
}

#[test]
fn count_correct_matches_cpu_for_peers_and_ensemble() {
    let Some(g) = gpu() else { return };
    report("count_correct", &count_correct_checks(g));
}

/// Accuracy counts on seeded logits in every row layout, and on hand-made rows whose counts are
/// known: a confident peer and a wrong one, and ties, which go to the first class.
fn count_correct_checks(g: &cohort::GpuBackend) -> Vec<KernelCheck> {
    let mut shapes = vec![[1usize, 1, 2], [2, 100, 10], [3, 333, 7], [5, 70, 100]];
    shapes.extend(ROW_LAYOUT_CLASSES.iter().map(|&c| [2, 67, c]));
    let mut checks: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| validate::count_correct(g, s, i as u64).unwrap())
        .collect();
    // Counts start at 1 and the kernel runs twice. Peer 0 right and confident, peer 1 wrong;
    // the ensemble follows peer 0.
    let (check, counts) =
        validate::count_correct_on(g, &[0.0, 10.0, 0.0, 1.0, 0.0, 0.0], &[2, 1, 3], &[1]).unwrap();
    assert_eq!(counts, vec![3, 1, 3]);
    checks.push(check);
    // Ties among 40 classes (in different lanes of a row, however many it has): rows peaked
    // equally at classes 3, 17 and 30 (labelled 3: right; 17: wrong), a flat row and a row of
    // -1e30 (class 0 right), in both peers alike, so the ensemble ties the same way.
    let row = |peaks: &[usize], base: f32| {
        let mut z = vec![base; 40];
        peaks.iter().for_each(|&k| z[k] = 5.0);
        z
    };
    let rows = [
        row(&[3, 17, 30], 0.0),
        row(&[3, 17, 30], 0.0),
        row(&[], 0.0),
        row(&[], -1e30),
    ]
    .concat();
    let z = [rows.clone(), rows].concat();
    let (check, counts) = validate::count_correct_on(g, &z, &[2, 4, 40], &[3, 17, 0, 0]).unwrap();
    assert_eq!(
        counts,
        vec![7, 7, 7],
        "three of four rows right, twice, from 1"
    );
    checks.push(check);
    // Two confident peers that disagree, both within f32's spacing of 1 (each lacks 1e-8 or
    // less): the one that lacks less carries the ensemble, in whichever lanes the classes are
    // (summed as they were, the classes tied and the first won: row 0 wrong).
    let sure = |k: usize, z: f32| {
        let mut row = vec![0.0; 40];
        row[k] = z;
        row
    };
    let peer0 = [sure(3, 22.0), sure(3, 27.0)].concat();
    let peer1 = [sure(30, 27.0), sure(30, 22.0)].concat();
    let z = [peer0, peer1].concat();
    let (check, counts) = validate::count_correct_on(g, &z, &[2, 2, 40], &[30, 3]).unwrap();
    assert_eq!(
        counts,
        vec![3, 3, 5],
        "confident peers apart, twice, from 1"
    );
    checks.push(check);
    // NaN logits never win, as on the CPU (a diverged model's rows): a row with NaN at classes
    // 0 and 3 and its peak at 17 (labelled 17: right for each peer; its probabilities are NaN,
    // so the ensemble's class is 0: wrong), and a row of NaN (class 0: right for all).
    let mut nan_row = row(&[17], 0.0);
    nan_row[0] = f32::NAN;
    nan_row[3] = f32::NAN;
    let rows = [nan_row, vec![f32::NAN; 40]].concat();
    let z = [rows.clone(), rows].concat();
    let (check, counts) = validate::count_correct_on(g, &z, &[2, 2, 40], &[17, 0]).unwrap();
    assert_eq!(counts, vec![5, 5, 3], "NaN rows, twice, from 1");
    checks.push(check);
    // The far end of f32: a row whose largest logit is -f32::MAX at class 21 among -inf
    // (labelled 21: right for each peer and the ensemble), and a row of -inf (class 0: right
    // for each peer; its probabilities are NaN, so the ensemble's class is 0 too). The kernel
    // took -f32::MAX for no value once, and gave the first row class 0.
    let mut far_row = vec![f32::NEG_INFINITY; 40];
    far_row[21] = -f32::MAX;
    let rows = [far_row, vec![f32::NEG_INFINITY; 40]].concat();
    let z = [rows.clone(), rows].concat();
    let (check, counts) = validate::count_correct_on(g, &z, &[2, 2, 40], &[21, 0]).unwrap();
    assert_eq!(
        counts,
        vec![5, 5, 5],
        "rows at f32's far end, twice, from 1"
    );
    checks.push(check);
    checks
}

#[test]
fn gather_batch_matches_cpu() {
    let Some(g) = gpu() else { return };
    let index = [5, 0, 9, 9, 3, 1000];
    // F32 rows, then F16 rows (moved as pairs of elements), where the adapter has F16 tensors;
    // the whole index, and the batch that starts at its third entry.
    for (width, f16) in [(64, false), (2, true), (64, true)] {
        if f16 && !has_f16_tensors(g) {
            continue;
        }
        for (offset, labels) in [(0, vec![35, 0, 63, 63, 21, 0]), (2, vec![63, 63, 21, 0])] {
            let (check, rows, got) = validate::gather(g, 10, width, &index, offset, f16).unwrap();
            assert_passed(&check);
            assert_eq!(got, labels);
            let last = (labels.len() - 1) * width;
            assert!(
                rows[last..].iter().all(|&v| v == 0.0),
                "an out-of-range index gives zeros"
            );
            assert!(rows[..last].iter().any(|&v| v != 0.0));
        }
    }
}

#[test]
fn the_cli_default_check_set_passes() {
    let Some(g) = gpu() else { return };
    let checks = validate::run_all(g).unwrap();
    assert!(checks.len() >= 20);
    checks.iter().for_each(assert_passed);
}

#[test]
fn beta_zero_overwrites_a_c_that_held_nan() {
    // `beta = 0` ignores C's old contents, NaN included, as on the CPU: in plain products and
    // both fused epilogues, on the kernels the shapes pick (narrow for C at most 16 wide, else
    // tiled) and split along K (a backend that splits, where the reduction applies beta).
    let Some(g) = gpu() else { return };
    fn product<B: cohort::Backend>(b: &B, (m, n, k): (usize, usize, usize)) -> Vec<f32> {
        let a = b.tensor(&[m, k], &uniform(1, m * k, -1.0, 1.0)).unwrap();
        let w = b.tensor(&[k, n], &uniform(2, k * n, -1.0, 1.0)).unwrap();
        let mut c = b.tensor(&[m, n], &vec![f32::NAN; m * n]).unwrap();
        b.matmul(&a, &w, &mut c, &MatmulSpec::default()).unwrap();
        let bias = b.tensor(&[n], &uniform(3, n, -1.0, 1.0)).unwrap();
        let mut pre = b.tensor(&[m, n], &vec![f32::NAN; m * n]).unwrap();
        let mut y = b.tensor(&[m, n], &vec![f32::NAN; m * n]).unwrap();
        let spec = MatmulSpec::default();
        b.matmul_bias_act(&a, &w, &bias, &mut pre, &mut y, &spec, Activation::Gelu)
            .unwrap();
        let mut dpre = b.tensor(&[m, n], &vec![f32::NAN; m * n]).unwrap();
        b.matmul_act_grad(&a, &w, &pre, &bias, &mut dpre, &spec, Activation::Gelu)
            .unwrap();
        [c, y, dpre]
            .iter()
            .flat_map(|t| b.read(t).unwrap())
            .collect()
    }
    let split = split_k_backend(4, None).unwrap();
    for dims in [(7, 13, 29), (256, 10, 1024), (65, 63, 300), (33, 40, 1000)] {
        let want = product(&cohort::CpuBackend, dims);
        assert!(want.iter().all(|v| v.is_finite()));
        let before = split.runtime().work_counts().dispatches;
        let split_product = product(&split, dims);
        // Three products, each in two dispatches (partial products, reduction) where K is
        // deeper than one 64-aligned range.
        let dispatches = split.runtime().work_counts().dispatches - before;
        assert_eq!(dispatches, if dims.2 > 64 { 6 } else { 3 }, "{dims:?}");
        for (name, got) in [("default", product(g, dims)), ("split K", split_product)] {
            for (i, (g, c)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - c).abs() <= 1e-4 * (1.0 + c.abs()),
                    "{name} {dims:?}, element {i}: gpu {g}, cpu {c}"
                );
            }
        }
    }
}

/// A caller's own kernel (`Runtime::compile_wgsl`, `Runtime::dispatch_own`) over cohort's
/// tensors (`GpuTensor::binding`) runs where it is recorded among cohort's kernels, and its
/// binding covers the tensor, not the pooled buffer behind it (`arrayLength` counts 5).
#[test]
fn a_callers_own_kernel_runs_in_order_with_cohorts() {
    use cohort::Backend;
    let Some(g) = common::gpu() else { return };
    let rt = g.runtime();
    let source = "
        @group(0) @binding(0) var<storage, read_write> x: array<f32>;
        @group(0) @binding(1) var<storage, read_write> len: array<u32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if (id.x < arrayLength(&x)) { x[id.x] = 2.0 * x[id.x] + 1.0; }
            if (id.x == 0u) { len[0] = arrayLength(&x); }
        }";
    let checked = rt.compile_wgsl("twice plus one", source, "main").unwrap();
    // SAFETY: every index is tested against arrayLength; the kernel has no loop.
    let unchecked = unsafe { rt.compile_wgsl_unchecked("twice plus one", source, "main") }.unwrap();
    for pipeline in [checked, unchecked] {
        let x = g.tensor(&[5], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let len = g.tensor_u32(&[1], &[0]).unwrap();
        let mut y = g.zeros(&[5], cohort::DType::F32).unwrap();
        let bind_group_over = |x: &cohort::gpu::GpuTensor| {
            rt.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: x.binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: len.binding(),
                    },
                ],
            })
        };
        let group = bind_group_over(&x);
        rt.dispatch_own(&pipeline, &group, [1, 1, 1]).unwrap();
        // y = x between the two launches: it must see the first and not the second.
        let copy = cohort::ops::Axpby {
            a: 1.0,
            b: 0.0,
            c: 0.0,
        };
        // y += x
        let add = cohort::ops::Axpby {
            a: 1.0,
            b: 1.0,
            c: 0.0,
        };
        g.axpby(Some(&x), &mut y, &copy).unwrap();
        rt.dispatch_own(&pipeline, &group, [1, 1, 1]).unwrap();
        // A grid past the device's limit is refused before it is recorded.
        let too_many = rt.caps().max_workgroups_per_dim + 1;
        assert!(matches!(
            rt.dispatch_own(&pipeline, &group, [too_many, 1, 1]),
            Err(cohort::CohortError::Unsupported(_))
        ));
        drop(group);
        assert_eq!(g.read(&y).unwrap(), [3.0, 5.0, 7.0, 9.0, 11.0]);
        assert_eq!(g.read(&x).unwrap(), [7.0, 11.0, 15.0, 19.0, 23.0]);
        assert_eq!(g.read_u32(&len).unwrap(), [5]);
        // A bind group that does not fit the pipeline (another kernel's layout) is an error
        // when the work is submitted, not a panic; the backend goes on working.
        let other = rt
            .compile_wgsl(
                "one binding",
                "@group(0) @binding(0) var<storage, read_write> v: array<f32>;
                 @compute @workgroup_size(1) fn main() { v[0] = 1.0; }",
                "main",
            )
            .unwrap();
        let mismatched = rt.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &other.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: y.binding(),
            }],
        });
        rt.dispatch_own(&pipeline, &mismatched, [1, 1, 1]).unwrap();
        let err = g.read(&y).unwrap_err();
        // wgpu's words, which name the kernel.
        assert!(
            matches!(&err, cohort::CohortError::Gpu(why) if why.contains("twice plus one")),
            "{err}"
        );
        assert_eq!(g.read(&x).unwrap(), [7.0, 11.0, 15.0, 19.0, 23.0]);
        // Inside a per-kernel profile it runs in order too, untimed: only cohort's kernel is
        // counted.
        if rt.caps().timestamp_query {
            rt.start_profile().unwrap();
            g.axpby(Some(&x), &mut y, &copy).unwrap();
            rt.dispatch_own(&pipeline, &bind_group_over(&x), [1, 1, 1])
                .unwrap();
            g.axpby(Some(&x), &mut y, &add).unwrap();
            let profile = rt.stop_profile().unwrap();
            assert_eq!(g.read(&y).unwrap(), [22.0, 34.0, 46.0, 58.0, 70.0]);
            assert_eq!(profile.calls(), 2, "{profile:#?}");
            assert!(
                profile.kernels.iter().all(|k| k.kernel == "axpby.wgsl"),
                "{profile:#?}"
            );
        } else {
            common::skip(
                "timestamp",
                "no timestamp queries, so the own kernel was not profiled",
            );
        }
        // A tensor whose binding was taken keeps its buffer out of the pool when dropped: a
        // new tensor of its size gets another buffer, which a launch over the old bind group
        // leaves alone (pooled, the new tensor would read 1.0s here).
        let stale = bind_group_over(&x);
        drop(x);
        let fresh = g.zeros(&[5], cohort::DType::F32).unwrap();
        rt.dispatch_own(&pipeline, &stale, [1, 1, 1]).unwrap();
        assert_eq!(g.read(&fresh).unwrap(), [0.0; 5]);
    }
}
