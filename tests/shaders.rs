//! Every WGSL kernel is parsed and validated by naga, as the GPU will compile it (with the shared
//! helpers of `shaders/include/` appended), with no GPU needed, so a shader error fails fast
//! everywhere; every variant the host can pick is also written out as SPIR-V, MSL and HLSL, as
//! wgpu's Vulkan, Metal and DX12 backends do. Also checks the tree's promise: each shader file is registered, compiled in from
//! the current file, and has a CPU twin.

use std::path::{Path, PathBuf};

use cohort::gpu::plan::{narrow_chunk, narrow_row_choices};
use cohort::gpu::shaders::{with_integer_f16_rounding, CoopOps, MatmulStorage, Shader};

/// The crate root: the build's, or the current folder when the test binary was copied elsewhere
/// (e.g. staged to a GPU machine) and run from a copy of the tree.
fn root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.join("shaders").is_dir() {
        built.to_path_buf()
    } else {
        std::env::current_dir().expect("a current folder")
    }
}

/// Every module the host can build: each shader, the matmuls with every operand-type combination.
fn every_build() -> Vec<Shader> {
    let mut builds = Vec::new();
    for shader in Shader::ALL {
        match shader {
            Shader::Matmul(_) => builds.extend(MatmulStorage::all().map(Shader::Matmul)),
            Shader::MatmulNarrow(_) => {
                builds.extend(MatmulStorage::all().map(Shader::MatmulNarrow))
            }
            Shader::MatmulCoop(ops, _) => {
                builds.extend(MatmulStorage::all().map(|s| Shader::MatmulCoop(ops, s)))
            }
            other => builds.push(other),
        }
    }
    builds
}

fn shader_files() -> Vec<PathBuf> {
    let dir = root().join("shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    files
}

fn validate(name: &str, source: &str) {
    validate_with(name, source, naga::valid::Capabilities::all()).unwrap_or_else(|e| panic!("{e}"));
}

/// naga's validation with only `capabilities`; the error as text, with the source's lines.
fn validate_with(
    name: &str,
    source: &str,
    capabilities: naga::valid::Capabilities,
) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
        .validate(&module)
        .map(drop)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))
}

