//! Ctrl-C (SIGINT) and SIGTERM during `cohort train` that writes files (`--save`, `--metrics`,
//! `--plot`), on Unix: the first asks the run to stop once the epoch in progress is done,
//! saved and written, as every epoch is; a second stops it at once (the signal's default
//! action: the files are written atomically, so each is left whole, and the next write clears
//! a temporary file cut short). A signal the process was started ignoring (a background job
//! of a script) stays ignored. Elsewhere the signals keep their default action.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal's number; 0 before any.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The number of the signal that asked the run to stop, if one has.
pub(crate) fn asked() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Installs the handler for SIGINT and SIGTERM, where they are not ignored.
pub(crate) fn stop_after_epoch_on_interrupt() {
    #[cfg(unix)]
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction with a zeroed struct reads the current action; the handler only
        // touches an atomic and calls async-signal-safe functions (signal, raise).
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::signal(signal, handler);
        }
    }
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if SIGNAL.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: async-signal-safe calls: the default action, then the signal again.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}
