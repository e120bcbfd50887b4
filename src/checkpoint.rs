//! Checkpoints in safetensors: every peer's weights and optimizer state, the configuration, the
//! progress counters, the epochs' reports and the feature standardisation, so `--resume`
//! continues exactly (and its metrics and plot cover every epoch).
//! Files are written atomically: a temporary file in the same folder, synced, then renamed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::config::{short_number, TrainConfig};
use crate::data::Standardizer;
use crate::error::{CohortError, Result};
use crate::trainer::{BackendRef, EpochReport, NamedTensors, Trainer};

const FORMAT: &str = "cohort-checkpoint-1";

/// The folder `path` is in (`.` for a bare name) and its file name.
fn folder_and_name(path: &Path) -> Result<(&Path, &std::ffi::OsStr)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        CohortError::InvalidConfig(format!("{} is not a file path", path.display()))
    })?;
    Ok((dir, name))
}

/// Suffix of [`write_atomic`]'s temporary files.
const TEMP_SUFFIX: &str = ".cohort-tmp";

/// Bytes a temporary file's name adds to its stem at most: two dots, the unique part (a PID
/// of up to 10 digits, a PID namespace and a count of up to 16 hex digits each, the time's 8,
/// two dashes) and the suffix.
const TEMP_EXTRA: usize = 2 + 10 + 16 + 16 + 8 + 2 + TEMP_SUFFIX.len();

