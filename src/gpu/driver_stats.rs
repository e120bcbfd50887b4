//! What the Vulkan driver made of each kernel: the statistics drivers report through
//! `VK_KHR_pipeline_executable_properties`, whatever each driver chooses to report (NVIDIA's are
//! expected to include the registers per invocation and the local memory that spilled registers
//! take; not yet read on any driver: lavapipe, the only one here, keeps none).
//!
//! wgpu creates its pipelines without asking the driver to keep these, so [`driver_statistics`]
//! builds the pipelines a run compiled once more, from the same WGSL and pipeline constants,
//! through naga to SPIR-V with the options wgpu's Vulkan backend uses (the same bounds checks,
//! loop bounding and numbering of bindings; [`super::spirv::compile`], with the loops' unrolling
//! hints where the run had them), on a Vulkan device of its own opened on the same adapter with
//! the extension enabled. It runs nothing on the GPU. The pipelines are the same up to what wgpu
//! alone decides and does not change the code of these kernels: its list of SPIR-V capabilities
//! (naga takes what each needs here), debug information in debug builds, and
//! features the kernels do not use (this device enables every one the driver has, but for
//! robust cooperative-matrix access and null descriptors, which wgpu leaves off). So the counts
//! are the driver's for these kernels, not a model of them.

use std::ffi::{CStr, CString};

use ash::vk;

pub use super::spirv::PipelineSource;
use super::spirv::{compile, SpirvTarget};
use crate::error::{CohortError, Result};

/// One statistic as the driver names it.
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    /// The driver's name for it, e.g. "Register Count".
    pub name: String,
    /// The driver's description.
    pub description: String,
    /// Its value, as text (integers as integers, booleans as true/false).
    pub value: String,
}

/// The statistics of one compiled stage of a pipeline (a compute pipeline has one, but drivers
/// may report several, e.g. per subgroup size).
#[derive(Clone, Debug)]
pub struct Executable {
    /// The driver's name for the stage.
    pub name: String,
    /// The subgroup size it was compiled for.
    pub subgroup_size: u32,
    /// Its statistics, in the driver's order.
    pub statistics: Vec<Statistic>,
}

/// What the driver reported for one pipeline, or why it could not be rebuilt.
#[derive(Debug)]
pub struct PipelineStatistics {
    /// The pipeline's [`PipelineSource::label`].
    pub label: String,
    /// With [`PipelineSource::unroll_hints`], how many of its loops were marked `Unroll`, and
    /// of how many.
    pub unroll_marks: Option<(usize, usize)>,
    /// Its executables' statistics (none where the driver keeps none), or why the pipeline
    /// could not be rebuilt.
    pub executables: Result<Vec<Executable>>,
}

/// What [`driver_statistics`] found.
#[derive(Debug)]
pub struct DriverStatistics {
    /// Why the driver reports no statistics at all (it lacks
    /// `VK_KHR_pipeline_executable_properties`); `None` where it reports them.
    pub not_kept: Option<String>,
    /// Each pipeline, in the order given.
    pub pipelines: Vec<PipelineStatistics>,
}

/// Rebuilds `pipelines` on the Vulkan adapter named `adapter` (as wgpu names it) and returns
/// what its driver reports about each. [`CohortError::Unsupported`] where there is no Vulkan
/// loader or no such adapter. Where the driver keeps no statistics every pipeline is still
/// rebuilt (so its SPIR-V and layout are checked), with no executables to show.
pub fn driver_statistics(adapter: &str, pipelines: &[PipelineSource]) -> Result<DriverStatistics> {
    let device = StatsDevice::open(adapter)?;
    Ok(DriverStatistics {
        not_kept: device.executables.is_none().then(|| {
            format!(
                "the driver of '{adapter}' keeps no pipeline statistics (no \
                 VK_KHR_pipeline_executable_properties)"
            )
        }),
        pipelines: pipelines
            .iter()
            .map(|p| {
                let (executables, unroll_marks) = match device.statistics(p) {
                    Ok((executables, marks)) => (Ok(executables), marks),
                    Err(e) => (Err(e), None),
                };
                PipelineStatistics {
                    label: p.label.clone(),
                    unroll_marks,
                    executables,
                }
            })
            .collect(),
    })
}

/// The feature structures the kernels can need, for a device of Vulkan `api` with or without
/// the three extensions.
#[derive(Default)]
struct Features {
    api: u32,
    coop: bool,
    robustness2: bool,
    statistics: bool,
    core: vk::PhysicalDeviceFeatures,
    v11: vk::PhysicalDeviceVulkan11Features<'static>,
    v12: vk::PhysicalDeviceVulkan12Features<'static>,
    v13: vk::PhysicalDeviceVulkan13Features<'static>,
    coop_features: vk::PhysicalDeviceCooperativeMatrixFeaturesKHR<'static>,
    robust2_features: vk::PhysicalDeviceRobustness2FeaturesEXT<'static>,
    stats_features: vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR<'static>,
}

