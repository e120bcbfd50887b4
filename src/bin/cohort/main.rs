//! The `cohort` command: train a cohort by Deep Mutual Learning, compare it with independent
//! training, score a saved cohort (evaluate, predict), list GPU adapters, check the kernels
//! against the CPU reference and profile a training step kernel by kernel. Each file holds one
//! part: flags (`args`), what is checked before a device opens (`prepare`), the subcommands
//! (`train`, `score`, `gpu`) and number formats (`text`); this one picks the device.

mod args;
mod gpu;
mod interrupt;
mod prepare;
mod score;
mod text;
mod train;

use std::process::ExitCode;

use clap::Parser;

use cohort::{Backend, CohortError, CpuBackend, GpuBackend, GpuOptions, Result};

use args::{Cli, Command, DeviceChoice};
use gpu::{check, devices, profile};
use prepare::{check_outputs, prepare, resume_point};
use score::{evaluate, evaluation_data, predict, prediction_rows};
use train::{check_compare, compare, train};

/// Lets a write to a pipe whose reader has gone (`cohort train | head -1`) end the process as
/// it ends `cat` or `grep`, quietly, by SIGPIPE's default action, instead of making every
/// print fail (Rust's runtime ignores the signal, and a failed `println!` panics); and turns
/// any other failed print (a full disk) into a one-line error instead of a panic. A file being
/// written is written atomically (a temporary file, then a rename), so one ended part-way is
/// left as it was.
fn end_cleanly_when_output_fails() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread starts; no
    // handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {message}");
            std::process::exit(1);
        }
        default_hook(info)
    }));
}