/// This process's PID namespace (Linux: the inode of /proc/self/ns/pid; 0 where unknown). A
/// PID names a process only within its namespace: a container has its own.
fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|link| {
            let link = link.to_str()?;
            link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// What temporary files of `name` begin with, after their dot: the name, or its hash where the
/// name is too long for what [`temp_path`] adds (file names hold 255 bytes on most file
/// systems).
fn temp_stem(name: &std::ffi::OsStr) -> String {
    use std::hash::{Hash, Hasher};
    let name = name.to_string_lossy();
    if name.len() + TEMP_EXTRA <= 255 {
        return name.into_owned();
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    format!("cohort-{:016x}", hasher.finish())
}

/// A fresh temporary file name beside `path` for [`write_atomic`]:
/// `.STEM.PID-NAMESPACE-N.cohort-tmp`, N counting this process's writes and the time.
fn temp_path(path: &Path) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let (dir, name) = folder_and_name(path)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let unique = format!(
        "{}-{:x}-{:x}{:08x}",
        std::process::id(),
        pid_namespace(),
        COUNT.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    Ok(dir.join(format!(".{}.{unique}{TEMP_SUFFIX}", temp_stem(name))))
}

/// Removes temporary files that an earlier write of `target` left behind when its process was
/// killed mid-write (SIGKILL, a power cut): those of [`temp_path`]'s form made in this PID
/// namespace whose process is gone (as `/proc` says; nothing is removed without it) and that
/// have not changed for a minute. Best effort: errors are ignored.
fn remove_stale_temps(target: &Path) {
    let namespace = pid_namespace();
    let Ok((dir, name)) = folder_and_name(target) else {
        return;
    };
    if namespace == 0 || !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{}.", temp_stem(name));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(middle) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        // PID-NAMESPACE-N exactly (another file's temporary, `.NAME.x.PID-…`, has more).
        let parts: Vec<&str> = middle.split('-').collect();
        let [pid, ns, _] = parts[..] else {
            continue;
        };
        let ours = u64::from_str_radix(ns, 16) == Ok(namespace);
        if !(ours && pid.parse::<u32>().is_ok() && hex(parts[2])) {
            continue;
        }
        let alive = Path::new("/proc").join(pid).exists();
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() >= 60);
        if !alive && idle {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The file that writing `path` replaces: `path` itself, or the file a symbolic link there
/// leads to (the link stays a link, and its target gets the new contents). A folder (or a path
/// ending in a separator), or anything else that is not a regular file (a FIFO, a device), is
/// refused: an atomic write replaces what is there, and would replace those with a plain file.
pub fn write_target(path: &Path) -> Result<PathBuf> {
    let refuse = |what: &str| {
        Err(CohortError::InvalidConfig(format!(
            "{} is {what}, not a file cohort can write",
            path.display()
        )))
    };
    // `Path` drops a trailing separator or `.` (`new/` and `new/.` have the file name `new`),
    // but the system's rename does not: refused here rather than after the run whose result
    // it was to hold.
    let text = path.as_os_str().to_string_lossy();
    let last = text.rsplit(['/', std::path::MAIN_SEPARATOR]).next();
    if matches!(last, Some("" | "." | "..")) && !path.is_dir() {
        return refuse("a folder's path (it ends in a separator, '.' or '..')");
    }
    let mut target = path.to_path_buf();
    // As many links as Linux follows.
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(target),
            Err(e) => return Err(CohortError::io(path, e)),
            Ok(meta) => meta,
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let link = std::fs::read_link(&target).map_err(|e| CohortError::io(path, e))?;
            // A relative link is relative to its own folder (join keeps an absolute one).
            target = match target.parent() {
                Some(dir) => dir.join(link),
                None => link,
            };
        } else if kind.is_file() {
            return Ok(target);
        } else if kind.is_dir() {
            return refuse("a folder");
        } else {
            return refuse("not a regular file (a device, FIFO or socket)");
        }
    }
    refuse("a chain of too many symbolic links")
}

/// [`write_target`] with every link and `..` resolved (the canonical folder and the file's
/// name), so that two paths to one file compare equal. (Hard links to one file still look like
/// two.)
pub fn resolved_target(path: &Path) -> Result<PathBuf> {
    let target = write_target(path)?;
    let (dir, name) = folder_and_name(&target)?;
    let dir = std::fs::canonicalize(dir).map_err(|e| CohortError::io(dir, e))?;
    Ok(dir.join(name))
}

/// Writes `bytes` to `path` atomically: a crash leaves either the old file or the new one. A
/// symbolic link at `path` is followed (see [`write_target`]). The new file keeps the old one's
/// permissions, and the folder is synced after the rename (where the system allows), so the
/// new name survives a power cut too.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = write_target(path)?;
    let replaced = replaceable(path, &target)?;
    remove_stale_temps(&target);
    let tmp = temp_path(&target)?;
    // A new file only: never one another writer (or a planted link) holds; with the old
    // file's permissions from the start, so that no one else may open it meanwhile.
    let mut file = {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(permissions) = &replaced {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(permissions.mode() & 0o7777);
        }
        options.open(&tmp).map_err(|e| CohortError::io(path, e))?
    };
    let result = (|| {
        if let Some(permissions) = replaced {
            // Exactly the old ones (the creation mode is masked by the umask).
            file.set_permissions(permissions)?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        rename_over(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(CohortError::io(path, e));
    }
    if let Ok((dir, _)) = folder_and_name(&target) {
        // Best effort: some file systems cannot sync a folder.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Renames `from` over `to`. On Windows a rename onto a file that a handle without delete
/// sharing holds (a virus scanner's or indexer's, another writer's brief check) fails with
/// "access denied" while that handle lasts: tried again, waiting 1, 2, 4, … ms (at most 250),
/// for up to five seconds before that error is returned.
fn rename_over(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(windows)]
    {
        let start = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(1);
        loop {
            match std::fs::rename(from, to) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::PermissionDenied
                        && start.elapsed() < std::time::Duration::from_secs(5) =>
                {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_millis(250));
                }
                result => return result,
            }
        }
    }
    #[cfg(not(windows))]
    std::fs::rename(from, to)
}

/// The permissions of the file at `target` (what `path` leads to) that an atomic write would
/// replace, or `None` where there is none yet; an error where it cannot be replaced: read-only,
/// immutable, or a mount point of its own (a file bind-mounted into a container, which a
/// rename cannot replace).
fn replaceable(path: &Path, target: &Path) -> Result<Option<std::fs::Permissions>> {
    let meta = match std::fs::metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CohortError::io(path, e)),
        Ok(meta) => meta,
    };
    let refuse = |what: &str, why: &str| {
        Err(CohortError::InvalidConfig(format!(
            "{} is {what}: cohort replaces a file by renaming a new one over it, {why}",
            path.display()
        )))
    };
    if meta.permissions().readonly() {
        return refuse("read-only", "and leaves read-only files alone");
    }
    if is_mount_point(target) {
        return refuse(
            "a mount point of its own",
            "which a mount point refuses (mount its folder and write there instead)",
        );
    }
    // Immutable or append-only files (and others the system keeps from writers) refuse this
    // (opened to write, neither appending nor truncating: nothing changes).
    std::fs::OpenOptions::new()
        .write(true)
        .open(target)
        .map_err(|e| {
            let why = format!("cannot be opened for writing ({e})");
            CohortError::io(path, std::io::Error::new(e.kind(), why))
        })?;
    Ok(Some(meta.permissions()))
}