impl Features {
    /// The structures of this device's version and extensions, chained afresh (a chain made
    /// before is unlinked first), under the core features.
    fn chain(&mut self) -> vk::PhysicalDeviceFeatures2<'_> {
        self.v11.p_next = std::ptr::null_mut();
        self.v12.p_next = std::ptr::null_mut();
        self.v13.p_next = std::ptr::null_mut();
        self.coop_features.p_next = std::ptr::null_mut();
        self.robust2_features.p_next = std::ptr::null_mut();
        self.stats_features.p_next = std::ptr::null_mut();
        let mut chain = vk::PhysicalDeviceFeatures2::default()
            .features(self.core)
            .push_next(&mut self.v11)
            .push_next(&mut self.v12);
        if self.statistics {
            chain = chain.push_next(&mut self.stats_features);
        }
        if self.api >= vk::API_VERSION_1_3 {
            chain = chain.push_next(&mut self.v13);
        }
        if self.coop {
            chain = chain.push_next(&mut self.coop_features);
        }
        if self.robustness2 {
            chain = chain.push_next(&mut self.robust2_features);
        }
        chain
    }
}

/// With unrolling hints, a pipeline's loops marked `Unroll` and its loops in all.
type Marks = Option<(usize, usize)>;

/// One binding of a set layout (no immutable samplers, hence 'static).
type LayoutBinding = vk::DescriptorSetLayoutBinding<'static>;

fn vk_error(what: &str) -> impl Fn(vk::Result) -> CohortError + '_ {
    move |e| CohortError::Gpu(format!("Vulkan, {what}: {e}"))
}

/// A Vulkan instance of its own, destroyed when dropped.
struct Instance {
    _entry: ash::Entry,
    raw: ash::Instance,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the last use of the instance: its device (if any) is destroyed before.
        unsafe { self.raw.destroy_instance(None) };
    }
}

/// A Vulkan device of its own, with pipeline statistics enabled where the driver has them.
struct StatsDevice {
    device: ash::Device,
    /// The extension's functions, where the driver has it.
    executables: Option<ash::khr::pipeline_executable_properties::Device>,
    /// What wgpu's SPIR-V depends on for this device.
    target: SpirvTarget,
    /// Whether wgpu's stages may vary the subgroup size (it asks where it can).
    varying_subgroups: bool,
    /// Dropped after the device is destroyed (fields drop after `Drop::drop`).
    _instance: Instance,
}

impl Drop for StatsDevice {
    fn drop(&mut self) {
        // SAFETY: every object made on the device is destroyed before `statistics` returns;
        // the device is destroyed once, before its instance.
        unsafe { self.device.destroy_device(None) };
    }
}

