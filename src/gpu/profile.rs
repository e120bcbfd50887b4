//! A per-kernel GPU profile. While one runs ([`Runtime::start_profile`]), every dispatch gets a
//! compute pass of its own with timestamps at its start and end; each submission's timestamps are
//! read back when it is flushed and added up per kernel, entry point and (for matmuls) shape.
//!
//! Separate passes cost a little: the GPU cannot overlap a kernel's tail with the next one's
//! start across them, so a profiled step takes somewhat longer than an unprofiled one. The
//! shares, and the speed of each kernel alone, are what a profile is for.
//!
//! [`Runtime::start_profile`]: super::Runtime::start_profile

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

/// Dispatches one submission can time (two timestamps each; wgpu allows 4096 queries in a set).
/// The runtime submits early when they run out.
const CAPACITY: u32 = 2048;

/// Where a profiled dispatch is counted: its kernel, entry point and detail.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct KernelKey {
    kernel: &'static str,
    entry: &'static str,
    detail: String,
}

/// GPU time spent in one kernel, entry point and shape: one row of a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The shader file, e.g. `matmul.wgsl`.
    pub kernel: &'static str,
    /// The entry point, e.g. `main_bias_act`.
    pub entry: &'static str,
    /// What the caller said of the work, e.g. a matmul's `batch×m×n×k` and layout; may be empty.
    pub detail: String,
    /// Dispatches timed.
    pub calls: u64,
    /// Their GPU time together.
    pub time: Duration,
    /// Floating-point operations the caller counted for them (0 where it counted none).
    pub flops: f64,
}

/// A finished profile: GPU time per kernel, the largest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// One row per kernel, entry point and detail.
    pub kernels: Vec<KernelTime>,
}

impl Profile {
    /// GPU time of every timed dispatch together.
    pub fn total(&self) -> Duration {
        self.kernels.iter().map(|k| k.time).sum()
    }

    /// Dispatches timed.
    pub fn calls(&self) -> u64 {
        self.kernels.iter().map(|k| k.calls).sum()
    }

    /// A table of the rows, with times and calls divided by `per` (e.g. the steps profiled), and
    /// each row's share of the total and, where FLOPs were counted, its GFLOP/s.
    pub fn table(&self, per: usize) -> String {
        let per = per.max(1) as f64;
        let total = self.total().as_secs_f64();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<18} {:<24} {:<26} {:>7} {:>10} {:>6} {:>9}",
            "kernel", "entry", "detail", "calls", "µs", "share", "GFLOP/s"
        );
        for k in &self.kernels {
            let secs = k.time.as_secs_f64();
            let rate = if k.flops > 0.0 && secs > 0.0 {
                fmt_rate(k.flops / secs / 1e9)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:<18} {:<24} {:<26} {:>7} {:>10.1} {:>5.1}% {:>9}",
                k.kernel,
                k.entry,
                k.detail,
                fmt_calls(k.calls as f64 / per),
                secs / per * 1e6,
                if total > 0.0 {
                    100.0 * secs / total
                } else {
                    0.0
                },
                rate
            );
        }
        let _ = writeln!(
            out,
            "{:<70} {:>7} {:>10.1} {:>5.1}%",
            "all kernels",
            fmt_calls(self.calls() as f64 / per),
            total / per * 1e6,
            100.0
        );
        out
    }
}

/// Calls per step: whole where they are, else with one decimal.
fn fmt_calls(calls: f64) -> String {
    if calls.fract() == 0.0 {
        format!("{calls}")
    } else {
        format!("{calls:.1}")
    }
}

/// A rate to three significant digits (at least one decimal), so that a slow kernel (a
/// software adapter's first dispatch, say) reads `0.0145`, not `0.0`.
fn fmt_rate(rate: f64) -> String {
    let decimals = match rate {
        r if r >= 100.0 => 1,
        r if r > 0.0 => (2.0 - r.log10().floor()).clamp(1.0, 12.0) as usize,
        _ => 1,
    };
    format!("{rate:.decimals$}")
}

/// The detail and FLOPs of the work being recorded, set by [`Runtime::annotated`].
///
/// [`Runtime::annotated`]: super::Runtime::annotated
#[derive(Default)]
pub(crate) struct Note {
    pub(crate) detail: String,
    /// Counted once, on the first dispatch under the note (a split-K product's reduction
    /// after it does no multiply-adds).
    pub(crate) flops: f64,
}

/// A running profile: the query set, the dispatches recorded since the last submission, and the
/// sums so far.
pub(crate) struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    recorded: Vec<(KernelKey, f64)>,
    sums: HashMap<KernelKey, (u64, f64, f64)>,
}

impl Profiler {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        let bytes = u64::from(CAPACITY) * 16;
        Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("cohort profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * CAPACITY,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("cohort profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("cohort profile readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            recorded: Vec::new(),
            sums: HashMap::new(),
        }
    }