/// Elsewhere than Linux mount points are not looked for (the rename fails with its own error).
#[cfg(not(target_os = "linux"))]
fn is_mount_point(_file: &Path) -> bool {
    false
}

/// Whether `file` is mounted on its own (a file bind-mounted into a container, say), as
/// Linux's mount table says.
#[cfg(target_os = "linux")]
fn is_mount_point(file: &Path) -> bool {
    let (Ok(file), Ok(table)) = (
        std::fs::canonicalize(file),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return false;
    };
    // The fifth field of each line is the mount point, with space, tab, newline and backslash
    // written as octal escapes.
    let unescape = |field: &str| {
        let mut out = Vec::new();
        let bytes = field.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let octal = bytes.get(i + 1..i + 4).and_then(|d| {
                let d = std::str::from_utf8(d).ok()?;
                u8::from_str_radix(d, 8).ok()
            });
            match (bytes[i], octal) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    i += 4;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        out
    };
    use std::os::unix::ffi::OsStrExt;
    let wanted = file.as_os_str().as_bytes();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| unescape(point) == wanted)
}

/// Checks, before a long run, that [`write_atomic`] will be able to write `path`: it names a
/// regular file (or a link to one, or nothing yet) that may be replaced, in a folder that
/// exists and takes new files. (Leaves nothing there.)
pub fn check_writable(path: &Path) -> Result<()> {
    let target = write_target(path)?;
    replaceable(path, &target)?;
    let (dir, _) = folder_and_name(&target)?;
    if !dir.is_dir() {
        return Err(CohortError::InvalidConfig(format!(
            "{}: the folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    let tmp = temp_path(&target)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| {
            let why = format!("the folder {} cannot take a new file ({e})", dir.display());
            CohortError::io(path, std::io::Error::new(e.kind(), why))
        })?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// [`CohortError::NonFinite`] naming `tensor`'s first NaN or infinity and `context`, if it has one.
fn check_finite(tensor: &str, data: &[f32], context: impl FnOnce() -> String) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(CohortError::NonFinite {
            what: format!("tensor {tensor}, element {i}, {}", context()),
        }),
        None => Ok(()),
    }
}

/// A checkpoint read from disk.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The configuration it was trained with.
    pub config: TrainConfig,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimizer steps taken.
    pub steps_done: usize,
    /// Named tensors `(shape, data)`.
    pub tensors: NamedTensors,
    /// Feature standardisation fitted on the training data, if any.
    pub standardizer: Option<Standardizer>,
    /// The report of every epoch trained (empty in checkpoints written before 2026-12-01).
    pub reports: Vec<EpochReport>,
    /// [`crate::data::Dataset::fingerprint`] of the rows the cohort last trained on (none in
    /// checkpoints written before 2026-12-01, or of a cohort not trained yet).
    pub trained_on: Option<u64>,
}