#[test]
fn the_f32_matmuls_round_to_f16_in_integers_where_wgsls_conversions_are_not_allowed() {
    // wgpu refuses pack2x16float and unpack2x16float where the adapter lacks
    // SHADER_F16_IN_F32 (lavapipe without f16 shaders, as on ARM): there the runtime swaps the
    // rounding helper for its integer form, which must validate without that capability, in
    // every build that has the helper (the others need no swap).
    use naga::valid::Capabilities;
    let without = Capabilities::all() - Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let mut swapped = 0;
    for shader in every_build() {
        for source in [shader.source(), shader.source_with_params_in_storage()] {
            let integer = with_integer_f16_rounding(&source);
            let name = format!("{shader:?}");
            if integer != source {
                swapped += 1;
                assert!(
                    validate_with(&name, &source, without).is_err(),
                    "{name}: its conversions validated without the capability"
                );
                assert_eq!(integer.matches("fn round_to_f16(").count(), 1, "{name}");
            }
            validate_with(&format!("{name}, integer f16 rounding"), &integer, without)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // Both f32 matmuls (the tiled and the narrow one), 8 operand-type builds each, 2 forms.
    assert_eq!(swapped, 2 * 8 * 2);
}

#[test]
fn every_kernel_validates_with_naga() {
    assert!(Shader::ALL.len() >= 10, "the full kernel set");
    let builds = every_build();
    assert_eq!(
        builds.len(),
        Shader::ALL.len() + 5 * 7,
        "8 operand-type builds per matmul"
    );
    for shader in builds {
        validate(&format!("{shader:?}"), &shader.source());
        // The form that reads the parameters from a storage buffer (old lavapipes): the one
        // declaration changed, so every kernel has it exactly once.
        let storage = shader.source_with_params_in_storage();
        validate(&format!("{shader:?} with params in storage"), &storage);
        let declarations = |source: &str, space: &str| {
            source
                .matches(&format!("@group(0) @binding(0) var<{space}> p: Params;"))
                .count()
        };
        assert_eq!(declarations(&shader.source(), "uniform"), 1, "{shader:?}");
        assert_eq!(declarations(&storage, "storage, read"), 1, "{shader:?}");
        assert_eq!(declarations(&storage, "uniform"), 0, "{shader:?}");
    }
}

#[test]
fn every_shader_file_is_compiled_in_and_has_a_cpu_twin() {
    let root = root();
    let files = shader_files();
    let mut registered: Vec<_> = Shader::ALL.iter().map(|s| s.file_name()).collect();
    registered.dedup();
    assert_eq!(
        files.len(),
        registered.len(),
        "every file in shaders/ is registered: {files:?}"
    );
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let builds: Vec<_> = Shader::ALL
            .iter()
            .filter(|s| s.file_name() == name)
            .collect();
        assert!(
            !builds.is_empty(),
            "{name} is not registered in gpu::shaders::Shader"
        );
        let on_disk = std::fs::read_to_string(&path).unwrap();
        let cpu_backend = std::fs::read_to_string(root.join("src/cpu/mod.rs")).unwrap();
        for shader in builds {
            let twin = root.join("src/cpu").join(format!("{}.rs", shader.twin()));
            assert!(
                twin.exists(),
                "{name} has no CPU twin at {}",
                twin.display()
            );
            // A twin the CPU backend runs (the one the kernel checks compare with), not a file
            // of that name alone.
            let twin_source = std::fs::read_to_string(&twin).unwrap();
            assert!(
                twin_source.contains("pub fn "),
                "{} defines no function",
                twin.display()
            );
            // A call `twin::function(`, not a `use` line or a comment.
            let prefix = format!("{}::", shader.twin());
            let calls = cpu_backend.match_indices(&prefix).any(|(at, _)| {
                let rest = &cpu_backend[at + prefix.len()..];
                let name_len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                name_len > 0 && rest[name_len..].starts_with(['(', ':'])
            });
            assert!(
                calls,
                "src/cpu/mod.rs never calls its twin {}",
                shader.twin()
            );
            assert!(
                shader.source().contains(&on_disk),
                "{name} ({shader:?}): compiled-in source is stale"
            );
        }
    }
}

#[test]
fn a_broken_shader_is_reported_by_naga() {
    // The validator really rejects errors: a type mismatch must not slip through.
    let source = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    let result = std::panic::catch_unwind(|| validate("broken", source));
    assert!(result.is_err());
}

/// The pipeline constants the host sets for `entry` of `shader`, every combination it can choose.
fn constant_sets(shader: Shader, entry: &str) -> Vec<Vec<(&'static str, f64)>> {
    let flag = |on: bool| on as u8 as f64;
    match shader {
        // The split-K reductions take none.
        Shader::Matmul(_) if entry.starts_with("reduce_splits") => vec![Vec::new()],
        Shader::Matmul(_) => {
            let mut sets = Vec::new();
            for bits in 0..32u32 {
                for tile in [64.0, 128.0] {
                    // Two workgroup buffers per operand (the default); one with
                    // COHORT_MATMUL_BUFFERS=1, on half the combinations.
                    let buffers = if bits % 2 == tile as u32 / 128 {
                        2.0
                    } else {
                        1.0
                    };
                    // Reading one k-slice ahead, and with two buffers also two
                    // (COHORT_MATMUL_PREFETCH=2).
                    let depths: &[f64] = if buffers == 2.0 { &[1.0, 2.0] } else { &[1.0] };
                    for &prefetch in depths {
                        sets.push(vec![
                            ("TRANS_A", flag(bits & 1 != 0)),
                            ("TRANS_B", flag(bits & 2 != 0)),
                            ("F16_INPUTS", flag(bits & 4 != 0)),
                            ("VEC_A", flag(bits & 8 != 0)),
                            ("VEC_B", flag(bits & 16 != 0)),
                            ("TILE", tile),
                            ("SLICE_BUFFERS", buffers),
                            ("PREFETCH", prefetch),
                        ]);
                    }
                }
            }
            sets
        }
        Shader::MatmulNarrow(_) => {
            // Every row count the host may choose, every column count, and the rounds of k it
            // stages for them (`narrow_chunk`).
            let mut sets = Vec::new();
            for bits in 0..8u32 {
                for &rows in narrow_row_choices(bits & 1 != 0) {
                    for cols in 1..=16 {
                        sets.push(vec![
                            ("TRANS_A", flag(bits & 1 != 0)),
                            ("TRANS_B", flag(bits & 2 != 0)),
                            ("F16_INPUTS", flag(bits & 4 != 0)),
                            ("ROWS", rows as f64),
                            ("COLS", cols as f64),
                            ("CHUNK", narrow_chunk(rows, cols) as f64),
                        ]);
                    }
                }
            }
            sets
        }
        Shader::MatmulCoop(ops, _) => {
            // The layouts the host picks by default (small and big) for this build's fragments,
            // at the subgroup widths it runs with.
            let frag = ops.frag();
            let widths: &[f64] = match ops {
                CoopOps::Emulated => &[32.0],
                _ => &[8.0, 32.0],
            };
            let layouts: &[[f64; 4]] = if frag == 16 {
                &[[2.0, 2.0, 2.0, 2.0], [4.0, 2.0, 2.0, 4.0]]
            } else {
                &[[2.0, 2.0, 2.0, 2.0], [4.0, 4.0, 2.0, 2.0]]
            };
            // Each layout for f16 products, with the k-step looped (the default) and written
            // out (COHORT_COOP_UNROLL=1), and the small one for f32 products from f16 parts
            // (the big one's workgroup memory doubled is more than devices give; UNROLL does
            // not apply); all staged four values per store (the default), and the small
            // layout's looped f16 and f32 builds also one f16 per store
            // (COHORT_COOP_STORES=scalar). Each layout's f16 builds, looped and written out,
            // and the f32 one also read two k-slices ahead (COHORT_COOP_PREFETCH=2). The small
            // layout's looped f16 build, reading one and two slices ahead, also 64 k per step
            // (COHORT_COOP_K_STEP=64; the big layout's would not fit devices' 48 KiB).
            let variants = layouts
                .iter()
                .flat_map(|l| {
                    [
                        (l, false, false, true, 1.0, 32.0),
                        (l, false, true, true, 1.0, 32.0),
                        (l, false, false, true, 2.0, 32.0),
                        (l, false, true, true, 2.0, 32.0),
                    ]
                })
                .chain([1.0, 2.0].map(|prefetch| (&layouts[0], true, false, true, prefetch, 32.0)))
                .chain([false, true].map(|split| (&layouts[0], split, false, false, 1.0, 32.0)))
                .chain(
                    [1.0, 2.0].map(|prefetch| (&layouts[0], false, false, true, prefetch, 64.0)),
                );
            // Operands staged as stored (the default) and all k-contiguous (COHORT_COOP_STAGING=k).
            let mut sets = Vec::new();
            for bits in 0..32u32 {
                for &width in widths {
                    for ([sg_rows, sg_cols, fr, fc], split, unroll, wide, prefetch, k_step) in
                        variants.clone()
                    {
                        sets.push(vec![
                            ("TRANS_A", flag(bits & 1 != 0)),
                            ("TRANS_B", flag(bits & 2 != 0)),
                            ("VEC_A", flag(bits & 4 != 0)),
                            ("VEC_B", flag(bits & 8 != 0)),
                            ("MN_STAGING", flag(bits & 16 == 0)),
                            ("UNROLL", flag(unroll)),
                            ("WIDE_STORES", flag(wide)),
                            ("PREFETCH", prefetch),
                            ("TK", k_step),
                            ("SG_SIZE", width),
                            ("SG_ROWS", *sg_rows),
                            ("SG_COLS", *sg_cols),
                            ("FR", *fr),
                            ("FC", *fc),
                            ("SPLIT_F32", flag(split)),
                        ]);
                    }
                }
            }
            sets
        }
        Shader::SoftmaxCe(_) | Shader::KlDiv(_) | Shader::DmlLoss(_) | Shader::CountCorrect(_) => {
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
                .iter()
                .map(|&lanes| vec![("LANES", lanes)])
                .collect()
        }
        _ => vec![Vec::new()],
    }
}

/// Calls `write` with every entry point of every build, specialised by every set of pipeline
/// constants the host can choose, as a backend receives it (naga has applied the constants).
/// Returns how many it wrote.
fn each_variant(
    mut write: impl FnMut(Shader, &str, &[(&str, f64)], &naga::Module, &naga::valid::ModuleInfo),
) -> usize {
    let mut count = 0;
    for shader in every_build() {
        let source = shader.source();
        let module = naga::front::wgsl::parse_str(&source).unwrap();
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap();
        for entry in shader.entries() {
            for constants in constant_sets(shader, entry) {
                let mut pipeline_constants = naga::back::PipelineConstants::default();
                for (name, value) in &constants {
                    pipeline_constants.insert(name.to_string(), *value);
                }
                let (module, info) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((naga::ShaderStage::Compute, entry)),
                    &pipeline_constants,
                )
                .unwrap_or_else(|e| panic!("{} {entry} {constants:?}: {e}", shader.file_name()));
                write(shader, entry, &constants, &module, &info);
                count += 1;
            }
        }
    }
    count
}

