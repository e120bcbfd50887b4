//! The SPIR-V that wgpu's Vulkan backend writes for a pipeline, written by cohort itself: for
//! `cohort profile --driver-stats` (the same pipelines rebuilt on a device that keeps the
//! driver's statistics) and for pipelines built with loop-unrolling hints
//! ([`super::GpuOptions::unroll_hints`]), which wgpu's own path cannot express: naga marks no
//! loop, so whether a loop over a kernel's register arrays is unrolled (and the arrays kept in
//! registers) is left to the driver's judgement.
//!
//! [`compile`] takes the WGSL, the entry point and its pipeline constants through naga with the
//! options wgpu 30 gives it on Vulkan (the same bounds checks, loop bounding and binding
//! numbers, no zero-initialised workgroup memory, as cohort asks); [`hint_unroll`] then marks
//! loops `Unroll` in the SPIR-V.

use std::collections::{HashMap, HashSet};

use ::spirv::Op;

use crate::error::{CohortError, Result};

/// One pipeline as the runtime compiles it ([`super::Runtime::profiled_pipelines`]).
#[derive(Clone, Debug)]
pub struct PipelineSource {
    /// `file::entry` and the pipeline constants, for people.
    pub label: String,
    /// The WGSL given to wgpu.
    pub wgsl: String,
    /// The entry point.
    pub entry: String,
    /// The pipeline constants (WGSL overrides).
    pub constants: HashMap<String, f64>,
    /// Whether indices were clamped (wgpu's bounds checks).
    pub bounds_checks: bool,
    /// Whether loops were bounded (wgpu's loop bounding).
    pub loop_bounding: bool,
    /// Whether loops carry unrolling hints ([`hint_unroll`]).
    pub unroll_hints: bool,
}

/// The SPIR-V version wgpu 30's Vulkan backend writes for a device of Vulkan version `api`
/// (1.2 or later, as cohort needs here): 1.6 from Vulkan 1.3, else 1.5.
pub fn version_for(api: u32) -> (u8, u8) {
    match api >= ash::vk::API_VERSION_1_3 {
        true => (1, 6),
        false => (1, 5),
    }
}

/// What the device decides about the SPIR-V wgpu would write for it.
#[derive(Clone, Copy, Debug)]
pub struct SpirvTarget {
    /// The SPIR-V version ([`version_for`]).
    pub lang_version: (u8, u8),
    /// The device's `robustBufferAccess2` is on, so that wgpu leaves buffer accesses unclamped
    /// even where it clamps indices.
    pub robust_buffers: bool,
    /// The device's `storageInputOutput16`.
    pub storage_input_output_16: bool,
}

/// A binding the entry point uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Its bind group (descriptor set).
    pub group: u32,
    /// Its binding number in the WGSL.
    pub binding: u32,
    /// Its binding number in the SPIR-V: its rank in its group. wgpu 30's Vulkan backend numbers
    /// the bindings of each bind group layout 0, 1, 2... in binding order and has naga write
    /// them so; a module it did not write must number them the same.
    pub slot: u32,
    /// A uniform buffer (else a storage buffer).
    pub uniform: bool,
    /// A storage buffer the entry point never writes.
    pub read_only: bool,
}

/// A pipeline's SPIR-V and what building it needs.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The module, one entry point, every pipeline constant applied.
    pub code: Vec<u32>,
    /// The buffers the entry point uses, by group and binding.
    pub bindings: Vec<Binding>,
    /// The entry point's workgroup size.
    pub workgroup_size: [u32; 3],
    /// With [`PipelineSource::unroll_hints`], how many loops [`hint_unroll`] marked and how
    /// many the module has.
    pub unroll_marks: Option<(usize, usize)>,
}