/// Saves the trainer's full state (and the standardisation) to `path`.
pub fn save<B: Backend>(
    trainer: &Trainer<'_, B>,
    standardizer: Option<&Standardizer>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let mut named = trainer.named_tensors()?;
    if let Some(s) = standardizer {
        named.insert("data.mean".into(), (vec![s.mean.len()], s.mean.clone()));
        named.insert("data.std".into(), (vec![s.std.len()], s.std.clone()));
    }
    // A checkpoint that `load` would refuse is not written (nor does it replace a good one).
    let not_saved = || format!("not saved to {}", path.display());
    if let Some(why) =
        standardizer.and_then(|s| standardizer_mismatch(s, trainer.config().inputs()))
    {
        return Err(CohortError::InvalidConfig(format!(
            "the standardisation: {why}; {}",
            not_saved()
        )));
    }
    for (name, (_, data)) in &named {
        check_finite(name, data, not_saved)?;
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .into_iter()
        .map(|(n, (shape, data))| (n, shape, bytemuck::cast_slice(&data).to_vec()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| CohortError::InvalidConfig(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = serde_json::to_string(trainer.config())
        .map_err(|e| CohortError::InvalidConfig(format!("config: {e}")))?;
    let reports = serde_json::to_string(trainer.reports())
        .map_err(|e| CohortError::InvalidConfig(format!("epoch reports: {e}")))?;
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), config),
        ("reports".to_string(), reports),
        ("epochs_done".to_string(), trainer.epochs_done().to_string()),
        ("steps_done".to_string(), trainer.steps_done().to_string()),
    ]);
    if let Some(fingerprint) = trainer.trained_on() {
        meta.insert("trained_on".into(), format!("{fingerprint:016x}"));
    }
    let out = safetensors::serialize(views, Some(meta))
        .map_err(|e| CohortError::InvalidConfig(format!("serialising checkpoint: {e}")))?;
    write_atomic(path, &out)
}

/// Why `s` cannot standardise the inputs of a cohort taking `inputs` features, if it cannot:
/// means and deviations of other counts, or a deviation that is not positive.
fn standardizer_mismatch(s: &Standardizer, inputs: usize) -> Option<String> {
    let (mean, std) = (&s.mean, &s.std);
    if mean.len() != std.len() {
        return Some(format!("{} means but {} deviations", mean.len(), std.len()));
    }
    if mean.len() != inputs {
        return Some(format!(
            "data.mean and data.std standardise {} features; the cohort takes {inputs} inputs",
            mean.len()
        ));
    }
    // As Standardizer::fit makes them: under f32's normal range dividing by one overflows
    // (fit puts 1 there), and infinity leaves nothing of a feature.
    let i = std
        .iter()
        .position(|&s| !(f32::MIN_POSITIVE..=f32::MAX).contains(&s))?;
    Some(format!(
        "data.std, element {i}: {} is no standard deviation of a feature (a positive normal \
         f32)",
        short_number(std[i])
    ))
}

/// The bytes of the checkpoint file `path`: a regular file (a FIFO would wait forever for a
/// writer, a device never end), no larger than a data file may be (a fifth of the memory
/// available: the tensors are copied once more as they are read).
fn read_checkpoint_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| CohortError::io(path, e))?;
    if !meta.is_file() {
        let what = match meta.is_dir() {
            true => "a folder",
            false => "not a regular file (a device, FIFO or socket)",
        };
        return Err(CohortError::InvalidConfig(format!(
            "{} is {what}, not a checkpoint",
            path.display()
        )));
    }
    let limit = crate::error::data_file_limit();
    if meta.len() > limit {
        return Err(CohortError::HostMemory {
            what: format!(
                "loading the checkpoint {} (over {limit} bytes, a fifth of the memory available)",
                path.display()
            ),
            bytes: meta.len(),
        });
    }
    std::fs::read(path).map_err(|e| CohortError::io(path, e))
}