#[test]
fn every_kernel_variant_compiles_to_spirv() {
    // naga's SPIR-V writer has bugs of its own that the validator does not see (naga 30 fails
    // with "Expression [N] is not cached" on some cooperative-matrix loads), so write every
    // entry point with every set of pipeline constants the host can choose, with and without
    // loop bounding, as wgpu's Vulkan backend would: any failure shows here, without a GPU.
    // With COHORT_SPIRV_DIR set, every module is also written there, for spirv-val
    // (`VALIDATE=1 .ci/lavapipe-coop`).
    let dump = std::env::var_os("COHORT_SPIRV_DIR").map(PathBuf::from);
    if let Some(dir) = &dump {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut written = 0;
    let mut hinted_loops = 0;
    each_variant(|shader, entry, constants, module, info| {
        for force_loop_bounding in [true, false] {
            let options = naga::back::spv::Options {
                lang_version: (1, 6),
                force_loop_bounding,
                bounds_check_policies: naga::proc::BoundsCheckPolicies {
                    index: naga::proc::BoundsCheckPolicy::Restrict,
                    buffer: naga::proc::BoundsCheckPolicy::Unchecked,
                    image_load: naga::proc::BoundsCheckPolicy::Unchecked,
                    binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
                },
                ..Default::default()
            };
            let pipeline = naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: entry.to_string(),
            };
            let words = naga::back::spv::write_vec(module, info, &options, Some(&pipeline))
                .unwrap_or_else(|e| {
                    panic!("{} {entry} {constants:?}: SPIR-V: {e}", shader.file_name())
                });
            assert!(
                words.len() > 5 && words[0] == 0x0723_0203,
                "a SPIR-V module"
            );
            // The same module with its loops marked for unrolling
            // (GpuOptions::unroll_hints): every module's layout must parse.
            let mut hinted = words.clone();
            hinted_loops += cohort::gpu::spirv::hint_unroll(&mut hinted)
                .unwrap_or_else(|e| panic!("{} {entry}: hints: {e}", shader.file_name()))
                .0;
            if let Some(dir) = &dump {
                for (words, kind) in [(&words, ""), (&hinted, "-hinted")] {
                    let name = format!("{}-{entry}-{written}{kind}.spv", shader.file_name());
                    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    std::fs::write(dir.join(name), bytes).unwrap();
                }
            }
            written += 1;
        }
    });
    eprintln!("{written} SPIR-V modules written; {hinted_loops} loops marked for unrolling in their hinted copies");
    assert!(hinted_loops > written, "most kernels have loops to mark");
    // 2 loop-bounding settings × (8 operand-type builds × (288 matmul (3 entries × 32
    // transpose/rounding/vec4 sets × 2 tiles, one buffer or two, and with two also reading two
    // slices ahead) + 3 split-K reductions +
    // 960 narrow matmul (3 entries × 16 column counts × 4 transposes × 2 f16 roundings × 2.5 row
    // counts (3 for A stored [M, K], 2 for [K, M])) +
    // 6720 cooperative-matrix (3 entries × 32 transpose/vec4/staging sets × 14 variants (2
    // layouts looped and unrolled, each reading one and two slices ahead, the small one with
    // SPLIT_F32 reading one and two ahead, the small one looped with and without SPLIT_F32
    // staged by scalar stores, and the small one looped at 64 k per step reading one and two
    // ahead) × 2 widths for 16×16 and 8×8, 1 width emulated)) + 56
    // row-kernel (4 kernels × 7 lane counts × 2 row reductions) + 24 other (bias_act 2,
    // reduce_sum 1, optimizer 6 + 10 with the f16-copy entries, axpby 2, convert 2, gather 1))
    // variants.
    assert_eq!(
        written,
        2 * (8 * (288 + 3 + 960 + 3 * 32 * 14 * (2 + 2 + 1)) + 56 + 24)
    );
}