/// `source` as wgpu's Vulkan backend would compile it for a device like `target`, with its
/// loops marked as [`hint_unroll`] says where `source` asks for hints.
pub fn compile(source: &PipelineSource, target: &SpirvTarget) -> Result<Compiled> {
    use naga::back::spv;
    use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
    let failed = |message: String| CohortError::ShaderCompile {
        shader: source.label.clone(),
        message,
    };
    let module = naga::front::wgsl::parse_str(&source.wgsl)
        .map_err(|e| failed(e.emit_to_string(&source.wgsl)))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| failed(format!("{e:?}")))?;
    let mut constants = naga::back::PipelineConstants::default();
    for (name, value) in &source.constants {
        constants.insert(name.clone(), *value);
    }
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, &source.entry)),
        &constants,
    )
    .map_err(|e| failed(e.to_string()))?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == source.entry)
        .ok_or_else(|| failed(format!("no entry point {}", source.entry)))?;
    let uses = info.get_entry_point(index);
    let mut bindings = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        if uses[handle].is_empty() {
            continue;
        }
        let (uniform, read_only) = match var.space {
            naga::AddressSpace::Uniform => (true, true),
            naga::AddressSpace::Storage { access } => {
                (false, !access.contains(naga::StorageAccess::STORE))
            }
            _ => continue,
        };
        bindings.push(Binding {
            group: binding.group,
            binding: binding.binding,
            slot: 0,
            uniform,
            read_only,
        });
    }
    bindings.sort_by_key(|b| (b.group, b.binding));
    let mut binding_map = spv::BindingMap::default();
    for n in 0..bindings.len() {
        let first = bindings.iter().position(|b| b.group == bindings[n].group);
        bindings[n].slot = (n - first.unwrap_or(n)) as u32;
        let b = bindings[n];
        binding_map.insert(
            naga::ResourceBinding {
                group: b.group,
                binding: b.binding,
            },
            spv::BindingInfo {
                descriptor_set: b.group,
                binding: b.slot,
                binding_array_size: None,
            },
        );
    }
    let restrict = |checked: bool| match checked {
        true => BoundsCheckPolicy::Restrict,
        false => BoundsCheckPolicy::Unchecked,
    };
    let options = spv::Options {
        lang_version: target.lang_version,
        flags: spv::WriterFlags::empty(),
        binding_map,
        bounds_check_policies: BoundsCheckPolicies {
            index: restrict(source.bounds_checks),
            buffer: restrict(source.bounds_checks && !target.robust_buffers),
            image_load: restrict(source.bounds_checks),
            binding_array: BoundsCheckPolicy::Unchecked,
        },
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: source.loop_bounding,
        use_storage_input_output_16: target.storage_input_output_16,
        ..Default::default()
    };
    let pipeline = spv::PipelineOptions {
        entry_point: source.entry.clone(),
        shader_stage: naga::ShaderStage::Compute,
    };
    let mut code = spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| failed(e.to_string()))?;
    let unroll_marks = match source.unroll_hints {
        true => Some(hint_unroll(&mut code).map_err(failed)?),
        false => None,
    };
    Ok(Compiled {
        code,
        bindings,
        workgroup_size: module.entry_points[index].workgroup_size,
        unroll_marks,
    })
}

/// One instruction of a module: where its words start, its opcode and its operands' words.
struct Instruction {
    at: usize,
    op: Option<Op>,
    words: std::ops::Range<usize>,
}

impl Instruction {
    /// Operand word `k` (0 is the first after the opcode), or why it is missing.
    fn operand(&self, code: &[u32], k: usize) -> std::result::Result<u32, String> {
        match self.words.start + k < self.words.end {
            true => Ok(code[self.words.start + k]),
            false => Err(format!(
                "{:?} at word {} is short of operands",
                self.op, self.at
            )),
        }
    }
}

/// The module's instructions after its 5-word header, or why its words do not parse.
fn instructions(code: &[u32]) -> std::result::Result<Vec<Instruction>, String> {
    if code.len() < 5 || code[0] != ::spirv::MAGIC_NUMBER {
        return Err("not a SPIR-V module".into());
    }
    let mut out = Vec::new();
    let mut at = 5;
    while at < code.len() {
        let count = (code[at] >> 16) as usize;
        if count == 0 || at + count > code.len() {
            return Err(format!("a malformed instruction at word {at}"));
        }
        out.push(Instruction {
            at,
            op: Op::from_u32(code[at] & 0xffff),
            words: at + 1..at + count,
        });
        at += count;
    }
    Ok(out)
}

