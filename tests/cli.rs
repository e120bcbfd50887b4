//! The `cohort` command as a user meets it: the main job trains and prints its tables, and every
//! bad input is one clear line on stderr with a non-zero exit, never a panic.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn cohort(args: &[&str]) -> Output {
    cohort_with_env(args, &[])
}

fn cohort_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    cohort_command(args)
        .envs(env.iter().copied())
        .output()
        .expect("the cohort binary runs")
}

/// The binary with `args`, its outputs not yet directed.
fn cohort_command(args: &[&str]) -> Command {
    // COHORT_BIN lets staged copies of this test run the staged binary on another machine.
    let bin = std::env::var("COHORT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cohort").into());
    let mut command = Command::new(bin);
    command
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether a Vulkan layer's manifest (`implicit_layer.d/…` or `explicit_layer.d/…`) is in one
/// of the folders the Vulkan loader reads on Linux. Elsewhere false: Windows' loader finds
/// layers through the registry (and under Wine these paths would name the Linux host's files,
/// which the Windows loader does not read).
fn vulkan_layer_installed(manifest: &str) -> bool {
    cfg!(target_os = "linux")
        && [
            "/usr/share/vulkan",
            "/usr/local/share/vulkan",
            "/etc/vulkan",
        ]
        .iter()
        .any(|d| std::path::Path::new(d).join(manifest).exists())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cohort-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn train_on_the_embedded_digits_writes_metrics_plot_and_checkpoint() {
    let dir = scratch("train");
    let (metrics, plot, ckpt) = (
        dir.join("m.jsonl"),
        dir.join("curves.png"),
        dir.join("c.safetensors"),
    );
    let out = cohort(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--peers",
        "2x32",
        "--metrics",
        metrics.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--save",
        ckpt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ensemble") && stdout.contains("test acc"),
        "{stdout}"
    );
    assert!(
        !text(&out.stderr).contains("diverging"),
        "{}",
        text(&out.stderr)
    );
    let rows = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        rows.lines().count(),
        2 * 3,
        "one row per epoch per peer plus the ensemble"
    );
    assert!(rows
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    assert!(
        std::fs::read(&plot)
            .unwrap()
            .starts_with(b"\x89PNG\r\n\x1a\n"),
        "a PNG file"
    );
    // Resume for a third epoch from the checkpoint: the metrics and the plot cover all three
    // epochs, not only the resumed one.
    let svg = dir.join("curves.svg");
    let out = cohort(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "3",
        "--peers",
        "2x32",
        "--resume",
        ckpt.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("after epoch 3"),
        "{}",
        text(&out.stdout)
    );
    let resumed_rows = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(resumed_rows.lines().count(), 3 * 3, "{resumed_rows}");
    assert!(
        resumed_rows.starts_with(&rows),
        "the first two epochs' rows as written before the resume:\n{rows}\n{resumed_rows}"
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    // Inputs standardised otherwise than in the saved run: refused, not silently continued.
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "3",
            "--peers",
            "2x32",
            "--standardize",
            "none",
            "--resume",
            ckpt.to_str().unwrap(),
        ],
        "standardised otherwise",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fails_cleanly(args: &[&str], expect: &str) {
    fails_cleanly_with_env(args, &[], expect);
}

fn fails_cleanly_with_env(args: &[&str], env: &[(&str, &str)], expect: &str) {
    fails_with_code(args, env, expect, 1);
}

/// A command line the parser refuses: exit code 2, as the README says.
fn fails_to_parse(args: &[&str], expect: &str) {
    fails_with_code(args, &[], expect, 2);
}

/// `cohort ARGS` (with `env`) ends with exit code `code` and an error line holding `expect`,
/// never a panic.
fn fails_with_code(args: &[&str], env: &[(&str, &str)], expect: &str, code: i32) {
    let out = cohort_with_env(args, env);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?} should fail: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{args:?} panicked: {stderr}"
    );
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_default();
    assert!(
        error_line.contains(expect),
        "{args:?}: expected '{expect}' in the error line, got: {stderr}"
    );
}

