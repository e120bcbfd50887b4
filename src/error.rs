//! The one error type of cohort. Library code returns [`Result`]; it never panics on bad input.

use std::path::PathBuf;

/// Everything that can go wrong in cohort, from a missing GPU to a corrupt checkpoint. (More
/// kinds may come: match with a wildcard arm.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CohortError {
    /// No usable GPU adapter was found, or none matches the one requested by name.
    #[error("no GPU adapter: {reason}")]
    NoAdapter {
        /// The adapter asked for by name (`GpuOptions::adapter`, `COHORT_ADAPTER`), if any: a
        /// caller may fall back to the CPU when no GPU exists, but not when a named one is
        /// missing.
        requested: Option<String>,
        /// What was looked for and what was found.
        reason: String,
        /// The software adapters (lavapipe, WARP) that `GpuOptions::hardware_only` refused.
        passed_over: Vec<String>,
    },
    /// Operand shapes do not fit together; caught on the host before any dispatch.
    #[error("shape mismatch in {op}: {detail}")]
    ShapeMismatch {
        /// The operation that rejected its operands.
        op: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// A class label is not below the number of classes.
    #[error("label {label} at row {row} is out of range: there are {classes} classes")]
    LabelOutOfRange {
        /// The offending label.
        label: u32,
        /// Its row.
        row: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A NaN or infinity where finite numbers are required.
    #[error("non-finite value (NaN or Inf) in {what}")]
    NonFinite {
        /// Where it was found.
        what: String,
    },
    /// A data set, batch or tensor with no elements.
    #[error("empty data: {0}")]
    EmptyData(String),
    /// A file that exists but cannot be parsed.
    #[error("corrupt file {path}: {reason}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A buffer larger than the device allows in one binding.
    #[error(
        "buffer of {} bytes exceeds the device limit of {limit} bytes ({what})",
        match *bytes { u64::MAX => "more than 2^64".to_string(), b => b.to_string() }
    )]
    BufferTooLarge {
        /// What the buffer is for.
        what: String,
        /// Requested size (`u64::MAX` where counting its bytes overflowed).
        bytes: u64,
        /// The device's limit.
        limit: u64,
    },
    /// The host could not allocate memory for something the call needs.
    #[error("out of host memory: {bytes} bytes for {what}")]
    HostMemory {
        /// What the memory was for.
        what: String,
        /// The size asked for.
        bytes: u64,
    },
    /// The GPU device was lost (driver reset, removal, out of memory at submit).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// A WGSL shader failed to compile into a pipeline.
    #[error("shader {shader} failed to compile: {message}")]
    ShaderCompile {
        /// The shader file.
        shader: String,
        /// The compiler's message.
        message: String,
    },
    /// The device lacks a feature the call needs (e.g. f16 shaders for F16 tensors).
    #[error("unsupported on this device: {0}")]
    Unsupported(String),
    /// Mapping a buffer for readback failed.
    #[error("buffer map failed: {0}")]
    MapFailed(String),
    /// Any other error reported by the GPU API (validation, out of memory).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// A configuration value that makes no sense.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Not a failure: returned by [`crate::Trainer::fit`]'s epoch callback to end the run
    /// after that epoch (early stopping); `fit` then returns the reports so far.
    #[error("training stopped by the caller")]
    Stopped,
    /// A checkpoint that does not belong to this configuration.
    #[error("checkpoint does not match: {0}")]
    CheckpointMismatch(String),
    /// Training produced a NaN or infinite loss: the weights diverged (a learning rate too
    /// high for the data's scale, often with features not standardised: a smaller rate, a
    /// warm-up or [`crate::Standardizer`] steadies them) or, in mixed precision, a layer's f16
    /// output passed 65504 (the same run in f32 tells the two apart).
    #[error("loss became {value} for peer {peer} at epoch {epoch}, step {step}")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch (1-based).
        step: usize,
        /// Peer index.
        peer: usize,
        /// The non-finite loss.
        value: f32,
    },
}

/// cohort's result type.
pub type Result<T, E = CohortError> = std::result::Result<T, E>;