/// Reads a checkpoint, checking its format and every tensor (F32, finite).
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = read_checkpoint_file(path)?;
    let corrupt = |why: String| CohortError::corrupt(path, why);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        use safetensors::SafeTensorError as E;
        corrupt(match e {
            E::MetadataIncompleteBuffer => format!(
                "its {} bytes do not end where its header's tensors do: truncated, or bytes \
                 added after them",
                bytes.len()
            ),
            E::InvalidHeaderLength | E::HeaderTooSmall => format!(
                "its {} bytes end before its header does: truncated (or not a checkpoint)",
                bytes.len()
            ),
            e => format!("not a safetensors checkpoint ({e})"),
        })
    })?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| corrupt("no cohort metadata".into()))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(corrupt(format!("not a {FORMAT} file")));
    }
    let field = |k: &str| {
        meta.get(k)
            .ok_or_else(|| corrupt(format!("metadata lacks '{k}'")))
    };
    let config: TrainConfig =
        serde_json::from_str(field("config")?).map_err(|e| corrupt(format!("config: {e}")))?;
    // Checked here, naming the file, rather than when a trainer is built from it.
    config
        .validate()
        .map_err(|e| corrupt(format!("its configuration: {e}")))?;
    let number = |k: &str| -> Result<usize> {
        field(k)?
            .parse()
            .map_err(|_| corrupt(format!("'{k}' is not a number")))
    };
    let (epochs_done, steps_done) = (number("epochs_done")?, number("steps_done")?);
    let max = crate::trainer::MAX_RESTORED_STEPS;
    if steps_done.max(epochs_done) > max {
        return Err(corrupt(format!(
            "{epochs_done} epochs and {steps_done} steps done: more than any run takes (at most \
             {max} of each)"
        )));
    }
    let reports: Vec<EpochReport> = match meta.get("reports") {
        Some(json) => {
            serde_json::from_str(json).map_err(|e| corrupt(format!("epoch reports: {e}")))?
        }
        None => Vec::new(),
    };
    // Each report an epoch this checkpoint trained (a resumed old checkpoint's run starts
    // later than 1), in order, with every peer.
    let mut last_epoch = 0;
    for report in &reports {
        if report.epoch > epochs_done {
            return Err(corrupt(format!(
                "epoch reports: epoch {} is past the checkpoint's last epoch, {epochs_done}",
                report.epoch
            )));
        }
        if report.epoch <= last_epoch {
            return Err(corrupt(format!(
                "epoch reports: epoch {} follows epoch {last_epoch}",
                report.epoch
            )));
        }
        if report.peers.len() != config.peers.len() {
            return Err(corrupt(format!(
                "epoch reports: epoch {} reports {} peers, the cohort has {}",
                report.epoch,
                report.peers.len(),
                config.peers.len()
            )));
        }
        // Accuracies from 0 to 1, the learning rate and time at least 0 (NaN stands for a
        // value that overflowed). Losses are not held to 0: a KL term can round below it.
        let out_of_range = |v: f64, max: f64| !v.is_nan() && !(0.0..=max).contains(&v);
        let accuracies = report
            .peers
            .iter()
            .flat_map(|p| [p.train_accuracy, p.test_accuracy]);
        let accuracies = accuracies.chain([report.ensemble_accuracy]);
        if accuracies.map(f64::from).any(|a| out_of_range(a, 1.0))
            || out_of_range(f64::from(report.lr), f64::INFINITY)
            || out_of_range(report.seconds, f64::INFINITY)
        {
            return Err(corrupt(format!(
                "epoch reports: epoch {} holds an accuracy, learning rate or time out of range",
                report.epoch
            )));
        }
        last_epoch = report.epoch;
    }
    // Checked after the reports, whose own errors say more where they are the damage.
    if epochs_done > config.epochs {
        return Err(corrupt(format!(
            "{epochs_done} epochs done of a run of {}",
            config.epochs
        )));
    }
    let trained_on = match meta.get("trained_on") {
        // Hex digits only (from_str_radix would take a sign).
        Some(hex) => Some(
            u64::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| corrupt(format!("'trained_on' is not a fingerprint: '{hex}'")))?,
        ),
        None => None,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut tensors = NamedTensors::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(corrupt(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let data: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        check_finite(&name, &data, || format!("in {}", path.display()))?;
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    // Every peer's tensors as its configuration makes them, and none besides: found here,
    // naming the file, rather than once a trainer is built on a device.
    if let Some(why) = crate::trainer::saved_tensors_mismatch(&config, &tensors) {
        return Err(corrupt(why));
    }
    // Every one expected is there, so there are no more of them than tensors.
    let expected: std::collections::HashSet<String> = crate::trainer::saved_tensor_shapes(&config)
        .map(|(name, _)| name)
        .collect();
    let known = |name: &str| ["data.mean", "data.std"].contains(&name) || expected.contains(name);
    if let Some(name) = tensors.keys().find(|name| !known(name)) {
        return Err(corrupt(format!(
            "tensor {name} belongs to no peer and layer of its configuration"
        )));
    }
    let standardizer = match (tensors.remove("data.mean"), tensors.remove("data.std")) {
        (Some((_, mean)), Some((_, std))) => {
            let s = Standardizer { mean, std };
            if let Some(why) = standardizer_mismatch(&s, config.inputs()) {
                return Err(CohortError::corrupt(path, why));
            }
            Some(s)
        }
        (None, None) => None,
        // Half a standardisation would score raw features without a word.
        (Some(_), None) => return Err(CohortError::corrupt(path, "data.mean without data.std")),
        (None, Some(_)) => return Err(CohortError::corrupt(path, "data.std without data.mean")),
    };
    Ok(Checkpoint {
        config,
        epochs_done,
        steps_done,
        tensors,
        standardizer,
        reports,
        trained_on,
    })
}

/// The settings where two configurations (as JSON) differ, as `path: saved X, asked Y`, down to
/// the innermost field that differs (`optimizer.kind.sgd.momentum`, not the whole optimizer).
fn differences(
    path: &str,
    saved: &serde_json::Value,
    asked: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (saved, asked) {
        (Value::Object(a), Value::Object(b)) if a.len() == b.len() && a.keys().eq(b.keys()) => {
            for (key, value) in a {
                let inner = match path {
                    "" => key.clone(),
                    _ => format!("{path}.{key}"),
                };
                differences(&inner, value, &b[key], out);
            }
        }
        _ if saved != asked => out.push(format!(
            "{path}: saved {}, asked {}",
            setting_text(saved),
            setting_text(asked)
        )),
        _ => {}
    }
}

/// A setting as the user wrote it: an f32 value (JSON holds it widened to f64, so 0.05 reads
/// 0.05000000074505806) as the f32 it is, anything else as JSON.
fn setting_text(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Number(_) => match value.as_f64() {
            Some(x) if value.is_f64() && f64::from(x as f32) == x => short_number(x as f32),
            _ => value.to_string(),
        },
        // Whole settings (another optimizer, say), their numbers written as f32s are.
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\":{}", setting_text(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(setting_text).collect();
            format!("[{}]", items.join(","))
        }
        _ => value.to_string(),
    }
}