impl StatsDevice {
    fn open(adapter: &str) -> Result<Self> {
        let unsupported =
            |why: String| CohortError::Unsupported(format!("pipeline statistics: {why}"));
        // SAFETY: loading the system's Vulkan loader, as wgpu does.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| unsupported(e.to_string()))?;
        let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
        // SAFETY: a plain instance, no layers or extensions; destroyed in Drop.
        let raw = unsafe {
            entry.create_instance(
                &vk::InstanceCreateInfo::default().application_info(&app),
                None,
            )
        }
        .map_err(vk_error("creating an instance"))?;
        let owned = Instance { _entry: entry, raw };
        let instance = &owned.raw;
        // SAFETY: queries on a live instance.
        let physical = unsafe { instance.enumerate_physical_devices() }
            .map_err(vk_error("listing devices"))?
            .into_iter()
            .find(|&pd| {
                // SAFETY: a device the live instance listed.
                let props = unsafe { instance.get_physical_device_properties(pd) };
                props
                    .device_name_as_c_str()
                    .ok()
                    .and_then(|n| n.to_str().ok())
                    == Some(adapter)
            })
            .ok_or_else(|| unsupported(format!("no Vulkan device named '{adapter}'")))?;
        // SAFETY: as above.
        let props = unsafe { instance.get_physical_device_properties(physical) };
        let api = props.api_version;
        if api < vk::API_VERSION_1_2 {
            return Err(unsupported(format!(
                "'{adapter}' offers Vulkan {}.{}, this needs 1.2",
                vk::api_version_major(api),
                vk::api_version_minor(api)
            )));
        }
        // SAFETY: as above.
        let extensions = unsafe { instance.enumerate_device_extension_properties(physical) }
            .map_err(vk_error("listing device extensions"))?;
        let has = |name: &CStr| {
            extensions
                .iter()
                .any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == name))
        };
        let statistics = has(ash::khr::pipeline_executable_properties::NAME);
        let coop = has(ash::khr::cooperative_matrix::NAME);
        let robustness2 = has(ash::ext::robustness2::NAME);
        let mut enabled = Vec::new();
        if statistics {
            enabled.push(ash::khr::pipeline_executable_properties::NAME.as_ptr());
        }
        if coop {
            enabled.push(ash::khr::cooperative_matrix::NAME.as_ptr());
        }
        if robustness2 {
            enabled.push(ash::ext::robustness2::NAME.as_ptr());
        }

        // Every feature the device has (in the structures the kernels can need) is enabled, as
        // wgpu enables what the kernels ask for: f16, 16-bit storage, subgroups, the memory
        // model and cooperative matrices, robust buffer access.
        let mut wanted = Features {
            api,
            coop,
            robustness2,
            statistics,
            ..Default::default()
        };
        let mut query = wanted.chain();
        // SAFETY: the chain holds only structures of this device's version and extensions.
        unsafe { instance.get_physical_device_features2(physical, &mut query) };
        wanted.core = query.features;
        // Two the device may have that wgpu leaves off, and that would change the code: bounds
        // checks in cooperative loads and stores, and null descriptors.
        wanted.coop_features.cooperative_matrix_robust_buffer_access = vk::FALSE;
        wanted.robust2_features.null_descriptor = vk::FALSE;
        // SAFETY: as above.
        let queue_family =
            unsafe { instance.get_physical_device_queue_family_properties(physical) }
                .iter()
                .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
                .ok_or_else(|| unsupported(format!("'{adapter}' has no compute queue")))?;
        let priorities = [1.0];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(queue_family as u32)
            .queue_priorities(&priorities)];
        let mut features = wanted.chain();
        let create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&enabled)
            .push_next(&mut features);
        // SAFETY: extensions the device lists, features it reported; destroyed in Drop.
        let device = unsafe { instance.create_device(physical, &create, None) }
            .map_err(vk_error("creating a device"))?;
        let executables = (statistics
            && wanted.stats_features.pipeline_executable_info == vk::TRUE)
            .then(|| ash::khr::pipeline_executable_properties::Device::new(instance, &device));
        Ok(StatsDevice {
            executables,
            target: SpirvTarget {
                lang_version: super::spirv::version_for(api),
                robust_buffers: robustness2
                    && wanted.robust2_features.robust_buffer_access2 == vk::TRUE,
                storage_input_output_16: wanted.v11.storage_input_output16 == vk::TRUE,
            },
            varying_subgroups: wanted.v13.subgroup_size_control == vk::TRUE,
            device,
            _instance: owned,
        })
    }

    /// The SPIR-V wgpu's Vulkan backend would write for `source` (with its unrolling hints, if
    /// any), the buffers it binds (by group: the set layouts) and, with hints, how many of its
    /// loops were marked of how many.
    fn compile(
        &self,
        source: &PipelineSource,
    ) -> Result<(Vec<u32>, Vec<Vec<LayoutBinding>>, Marks)> {
        let compiled = compile(source, &self.target)?;
        let mut groups: Vec<Vec<LayoutBinding>> = Vec::new();
        for b in &compiled.bindings {
            let group = b.group as usize;
            if groups.len() <= group {
                groups.resize(group + 1, Vec::new());
            }
            groups[group].push(
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b.slot)
                    .descriptor_type(match b.uniform {
                        true => vk::DescriptorType::UNIFORM_BUFFER,
                        false => vk::DescriptorType::STORAGE_BUFFER,
                    })
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE),
            );
        }
        Ok((compiled.code, groups, compiled.unroll_marks))
    }

    /// Builds `source`'s pipeline with statistics kept, reads them and destroys the pipeline
    /// (where the driver keeps none, only builds it), with its loops' unrolling marks if any.
    fn statistics(&self, source: &PipelineSource) -> Result<(Vec<Executable>, Marks)> {
        let (code, groups, marks) = self.compile(source)?;
        let device = &self.device;
        let entry = CString::new(source.entry.as_str())
            .map_err(|_| CohortError::InvalidConfig(format!("entry point {:?}", source.entry)))?;
        // SAFETY: every object below is made from valid create infos on this device and
        // destroyed before returning; the pipeline is only queried.
        unsafe {
            let mut objects = Objects {
                device,
                set_layouts: Vec::new(),
                layout: None,
                module: None,
                pipeline: None,
            };
            for bindings in &groups {
                let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(bindings);
                let layout = device
                    .create_descriptor_set_layout(&info, None)
                    .map_err(vk_error("creating a set layout"))?;
                objects.set_layouts.push(layout);
            }
            let layout = device
                .create_pipeline_layout(
                    &vk::PipelineLayoutCreateInfo::default().set_layouts(&objects.set_layouts),
                    None,
                )
                .map_err(vk_error("creating a pipeline layout"))?;
            objects.layout = Some(layout);
            let shader = device
                .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&code), None)
                .map_err(vk_error("creating a shader module"))?;
            objects.module = Some(shader);
            let mut stage_flags = vk::PipelineShaderStageCreateFlags::empty();
            if self.varying_subgroups {
                stage_flags |= vk::PipelineShaderStageCreateFlags::ALLOW_VARYING_SUBGROUP_SIZE;
            }
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .flags(stage_flags)
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(shader)
                .name(&entry);
            let mut flags = vk::PipelineCreateFlags::empty();
            if self.executables.is_some() {
                flags |= vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR;
            }
            let info = vk::ComputePipelineCreateInfo::default()
                .flags(flags)
                .stage(stage)
                .layout(layout);
            let pipeline = device
                .create_compute_pipelines(vk::PipelineCache::null(), &[info], None)
                .map_err(|(_, e)| vk_error("creating the pipeline")(e))?[0];
            objects.pipeline = Some(pipeline);
            let Some(executables) = &self.executables else {
                return Ok((Vec::new(), marks));
            };
            let found = executables
                .get_pipeline_executable_properties(
                    &vk::PipelineInfoKHR::default().pipeline(pipeline),
                )
                .map_err(vk_error("listing the pipeline's executables"))?;
            let mut out = Vec::new();
            for (index, props) in found.iter().enumerate() {
                let info = vk::PipelineExecutableInfoKHR::default()
                    .pipeline(pipeline)
                    .executable_index(index as u32);
                let statistics = executables
                    .get_pipeline_executable_statistics(&info)
                    .map_err(vk_error("reading statistics"))?
                    .iter()
                    .map(|s| Statistic {
                        name: text(s.name_as_c_str()),
                        description: text(s.description_as_c_str()),
                        value: value(s),
                    })
                    .collect();
                out.push(Executable {
                    name: text(props.name_as_c_str()),
                    subgroup_size: props.subgroup_size,
                    statistics,
                });
            }
            Ok((out, marks))
        }
    }
}