/// Marks loops of a module naga wrote `Unroll` (a request the driver may still decline), and
/// returns how many it marked and how many loops the module has. Marked: every loop that holds
/// no barrier, itself or in a function it calls (loops over a thread's own elements, fragments
/// or register arrays), and every loop whose first
/// integer comparison, its `for` condition as naga lowers it, is against a constant (the loops
/// over a pipeline constant's count, such as the accumulators written out between barriers).
/// Loops over a run-time count that hold barriers (the k-steps over a product's depth) stay as
/// they are. Loops naga writes one after another, each in its own region, which ends at its
/// merge block: that is checked, and a module laid out otherwise is an error, not a guess.
pub fn hint_unroll(code: &mut [u32]) -> std::result::Result<(usize, usize), String> {
    let list = instructions(code)?;
    let constants = list
        .iter()
        .filter(|i| matches!(i.op, Some(Op::Constant | Op::ConstantNull)))
        .map(|i| i.operand(code, 1))
        .collect::<std::result::Result<HashSet<u32>, String>>()?;
    // Functions (by result id) that hold a barrier, directly or through the functions they call.
    let mut functions: HashMap<u32, (bool, Vec<u32>)> = HashMap::new();
    let mut current = None;
    for i in &list {
        match i.op {
            Some(Op::Function) => current = Some(i.operand(code, 1)?),
            Some(Op::FunctionEnd) => current = None,
            Some(Op::ControlBarrier) => {
                if let Some(f) = current {
                    functions.entry(f).or_default().0 = true;
                }
            }
            Some(Op::FunctionCall) => {
                if let Some(f) = current {
                    let callee = i.operand(code, 2)?;
                    functions.entry(f).or_default().1.push(callee);
                }
            }
            _ => {}
        }
    }
    let mut with_barrier: HashSet<u32> = functions
        .iter()
        .filter(|(_, (barrier, _))| *barrier)
        .map(|(&f, _)| f)
        .collect();
    loop {
        let more: Vec<u32> = functions
            .iter()
            .filter(|(f, (_, calls))| {
                !with_barrier.contains(f) && calls.iter().any(|c| with_barrier.contains(c))
            })
            .map(|(&f, _)| f)
            .collect();
        if more.is_empty() {
            break;
        }
        with_barrier.extend(more);
    }
    let labels = list
        .iter()
        .enumerate()
        .filter(|(_, i)| i.op == Some(Op::Label))
        .map(|(n, i)| Ok((i.operand(code, 0)?, n)))
        .collect::<std::result::Result<HashMap<u32, usize>, String>>()?;
    let (mut hinted, mut loops) = (0, 0);
    for (n, merge) in list.iter().enumerate() {
        if merge.op != Some(Op::LoopMerge) {
            continue;
        }
        loops += 1;
        let merge_block = merge.operand(code, 0)?;
        let control = merge.operand(code, 2)?;
        let end = match labels.get(&merge_block) {
            Some(&end) if end > n => end,
            _ => {
                return Err(format!(
                    "the loop at word {} ends before it begins",
                    merge.at
                ))
            }
        };
        let region = &list[n + 1..end];
        let barrier = region.iter().any(|i| match i.op {
            Some(Op::ControlBarrier) => true,
            Some(Op::FunctionCall) => i.operand(code, 2).is_ok_and(|f| with_barrier.contains(&f)),
            _ => false,
        });
        let constant_count = region
            .iter()
            .find(|i| {
                matches!(
                    i.op,
                    Some(
                        Op::ULessThan
                            | Op::SLessThan
                            | Op::ULessThanEqual
                            | Op::SLessThanEqual
                            | Op::UGreaterThan
                            | Op::SGreaterThan
                            | Op::UGreaterThanEqual
                            | Op::SGreaterThanEqual
                    )
                )
            })
            .is_some_and(|i| {
                i.words
                    .clone()
                    .skip(2)
                    .any(|w| constants.contains(&code[w]))
            });
        if !barrier || constant_count {
            code[merge.words.start + 2] = (control & !::spirv::LoopControl::DONT_UNROLL.bits())
                | ::spirv::LoopControl::UNROLL.bits();
            hinted += 1;
        }
    }
    Ok((hinted, loops))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(wgsl: &str) -> PipelineSource {
        PipelineSource {
            label: "test".into(),
            wgsl: wgsl.into(),
            entry: "main".into(),
            constants: HashMap::from([("N".to_string(), 4.0)]),
            bounds_checks: true,
            loop_bounding: false,
            unroll_hints: true,
        }
    }

    const TARGET: SpirvTarget = SpirvTarget {
        lang_version: (1, 5),
        robust_buffers: false,
        storage_input_output_16: false,
    };

    /// Each loop's control word, in module order.
    fn loop_controls(code: &[u32]) -> Vec<u32> {
        instructions(code)
            .unwrap()
            .iter()
            .filter(|i| i.op == Some(Op::LoopMerge))
            .map(|i| code[i.words.start + 2])
            .collect()
    }

    const KERNEL: &str = "
        override N: u32 = 2u;
        @group(0) @binding(0) var<storage, read> input: array<f32>;
        @group(0) @binding(1) var<storage, read_write> output: array<f32>;
        var<workgroup> shared_sum: array<f32, 64>;
        fn sync() { workgroupBarrier(); }
        @compute @workgroup_size(64)
        fn main(@builtin(local_invocation_index) t: u32) {
            var own: array<f32, 8>;
            for (var i = 0u; i < 8u; i++) { own[i] = input[t * 8u + i]; }          // no barrier
            for (var s = 0u; s < N; s++) { shared_sum[t] = own[s]; sync(); }       // constant count
            let n = u32(input[0]);
            for (var k = 0u; k < n; k++) { shared_sum[t] += own[k % 8u]; workgroupBarrier(); }
            for (var k = 0u; k < n; k++) { own[k % 8u] += 1.0; }                   // no barrier
            output[t] = shared_sum[t] + own[0];
        }";

    #[test]
    fn loops_without_barriers_or_with_a_constant_count_are_marked_unroll() {
        let compiled = compile(&source(KERNEL), &TARGET).unwrap();
        let unroll = ::spirv::LoopControl::UNROLL.bits();
        assert_eq!(
            loop_controls(&compiled.code),
            vec![unroll, unroll, 0, unroll],
            "the loop over a run-time count with a barrier stays unmarked"
        );
        assert_eq!(compiled.unroll_marks, Some((3, 4)));
        assert_eq!(compiled.workgroup_size, [64, 1, 1]);
        let read_only: Vec<bool> = compiled.bindings.iter().map(|b| b.read_only).collect();
        assert_eq!(read_only, vec![true, false]);
    }

    #[test]
    fn without_hints_the_module_is_naga_s_own() {
        let plain = PipelineSource {
            unroll_hints: false,
            ..source(KERNEL)
        };
        let compiled = compile(&plain, &TARGET).unwrap();
        assert_eq!(compiled.unroll_marks, None);
        assert!(loop_controls(&compiled.code).iter().all(|&c| c == 0));
        let mut hinted = compiled.code.clone();
        assert_eq!(hint_unroll(&mut hinted), Ok((3, 4)));
        assert_eq!(hinted, compile(&source(KERNEL), &TARGET).unwrap().code);
        // Only loop-control words change.
        let changed = hinted.iter().zip(&compiled.code).filter(|(a, b)| a != b);
        assert_eq!(changed.count(), 3);
    }

    #[test]
    fn words_that_are_not_a_module_are_an_error() {
        assert!(hint_unroll(&mut [1, 2, 3]).is_err());
        let mut code = compile(&source(KERNEL), &TARGET).unwrap().code;
        let last = code.len() - 1;
        code[last] = 40 << 16; // an instruction longer than the module
        assert!(hint_unroll(&mut code).is_err());
        // An OpLabel without its result id.
        let mut short = [
            ::spirv::MAGIC_NUMBER,
            0x0001_0500,
            0,
            1,
            0,
            1 << 16 | Op::Label as u32,
        ];
        let error = hint_unroll(&mut short).unwrap_err();
        assert!(error.contains("short of operands"), "{error}");
    }
}