/// Which builds a backend's translator must take: wgpu offers cooperative matrices on Metal as
/// 8×8 simdgroup matrices only, and on DX12 not at all (naga's HLSL writer has none). (cohort
/// does not pick them on Metal yet: wgpu reports its SIMD width as 4 to 64, and the kernel needs
/// a fixed one; the 8×8 builds are translated so that the kernel is ready where it does.)
fn built_on(shader: Shader, backend: &str) -> bool {
    match (shader, backend) {
        (Shader::MatmulCoop(CoopOps::Native16, _), _) => backend == "SPIR-V",
        (Shader::MatmulCoop(CoopOps::Native8, _), "HLSL") => false,
        _ => true,
    }
}

/// The bounds policy the host builds `shader` with by default ([`Shader::bounds_checks`]).
fn host_bounds_policy(shader: Shader) -> naga::proc::BoundsCheckPolicy {
    if shader.bounds_checks() {
        naga::proc::BoundsCheckPolicy::Restrict
    } else {
        naga::proc::BoundsCheckPolicy::Unchecked
    }
}

/// Every variant was either translated (each once) or left out as one `backend` never gets, and
/// every build it does get was translated.
fn assert_translated_all_but(
    backend: &str,
    translated: &std::collections::BTreeSet<String>,
    skipped: usize,
    total: usize,
) {
    assert_eq!(translated.len() + skipped, total, "each variant once");
    for shader in every_build() {
        let name = format!("{shader:?} ");
        assert_eq!(
            translated.iter().any(|t| t.starts_with(&name)),
            built_on(shader, backend),
            "{shader:?} on {backend}"
        );
    }
}