/// The objects of one rebuilt pipeline, destroyed together however `statistics` returns.
struct Objects<'d> {
    device: &'d ash::Device,
    set_layouts: Vec<vk::DescriptorSetLayout>,
    layout: Option<vk::PipelineLayout>,
    module: Option<vk::ShaderModule>,
    pipeline: Option<vk::Pipeline>,
}

impl Drop for Objects<'_> {
    fn drop(&mut self) {
        // SAFETY: each was created on this device and is no longer used.
        unsafe {
            if let Some(p) = self.pipeline {
                self.device.destroy_pipeline(p, None);
            }
            if let Some(m) = self.module {
                self.device.destroy_shader_module(m, None);
            }
            if let Some(l) = self.layout {
                self.device.destroy_pipeline_layout(l, None);
            }
            for &l in &self.set_layouts {
                self.device.destroy_descriptor_set_layout(l, None);
            }
        }
    }
}

fn text(s: std::result::Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    s.map(|c| c.to_string_lossy().trim().to_string())
        .unwrap_or_default()
}

fn value(s: &vk::PipelineExecutableStatisticKHR) -> String {
    // SAFETY: the union is read as the member its format names.
    unsafe {
        match s.format {
            vk::PipelineExecutableStatisticFormatKHR::BOOL32 => (s.value.b32 != 0).to_string(),
            vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
            vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => format!("{:.3}", s.value.f64),
            _ => "?".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistic_values_are_read_as_their_format_says() {
        let stat = |format, value| vk::PipelineExecutableStatisticKHR {
            format,
            value,
            ..Default::default()
        };
        use vk::PipelineExecutableStatisticFormatKHR as F;
        use vk::PipelineExecutableStatisticValueKHR as V;
        assert_eq!(value(&stat(F::UINT64, V { u64: 128 })), "128");
        assert_eq!(value(&stat(F::INT64, V { i64: -3 })), "-3");
        assert_eq!(value(&stat(F::BOOL32, V { b32: vk::TRUE })), "true");
        assert_eq!(value(&stat(F::FLOAT64, V { f64: 0.5 })), "0.500");
        let mut named = stat(F::UINT64, V { u64: 1 });
        named.name[..14].copy_from_slice(&b"Register Count".map(|b| b as std::ffi::c_char));
        assert_eq!(text(named.name_as_c_str()), "Register Count");
    }
}