/// Mesa's device-selection Vulkan layer (installed with Mesa's drivers) asks Wayland for the
/// display's GPU whenever adapters are listed; with no usable XDG_RUNTIME_DIR (a headless
/// server, a container) libwayland then prints "error: XDG_RUNTIME_DIR is invalid or not set
/// in the environment." on standard error, a line that reads as cohort's own error. cohort
/// ranks the adapters itself, so there the layer is turned off (`NODEVICE_SELECT=1`), unless
/// the user has set that variable.
fn quiet_headless_vulkan() {
    let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR");
    let usable = runtime_dir.is_some_and(|dir| std::path::Path::new(&dir).is_dir());
    if !usable && std::env::var_os("NODEVICE_SELECT").is_none() {
        // Before any thread starts: nothing reads the environment concurrently.
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

fn main() -> ExitCode {
    end_cleanly_when_output_fails();
    quiet_headless_vulkan();
    let cli = Cli::parse();
    let trains = matches!(
        cli.command,
        Command::Train { .. } | Command::Compare { .. } | Command::Profile { .. }
    );
    let result = match cli.command {
        // The flags, the output paths and the data are checked before a device opens (which
        // may compile the kernels for a while), so that a typo fails at once.
        Command::Train { train: args, files } => (|| {
            check_outputs(&files, &args)?;
            let prepared = prepare(&args)?;
            let resume = resume_point(&files, &prepared)?;
            // Where there are files to write: without, Ctrl-C stops at once as ever.
            if files.save.is_some() || files.metrics.is_some() || files.plot.is_some() {
                interrupt::stop_after_epoch_on_interrupt();
            }
            match open(args.device)? {
                Device::Gpu(g) => train(g.as_ref(), &args, &files, prepared, resume),
                Device::Cpu(c) => train(&c, &args, &files, prepared, resume),
            }
        })(),
        Command::Compare {
            train,
            seeds,
            results,
        } => (|| {
            let results = results.as_deref();
            check_compare(&train, seeds, results)?;
            let prepared = prepare(&train)?;
            match open(train.device)? {
                Device::Gpu(g) => compare(g.as_ref(), &train, seeds, results, prepared),
                Device::Cpu(c) => compare(&c, &train, seeds, results, prepared),
            }
        })(),
        Command::Evaluate {
            checkpoint,
            data,
            all_rows,
            device,
        } => (|| {
            let (ckpt, rows) = evaluation_data(&checkpoint, &data, all_rows)?;
            match open(device)? {
                Device::Gpu(g) => evaluate(g.as_ref(), &ckpt, &rows),
                Device::Cpu(c) => evaluate(&c, &ckpt, &rows),
            }
        })(),
        Command::Predict {
            checkpoint,
            data,
            output,
            device,
        } => (|| {
            let (ckpt, rows) = prediction_rows(&checkpoint, &data, output.as_deref())?;
            match open(device)? {
                Device::Gpu(g) => predict(g.as_ref(), &ckpt, &rows, output.as_deref()),
                Device::Cpu(c) => predict(&c, &ckpt, &rows, output.as_deref()),
            }
        })(),
        Command::Devices => devices(),
        Command::Check => GpuBackend::from_env().and_then(|g| check(&g)),
        Command::Profile {
            train,
            steps,
            driver_stats,
        } => match (train.device, steps) {
            (DeviceChoice::Cpu, _) => Err(CohortError::InvalidConfig(
                "profile times GPU kernels: --device cpu has none".into(),
            )),
            (_, 0) => Err(CohortError::InvalidConfig("--steps must be ≥ 1".into())),
            _ => (|| {
                let prepared = prepare(&train)?;
                match open(DeviceChoice::Gpu)? {
                    Device::Gpu(g) => profile(&g, steps, driver_stats, prepared),
                    Device::Cpu(_) => unreachable!("open(Gpu) gives a GPU or an error"),
                }
            })(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Stopped by Ctrl-C or SIGTERM (train said where): the shells' code for a run that
        // signal ended, 130 or 143.
        Err(CohortError::Stopped) => {
            ExitCode::from(128 + interrupt::asked().map_or(2, |s| s.clamp(1, 127)) as u8)
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(note) = note_on(&e, trains) {
                eprintln!("note: {note}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to do about `e`, where the error alone does not say: for a tensor past the device's
/// buffer limit, what sets its size (in a command that trains, `trains`) and what has no such
/// limit.
fn note_on(e: &CohortError, trains: bool) -> Option<String> {
    let CohortError::BufferTooLarge { limit, .. } = e else {
        return None;
    };
    let sizes = match trains {
        true => {
            "a step's largest are usually the activations of a group of same-shaped peers \
             (peers × --batch rows × widest layer × 4 bytes), which a smaller --batch or \
             narrower layers shrink"
        }
        false => "rows are taken in batches of the cohort's training batch (at least 256)",
    };
    Some(format!(
        "each tensor lives in one buffer of at most {} MiB on this device; {sizes} (on --device \
         cpu only host memory limits them)",
        limit >> 20
    ))
}

/// The backend a command runs on.
enum Device {
    Gpu(Box<GpuBackend>),
    Cpu(CpuBackend),
}

/// Whether `--device auto` runs on the CPU backend after the GPU backend failed to open with
/// `e`: for a missing or failing GPU, not for what the user is to fix: a mistyped COHORT_*
/// setting, one this GPU cannot honour (split f32 products without cooperative matrices), an
/// adapter named in COHORT_ADAPTER that is not there, or a plan file that cannot be read or
/// written.
fn falls_back(e: &CohortError) -> bool {
    match e {
        CohortError::NoAdapter { requested, .. } => requested.is_none(),
        CohortError::InvalidConfig(_)
        | CohortError::Unsupported(_)
        | CohortError::CorruptFile { .. }
        | CohortError::Io { .. } => false,
        _ => true,
    }
}

/// Opens the backend `--device` asks for (with `auto`, the CPU where no usable hardware GPU is
/// found), says which on standard error and, on a GPU, compiles every kernel before the work
/// starts. `auto` passes over software adapters (lavapipe, WARP) unless COHORT_ADAPTER names
/// one: the CPU backend trains faster than they do (BENCHMARKS.md, "The CPU backend's matmul").
fn open(choice: DeviceChoice) -> Result<Device> {
    let device = match choice {
        DeviceChoice::Cpu => Device::Cpu(CpuBackend),
        DeviceChoice::Gpu => Device::Gpu(Box::new(GpuBackend::from_env()?)),
        DeviceChoice::Auto => {
            let mut options = GpuOptions::from_env()?;
            let other_way = match options.hardware_only {
                true => "COHORT_HARDWARE_ONLY=1 keeps `--device gpu` off it too",
                false => "`--device gpu` runs on it",
            };
            options.hardware_only |= options.adapter.is_none();
            match GpuBackend::new(&options) {
                Ok(g) => Device::Gpu(Box::new(g)),
                Err(CohortError::NoAdapter {
                    requested: None,
                    passed_over,
                    ..
                }) if !passed_over.is_empty() => {
                    eprintln!(
                        "passing over the software adapter {}: the CPU backend trains faster \
                         ({other_way})",
                        passed_over.join(", ")
                    );
                    Device::Cpu(CpuBackend)
                }
                Err(e) if falls_back(&e) => {
                    eprintln!("{e}; using the CPU backend");
                    Device::Cpu(CpuBackend)
                }
                Err(e) => return Err(e),
            }
        }
    };
    match &device {
        Device::Gpu(g) => {
            eprintln!("device: {}", g.describe());
            g.warm_up()?;
        }
        Device::Cpu(c) => eprintln!("device: {}", c.describe()),
    }
    Ok(device)
}