impl CohortError {
    /// A shape mismatch in `op`.
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        CohortError::ShapeMismatch {
            op,
            detail: detail.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CohortError::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt file at `path`.
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CohortError::CorruptFile {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The error of reading or writing a file, with what the file is for (`role`) added to its
    /// message: an I/O error, a corrupt file or a path that cannot be used as a file (the
    /// variant and, for I/O, the kind stay). Other errors are returned as they are.
    pub(crate) fn for_file(self, role: &str) -> Self {
        match self {
            CohortError::Io { path, source } => CohortError::Io {
                path,
                source: std::io::Error::new(source.kind(), format!("{source} ({role})")),
            },
            CohortError::CorruptFile { path, reason } => CohortError::CorruptFile {
                path,
                reason: format!("{reason} ({role})"),
            },
            CohortError::InvalidConfig(why) => {
                CohortError::InvalidConfig(format!("{why} ({role})"))
            }
            other => other,
        }
    }
}

/// Allocations larger than this are first checked against the host's available memory.
const CHECKED_ALLOCATION: u64 = 64 << 20;

/// A vector of `n` default values, or [`CohortError::HostMemory`] where the host cannot hold it:
/// the allocator refuses it, or (on Linux, above 64 MiB) it alone is larger than the memory the
/// kernel reports available (and the cgroup's limit allows), where the allocator would accept
/// it and the OOM killer end the process once the pages are touched. Each allocation is checked
/// alone: several that fit one by one may still not fit together.
pub(crate) fn host_vec<T: Clone + Default>(
    n: usize,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>> {
    let mut v = host_capacity(n, what)?;
    v.resize(n, T::default());
    Ok(v)
}

/// An empty vector with room for `n` values, checked as [`host_vec`] checks: for copies of
/// data-sized arrays (a subset's rows, an epoch's order), which would otherwise abort the process
/// where the allocator refuses them.
pub(crate) fn host_capacity<T>(n: usize, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    let refused = || CohortError::HostMemory {
        what: what(),
        bytes,
    };
    if bytes > CHECKED_ALLOCATION && available_memory().is_some_and(|free| bytes > free) {
        return Err(refused());
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| refused())?;
    Ok(v)
}

/// The largest data file (as read, after decompression) cohort loads: a fifth of the memory
/// available, since while the file's bytes are held they become f32 values, four bytes for each
/// byte of an IDX image (at least 64 MiB; no limit where the available memory is unknown).
pub(crate) fn data_file_limit() -> u64 {
    available_memory().map_or(u64::MAX, |free| (free / 5).max(CHECKED_ALLOCATION))
}

/// The memory this process can still take without swapping, in bytes: Linux's `MemAvailable`,
/// or less where a cgroup's limit leaves less; `None` where neither is known.
fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let host = read("/proc/meminfo").and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroup = read("/proc/self/cgroup").and_then(|membership| cgroup_room(&membership, read));
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

/// What the memory cgroups of a process still allow it, given its `/proc/self/cgroup`
/// (`membership`) and a reader of files: the least of limit − usage over its own cgroup and
/// every one above it, in cgroup v2 (`memory.max`, `memory.current` under `/sys/fs/cgroup`)
/// and v1's memory controller (`memory.limit_in_bytes`, `memory.usage_in_bytes` under
/// `/sys/fs/cgroup/memory`). Levels whose files are missing (a container sees its own cgroup
/// at the mount's root) or say `max` (no limit) are passed over; `None` where none sets one.
fn cgroup_room(membership: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let number = |path: String| read(&path)?.trim().parse::<u64>().ok();
    let mut room: Option<u64> = None;
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (mount, limit, usage) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let mut at = path.trim_end_matches('/').to_string();
        loop {
            if let Some(max) = number(format!("{mount}{at}/{limit}")) {
                let used = number(format!("{mount}{at}/{usage}")).unwrap_or(0);
                let left = max.saturating_sub(used);
                room = Some(room.map_or(left, |r| r.min(left)));
            }
            match at.rfind('/') {
                Some(parent) => at.truncate(parent),
                None => break,
            }
        }
    }
    room
}

#[cfg(test)]
mod tests {
    use super::cgroup_room;
    use std::collections::HashMap;

    fn room(membership: &str, files: &[(&str, &str)]) -> Option<u64> {
        let files: HashMap<&str, &str> = files.iter().copied().collect();
        cgroup_room(membership, |path| files.get(path).map(|s| s.to_string()))
    }

    #[test]
    fn cgroup_room_reads_v1_and_v2_at_every_level() {
        // cgroup v2, a nested cgroup whose parent has the tighter limit; "max" passed over.
        let v2 = "0::/a/b\n";
        let nested = [
            ("/sys/fs/cgroup/a/b/memory.max", "max\n"),
            ("/sys/fs/cgroup/a/memory.max", "1000\n"),
            ("/sys/fs/cgroup/a/memory.current", "300\n"),
            ("/sys/fs/cgroup/memory.max", "5000\n"),
            ("/sys/fs/cgroup/memory.current", "100\n"),
        ];
        assert_eq!(room(v2, &nested), Some(700));
        // A container: its cgroup at the mount's root (the path's files missing).
        assert_eq!(
            room(
                v2,
                &[
                    ("/sys/fs/cgroup/memory.max", "2000"),
                    ("/sys/fs/cgroup/memory.current", "500")
                ]
            ),
            Some(1500)
        );
        // cgroup v1: the memory controller's line among others; no usage file counts as 0.
        let v1 = "9:name=systemd:/\n4:memory:/job/42\n3:cpuset:/\n0::/\n";
        let limited = [
            ("/sys/fs/cgroup/memory/job/42/memory.limit_in_bytes", "4096"),
            ("/sys/fs/cgroup/memory/job/42/memory.usage_in_bytes", "1024"),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712",
            ),
        ];
        assert_eq!(room(v1, &limited), Some(3072));
        let unused = [("/sys/fs/cgroup/memory/job/memory.limit_in_bytes", "64")];
        assert_eq!(room(v1, &unused), Some(64));
        // No limit anywhere, or no memory controller: unknown.
        assert_eq!(room(v2, &[("/sys/fs/cgroup/memory.max", "max")]), None);
        assert_eq!(room("3:cpuset:/\n", &limited), None);
        assert_eq!(room("", &[]), None);
    }
}
