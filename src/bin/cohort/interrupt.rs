//! Ctrl-C (SIGINT) and SIGTERM during `cohort train`: the first asks the run to stop once the
//! epoch in progress is done, saved and written, as every epoch is; a second stops it at once
//! (the signal's default action: the files are written atomically, so each is left whole, and
//! the next write clears a temporary file cut short). Elsewhere than Unix the signals keep
//! their default action.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first signal.
static ASKED: AtomicBool = AtomicBool::new(false);

/// Whether a signal has asked the run to stop.
pub(crate) fn asked() -> bool {
    ASKED.load(Ordering::SeqCst)
}

/// Installs the handler for SIGINT and SIGTERM.
pub(crate) fn stop_after_epoch_on_interrupt() {
    #[cfg(unix)]
    // SAFETY: the handler only touches an atomic and calls async-signal-safe functions
    // (write, signal, raise).
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if ASKED.swap(true, Ordering::SeqCst) {
        // SAFETY: async-signal-safe calls: the default action, then the signal again.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    } else {
        let message = b"\ninterrupted: stopping once this epoch is done and written (again to \
                        stop at once)\n";
        // SAFETY: write(2) on standard error is async-signal-safe; the result does not matter.
        unsafe {
            libc::write(2, message.as_ptr().cast(), message.len());
        }
    }
}