impl Checkpoint {
    /// [`CohortError::CheckpointMismatch`] naming each setting where `want` differs from the
    /// saved configuration, but for `epochs`, which may be extended.
    pub fn check_config(&self, want: &TrainConfig) -> Result<()> {
        let as_json = |c: &TrainConfig| serde_json::to_value(c).unwrap_or_default();
        let (mut saved, asked) = (as_json(&self.config), as_json(want));
        saved["epochs"] = asked["epochs"].clone();
        let mut differing = Vec::new();
        differences("", &saved, &asked, &mut differing);
        match differing.is_empty() {
            true => Ok(()),
            false => Err(CohortError::CheckpointMismatch(differing.join("; "))),
        }
    }

    /// Rebuilds a trainer on `backend` in the saved state. A `config` given alongside must equal
    /// the saved one except for `epochs`, which may be extended (not cut below the epochs
    /// done). A cosine learning-rate schedule then spans the new total: it picks up where the
    /// longer run's curve stands, not where the saved run's ended.
    pub fn restore<'b, B: Backend>(
        &self,
        backend: impl Into<BackendRef<'b, B>>,
        config: Option<&TrainConfig>,
    ) -> Result<Trainer<'b, B>> {
        let mut config_now = self.config.clone();
        if let Some(want) = config {
            self.check_config(want)?;
            if want.epochs < self.epochs_done {
                return Err(CohortError::InvalidConfig(format!(
                    "the checkpoint has trained {} epochs; a run of {} would end before it",
                    self.epochs_done, want.epochs
                )));
            }
            config_now.epochs = want.epochs;
        }
        let mut trainer = Trainer::new(backend, config_now)?;
        trainer.restore(&self.tensors, self.epochs_done, self.steps_done)?;
        trainer.restore_reports(self.reports.clone());
        trainer.restore_trained_on(self.trained_on);
        Ok(trainer)
    }
}