#[test]
fn every_kernel_variant_translates_to_metal_shading_language() {
    // What wgpu's Metal backend does with each pipeline (wgpu-hal's `metal/device.rs`): naga
    // writes MSL for one entry point, with each binding in a buffer slot of its own and a
    // buffer of array lengths for the runtime-sized ones. MSL 2.3 is the least that offers
    // simdgroup matrices (wgpu's condition for cooperative matrices on Metal). Only the
    // translation is checked here: Apple's compiler is not on this machine.
    let mut translated = std::collections::BTreeSet::new();
    let mut skipped = 0;
    let total = each_variant(|shader, entry, constants, module, info| {
        if !built_on(shader, "MSL") {
            skipped += 1;
            return;
        }
        let mut resources = naga::back::msl::BindingMap::default();
        for (_, var) in module.global_variables.iter() {
            if let Some(binding) = var.binding {
                let mutable = matches!(
                    var.space,
                    naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE)
                );
                resources.insert(
                    binding,
                    naga::back::msl::BindTarget {
                        buffer: Some(binding.binding as u8),
                        mutable,
                        ..Default::default()
                    },
                );
            }
        }
        // The array lengths in the slot after the last binding's.
        let sizes = resources.keys().map(|b| b.binding + 1).max().unwrap_or(0) as u8;
        let policy = host_bounds_policy(shader);
        let options = naga::back::msl::Options {
            lang_version: (2, 3),
            per_entry_point_map: [(
                entry.to_string(),
                naga::back::msl::EntryPointResources {
                    resources,
                    immediates_buffer: None,
                    sizes_buffer: Some(sizes),
                },
            )]
            .into(),
            fake_missing_bindings: false,
            bounds_check_policies: naga::proc::BoundsCheckPolicies {
                index: policy,
                buffer: policy,
                image_load: policy,
                binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
            },
            force_loop_bounding: false,
            ..Default::default()
        };
        let pipeline = naga::back::msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
            ..Default::default()
        };
        let (source, written) = naga::back::msl::write_string(module, info, &options, &pipeline)
            .unwrap_or_else(|e| panic!("{} {entry} {constants:?}: MSL: {e}", shader.file_name()));
        match written.entry_point_names.as_slice() {
            [Ok(_)] => {}
            other => panic!(
                "{} {entry} {constants:?}: MSL entry point: {other:?}",
                shader.file_name()
            ),
        }
        assert!(
            source.contains("kernel void"),
            "{} {entry}: a kernel",
            shader.file_name()
        );
        translated.insert(format!("{shader:?} {entry} {constants:?}"));
    });
    eprintln!(
        "{} kernels written as MSL; {skipped} cooperative-matrix builds for 16×16 fragments left \
         out (Metal has 8×8)",
        translated.len()
    );
    assert_translated_all_but("MSL", &translated, skipped, total);
}