#[test]
fn bad_input_is_one_clear_error_line() {
    let dir = scratch("bad");
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            "csv:/no/such/file.csv",
        ],
        "/no/such/file.csv",
    );
    fails_cleanly(
        &["train", "--device", "cpu", "--data", "idx:/no/such/dir"],
        "/no/such/dir",
    );
    // Binary data named as CSV is refused at its first mebibyte (it was read up to a fifth of
    // the host's memory first, then refused as too large).
    #[cfg(unix)]
    fails_cleanly(
        &["train", "--device", "cpu", "--data", "csv:/dev/urandom"],
        "not UTF-8 text",
    );
    fails_cleanly(
        &["train", "--device", "cpu", "--peers", "784-512-10"],
        "784 inputs",
    );
    // A mistyped GPU setting is an error, not a silent fall back to the CPU backend (they are
    // read before any adapter is looked for, so this holds with or without a GPU).
    for (var, value, expect) in [
        (
            "COHORT_COOP",
            "bogus",
            "COHORT_COOP: cooperative matrices 'bogus': use auto, off, on or emulate",
        ),
        (
            "COHORT_COOP_LAYOUT",
            "4x2",
            "COHORT_COOP_LAYOUT: cooperative-matrix layout '4x2': write SG_ROWSxSG_COLS:FRxFC",
        ),
        (
            "COHORT_MATMUL_TILE",
            "big",
            "COHORT_MATMUL_TILE: matmul tile 'big': use 64, 128, shape or default",
        ),
        (
            "COHORT_HARDWARE_ONLY",
            "yes",
            "COHORT_HARDWARE_ONLY=yes: use 1 or 0",
        ),
        ("COHORT_SPLIT_K", "32", "1 to 16"),
        (
            "COHORT_F32_MATMUL",
            "tf32",
            "COHORT_F32_MATMUL: f32 matmul 'tf32': use plain or split-f16",
        ),
        (
            "COHORT_FUSED_UPDATE",
            "2",
            "COHORT_FUSED_UPDATE=2: use 1 or 0",
        ),
        (
            "COHORT_LOOP_BOUNDING",
            "yes",
            "COHORT_LOOP_BOUNDING=yes: use 1 or 0",
        ),
        (
            "COHORT_UNCHECKED_INDEXING",
            "2",
            "COHORT_UNCHECKED_INDEXING=2: use 1 or 0",
        ),
        (
            "COHORT_F16_TENSORS",
            "no",
            "COHORT_F16_TENSORS=no: use 1 or 0",
        ),
        (
            "COHORT_PARAMS_STORAGE",
            "storage",
            "COHORT_PARAMS_STORAGE=storage: use 1 or 0",
        ),
        ("COHORT_ONE_PASS", "yes", "COHORT_ONE_PASS=yes: use 1 or 0"),
        (
            "COHORT_ROW_SUBGROUPS",
            "yes",
            "COHORT_ROW_SUBGROUPS=yes: use 1 or 0",
        ),
        (
            "COHORT_ROW_CLASSES_PER_LANE",
            "0",
            "COHORT_ROW_CLASSES_PER_LANE=0: use a number of classes, at least 1",
        ),
        (
            "COHORT_MAX_WORKGROUPS",
            "0",
            "COHORT_MAX_WORKGROUPS=0: use a number of workgroups, at least 1",
        ),
        // Fewer than cohort's kernels bind: named as read (it was refused as the device
        // opened, naming the option's field).
        (
            "COHORT_MAX_STORAGE_BUFFERS",
            "7",
            "COHORT_MAX_STORAGE_BUFFERS=7: use a number of buffers, at least 8",
        ),
    ] {
        fails_cleanly_with_env(&["train", "--epochs", "1"], &[(var, value)], expect);
    }
    // Every variable in the README's table refuses a value it does not know (but the two that
    // take free text: an adapter's name and a file).
    let readme = include_str!("../README.md");
    let variables: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|name| name.starts_with("COHORT_"))
        .collect();
    assert!(variables.len() >= 20, "{variables:?}");
    for name in variables {
        if !["COHORT_ADAPTER", "COHORT_MATMUL_TUNE_FILE"].contains(&name) {
            fails_cleanly_with_env(&["train", "--epochs", "1"], &[(name, "bogus")], name);
        }
    }
    // A setting the GPU cannot honour is an error too: split f32 products with the
    // cooperative-matrix kernel turned off (with no adapter at all the CPU backend runs; with
    // only a software one, `auto` runs the CPU backend too).
    if common::gpu().is_some() {
        fails_cleanly_with_env(
            &["train", "--device", "gpu", "--epochs", "1"],
            &[("COHORT_COOP", "off"), ("COHORT_F32_MATMUL", "split-f16")],
            "split into f16 parts",
        );
        // Activations past the device's buffer limit (2 × 160000 × 4096 f32: 5.2 GB, over
        // Vulkan's 4 GiB at most): the error, then a note naming the flags that shrink them.
        let args = [
            "train",
            "--device",
            "gpu",
            "--epochs",
            "1",
            "--data",
            "blobs:200000,10,8",
            "--batch",
            "160000",
            "--peers",
            "2x4096",
        ];
        fails_cleanly(&args, "exceeds the device limit");
        let stderr = text(&cohort(&args).stderr);
        let note = stderr
            .lines()
            .find(|l| l.starts_with("note: "))
            .unwrap_or_default();
        assert!(
            note.contains("a smaller --batch or narrower layers") && note.contains(" MiB "),
            "{stderr}"
        );
    }
    fails_cleanly(
        &["train", "--device", "cpu", "--peers", "64-32-7"],
        "7 outputs",
    );
    fails_cleanly(
        &["train", "--device", "cpu", "--activation", "swish"],
        "unknown activation 'swish'",
    );
    let nan = dir.join("nan.csv");
    std::fs::write(&nan, "1,2,0\n3,NaN,1\n4,5,1\n6,7,0\n8,9,1\n").unwrap();
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &format!("csv:{}", nan.display()),
        ],
        "non-finite",
    );
    let ragged = dir.join("ragged.csv");
    std::fs::write(&ragged, "1,2,0\n3,1\n").unwrap();
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &format!("csv:{}", ragged.display()),
        ],
        "line 2",
    );
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, "garbage").unwrap();
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--resume",
            corrupt.to_str().unwrap(),
        ],
        "corrupt",
    );
    // A checkpoint from another configuration.
    let ckpt = dir.join("c.safetensors");
    let out = cohort(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--peers",
        "2x8",
        "--save",
        ckpt.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--peers",
            "2x16",
            "--resume",
            ckpt.to_str().unwrap(),
        ],
        "checkpoint does not match",
    );
    fails_cleanly(
        &["train", "--device", "cpu", "--temperature", "0"],
        "temperature",
    );
    // Negative numbers reach the configuration check, which names the reason.
    fails_cleanly(
        &["train", "--device", "cpu", "--lr", "-1"],
        "learning rate must be > 0",
    );
    fails_cleanly(
        &["train", "--device", "cpu", "--momentum", "1.5"],
        "momentum must be in [0, 1)",
    );
    // A number nearer 1 than f32 holds reads as 1: the message says so rather than "got 1" alone.
    fails_cleanly(
        &["train", "--device", "cpu", "--momentum", "0.999999999"],
        "got 1 (f32's largest number below 1 is 0.99999994",
    );
    // A setting the chosen optimizer has not, refused rather than ignored.
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--optimizer",
            "adam",
            "--momentum",
            "0.5",
        ],
        "--momentum is sgd's and nesterov's",
    );
    fails_cleanly(
        &["train", "--device", "cpu", "--lr-schedule", "step:0:0.5"],
        "step schedule",
    );
    fails_cleanly(
        &["train", "--device", "cpu", "--log-every", "0"],
        "--log-every",
    );
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--lr",
            "1e6",
            "--epochs",
            "1",
            "--lr-schedule",
            "constant",
        ],
        "loss became",
    );
    // Output files that could not be written are refused before training, not after the first
    // epoch: no epoch line is printed, and nothing is left in the folder.
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    for (flag, file, expect) in [
        (
            "--metrics",
            path("no-such-folder/m.jsonl"),
            "no-such-folder",
        ),
        (
            "--metrics",
            path("m.txt"),
            "must end in .jsonl or .json or .csv",
        ),
        ("--plot", path("curves.jpg"), "must end in .svg or .png"),
        (
            "--save",
            path(""),
            "is a folder, not a file cohort can write",
        ),
    ] {
        let args = ["train", "--device", "cpu", "--epochs", "1", flag, &file];
        fails_cleanly(&args, expect);
        let stderr = text(&cohort(&args).stderr);
        assert!(
            !stderr.contains("epoch"),
            "{args:?} trained first: {stderr}"
        );
    }
    // A writable one is tried (a temporary file made and removed in its folder) and the run
    // then stops on another error: nothing is left in the folder.
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let save = path("c2.safetensors");
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--save",
            &save,
            "--peers",
            "784-512-10",
        ],
        "784 inputs",
    );
    assert_eq!(before, listing(), "the check left files behind");
    // An adapter asked for by name that is not there is an error, not a run on the CPU (with
    // or without a GPU); so are a matmul plan file that is not one and one in a missing
    // folder (read when a GPU backend opens, so only checked where there is a GPU).
    fails_cleanly_with_env(
        &["train", "--epochs", "1"],
        &[("COHORT_ADAPTER", "no-such-adapter")],
        "none named like 'no-such-adapter'",
    );
    let out = cohort_with_env(&["devices"], &[("COHORT_ADAPTER", "no-such-adapter")]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    if common::gpu().is_some() {
        let not_plans = dir.join("plans.json");
        std::fs::write(&not_plans, "garbage").unwrap();
        let missing_plans = dir.join("no-such-folder").join("plans.json");
        for (path, expect) in [
            (&not_plans, "corrupt file"),
            (&missing_plans, "no-such-folder"),
            (
                &not_plans,
                "(the matmul plan file: GpuOptions::tune_file, COHORT_MATMUL_TUNE_FILE)",
            ),
            (
                &missing_plans,
                "(the matmul plan file: GpuOptions::tune_file, COHORT_MATMUL_TUNE_FILE)",
            ),
        ] {
            fails_cleanly_with_env(
                &["train", "--device", "gpu", "--epochs", "1"],
                &[("COHORT_MATMUL_TUNE_FILE", path.to_str().unwrap())],
                expect,
            );
        }
        // A FIFO is refused, not read (which would wait forever).
        #[cfg(unix)]
        {
            let fifo = dir.join("plans.fifo");
            if Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .is_ok_and(|s| s.success())
            {
                fails_cleanly_with_env(
                    &["devices"],
                    &[("COHORT_MATMUL_TUNE_FILE", fifo.to_str().unwrap())],
                    "not a regular file (a device, FIFO or socket), not a file cohort can write (the matmul plan file",
                );
            } else {
                common::loud("SKIPPED: no mkfifo here, so the FIFO plan file case did not run");
            }
        }
        // An empty file (made with `touch`) is a plan file with no plans yet.
        std::fs::write(&not_plans, "").unwrap();
        let out = cohort_with_env(
            &["devices"],
            &[("COHORT_MATMUL_TUNE_FILE", not_plans.to_str().unwrap())],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // compare and profile take train's flags but not its files (compare writes --results
    // only): those flags are not theirs
    // (refused by the parser, and absent from their --help), not ignored.
    fails_to_parse(
        &["compare", "--metrics", "m.jsonl"],
        "unexpected argument '--metrics'",
    );
    // A number past f32's range is said to be one (it was read as inf: "got inf").
    fails_to_parse(&["train", "--lr", "1e39"], "1e39 is past f32's range");
    // One too near 0 for f32 likewise (it read as 0: "got 0").
    fails_to_parse(
        &["train", "--lr", "1e-50"],
        "1e-50 is nearer 0 than f32 holds",
    );
    fails_to_parse(
        &["profile", "--resume", "c.safetensors"],
        "unexpected argument '--resume'",
    );
    let help = text(&cohort(&["compare", "--help"]).stdout);
    assert!(
        help.contains("--seeds") && !help.contains("--save"),
        "{help}"
    );
    // A model larger than the host can hold is an error, not an abort or the OOM killer (on a
    // 32-bit host its width is past usize already).
    let said = match usize::BITS {
        64 => "out of host memory",
        _ => "past what a 32-bit host addresses",
    };
    fails_cleanly(
        &["train", "--device", "cpu", "--peers", "2x1000000000000"],
        said,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outputs_links_and_finished_runs_are_handled_before_training() {
    let dir = scratch("outputs");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train", "--device", "cpu", "--peers", "2x8", "--epochs", "1",
        ];
        args.extend_from_slice(extra);
        cohort(&args)
    };
    // Two flags naming one file (each epoch's write would replace the other's).
    let same = path("same.csv");
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--save",
            &same,
            "--metrics",
            &same,
        ],
        "--metrics and --save name the same file",
    );
    assert!(!dir.join("same.csv").exists());
    // ... also when the paths differ only by `..` or a link on the way, and the data file.
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let around = path("sub/../same.csv");
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--save",
            &around,
            "--plot",
            &path("same.svg"),
            "--metrics",
            &same,
        ],
        "--metrics and --save name the same file",
    );
    let data_csv = dir.join("data.csv");
    std::fs::write(&data_csv, "1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,1,0\n").unwrap();
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &format!("csv:{}", data_csv.display()),
            "--metrics",
            &path("sub/../data.csv"),
        ],
        "--data and --metrics name the same file",
    );
    assert!(std::fs::read_to_string(&data_csv)
        .unwrap()
        .starts_with("1,2,0"));
    // The checkpoint a run resumes from may be saved over in place, not written as metrics.
    let ckpt = path("resume-me.csv");
    let run = ["train", "--device", "cpu", "--peers", "2x8"];
    let first = [&run[..], &["--epochs", "1", "--save", &ckpt]].concat();
    assert!(cohort(&first).status.success());
    let saved = std::fs::read(&ckpt).unwrap();
    let resumed = [&run[..], &["--resume", &ckpt, "--epochs", "2"]].concat();
    fails_cleanly(
        &[&resumed[..], &["--metrics", &path("sub/../resume-me.csv")]].concat(),
        "--resume and --metrics name the same file",
    );
    assert_eq!(std::fs::read(&ckpt).unwrap(), saved);
    let out = cohort(&[&resumed[..], &["--save", &ckpt]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(&ckpt).unwrap(), saved, "saved over in place");
    // A checkpoint to resume from is read and checked before a device opens too.
    let out = cohort(&["train", "--resume", &path("missing.safetensors")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: ")
            && text(&out.stderr).contains("missing.safetensors"),
        "{}",
        text(&out.stderr)
    );
    // An output path ending in a separator, `.` or `..` names a folder, even one not made
    // yet: refused before training (it failed at the first write, after an epoch).
    for (flag, name) in [
        ("--save", "new-folder/"),
        ("--metrics", "new.csv/"),
        ("--plot", "new.svg/"),
        ("--save", "c.safetensors/."),
        ("--save", "new/.."),
    ] {
        fails_cleanly(
            &["train", "--device", "cpu", flag, &path(name)],
            "is a folder's path (it ends in a separator, '.' or '..'), not a file cohort can \
             write",
        );
        assert!(!dir.join(name).exists());
    }
    // A settings error comes before a device opens (no `device:` line first).
    let out = cohort(&["train", "--alpha", "-1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: invalid configuration: alpha must be ≥ 0"),
        "{}",
        text(&out.stderr)
    );
    // --save through a symbolic link writes the link's target and keeps the link; --quiet
    // still prints the result.
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::os::unix::fs::symlink("target.safetensors", dir.join("link.safetensors")).unwrap();
        let out = train(&["--save", &path("link.safetensors"), "--quiet"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("after epoch 1:"),
            "{}",
            text(&out.stdout)
        );
        let link = std::fs::symlink_metadata(dir.join("link.safetensors")).unwrap();
        assert!(
            link.file_type().is_symlink(),
            "the link was replaced by a file"
        );
        assert!(cohort::checkpoint::load(dir.join("target.safetensors")).is_ok());
        // A FIFO (or a device) is refused rather than replaced by a plain file.
        let fifo = dir.join("fifo");
        let made = Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            fails_cleanly(
                &["train", "--device", "cpu", "--save", fifo.to_str().unwrap()],
                "not a regular file",
            );
            assert!(std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo());
        } else {
            common::loud("SKIPPED: no mkfifo here, so the FIFO output case did not run");
        }
        // Resuming a run that has all the epochs asked for says so instead of doing nothing.
        fails_cleanly(
            &[
                "train",
                "--device",
                "cpu",
                "--peers",
                "2x8",
                "--epochs",
                "1",
                "--resume",
                &path("target.safetensors"),
            ],
            "has trained 1 epoch already",
        );
    }
    // Settings that train but not as asked: warnings (the digits have 1,438 training rows,
    // 23 steps of 64 per epoch).
    let out = train(&[
        "--batch",
        "5000",
        "--warmup",
        "100",
        "--alpha-warmup",
        "10",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: --batch 5000 is more than the 1438 training rows")
            && stderr.contains("warning: --warmup 100 is longer than the run's 1 step:")
            && stderr.contains("warning: --alpha-warmup 10 is longer"),
        "{stderr}"
    );
    // Labels that leave classes without training rows (a stray 9 among 0s and 1s): a warning.
    let csv = dir.join("gap.csv");
    let rows: String = (0..40)
        .map(|r| format!("{r},{},{}\n", r % 3, r % 2))
        .collect();
    std::fs::write(&csv, format!("{rows}1,1,9\n")).unwrap();
    let data = format!("csv:{}", csv.display());
    let out = train(&["--data", &data, "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // (Classes 3 to 8 at least, and 9 where its one row went to the test part.)
    assert!(
        text(&out.stderr).contains("no training rows of the 10 classes the data makes"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_flags_choose_the_label_column_header_and_split() {
    let dir = scratch("csv-flags");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        format!("csv:{}", path.display())
    };
    // `train` on a CSV file with `extra` flags (one epoch unless they say otherwise).
    let args = |data: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["train", "--device", "cpu", "--peers", "2x8", "--data", data];
        if !extra.contains(&"--epochs") {
            args.extend(["--epochs", "1"]);
        }
        args.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let run = |data: &str, extra: &[&str]| {
        cohort(
            &args(data, extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    };
    let fails = |data: &str, extra: &[&str], expect: &str| {
        let args = args(data, extra);
        fails_cleanly(&args.iter().map(String::as_str).collect::<Vec<_>>(), expect)
    };
    let succeeds = |out: Output| {
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    let data_line = |out: &Output| {
        let stderr = text(&out.stderr);
        let line = stderr.lines().find(|l| l.starts_with("data: "));
        line.unwrap_or_default().to_string()
    };
    // Labels first, under a header that names them (as MNIST's CSV files have it).
    let rows: String = (0..50)
        .map(|r| format!("{},{},{}\n", r % 2, r % 7, (r * 3) % 11))
        .collect();
    let data = write("named.csv", format!("label,a,b\n{rows}"));
    let train = |extra: &[&str]| succeeds(run(&data, extra));
    // The header's `label` column: 2 classes from 2 features; the last column would make 11.
    let out = train(&[]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("csv: labels from column 0 ('label'), a header line"),
        "{stderr}"
    );
    let line = data_line(&out);
    assert!(
        line.contains("40 train / 10 test rows, 2 features, 2 classes"),
        "{line}"
    );
    let line = data_line(&train(&["--label-column", "last"]));
    assert!(line.contains("2 features, 11 classes"), "{line}");
    // Without a header the last column is the label; `first` takes the first.
    let headerless = write("headerless.csv", rows.clone());
    let line = data_line(&succeeds(run(&headerless, &[])));
    assert!(line.contains("2 features, 11 classes"), "{line}");
    let line = data_line(&succeeds(run(&headerless, &["--label-column", "first"])));
    assert!(line.contains("2 features, 2 classes"), "{line}");
    // --quiet leaves out the line that says where the labels came from.
    let quiet = text(&train(&["--quiet"]).stderr);
    assert!(!quiet.contains("csv: labels from"), "{quiet}");
    let line = data_line(&train(&["--label-column", "1", "--test-fraction", "0.5"]));
    assert!(
        line.contains("25 train / 25 test rows, 2 features, 7 classes"),
        "{line}"
    );
    // Another split seed, other test rows (the test loss differs; the sizes do not).
    let test_losses = |out: &Output| -> Vec<String> {
        let stdout = text(&out.stdout);
        let rows = stdout.lines().filter(|l| l.contains("2-8-2"));
        rows.map(|l| l.split_whitespace().nth(4).unwrap_or_default().to_string())
            .collect()
    };
    let (seed0, seed1) = (train(&[]), train(&["--split-seed", "1"]));
    assert!(data_line(&seed1).contains("40 train / 10 test rows"));
    assert_eq!(test_losses(&seed0).len(), 2, "{}", text(&seed0.stdout));
    assert_ne!(
        test_losses(&seed0),
        test_losses(&seed1),
        "{}",
        text(&seed1.stdout)
    );
    assert_eq!(
        test_losses(&seed0),
        test_losses(&train(&["--split-seed", "0"]))
    );
    // --seed (the weights and the batches) leaves the split alone: a cohort trained with
    // another seed is evaluated on the same test rows, with no warning that it trained on others.
    let ckpt = dir.join("seed1.safetensors");
    train(&["--seed", "1", "--save", ckpt.to_str().unwrap()]);
    let evaluated = cohort(&[
        "evaluate",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
        "--data",
        &data,
    ]);
    assert!(evaluated.status.success(), "{}", text(&evaluated.stderr));
    assert!(
        !text(&evaluated.stderr).contains("warning"),
        "{}",
        text(&evaluated.stderr)
    );
    // No header said: the header line is a bad row.
    fails(
        &data,
        &["--header", "no"],
        "line 1: 'label' is not a number",
    );
    // A first row with a bad value is a bad row, with a hint, not a header dropped in silence.
    fails(
        &write("bad-first.csv", format!("1,x,0\n{rows}")),
        &[],
        "line 1: 'x' is not a number (if the first line is a header, say so: --header yes)",
    );
    fails(
        &data,
        &["--label-column", "2nd"],
        "--label-column '2nd': use a column number from 0",
    );
    fails(
        &data,
        &["--test-fraction", "1.5"],
        "--test-fraction 1.5: use a fraction between 0 and 1",
    );
    // A checkpoint remembers the rows it trained on: resuming on another split is refused
    // (with --standardize none, where the standardisation cannot tell), the same split is not.
    let ckpt = dir.join("ckpt.safetensors");
    let ckpt = ckpt.to_str().unwrap();
    train(&["--standardize", "none", "--save", ckpt]);
    let resume = ["--epochs", "2", "--standardize", "none", "--resume", ckpt];
    fails(
        &data,
        &[&resume[..], &["--split-seed", "1"]].concat(),
        "was trained on other training rows (resume with the same --data, CSV flags",
    );
    train(&resume);
    // A pandas index column (no name in the header) is a feature, with a warning.
    let rows_indexed: String = (0..50)
        .map(|r| format!("{r},{},{}\n", r % 7, r % 2))
        .collect();
    let out = succeeds(run(
        &write("indexed.csv", format!(",a,label\n{rows_indexed}")),
        &[],
    ));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: column 0 has no name in the header (an index column?)"),
        "{stderr}"
    );
    // A first line of rising whole numbers is taken for pandas' header of column numbers: a
    // row so regular is rare, but it would be lost, so it is said even with --quiet.
    let numbered: String = (0..50)
        .map(|r| format!("{},{},{},{},{}\n", r % 5, r % 7, r % 3, r % 4, r % 2))
        .collect();
    let out = succeeds(run(
        &write("numbered.csv", format!("1,2,3,4,7\n{numbered}")),
        &["--quiet", "--label-column", "last"],
    ));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: the first line (1,2,3,4,7) was taken for a header of column"),
        "{stderr}"
    );
    // Not where --header yes said the first line is one.
    let out = succeeds(run(
        &write("numbered.csv", format!("1,2,3,4,7\n{numbered}")),
        &["--quiet", "--label-column", "last", "--header", "yes"],
    ));
    assert!(
        !text(&out.stderr).contains("taken for a header"),
        "{}",
        text(&out.stderr)
    );
    // A second file as the test part (as Kaggle's MNIST CSV comes): its rows, no split; read
    // alike, or refused; never also split, nor overwritten by an output.
    let test_rows: String = (0..7)
        .map(|r| format!("{},{},{}\n", r % 2, r, r * 2))
        .collect();
    let test_file = write("test.csv", format!("label,a,b\n{test_rows}"));
    let test_path = test_file.strip_prefix("csv:").unwrap();
    let line = data_line(&train(&["--test-data", test_path]));
    assert!(
        line.contains("50 train / 7 test rows, 2 features, 2 classes"),
        "{line}"
    );
    let headless = write("headless.csv", test_rows);
    fails(
        &data,
        &["--test-data", headless.strip_prefix("csv:").unwrap()],
        "its labels are in column 2 (the last), the training file's in column 0 ('label')",
    );
    fails(
        &data,
        &["--test-data", test_path, "--test-fraction", "0.3"],
        "--test-fraction splits --data, which --test-data replaces",
    );
    fails(
        &data,
        &["--test-data", test_path, "--metrics", test_path],
        "--test-data and --metrics name the same file",
    );
    // The training file as the test part would score the cohort on its training rows: the
    // same file is refused, a copy of it warned of.
    let data_path = data.strip_prefix("csv:").unwrap();
    fails(
        &data,
        &["--test-data", data_path],
        "--test-data names the --data file",
    );
    let copy = write("copy.csv", format!("label,a,b\n{rows}"));
    let out = train(&["--test-data", copy.strip_prefix("csv:").unwrap()]);
    assert!(
        text(&out.stderr).contains("warning: --test-data holds the same rows as --data"),
        "{}",
        text(&out.stderr)
    );
    // The flags are CSV's: with other data they are refused, not ignored.
    for (flag, value) in [
        ("--label-column", "0"),
        ("--header", "yes"),
        ("--header", "auto"),
        ("--test-fraction", "0.5"),
        ("--split-seed", "1"),
        ("--test-data", "test.csv"),
    ] {
        fails(
            "digits",
            &[flag, value],
            &format!("{flag} applies to csv:FILE data, not to 'digits'"),
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn evaluate_scores_a_saved_cohort_as_train_did() {
    let dir = scratch("evaluate");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // The last `n` fields of the line starting with `row`.
    let last = |out: &str, row: &str, n: usize| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with(row)).unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let tail = &fields[fields.len().saturating_sub(n)..];
        tail.iter().map(|f| f.to_string()).collect()
    };
    // The same test part, standardised as in training: the summary's numbers, to the digit, in
    // f32 and in mixed precision (restored from the checkpoint).
    for precision in ["f32", "mixed"] {
        let ckpt = path(&format!("{precision}.safetensors"));
        let trained = cohort(&[
            "train",
            "--device",
            "cpu",
            "--peers",
            "2x16",
            "--epochs",
            "2",
            "--precision",
            precision,
            "--save",
            &ckpt,
        ]);
        assert!(trained.status.success(), "{}", text(&trained.stderr));
        let evaluated = cohort(&["evaluate", &ckpt, "--device", "cpu"]);
        assert!(evaluated.status.success(), "{}", text(&evaluated.stderr));
        let (train_out, eval_out) = (text(&trained.stdout), text(&evaluated.stdout));
        for (row, n) in [("0 ", 2), ("1 ", 2), ("ensemble", 1)] {
            let (want, got) = (last(&train_out, row, n), last(&eval_out, row, n));
            assert!(
                want.len() == n && want == got,
                "{precision} {row}: {train_out}\n{eval_out}"
            );
        }
        assert!(
            eval_out.contains("after 2 epochs (359 rows):"),
            "{eval_out}"
        );
        assert!(text(&evaluated.stderr)
            .lines()
            .all(|l| !l.starts_with("warning")));
    }
    let ckpt = path("f32.safetensors");
    // Data the cohort cannot read.
    fails_cleanly(
        &["evaluate", &ckpt, "--device", "cpu", "--data", "blobs"],
        "takes 64 features and tells 10 classes apart; the rows to score have 16 features",
    );
    // A held-out file: every row with --all-rows, and no warning; its test part alone, with a
    // warning that the training rows are not the checkpoint's.
    let rows: String = (0..100)
        .map(|r| {
            let features: Vec<String> = (0..64).map(|c| ((r * c) % 17).to_string()).collect();
            format!("{},{}\n", features.join(","), r % 10)
        })
        .collect();
    std::fs::write(path("held-out.csv"), rows).unwrap();
    let held_out = format!("csv:{}", path("held-out.csv"));
    let all = cohort(&[
        "evaluate",
        &ckpt,
        "--device",
        "cpu",
        "--data",
        &held_out,
        "--all-rows",
    ]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    assert!(
        text(&all.stdout).contains("after 2 epochs (100 rows):"),
        "{}",
        text(&all.stdout)
    );
    assert!(
        !text(&all.stderr).contains("warning"),
        "{}",
        text(&all.stderr)
    );
    let part = cohort(&["evaluate", &ckpt, "--device", "cpu", "--data", &held_out]);
    assert!(
        text(&part.stdout).contains("(20 rows)"),
        "{}",
        text(&part.stdout)
    );
    assert!(
        text(&part.stderr).contains("warning: these training rows are not those"),
        "{}",
        text(&part.stderr)
    );
    // A held-out file of one class (fewer than a data set to train on may hold).
    let one_class = path("one-class.csv");
    let features = vec!["1"; 64].join(",");
    std::fs::write(&one_class, format!("{features},3\n{features},3\n")).unwrap();
    let out = cohort(&[
        "evaluate",
        &ckpt,
        "--device",
        "cpu",
        "--data",
        &format!("csv:{one_class}"),
        "--all-rows",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(2 rows)"),
        "{}",
        text(&out.stdout)
    );
    let labels_12 = path("label-12.csv");
    let features = vec!["1"; 64].join(",");
    std::fs::write(&labels_12, format!("{features},0\n{features},12\n")).unwrap();
    fails_cleanly(
        &[
            "evaluate",
            &ckpt,
            "--device",
            "cpu",
            "--data",
            &format!("csv:{labels_12}"),
            "--all-rows",
        ],
        "tells 10 classes apart; the rows to score have 64 features and a label 12",
    );
    // A checkpoint from before the fingerprint: the test part cannot be checked, and it says so.
    let bytes = std::fs::read(&ckpt).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    assert!(meta.remove("trained_on").is_some());
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let old = path("old.safetensors");
    std::fs::write(
        &old,
        safetensors::serialize(tensors.tensors(), Some(meta)).unwrap(),
    )
    .unwrap();
    let out = cohort(&["evaluate", &old, "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("does not record the rows it trained on (written before 2026-12-01)"),
        "{}",
        text(&out.stderr)
    );
    // A cohort saved after an epoch whose one step blew the weights up (lr 1e30), before the
    // next step's loss stopped the run: its scores are refused, not printed as NaN and 50%.
    let six = path("six.csv");
    std::fs::write(
        &six,
        "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,1,0\n2,7,1\n",
    )
    .unwrap();
    let diverged = path("diverged.safetensors");
    let six_data = format!("csv:{six}");
    let out = cohort(&[
        "train",
        "--device",
        "cpu",
        "--lr",
        "1e30",
        "--optimizer",
        "sgd",
        "--epochs",
        "3",
        "--peers",
        "2x16",
        "--data",
        &six_data,
        "--save",
        &diverged,
    ]);
    assert!(text(&out.stderr).contains("loss became NaN for peer 0 at epoch 2"));
    fails_cleanly(
        &[
            "evaluate",
            &diverged,
            "--device",
            "cpu",
            "--data",
            &six_data,
            "--all-rows",
        ],
        "its logits overflow (a diverged cohort?), so its accuracy would mean nothing",
    );
    // Resuming it: the training rows cannot be checked either, and it says so.
    let out = cohort(&[
        "train", "--device", "cpu", "--peers", "2x16", "--epochs", "3", "--resume", &old,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "warning: {old} does not record the rows it trained on (written before \
             2026-12-01): that these are the same cannot be checked"
        )),
        "{}",
        text(&out.stderr)
    );
    // Negative numbers reach the checks (not the parser's "unexpected argument").
    fails_cleanly(
        &[
            "evaluate",
            &ckpt,
            "--device",
            "cpu",
            "--data",
            &held_out,
            "--test-fraction",
            "-0.5",
        ],
        "--test-fraction -0.5: use a fraction between 0 and 1",
    );
    fails_cleanly(
        &["evaluate", "/no/such/ckpt", "--device", "cpu"],
        "/no/such/ckpt",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_writes_each_rows_classes_and_probabilities() {
    let dir = scratch("predict");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let ckpt = path("cohort.safetensors");
    let trained = cohort(&[
        "train", "--device", "cpu", "--peers", "2x16", "--epochs", "2", "--save", &ckpt,
    ]);
    assert!(trained.status.success(), "{}", text(&trained.stderr));
    // Every row of the embedded digits, into a file: the table's columns and each row's sense.
    let preds = path("preds.csv");
    let out = cohort(&["predict", &ckpt, "--device", "cpu", "--output", &preds]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let table = std::fs::read_to_string(&preds).unwrap();
    let mut lines = table.lines();
    let probabilities: Vec<String> = (0..10).map(|c| format!("p{c}")).collect();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "row,label,predicted,peer0,peer1,{}",
            probabilities.join(",")
        )
    );
    // The digits' rows in the order the README gives: the training part, then the test part.
    let digits = cohort::data::DataSource::Digits.load().unwrap();
    let labels: Vec<u32> = [&digits.train.labels[..], &digits.test.labels].concat();
    let mut right = 0;
    let mut rows = 0;
    for (r, line) in lines.enumerate() {
        let fields: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields.len(), 15, "{line}");
        assert_eq!(fields[0], r as f64);
        assert_eq!(fields[1], labels[r] as f64, "row {r}'s label");
        let p = &fields[5..];
        let sum: f64 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "row {r} sums to {sum}");
        let argmax = (0..10).fold(0, |b, c| if p[c] > p[b] { c } else { b });
        assert_eq!(fields[2], argmax as f64, "{line}");
        assert!(fields[1..5].iter().all(|&c| c < 10.0 && c.fract() == 0.0));
        right += usize::from(fields[1] == fields[2]);
        rows += 1;
    }
    assert_eq!(rows, 1797);
    // The accuracy predict reports is the table's, and evaluate's on the same rows.
    let from_table = format!("{:.2}%", 100.0 * right as f32 / rows as f32);
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!(
            "accuracy on the rows' labels: ensemble {from_table}, peers "
        )) && said.contains("predicted 1797 rows into"),
        "{from_table}: {said}"
    );
    let evaluated = cohort(&["evaluate", &ckpt, "--device", "cpu", "--all-rows"]);
    let ensemble = text(&evaluated.stdout)
        .lines()
        .find(|l| l.starts_with("ensemble"))
        .and_then(|l| l.split_whitespace().last().map(str::to_string));
    assert_eq!(ensemble.as_deref(), Some(from_table.as_str()));
    // Both say that these rows include those the cohort trained on.
    let trained_on = "warning: these rows include the 1438 rows the cohort trained on";
    for said in [said, text(&evaluated.stderr)] {
        assert!(said.contains(trained_on), "{said}");
    }
    // The embedded digits' file read as CSV is the same data (pixels 0..16, not rescaled):
    // its rows, in file order, get the same accuracy (they once got 85%, 16 times too large).
    let csv = format!("csv:{}", common::crate_path("data/digits.csv.gz").display());
    let as_csv = cohort(&["predict", &ckpt, "--device", "cpu", "--data", &csv]);
    assert!(as_csv.status.success(), "{}", text(&as_csv.stderr));
    let said = text(&as_csv.stderr);
    assert!(
        said.contains(&format!(
            "accuracy on the rows' labels: ensemble {from_table}, "
        )),
        "{from_table}: {said}"
    );
    let scale_warning = "warning: standardised with the checkpoint's statistics, these rows' \
                         features have a root mean square of";
    assert!(!said.contains(scale_warning), "{said}");
    // The same pixels times 16 (as the embedded digits once were to the CSV file): predict and
    // evaluate warn.
    let scaled = path("scaled.csv");
    let lines: String = [&digits.train, &digits.test]
        .iter()
        .flat_map(|part| (0..part.rows).map(|r| (part.row(r), part.labels[r])))
        .map(|(row, label)| {
            let pixels: Vec<String> = row.iter().map(|v| (v * 16.0).to_string()).collect();
            format!("{},{label}\n", pixels.join(","))
        })
        .collect();
    std::fs::write(&scaled, lines).unwrap();
    let scaled = format!("csv:{scaled}");
    for command in ["predict", "evaluate"] {
        let out = cohort(&[command, &ckpt, "--device", "cpu", "--data", &scaled]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(scale_warning),
            "{command}: {}",
            text(&out.stderr)
        );
    }
    // The same rows three ways: features only, a label last, a header with the label first. The
    // predictions agree; the labels appear where there are some.
    let features: Vec<String> = (0..20)
        .map(|r| {
            (0..64)
                .map(|c| ((r * c + r) % 17).to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let names: Vec<String> = (0..64).map(|c| format!("px{c}")).collect();
    let files = [
        ("features.csv", features.join("\n")),
        (
            "labelled.csv",
            features
                .iter()
                .enumerate()
                .map(|(r, f)| format!("{f},{}\n", r % 10))
                .collect(),
        ),
        (
            "label-first.csv",
            format!("label,{}\n", names.join(","))
                + &features
                    .iter()
                    .enumerate()
                    .map(|(r, f)| format!("{},{f}\n", r % 10))
                    .collect::<String>(),
        ),
    ];
    let mut predicted = Vec::new();
    for (name, contents) in &files {
        std::fs::write(path(name), contents).unwrap();
        let out = cohort(&[
            "predict",
            &ckpt,
            "--device",
            "cpu",
            "--data",
            &format!("csv:{}", path(name)),
        ]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let table = text(&out.stdout);
        let labelled = *name != "features.csv";
        let header = table.lines().next().unwrap_or_default();
        assert_eq!(
            header.starts_with("row,label,"),
            labelled,
            "{name}: {header}"
        );
        // Each line without its label.
        let rows: Vec<String> = table
            .lines()
            .skip(1)
            .map(|l| {
                let mut f: Vec<&str> = l.split(',').collect();
                if labelled {
                    assert_eq!(
                        f.remove(1),
                        (f[0].parse::<usize>().unwrap() % 10).to_string()
                    );
                }
                f.join(",")
            })
            .collect();
        assert_eq!(rows.len(), 20, "{name}");
        predicted.push(rows);
        let said = text(&out.stderr);
        assert_eq!(
            said.contains("accuracy on the rows' labels"),
            labelled,
            "{name}: {said}"
        );
        assert!(!said.contains("warning"), "{name}: {said}");
    }
    assert!(predicted[0] == predicted[1] && predicted[1] == predicted[2]);
    // Rows the cohort cannot read, flags that mean nothing here, outputs that would destroy.
    let labelled = format!("csv:{}", path("labelled.csv"));
    let features_only = format!("csv:{}", path("features.csv"));
    // Rows narrower than the cohort's inputs are features only (no room for a label): the
    // error names both widths (it was a missing label).
    let narrow = path("narrow.csv");
    std::fs::write(&narrow, "0.5,1\n0.7,1\n").unwrap();
    let narrow = format!("csv:{narrow}");
    let unreadable: [(&str, &[&str], &str); 5] = [
        (
            &labelled,
            &["--label-column", "none"],
            "takes 64 features; the rows to predict have 65",
        ),
        (
            &labelled,
            &["--label-column", "3"],
            "tells 10 classes apart; the rows to predict have a label 12",
        ),
        (
            &features_only,
            &["--label-column", "3"],
            "the rows to predict have 63 besides the labels in column 3 (--label-column none",
        ),
        (
            "blobs",
            &[],
            "takes 64 features; the rows to predict have 16",
        ),
        (
            &narrow,
            &[],
            "takes 64 features; the rows to predict have 2",
        ),
    ];
    for (data, flags, expect) in unreadable {
        let args = [
            &["predict", &ckpt, "--device", "cpu", "--data", data],
            flags,
        ]
        .concat();
        fails_cleanly(&args, expect);
    }
    fails_cleanly(
        &[
            "predict",
            &ckpt,
            "--device",
            "cpu",
            "--test-fraction",
            "0.5",
        ],
        "--test-fraction: predict takes every row of --data, unsplit",
    );
    for (output, what) in [
        (path("labelled.csv"), "--data"),
        (ckpt.clone(), "the checkpoint"),
    ] {
        fails_cleanly(
            &[
                "predict", &ckpt, "--device", "cpu", "--data", &labelled, "-o", &output,
            ],
            &format!("{what} and --output name the same file"),
        );
    }
    fails_cleanly(
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &labelled,
            "--label-column",
            "none",
        ],
        "read without a label column: training and scoring need labels",
    );
    // Cohorts trained on a CSV file: scoring all of that file warns of its training rows,
    // scoring other rows does not. Trained on a split of the file (found again from the rows
    // read once), and on all of it with the test rows from another file (the warning once
    // compared the file's default split alone, and said nothing there).
    let held_out = path("held-out.csv");
    let rows: String = (0..10)
        .map(|r| format!("{},{r}\n", features[r * 2 + 1]))
        .collect();
    std::fs::write(&held_out, rows).unwrap();
    let held_out = format!("csv:{held_out}");
    let split = "warning: these rows include the 16 rows the cohort trained on";
    let whole = "warning: these are the 20 rows the cohort trained on (all of them";
    let runs = [
        (&[][..], split, [&labelled, &features_only]),
        (
            &["--test-data", &held_out[4..]][..],
            whole,
            [&labelled, &held_out],
        ),
    ];
    for (flags, trained_on, [theirs, others]) in runs {
        let ckpt = path("scored.safetensors");
        let trained = cohort(
            &[
                &[
                    "train", "--device", "cpu", "--peers", "2x16", "--epochs", "1", "--data",
                    &labelled, "--save", &ckpt,
                ],
                flags,
            ]
            .concat(),
        );
        assert!(trained.status.success(), "{}", text(&trained.stderr));
        for command in ["predict", "evaluate"] {
            for (data, warns) in [(theirs, true), (others, false)] {
                // evaluate needs labels: the features-only file is predict's alone.
                if command == "evaluate" && data == &features_only {
                    continue;
                }
                let mut args = vec![command, &ckpt, "--device", "cpu", "--data", data];
                if command == "evaluate" {
                    args.push("--all-rows");
                }
                let out = cohort(&args);
                let said = text(&out.stderr);
                assert!(out.status.success(), "{command} {data}: {said}");
                assert_eq!(said.contains(trained_on), warns, "{command} {data}: {said}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_run_is_named_and_its_losses_stay_in_their_columns() {
    // SGD at learning rate 1 on the digits: the losses grow past 1e9 and stay finite.
    let out = cohort(&[
        "train", "--device", "cpu", "--epochs", "3", "--lr", "1", "--quiet",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("training is diverging").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: epoch 1: training cross-entropy (peer 0 ")
            && stderr.contains("a smaller --lr (now 1)"),
        "{stderr}"
    );
    // Each peer's line: index, model, three losses, accuracy; the losses in e-notation.
    for peer in ["0", "1"] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(peer))
            .unwrap_or_else(|| panic!("{stdout}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 6, "{line}");
        let train_ce: f64 = fields[2].parse().unwrap();
        assert!(fields[2].contains('e') && train_ce > 1e5, "{line}");
    }
}

#[test]
fn a_loss_that_overflows_says_what_steadies_it() {
    // Learning rate 1e30: the loss is NaN by the second step, before any epoch's warning.
    let out = cohort(&[
        "train", "--device", "cpu", "--epochs", "1", "--lr", "1e30", "--quiet",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "note: the steps grew the weights until the loss overflowed: a smaller --lr (now \
             1e30), a --warmup"
        ) && stderr.contains("error: loss became"),
        "{stderr}"
    );
    // Learning rate 3: epoch 1's training diverges and its test loss overflows; the warning
    // of the test loss names the divergence, not the test rows' scaling (they are the
    // training rows' own).
    let out = cohort(&[
        "train", "--device", "cpu", "--epochs", "3", "--lr", "3", "--quiet",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("training is diverging")
            && stderr.contains(
                "overflow, so the test accuracy means nothing; the training \
                                diverging (above)?"
            )
            && !stderr.contains("are the test rows scaled"),
        "{stderr}"
    );
}

#[test]
fn test_rows_scaled_otherwise_are_warned_of_and_their_overflow_named() {
    // Three classes of four features near the class's number; the test file's are 1e4 times
    // the training file's. Standardised with the training statistics they spread ~1e4 wide,
    // and in mixed precision the hidden layer passes f16's 65504: NaN test losses (before, a
    // silent NaN in the summary beside an accuracy that meant nothing, and compare counted
    // NaN gains as seeds where mutual did worse).
    let dir = scratch("test-scale");
    let rows = |scale: f64| -> String {
        let mut text = String::from("a,b,c,d,label\n");
        for r in 0..90u32 {
            let class = r % 3;
            let noise = |k: u32| (((r * 7 + k * 13) % 17) as f64 - 8.0) / 16.0;
            let x: Vec<String> = (0..4)
                .map(|k| format!("{}", scale * (f64::from(class) + noise(k))))
                .collect();
            text.push_str(&format!("{},{class}\n", x.join(",")));
        }
        text
    };
    let (train, test) = (dir.join("train.csv"), dir.join("test.csv"));
    std::fs::write(&train, rows(1.0)).unwrap();
    std::fs::write(&test, rows(1e4)).unwrap();
    let data = format!("csv:{}", train.display());
    let test_data = test.to_str().unwrap();
    let flags = [
        "--device",
        "cpu",
        "--data",
        &data,
        "--test-data",
        test_data,
        "--peers",
        "2x32",
        "--epochs",
        "2",
        "--precision",
        "mixed",
        "--quiet",
    ];
    let out = cohort(&[&["train"], &flags[..]].concat());
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the test rows' features have a root mean square of 1.")
            && stderr.contains("e4 (the median feature's"),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .matches("warning: epoch 1: test loss peer 0 NaN")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("past f16's 65504 in a hidden layer")
            && stderr.contains("are the test rows scaled as the training rows?"),
        "{stderr}"
    );
    // Two seeds: the cross-entropy gains are NaN, neither ahead nor behind.
    let out = cohort(&[&["compare", "--seeds", "2"], &flags[..]].concat());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ce = stdout
        .lines()
        .skip_while(|l| !l.starts_with("test cross-entropy"))
        .nth(1)
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(ce.contains("NaN") && ce.ends_with(" 0/0"), "{stdout}");
    // Scaled alike, no warning (other rows than the training file's: the same ones are warned
    // of).
    let alike: String = rows(1.0)
        .lines()
        .take(61)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&test, alike).unwrap();
    let out = cohort(&[&["train"], &flags[..]].concat());
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("warning"),
        "{stderr}"
    );
    // A value that overflows once standardised: the error names the file it is in (it named
    // a row of the part, in the split's order, and no file).
    let outlier: Vec<String> = (rows(1.0).lines().enumerate())
        .map(|(i, line)| match i {
            5 => format!("3e38{}", &line[line.find(',').unwrap()..]),
            _ => line.to_string(),
        })
        .collect();
    std::fs::write(&test, outlier.join("\n")).unwrap();
    fails_cleanly(
        &[&["train"], &flags[..]].concat(),
        &format!(
            "(3e38 - 0.99722224) / 0.8681733 is past f32's range, in --test-data {test_data}; \
             values this far"
        ),
    );
    // And the rows `predict` scores with a checkpoint's statistics.
    let ckpt = dir.join("scaled.safetensors");
    let ckpt = ckpt.to_str().unwrap();
    let save = [&["train"], &flags[..4], &["--epochs", "1", "--save", ckpt]].concat();
    let out = cohort(&save);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let scored = format!("csv:{test_data}");
    fails_cleanly(
        &["predict", ckpt, "--device", "cpu", "--data", &scored],
        &format!("in the rows to predict (--data {scored})"),
    );
}

#[test]
fn an_f16_overflow_is_told_from_a_learning_rate_too_high() {
    // Features near 6e4 fit f16, but a hidden layer's sums of 16 of them do not: in mixed
    // precision the first step's loss is NaN. The error was only "loss became NaN", which
    // reads as a learning rate too high (here 1e-9).
    let dir = scratch("f16-overflow");
    let mut csv = (0..16).map(|c| format!("f{c},")).collect::<String>() + "label\n";
    for r in 0..40u32 {
        let row: Vec<String> = (0..16)
            .map(|c| format!("{}", 6e4 + f64::from(r * 16 + c)))
            .collect();
        csv.push_str(&format!("{},{}\n", row.join(","), r % 2));
    }
    let data = dir.join("near-f16.csv");
    std::fs::write(&data, csv).unwrap();
    let data = format!("csv:{}", data.display());
    let flags = [
        "train",
        "--device",
        "cpu",
        "--data",
        &data,
        "--standardize",
        "none",
        "--peers",
        "2x64",
        "--optimizer",
        "sgd",
        "--lr",
        "1e-9",
        "--epochs",
        "1",
        "--quiet",
    ];
    let out = cohort(&[&flags[..], &["--precision", "mixed"]].concat());
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("error: loss became NaN"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: in mixed precision the layers' outputs are f16")
            && stderr.contains("--precision f32")
            && stderr.contains("(and the features are not standardised: --standardize none)"),
        "{stderr}"
    );
    // In f32 the same run trains (diverging, and told so with the same hint).
    let out = cohort(&flags);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("note: in mixed precision"), "{stderr}");
    assert!(
        stderr.contains("training is diverging")
            && stderr.contains("steadies it (and the features are not standardised"),
        "{stderr}"
    );
}

#[test]
fn compare_prints_independent_and_mutual_side_by_side() {
    let out = cohort(&[
        "compare", "--device", "cpu", "--epochs", "1", "--peers", "2x16", "--seeds", "2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("independent (α=0)")
            && stdout.contains("mutual")
            && stdout.contains("ensemble"),
        "{stdout}"
    );
    assert!(
        stdout.contains("over 2 seeds") && stdout.contains("test cross-entropy"),
        "{stdout}"
    );
    // A line per run on stderr as each ends, left out with --quiet (the table is not).
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("seed ").count(), 4, "{stderr}");
    let quiet = cohort(&[
        "compare", "--device", "cpu", "--epochs", "1", "--peers", "2x16", "--seeds", "2", "--quiet",
    ]);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert!(
        !text(&quiet.stderr).contains("seed "),
        "{}",
        text(&quiet.stderr)
    );
    assert_eq!(text(&quiet.stdout), stdout);
    // The spread of one seed is undefined, not 0 (both runs' and the gain's).
    let out = cohort(&[
        "compare", "--device", "cpu", "--epochs", "1", "--peers", "2x16", "--seeds", "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let ensemble = stdout
        .lines()
        .find(|l| l.starts_with("ensemble"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(ensemble.matches("± n/a").count(), 3, "{stdout}");
    assert!(
        stdout.contains("after 1 epoch, mean ± std over 1 seed "),
        "{stdout}"
    );
}

/// The numbers in a compare table's row: the two means, their spreads, the gain and its
/// standard error, and the seeds where mutual did better / worse.
fn table_row(stdout: &str, name: &str, nth: usize) -> (Vec<f64>, (usize, usize)) {
    let line = stdout
        .lines()
        .filter(|l| l.starts_with(name))
        .nth(nth)
        .unwrap_or_else(|| panic!("no row {name} #{nth} in {stdout}"));
    // The last seven fields, after the peer's name and model.
    let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "±").collect();
    let fields = &fields[fields.len() - 7..];
    let numbers = fields[..6]
        .iter()
        .map(|f| f.parse().unwrap_or_else(|_| panic!("{f} in {line}")))
        .collect();
    let (ahead, behind) = fields[6].split_once('/').unwrap();
    (numbers, (ahead.parse().unwrap(), behind.parse().unwrap()))
}

#[test]
fn compare_reports_the_paired_gain_and_writes_every_runs_results() {
    let dir = scratch("compare-results");
    let results = dir.join("results.csv");
    let seeds = 3;
    let out = cohort(&[
        "compare",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--peers",
        "2x16",
        "--seeds",
        "3",
        "--seed",
        "5",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // A row per seed, run and member (two peers and the ensemble), in the order they ran.
    let csv = std::fs::read_to_string(&results).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("seed,run,alpha,peer,model,test_accuracy,test_loss")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), seeds * 2 * 3, "{csv}");
    for (i, row) in rows.iter().enumerate() {
        let (seed, run, member) = (5 + i / 6, i / 3 % 2, i % 3);
        assert_eq!(row[0], seed.to_string(), "{csv}");
        assert_eq!(row[1], ["independent", "mutual"][run], "{csv}");
        assert_eq!(row[2], ["0", "1"][run], "{csv}");
        let (peer, model) = match member {
            2 => ("ensemble".to_string(), "ensemble"),
            k => (k.to_string(), "64-16-10"),
        };
        assert_eq!((row[3], row[4]), (peer.as_str(), model), "{csv}");
        // The ensemble has no loss of its own.
        assert_eq!(row[6].is_empty(), member == 2, "{csv}");
    }
    // The stderr line of each run shows the same accuracies.
    let stderr = text(&out.stderr);
    for (i, run) in rows.chunks(3).enumerate() {
        let pcts: Vec<String> = run
            .iter()
            .map(|r| format!("{:.2}%", 100.0 * r[5].parse::<f64>().unwrap()))
            .collect();
        let line = format!(
            "seed {} {:<11}: test accuracy of the peers {} {}, of the ensemble {}",
            5 + i / 2,
            ["independent", "mutual"][i % 2],
            pcts[0],
            pcts[1],
            pcts[2]
        );
        assert!(stderr.contains(&line), "{line} not in {stderr}");
    }
    // Each table row is the file's numbers: the means, and the gain as the mean of the per-seed
    // differences with its standard error and the seeds on each side.
    let value = |seed: usize, run: usize, member: usize, column: usize| -> f64 {
        rows[seed * 6 + run * 3 + member][column].parse().unwrap()
    };
    for (name, nth, member, column, scale, lower_is_better) in [
        ("peer 0", 0, 0, 5, 100.0, false),
        ("peer 1", 0, 1, 5, 100.0, false),
        ("ensemble", 0, 2, 5, 100.0, false),
        ("peer 0", 1, 0, 6, 1.0, true),
        ("peer 1", 1, 1, 6, 1.0, true),
    ] {
        let (numbers, (ahead, behind)) = table_row(&stdout, name, nth);
        let of_run = |run| -> Vec<f64> {
            let values = (0..seeds).map(|s| scale * value(s, run, member, column));
            values.collect()
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (independent, mutual) = (of_run(0), of_run(1));
        let diffs: Vec<f64> = mutual
            .iter()
            .zip(&independent)
            .map(|(m, i)| m - i)
            .collect();
        let gain = mean(&diffs);
        let var = diffs.iter().map(|d| (d - gain).powi(2)).sum::<f64>() / (seeds - 1) as f64;
        let standard_error = (var / seeds as f64).sqrt();
        let close = |printed: f64, want: f64| (printed - want).abs() <= 0.0006;
        assert!(close(numbers[0], mean(&independent)), "{name}: {stdout}");
        assert!(close(numbers[2], mean(&mutual)), "{name}: {stdout}");
        assert!(close(numbers[4], gain), "{name}: gain {gain}: {stdout}");
        assert!(
            close(numbers[5], standard_error),
            "{name}: s.e. {standard_error}: {stdout}"
        );
        let better = |d: &&f64| {
            if lower_is_better {
                **d < 0.0
            } else {
                **d > 0.0
            }
        };
        let worse = |d: &&f64| {
            if lower_is_better {
                **d > 0.0
            } else {
                **d < 0.0
            }
        };
        assert_eq!(
            (ahead, behind),
            (
                diffs.iter().filter(better).count(),
                diffs.iter().filter(worse).count()
            ),
            "{name}: {diffs:?}: {stdout}"
        );
    }
    assert!(stdout.contains("gain: the mean over seeds"), "{stdout}");
    // The results file is checked before training: its format, and that it is not the data.
    fails_cleanly(
        &["compare", "--results", dir.join("r.txt").to_str().unwrap()],
        "must end in .csv or .jsonl or .json",
    );
    // A name that is all extension is taken, as --metrics takes one (refused here for its
    // folder, before training).
    fails_cleanly(
        &[
            "compare",
            "--results",
            dir.join("no-such-folder/.jsonl").to_str().unwrap(),
        ],
        "no-such-folder",
    );
    let data = dir.join("data.csv");
    std::fs::write(&data, "a,label\n1,0\n2,1\n").unwrap();
    fails_cleanly(
        &[
            "compare",
            "--data",
            &format!("csv:{}", data.display()),
            "--results",
            data.to_str().unwrap(),
        ],
        "--data and --results name the same file",
    );
    // JSON lines hold the same rows.
    let jsonl = dir.join("results.jsonl");
    let out = cohort(&[
        "compare",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--peers",
        "2x16",
        "--seeds",
        "1",
        "--results",
        jsonl.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["run"], "mutual");
    assert_eq!(lines[5]["peer"], "ensemble");
    assert!(lines[5]["test_loss"].is_null() && lines[4]["test_loss"].is_f64());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_headless_machine_gets_no_stray_wayland_error_line() {
    // Mesa's device-selection layer asks Wayland for the display's GPU; without
    // XDG_RUNTIME_DIR libwayland printed "error: XDG_RUNTIME_DIR is invalid ..." before
    // cohort's own lines. Where the layer is not installed there is nothing to provoke (CI's
    // mesa-vulkan-drivers installs it).
    if !vulkan_layer_installed("implicit_layer.d/VkLayer_MESA_device_select.json") {
        common::skip(
            "device-select",
            "Mesa's device-select layer is not installed, so the stray Wayland line was NOT \
             provoked",
        );
        return;
    }
    for args in [
        &["devices"][..],
        &["train", "--epochs", "1", "--peers", "2x8", "--quiet"],
    ] {
        let out = cohort_command(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NODEVICE_SELECT")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{args:?}: {stderr}");
    }
}

#[test]
fn devices_lists_adapters_and_what_the_chosen_one_can_do() {
    let out = cohort(&["devices"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    if stdout.contains("no Vulkan, Metal or DX12 adapter found") {
        // Without any adapter there is nothing more to list; CI (which has lavapipe) checks the rest.
        common::loud(
            "SKIPPED: devices found no adapter here, so only the no-GPU message was checked",
        );
        assert!(!common::in_ci(), "CI is set but no adapter: {stdout}");
        return;
    }
    assert!(stdout.contains("chosen:"), "{stdout}");
    // A software adapter is said to be one that `--device auto` passes over.
    let software = common::gpu().is_some_and(|g| g.is_software());
    assert_eq!(
        stdout.contains("a software adapter: `--device auto` passes over it"),
        software,
        "{stdout}"
    );
    assert!(
        stdout.contains("f16 products (mixed precision):"),
        "{stdout}"
    );
    assert!(stdout.contains("timestamp queries"), "{stdout}");
    assert!(
        stdout.contains("matmul plans: by shape (COHORT_MATMUL_TUNE=1"),
        "{stdout}"
    );
    let tuned = cohort_with_env(&["devices"], &[("COHORT_MATMUL_TUNE", "1")]);
    assert!(
        text(&tuned.stdout).contains("matmul plans: the fastest of each shape's candidates"),
        "{}",
        text(&tuned.stdout)
    );
    // Where the kernels read their parameters, as forced.
    for (forced, line) in [
        ("1", "kernel parameters: in a storage buffer"),
        ("0", "kernel parameters: in a uniform buffer"),
    ] {
        let out = cohort_with_env(&["devices"], &[("COHORT_PARAMS_STORAGE", forced)]);
        assert!(text(&out.stdout).contains(line), "{}", text(&out.stdout));
    }
}

#[test]
fn profile_prints_where_a_step_spends_its_gpu_time() {
    fails_cleanly(&["profile", "--device", "cpu"], "--device cpu has none");
    fails_cleanly(&["profile", "--steps", "0"], "--steps must be ≥ 1");
    let Some(gpu) = common::gpu() else {
        // No adapter: a clear error, not a panic (CI, with lavapipe, checks the profile itself).
        fails_cleanly(&["profile"], "");
        return;
    };
    let args = [
        "profile", "--peers", "2x16", "--batch", "32", "--steps", "3",
    ];
    if !gpu.runtime().caps().timestamp_query {
        fails_cleanly(&args, "timestamp queries");
        common::skip(
            "timestamp",
            "no timestamp queries on this adapter, so no profile was printed",
        );
        return;
    }
    let out = cohort(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("GPU time per step over 3 steps of 64-16-10, 64-16-10 (batch 32, f32)"),
        "{stdout}"
    );
    // The two peers' first layers, forward: one batched product with its fused epilogue (16
    // wide: on the narrow kernel), with its GFLOP/s; then the loss and the whole step. (Rows
    // come by time, which varies: the second layer's forward may come first.)
    let forward = stdout
        .lines()
        .find(|l| {
            l.starts_with("matmul_narrow.wgsl")
                && l.contains("main_bias_act")
                && l.contains("2×32×16×64 NN")
        })
        .unwrap_or_else(|| panic!("no forward row of the first layers: {stdout}"));
    assert!(
        forward
            .split_whitespace()
            .last()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0,
        "{forward}"
    );
    assert!(stdout.contains("dml_loss.wgsl"), "{stdout}");
    assert!(
        stdout.contains("all kernels") && stdout.contains("whole step, unprofiled"),
        "{stdout}"
    );
    // Device memory: the two peers' weights, gradients and momenta (29,696 bytes in buffers
    // rounded to 256 bytes), and the digits' 1,438 training rows of 64 features and a label.
    let memory = stdout
        .lines()
        .find(|l| l.starts_with("device memory:"))
        .unwrap_or_else(|| panic!("no memory line: {stdout}"));
    assert!(
        memory.starts_with("device memory: model 0.03 MiB") && memory.ends_with("0.36 MiB more"),
        "{memory}"
    );
    assert!(!stdout.contains("matmul plans tuned"), "{stdout}");
    assert!(!stdout.contains("driver statistics"), "{stdout}");
    // A batch larger than the data is the whole training set, as in training (it was sized
    // from the flag, and aborted for want of memory).
    let out = cohort(&[
        "profile",
        "--peers",
        "2x16",
        "--batch",
        "1000000000000",
        "--steps",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(batch 1438, f32)"),
        "{}",
        text(&out.stdout)
    );

    // With the driver's statistics of each pipeline: on Vulkan a line per pipeline (or one line
    // saying the driver keeps none, after rebuilding them all); elsewhere a clear error.
    let mut with_stats = args.to_vec();
    with_stats.push("--driver-stats");
    if gpu.runtime().info().backend != wgpu::Backend::Vulkan {
        fails_cleanly(&with_stats, "pipeline statistics come from Vulkan drivers");
    } else {
        let out = cohort(&with_stats);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let stats = stdout
            .lines()
            .skip_while(|l| !l.starts_with("driver statistics"))
            .collect::<Vec<_>>();
        let first = stats
            .first()
            .unwrap_or_else(|| panic!("no statistics: {stdout}"));
        if first.starts_with("driver statistics: none") {
            assert!(
                first.contains("pipelines profiled were rebuilt for them without error"),
                "{first}"
            );
            common::loud(&format!("the driver keeps no pipeline statistics: {first}"));
        } else {
            assert!(
                stats.iter().any(|l| l
                    .trim_start()
                    .starts_with("matmul_narrow.wgsl::main_bias_act")),
                "{stdout}"
            );
            eprintln!("{}", stats.join("\n"));
        }
    }

    // With the matmul tuner: each product shape's plan and what its candidates took, and the
    // same memory (the tuner's scratch buffers are the warm-up steps', not a step's).
    fails_cleanly_with_env(&args, &[("COHORT_MATMUL_TUNE", "yes")], "use 1 or 0");
    let out = cohort_with_env(&args, &[("COHORT_MATMUL_TUNE", "1")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let tuned = stdout
        .lines()
        .skip_while(|l| !l.starts_with("matmul plans tuned"))
        .find(|l| l.trim_start().starts_with("2×32×16×64 NN: "))
        .unwrap_or_else(|| panic!("no tuned plan of the first layers' forward: {stdout}"));
    assert!(
        tuned.contains("× as fast as the shape's own plan (timed: by shape narrow, 16 rows")
            && tuned.contains("tiled 128"),
        "{tuned}"
    );
    eprintln!("{tuned}");
    let summary = stdout
        .lines()
        .find(|l| l.contains("each shape once, timed alone: "))
        .unwrap_or_else(|| panic!("no sum over the tuned shapes: {stdout}"));
    let micros: Vec<f64> = summary
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        micros.len() == 2 && micros[0] >= micros[1] && micros[1] > 0.0,
        "{summary}"
    );
    assert!(stdout.contains(memory), "{stdout}");
}

/// The Vulkan calls of a profiled step, wgpu's and the driver-statistics device's own, pass
/// Khronos' validation layer where it is installed (`.ci/run` installs it; under CI=true it
/// must be there).
#[test]
fn a_profiled_step_passes_khronos_validation() {
    let Some(gpu) = common::gpu() else { return };
    let rt = gpu.runtime();
    if rt.info().backend != wgpu::Backend::Vulkan || !rt.caps().timestamp_query {
        common::skip(
            "vulkan,timestamp",
            "Vulkan validation needs a Vulkan adapter with timestamp queries",
        );
        return;
    }
    if !vulkan_layer_installed("explicit_layer.d/VkLayer_khronos_validation.json") {
        assert!(
            !(common::in_ci() && cfg!(target_os = "linux")),
            "CI is set, but Khronos' validation layer is not installed (.ci/run installs \
             vulkan-validationlayers)"
        );
        common::loud(
            "SKIPPED: Khronos' validation layer is not installed: Vulkan calls NOT validated",
        );
        return;
    }
    for precision in ["f32", "mixed"] {
        let args = [
            "profile",
            "--peers",
            "2x16",
            "--batch",
            "32",
            "--steps",
            "1",
            "--precision",
            precision,
            "--driver-stats",
        ];
        let out = cohort_with_env(
            &args,
            &[
                ("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation"),
                ("VK_LOADER_DEBUG", "layer"),
            ],
        );
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(
            all.contains("Insert instance layer \"VK_LAYER_KHRONOS_validation\""),
            "{args:?}: the validation layer did not load: {all}"
        );
        let errors: Vec<&str> = all
            .lines()
            .filter(|l| l.contains("Validation Error"))
            .collect();
        assert!(errors.is_empty(), "{args:?}: {}", errors.join("\n"));
    }
}

#[test]
fn every_train_flag_reaches_the_saved_configuration() {
    use cohort::config::{
        parse_peers, LrSchedule, OptimizerConfig, OptimizerKind, Schedule, TrainConfig,
    };
    use cohort::ops::Activation;
    let dir = scratch("flags");
    let ckpt = dir.join("c.safetensors");
    let path = ckpt.to_str().unwrap();
    let train = |flags: &[&str]| {
        let mut args = vec!["train", "--device", "cpu", "--quiet", "--save", path];
        args.extend(flags);
        let out = cohort(&args);
        assert!(out.status.success(), "{flags:?}: {}", text(&out.stderr));
        cohort::checkpoint::load(&ckpt).unwrap().config
    };
    let got = train(&[
        "--peers",
        "2x8",
        "--activation",
        "tanh",
        "--alpha",
        "0.5",
        "--alpha-warmup",
        "7",
        "--temperature",
        "2",
        "--label-smoothing",
        "0.1",
        "--schedule",
        "alternating",
        "--optimizer",
        "nesterov",
        "--lr",
        "0.02",
        "--momentum",
        "0.5",
        "--weight-decay",
        "0.001",
        "--lr-schedule",
        "step:1:0.5",
        "--warmup",
        "5",
        "--epochs",
        "1",
        "--batch",
        "32",
        "--seed",
        "3",
        "--precision",
        "mixed",
    ]);
    let mut want = TrainConfig::new(parse_peers("2x8", 64, 10, Activation::Tanh).unwrap());
    want.alpha = 0.5;
    want.alpha_warmup_steps = 7;
    want.temperature = 2.0;
    want.label_smoothing = 0.1;
    want.schedule = Schedule::Alternating;
    want.optimizer = OptimizerConfig {
        kind: OptimizerKind::Sgd {
            momentum: 0.5,
            nesterov: true,
        },
        lr: 0.02,
        weight_decay: 0.001,
        schedule: LrSchedule::Step {
            every: 1,
            gamma: 0.5,
        },
        warmup_steps: 5,
    };
    want.epochs = 1;
    want.batch_size = 32;
    want.seed = 3;
    want.mixed_precision = true;
    assert_eq!(got, want);
    // Each optimizer's kind and default learning rate.
    for (optimizer, kind, lr) in [
        (
            "nesterov",
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            0.05,
        ),
        (
            "sgd",
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            0.05,
        ),
        (
            "adam",
            OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            1e-3,
        ),
        (
            "adamw",
            OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            1e-3,
        ),
    ] {
        let got = train(&["--peers", "2x8", "--epochs", "1", "--optimizer", optimizer]);
        assert_eq!(
            (got.optimizer.kind, got.optimizer.lr),
            (kind, lr),
            "{optimizer}"
        );
        // The defaults of the rest.
        assert_eq!(
            (got.optimizer.schedule, got.optimizer.weight_decay),
            (LrSchedule::Cosine, 5e-4),
            "{optimizer}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_metrics_and_a_resumed_learning_rate_schedule_span_the_new_total() {
    // One epoch with a cosine schedule, then resumed to two: the second epoch's rate follows
    // the schedule over two epochs' steps (over one, it would be 0 there), and the metrics file
    // (CSV) has every epoch's rows.
    let dir = scratch("resume-lr");
    let (ckpt, metrics) = (dir.join("c.safetensors"), dir.join("m.csv"));
    let run = |epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--peers",
            "2x8",
            "--lr-schedule",
            "cosine",
            "--epochs",
            epochs,
            "--metrics",
            metrics.to_str().unwrap(),
        ];
        args.extend(extra);
        let out = cohort(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    run("1", &["--save", ckpt.to_str().unwrap()]);
    run("2", &["--resume", ckpt.to_str().unwrap()]);
    let csv = std::fs::read_to_string(&metrics).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "epoch,peer,model,train_ce,train_kl,train_accuracy,test_loss,test_accuracy,lr,seconds"
        )
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2 * 3, "{csv}");
    for row in &rows {
        assert_eq!(row.len(), 10, "{row:?}");
        let ensemble = row[1] == "ensemble";
        for (i, field) in row.iter().enumerate().skip(3) {
            // The ensemble has no training losses or test loss of its own.
            let blank = ensemble && [3, 4, 5, 6].contains(&i);
            assert_eq!(field.is_empty(), blank, "{row:?}: field {i}");
            if !blank {
                assert!(field.parse::<f64>().unwrap().is_finite(), "{row:?}");
            }
        }
    }
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["1", "1", "1", "2", "2", "2"]
    );
    // The digits' 1,438 training rows in batches of 64: 23 steps an epoch.
    let config = cohort::checkpoint::load(&ckpt).unwrap().config.optimizer;
    let lr = |row: &Vec<&str>| row[8].parse::<f32>().unwrap();
    assert_eq!(
        lr(&rows[0]),
        config.lr_at(22, 23, 23),
        "epoch 1 as first run"
    );
    let second = config.lr_at(45, 46, 23);
    assert!(second > 0.0);
    assert_eq!(
        lr(&rows[3]),
        second,
        "epoch 2 on the schedule over both epochs"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idx_images_take_their_classes_from_the_labels_and_standardise_globally_by_default() {
    use cohort::data::idx;
    let dir = scratch("idx");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // 40 training and 10 test images of 2×2 pixels, labels 0 to 9.
    let pixels = |n: usize| -> Vec<u8> { (0..n * 4).map(|i| (i * 29 % 251) as u8).collect() };
    let labels = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 10) as u8).collect() };
    idx::write_images(data.join("train-images-idx3-ubyte"), &pixels(40), 40, 2, 2).unwrap();
    idx::write_labels(data.join("train-labels-idx1-ubyte"), &labels(40)).unwrap();
    idx::write_images(data.join("t10k-images-idx3-ubyte"), &pixels(10), 10, 2, 2).unwrap();
    idx::write_labels(data.join("t10k-labels-idx1-ubyte"), &labels(10)).unwrap();
    let (source, ckpt) = (format!("idx:{}", data.display()), dir.join("c.safetensors"));
    let train = |epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "train", "--device", "cpu", "--quiet", "--data", &source, "--peers", "2x8", "--batch",
            "8", "--epochs", epochs,
        ];
        args.extend(extra);
        cohort(&args)
    };
    let out = train("1", &["--save", ckpt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    let saved = cohort::checkpoint::load(&ckpt).unwrap();
    assert_eq!(saved.config.peers[0].layers, vec![4, 8, 10]);
    // `--standardize auto` is one mean and deviation for all pixels of IDX images.
    let s = saved.standardizer.unwrap();
    assert!(s.mean.iter().all(|&m| m == s.mean[0]), "{:?}", s.mean);
    assert!(s.std.iter().all(|&d| d == s.std[0]), "{:?}", s.std);
    let out = train(
        "2",
        &[
            "--standardize",
            "global",
            "--resume",
            ckpt.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "auto is global here: {}",
        text(&out.stderr)
    );
    let out = train(
        "2",
        &[
            "--standardize",
            "feature",
            "--resume",
            ckpt.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("standardised otherwise"),
        "{}",
        text(&out.stderr)
    );
    // The folder's files are data the outputs must not overwrite, as is a matmul plan file.
    // (A gzipped name too, not there now: it would be read in place of the plain file.)
    for file in ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte.gz"] {
        let file = data.join(file);
        fails_cleanly(
            &[
                "train",
                "--device",
                "cpu",
                "--data",
                &source,
                "--save",
                file.to_str().unwrap(),
            ],
            "--data and --save name the same file",
        );
    }
    let plans = dir.join("plans.json");
    fails_cleanly_with_env(
        &[
            "train",
            "--device",
            "cpu",
            "--data",
            &source,
            "--metrics",
            plans.to_str().unwrap(),
        ],
        &[("COHORT_MATMUL_TUNE_FILE", plans.to_str().unwrap())],
        "COHORT_MATMUL_TUNE_FILE and --metrics name the same file",
    );
    // A stray label: classes reach it, and a warning names the classes without rows.
    let mut stray = labels(40);
    stray[5] = 12;
    idx::write_labels(data.join("train-labels-idx1-ubyte"), &stray).unwrap();
    let out = train("1", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "warning: 2 classes (from 10 to 11) have no training rows of the 13 classes the data \
             makes"
        ),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auto_and_hardware_only_pass_over_software_adapters_for_the_cpu_backend() {
    let Some(gpu) = common::gpu() else { return };
    let hardware_only = ("COHORT_HARDWARE_ONLY", "1");
    let train = ["train", "--epochs", "1", "--peers", "2x8", "--quiet"];
    let with = |device: &'static str| [&train[..], &["--device", device]].concat();
    if !gpu.is_software() {
        common::loud(
            "the GPU under test is a hardware adapter: COHORT_HARDWARE_ONLY's refusal of \
             software adapters was NOT exercised",
        );
        let out = cohort_with_env(&with("gpu"), &[hardware_only]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        // `auto` takes the hardware adapter.
        let out = cohort(&with("auto"));
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let name = &gpu.runtime().info().name;
        assert!(stderr.contains(&format!("device: {name}")), "{stderr}");
        return;
    }
    // Where the only adapters are software ones (lavapipe, llvmpipe), as on CI.
    let only_software = cohort::GpuBackend::new(&cohort::GpuOptions {
        hardware_only: true,
        ..Default::default()
    })
    .is_err();
    let name = gpu.runtime().info().name.clone();
    if only_software {
        fails_cleanly_with_env(&with("gpu"), &[hardware_only], "only software adapters");
        // `auto` passes over software adapters, with or without COHORT_HARDWARE_ONLY, and
        // says so; the CPU backend outruns them.
        // The way onto it is named as the environment leaves it.
        let ways = [
            "COHORT_HARDWARE_ONLY=1 keeps `--device gpu` off it too",
            "`--device gpu` runs on it",
        ];
        for (env, way) in [(&[hardware_only][..], ways[0]), (&[], ways[1])] {
            let out = cohort_with_env(&with("auto"), env);
            let stderr = text(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(
                stderr.contains(&format!("passing over the software adapter {name}"))
                    && stderr.contains(way)
                    && stderr.contains("device: CPU reference backend"),
                "{env:?}: {stderr}"
            );
        }
    } else {
        common::loud(
            "a hardware adapter is present beside the software one under test: `auto` passing \
             over software adapters was NOT exercised",
        );
    }
    // `auto` runs on a software adapter that COHORT_ADAPTER names.
    let out = cohort_with_env(&with("auto"), &[("COHORT_ADAPTER", &name)]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("device: {name}")), "{stderr}");
    // A software adapter named in COHORT_ADAPTER is refused with COHORT_HARDWARE_ONLY.
    fails_cleanly_with_env(
        &with("gpu"),
        &[hardware_only, ("COHORT_ADAPTER", &name)],
        "hardware_only (COHORT_HARDWARE_ONLY=1) refuses them",
    );
}

#[test]
fn check_runs_every_kernel_against_the_cpu_reference() {
    // An adapter that is not there: one clean error, on any machine.
    fails_cleanly_with_env(
        &["check"],
        &[("COHORT_ADAPTER", "no adapter is called this")],
        "no adapter is called this",
    );
    let Some(gpu) = common::gpu() else { return };
    let out = cohort(&["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("f16 products (mixed precision): ")
            && stdout.ends_with("all kernels agree with the CPU reference\n"),
        "{stdout}"
    );
    // A line per case, and a case for every shader in shaders/ (the tensor-core kernel where
    // f16 products run on it here, the f16 conversion where the adapter has F16 tensors).
    let checked: std::collections::BTreeSet<&str> = stdout
        .lines()
        .filter(|l| l.ends_with(" ok"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut shaders = 0;
    for entry in std::fs::read_dir(common::crate_path("shaders")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(kernel) = name.strip_suffix(".wgsl") else {
            continue;
        };
        shaders += 1;
        let unused_here = match kernel {
            "matmul_coop" => gpu.matmul_coop().is_none(),
            "convert" => !cohort::Backend::f16_tensors(gpu),
            _ => false,
        };
        if unused_here {
            continue;
        }
        assert!(checked.contains(kernel), "{kernel} not checked: {stdout}");
    }
    assert!(shaders >= 13, "{shaders} shaders found");
}

#[cfg(target_os = "linux")]
#[test]
fn data_larger_than_the_memory_allowed_is_an_error_not_an_abort() {
    // Under an address-space limit (ulimit -v), every copy of a data-sized array (the split's
    // order and parts, an epoch's order, its device index) is refused with an error line; once
    // they were plain allocations, and the process aborted ("memory allocation of N bytes
    // failed", exit 134). 5,000,000 rows of 4 features: 80 MB of features.
    if common::emulated("qemu-user's own code buffer (128 MiB) does not fit under ulimit -v") {
        return;
    }
    let bin = std::env::var("COHORT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cohort").into());
    for mib in [120, 200, 250] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit -v {}; exec \"$0\" train --device cpu --data blobs:5000000,2,4 --peers \
                 2x8 --epochs 1 --quiet",
                mib * 1024
            ))
            .arg(&bin)
            .output()
            .expect("bash runs");
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mib} MiB: {said}");
        assert!(
            said.lines()
                .last()
                .is_some_and(|l| l.starts_with("error: out of host memory")),
            "{mib} MiB: {said}"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_checkpoint_naming_millions_of_layers_is_refused_in_little_memory() {
    // A checkpoint's configuration is a line of JSON: two bytes (",1") add a layer, and the
    // tensors it expects were once all named before any was looked for (four entries of about
    // 130 bytes a layer, some 250 times the file's size: an abort under ulimit -v, or out of
    // memory with a header of safetensors' allowed 100 MB). Now the first one missing ends it.
    if common::emulated("qemu-user's own code buffer (128 MiB) does not fit under ulimit -v") {
        return;
    }
    let dir = scratch("deep-config");
    let (good, deep) = (dir.join("good.safetensors"), dir.join("deep.safetensors"));
    let data = "blobs:200,3,4";
    let out = cohort(&[
        "train",
        "--device",
        "cpu",
        "--data",
        data,
        "--peers",
        "2x8",
        "--epochs",
        "1",
        "--quiet",
        "--save",
        good.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&good).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let config = metadata.get_mut("config").unwrap();
    assert_eq!(config.matches("[4,8,3]").count(), 2, "{config}");
    let layers = format!("[4{},3]", ",1".repeat(3_000_000));
    *config = config.replacen("[4,8,3]", &layers, 1);
    std::fs::write(
        &deep,
        safetensors::serialize(st.tensors(), Some(metadata)).unwrap(),
    )
    .unwrap();
    let bin = std::env::var("COHORT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cohort").into());
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {}; exec \"$0\" evaluate \"$1\" --device cpu --data {data}",
            250 * 1024
        ))
        .arg(&bin)
        .arg(&deep)
        .output()
        .expect("bash runs");
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let want = "tensor peer0.layer0.weight has shape [4, 8]; its configuration makes it [4, 1]";
    assert!(said.contains(want), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn output_that_cannot_be_written_ends_the_run_without_a_panic() {
    // A reader gone before the first line (`cohort train | head -0`): ended by SIGPIPE, as
    // `cat` would be, with no error; a full device: one error line, exit 1.
    use std::os::unix::process::ExitStatusExt;
    let train = [
        "train",
        "--device",
        "cpu",
        "--data",
        "blobs:64,2,4",
        "--peers",
        "2x4",
        "--epochs",
        "1",
        "--quiet",
    ];
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cohort_command(&train).stdout(writer).output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );

    if !std::path::Path::new("/dev/full").exists() {
        common::loud("SKIPPED the full-device half: no /dev/full here");
        return;
    }
    let out = cohort_command(&train)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with("error: failed printing to stdout: No space left on device (os error 28)")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn a_smoothed_runs_table_says_what_its_train_ce_is_taken_against() {
    // With label smoothing the train CE is taken against the smoothed targets, never below
    // their entropy (0.5003 for ε = 0.1 over 10 classes), while the test loss is against the
    // labels: the table says so under it, and only then.
    let run = |flags: &[&str]| {
        let mut args = vec!["train", "--device", "cpu", "--quiet", "--epochs", "2"];
        args.extend(flags);
        let out = cohort(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let note = "(train CE against the labels smoothed by ε = 0.1: at least their entropy, 0.5003; \
                the test loss against the labels)";
    let smoothed = run(&["--label-smoothing", "0.1"]);
    assert!(smoothed.contains(note), "{smoothed}");
    let table = smoothed.split("after epoch 2:").nth(1).unwrap();
    for peer in ["0 ", "1 "] {
        let row = table.lines().find(|l| l.starts_with(peer)).unwrap();
        let train_ce: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(train_ce >= 0.5003, "{smoothed}");
    }
    let plain = run(&[]);
    assert!(!plain.contains("smoothed"), "{plain}");
}

#[test]
fn a_feature_named_as_labels_are_is_warned_of() {
    // Two label-like names: the last column's labels, and `label` read as a feature (its
    // values would leak into the inputs); not where --label-column says.
    let dir = scratch("label-names");
    let csv = dir.join("two.csv");
    let mut rows = String::from("label,b,c,d,e,class\n");
    for i in 0..60 {
        rows.push_str(&format!("{},0.{i},1.{i},2.{i},3.{i},{}\n", i % 3, i % 2));
    }
    std::fs::write(&csv, rows).unwrap();
    let data = format!("csv:{}", csv.display());
    let run = |extra: &[&str]| {
        let args = [
            &[
                "train", "--device", "cpu", "--data", &data, "--peers", "2x4",
            ][..],
            &["--epochs", "1", "--batch", "16", "--quiet"],
            extra,
        ]
        .concat();
        let out = cohort(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let warned = "warning: column 0 ('label') is read as a feature though its name is a label's \
                  (labels from column 5 ('class'))";
    let stderr = run(&[]);
    assert!(stderr.contains(warned), "{stderr}");
    let stderr = run(&["--label-column", "last"]);
    assert!(!stderr.contains("warning"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// Linux: stale temporary files are found through /proc.
#[cfg(target_os = "linux")]
#[test]
fn a_save_cut_short_keeps_the_old_checkpoint_and_a_later_run_clears_its_temporary() {
    // The shell's file-size limit (4 blocks of 512 bytes or a KiB, by shell; the checkpoint
    // takes ~12 KiB) stops the second run's save part-way: by SIGXFSZ, as a crash would, or,
    // with the signal ignored, by an error. Either way the first run's checkpoint stays as it
    // was.
    if common::emulated("qemu-user writes its /proc/self/maps to a file, under ulimit -f too") {
        return;
    }
    let dir = scratch("cut");
    let ckpt = dir.join("c.st");
    let train = |seed: &str| -> Vec<String> {
        [
            "train", "--device", "cpu", "--epochs", "1", "--quiet", "--peers", "2x8",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--seed".into(), seed.into(), "--save".into()])
        .chain([ckpt.display().to_string()])
        .collect()
    };
    let first = cohort_command(&train("1").iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let saved = std::fs::read(&ckpt).unwrap();
    let temporaries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".cohort-tmp"))
            .collect()
    };
    for (trap, killed) in [("", true), ("trap '' XFSZ; ", false)] {
        let bin = cohort_command(&[]).get_program().to_owned();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{trap}ulimit -f 4; exec \"$0\" \"$@\""))
            .arg(&bin)
            .args(train("2"))
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert_eq!(
            std::fs::read(&ckpt).unwrap(),
            saved,
            "the old checkpoint changed"
        );
        if killed {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(out.status.signal(), Some(25), "SIGXFSZ: {stderr}");
            assert_eq!(
                temporaries().len(),
                1,
                "the killed save's temporary is left"
            );
        } else {
            assert!(
                stderr.contains("c.st") && stderr.contains("too large"),
                "{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            // Its own temporary removed; the killed run's still there.
            assert_eq!(temporaries().len(), 1);
        }
    }
    // A minute later the killed run's temporary is stale: the next save removes it.
    let stale = &temporaries()[0];
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let last = cohort_command(&train("3").iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert!(last.status.success(), "{}", text(&last.stderr));
    assert!(temporaries().is_empty(), "{:?}", temporaries());
    assert_ne!(std::fs::read(&ckpt).unwrap(), saved);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_a_checkpoint_whose_step_count_disagrees_with_its_epochs_warns() {
    // On the same rows an epoch takes as many steps as before; a count edited (or made by
    // Trainer::step by hand) moves the learning-rate schedule, which the user is told.
    let dir = scratch("steps");
    let ckpt = dir.join("c.st");
    let ckpt_arg = ckpt.to_str().unwrap();
    let base = ["train", "--device", "cpu", "--quiet", "--peers", "2x8"];
    let run = |extra: &[&str]| cohort(&base.iter().chain(extra).copied().collect::<Vec<_>>());
    let out = run(&["--epochs", "1", "--save", ckpt_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let resumed = run(&["--epochs", "2", "--resume", ckpt_arg]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        !text(&resumed.stderr).contains("warning"),
        "{}",
        text(&resumed.stderr)
    );
    // The count's first digit changed in place (the header keeps its length).
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let key = b"\"steps_done\":\"";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    bytes[at] = if bytes[at] == b'9' {
        b'8'
    } else {
        bytes[at] + 1
    };
    std::fs::write(&ckpt, &bytes).unwrap();
    let resumed = run(&["--epochs", "2", "--resume", ckpt_arg]);
    let stderr = text(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("over 1 epoch, where 1438 rows of --batch 64 take 23")
            && stderr.contains("the learning-rate schedule goes on from step"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The signals that ask `train` to stop after its epoch, with the exit code each gives.
#[cfg(unix)]
const STOP_SIGNALS: [(i32, i32); 2] = [(libc::SIGINT, 130), (libc::SIGTERM, 143)];
/// On Windows, Ctrl-Break (Ctrl-C cannot be sent to one process group alone), as SIGINT.
#[cfg(windows)]
const STOP_SIGNALS: [(u32, i32); 1] =
    [(windows_sys::Win32::System::Console::CTRL_BREAK_EVENT, 130)];

/// Starts `command` so that `signal` reaches it with its default action, whatever this test
/// process was started with (a job in the background of a script ignores SIGINT, and cohort
/// leaves an ignored signal ignored).
#[cfg(unix)]
fn spawn_for_signal(mut command: Command, signal: i32) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::signal(signal, libc::SIG_DFL);
            Ok(())
        });
    }
    command.spawn().unwrap()
}

/// Starts `command` in a process group of its own, so that a console event sent to that group
/// reaches it alone.
#[cfg(windows)]
fn spawn_for_signal(mut command: Command, _event: u32) -> std::process::Child {
    use std::os::windows::process::CommandExt;
    command
        .creation_flags(windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP)
        .spawn()
        .unwrap()
}

/// Sends `signal` to the child; true once sent.
#[cfg(unix)]
fn send_signal(child: &std::process::Child, signal: i32) -> bool {
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    true
}

/// Sends the console event to the child's process group; false, with a loud skip, where no
/// console carries it (a test run without one; Wine's consoles carry none to a group).
#[cfg(windows)]
fn send_signal(child: &std::process::Child, event: u32) -> bool {
    // SAFETY: a console event to the process group of the child this test started.
    let sent =
        unsafe { windows_sys::Win32::System::Console::GenerateConsoleCtrlEvent(event, child.id()) };
    if sent == 0 {
        common::skip(
            "console-events",
            &format!(
                "Ctrl-Break could not be sent ({}), so Windows' Ctrl-C handling was NOT exercised",
                std::io::Error::last_os_error()
            ),
        );
    }
    sent != 0
}

#[cfg(any(unix, windows))]
#[test]
fn ctrl_c_or_sigterm_stops_training_after_the_epoch_it_is_in_and_saves_it() {
    use std::io::BufRead;
    let dir = scratch("interrupt");
    for (signal, code) in STOP_SIGNALS {
        let ckpt = dir.join(format!("c{signal}.st"));
        let args = [
            "train",
            "--device",
            "cpu",
            "--peers",
            "2x32",
            "--epochs",
            "500",
            "--save",
            ckpt.to_str().unwrap(),
        ];
        let mut command = cohort_command(&args);
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = spawn_for_signal(command, signal);
        // Once the first epoch is reported, the signal.
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        while !seen.contains("epoch   1") {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "no epoch line: {seen}"
            );
            seen += &line;
        }
        if !send_signal(&child, signal) {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        let out = child.wait_with_output().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        assert_eq!(out.status.code(), Some(code), "{seen}{rest}");
        assert!(
            rest.contains("interrupted: stopping once this epoch is done"),
            "{rest}"
        );
        let stopped = rest
            .lines()
            .find_map(|l| l.strip_prefix("stopped after epoch "))
            .unwrap_or_else(|| panic!("{rest}"));
        let epoch: usize = stopped.split(' ').next().unwrap().parse().unwrap();
        assert!(
            stopped.contains("of 500: interrupted; --resume"),
            "{stopped}"
        );
        // The epoch it stopped after is saved, and its summary printed.
        let saved = cohort::checkpoint::load(&ckpt).unwrap();
        assert_eq!(saved.epochs_done, epoch);
        assert!(text(&out.stdout).contains(&format!("after epoch {epoch}:")));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