    /// No room for another dispatch before the next submission.
    pub(crate) fn is_full(&self) -> bool {
        self.recorded.len() >= CAPACITY as usize
    }

    /// Registers the next dispatch (the caller made room) and returns the timestamp writes for
    /// its pass.
    pub(crate) fn next(
        &mut self,
        kernel: &'static str,
        entry: &'static str,
        note: Option<&mut Note>,
    ) -> wgpu::ComputePassTimestampWrites<'_> {
        let (detail, flops) = match note {
            Some(n) => (n.detail.clone(), std::mem::take(&mut n.flops)),
            None => (String::new(), 0.0),
        };
        let index = self.recorded.len() as u32;
        let key = KernelKey {
            kernel,
            entry,
            detail,
        };
        self.recorded.push((key, flops));
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * index),
            end_of_pass_write_index: Some(2 * index + 1),
        }
    }

    /// Records the copy of this submission's timestamps to [`Profiler::readback`]; false where
    /// no dispatch was timed (nothing to read).
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) -> bool {
        let queries = 2 * self.recorded.len() as u32;
        if queries == 0 {
            return false;
        }
        encoder.resolve_query_set(&self.queries, 0..queries, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, u64::from(queries) * 8);
        true
    }

    /// The buffer [`Profiler::resolve`] copies the timestamps to, for mapping.
    pub(crate) fn readback(&self) -> &wgpu::Buffer {
        &self.readback
    }

    /// Forgets the dispatches recorded without counting them (their times could not be read).
    pub(crate) fn discard_recorded(&mut self) {
        self.recorded.clear();
    }

    /// Adds the timestamps read back (`raw`, two little-endian u64 ticks per dispatch, `period`
    /// nanoseconds a tick) to the sums, and forgets the dispatches recorded.
    pub(crate) fn add(&mut self, raw: &[u8], period: f32) {
        let tick = |i: usize| {
            raw.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        for (i, (key, flops)) in self.recorded.drain(..).enumerate() {
            let ns = tick(2 * i + 1).saturating_sub(tick(2 * i)) as f64 * f64::from(period);
            let sum = self.sums.entry(key).or_default();
            sum.0 += 1;
            sum.1 += ns;
            sum.2 += flops;
        }
    }

    /// The sums as a profile, the most GPU time first.
    pub(crate) fn finish(self) -> Profile {
        let mut kernels: Vec<KernelTime> = self
            .sums
            .into_iter()
            .map(|(key, (calls, ns, flops))| KernelTime {
                kernel: key.kernel,
                entry: key.entry,
                detail: key.detail,
                calls,
                time: Duration::from_nanos(ns as u64),
                flops,
            })
            .collect();
        kernels.sort_by(|a, b| {
            b.time
                .cmp(&a.time)
                .then_with(|| (a.kernel, a.entry, &a.detail).cmp(&(b.kernel, b.entry, &b.detail)))
        });
        Profile { kernels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_keep_three_significant_digits() {
        let cases = [
            (5480.63, "5480.6"),
            (27.04, "27.0"),
            (5.304, "5.30"),
            (0.01452, "0.0145"),
            (0.0, "0.0"),
        ];
        for (rate, shown) in cases {
            assert_eq!(fmt_rate(rate), shown);
        }
    }

    #[test]
    fn table_divides_by_steps_and_shares_the_total() {
        let profile = Profile {
            kernels: vec![
                KernelTime {
                    kernel: "matmul.wgsl",
                    entry: "main",
                    detail: "256×1024×784 NN".into(),
                    calls: 4,
                    time: Duration::from_micros(300),
                    flops: 4.0 * 2.0 * 256.0 * 1024.0 * 784.0,
                },
                KernelTime {
                    kernel: "dml_loss.wgsl",
                    entry: "main",
                    detail: String::new(),
                    calls: 2,
                    time: Duration::from_micros(100),
                    flops: 0.0,
                },
            ],
        };
        assert_eq!(profile.total(), Duration::from_micros(400));
        assert_eq!(profile.calls(), 6);
        let table = profile.table(2);
        let matmul = table.lines().nth(1).expect("matmul row");
        // 150 µs and 2 calls a step, 75% of the time, 1.644 GFLOP in 300 µs = 5480.6 GFLOP/s.
        assert!(
            matmul.contains(" 2 ") && matmul.contains("150.0"),
            "{matmul}"
        );
        assert!(
            matmul.contains("75.0%") && matmul.ends_with("5480.6"),
            "{matmul}"
        );
        let loss = table.lines().nth(2).expect("loss row");
        assert!(loss.contains("50.0") && loss.contains("25.0%"), "{loss}");
        let all = table.lines().last().expect("total row");
        assert!(all.contains(" 3 ") && all.contains("200.0"), "{all}");
    }

    #[test]
    fn fractional_calls_keep_one_decimal() {
        assert_eq!(fmt_calls(3.0), "3");
        assert_eq!(fmt_calls(2.5), "2.5");
    }
}