#[test]
fn every_kernel_variant_translates_to_hlsl() {
    // What wgpu's DX12 backend does with each pipeline (wgpu-hal's `dx12/device.rs`): naga
    // writes HLSL for one entry point. Shader model 6.2 is the least with 16-bit types (f16
    // shaders) and has the wave operations the subgroup reductions use. Only the translation
    // is checked here: DXC is not on this machine.
    let mut translated = std::collections::BTreeSet::new();
    let mut skipped = 0;
    let total = each_variant(|shader, entry, constants, module, info| {
        if !built_on(shader, "HLSL") {
            skipped += 1;
            return;
        }
        let options = naga::back::hlsl::Options {
            shader_model: naga::back::hlsl::ShaderModel::V6_2,
            restrict_indexing: shader.bounds_checks(),
            force_loop_bounding: false,
            ..Default::default()
        };
        let pipeline = naga::back::hlsl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, entry.to_string())),
        };
        let mut source = String::new();
        let written = naga::back::hlsl::Writer::new(&mut source, &options, &pipeline)
            .write(module, info, None)
            .unwrap_or_else(|e| panic!("{} {entry} {constants:?}: HLSL: {e}", shader.file_name()));
        match written.entry_point_names.as_slice() {
            [Ok(_)] => {}
            other => panic!(
                "{} {entry} {constants:?}: HLSL entry point: {other:?}",
                shader.file_name()
            ),
        }
        assert!(
            source.contains("[numthreads("),
            "{} {entry}: a compute shader",
            shader.file_name()
        );
        translated.insert(format!("{shader:?} {entry} {constants:?}"));
    });
    eprintln!(
        "{} kernels written as HLSL; {skipped} cooperative-matrix builds left out (DX12 has \
         none in wgpu)",
        translated.len()
    );
    assert_translated_all_but("HLSL", &translated, skipped, total);
}

#[test]
fn the_tensor_core_probe_validates_and_compiles_to_spirv() {
    // benches/coop_peak.wgsl, as benches/coop_peak.rs builds it: after each set of cooperative-
    // matrix operations, with the constants that bench sets (its four probes, one or two staged
    // slices, the subgroup widths the operations run at).
    let probe = std::fs::read_to_string(root().join("benches/coop_peak.wgsl")).unwrap();
    let mut written = 0;
    for ops in [CoopOps::Native16, CoopOps::Native8, CoopOps::Emulated] {
        let widths: &[u32] = match ops {
            CoopOps::Emulated => &[32],
            _ => &[8, 32],
        };
        for &width in widths {
            for buffers in [1, 2] {
                for level in 0..4 {
                    let source = format!(
                        "{}\nconst SG_SIZE: u32 = {width}u;\nconst BUFFERS: u32 = {buffers}u;\n\
                         const LEVEL: u32 = {level}u;\n{probe}",
                        ops.operations()
                    );
                    let name = format!("coop_peak {ops:?} {width} {buffers} {level}");
                    validate(&name, &source);
                    let module = naga::front::wgsl::parse_str(&source).unwrap();
                    let info = naga::valid::Validator::new(
                        naga::valid::ValidationFlags::all(),
                        naga::valid::Capabilities::all(),
                    )
                    .validate(&module)
                    .unwrap();
                    let options = naga::back::spv::Options {
                        lang_version: (1, 6),
                        ..Default::default()
                    };
                    let pipeline = naga::back::spv::PipelineOptions {
                        shader_stage: naga::ShaderStage::Compute,
                        entry_point: "main".into(),
                    };
                    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
                        .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));
                    written += 1;
                }
            }
        }
    }
    assert_eq!(written, 5 * 2 * 4);
}
