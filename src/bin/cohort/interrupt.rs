//! Ctrl-C during `cohort train` that writes files (`--save`, `--metrics`, `--plot`): the first
//! asks the run to stop once the epoch in progress is done, saved and written, as every epoch
//! is; a second stops it at once (the default action: the files are written atomically, so each
//! is left whole, and the next write clears a temporary file cut short).
//!
//! On Unix the same holds for SIGTERM, and a signal the process was started ignoring (a
//! background job of a script) stays ignored. On Windows Ctrl-C and Ctrl-Break count as SIGINT
//! (exit code 130); a console whose Ctrl-C input is disabled (a process started in a new
//! process group) never delivers it; closing the console or logging off keeps the default.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal's number; 0 before any.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// SIGINT's number (2 on every Unix and in Windows' C runtime), which Ctrl-C stands for on
/// Windows.
#[cfg(any(windows, test))]
const SIGINT: i32 = 2;

/// The number of the signal that asked the run to stop, if one has.
pub(crate) fn asked() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Records `signal` as the request to stop, if it is the first; returns whether it was (a
/// later one asks the handler to take the default action and end the process now).
/// Async-signal-safe: one atomic compare-and-swap.
fn record(signal: i32) -> bool {
    SIGNAL
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

/// Installs the handlers for Ctrl-C (and SIGTERM on Unix), where they are not ignored.
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
    #[cfg(windows)]
    // SAFETY: registers a handler that only touches an atomic; Windows runs it on a thread of
    // its own, so it may do anything a thread may. A failed registration (no console) leaves
    // the default, which ends the process at once as before.
    unsafe {
        windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(on_console_event), 1);
    }
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if !record(signal) {
        // SAFETY: async-signal-safe calls: the default action, then the signal again.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Windows' console control handler: TRUE (handled) for the first Ctrl-C or Ctrl-Break;
/// FALSE for a later one and for every other event, which passes it on to the default
/// handler, and that ends the process.
#[cfg(windows)]
unsafe extern "system" fn on_console_event(event: u32) -> windows_sys::core::BOOL {
    use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT};
    let interrupt = event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT;
    (interrupt && record(SIGINT)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_kept_and_a_later_one_asks_for_the_default_action() {
        assert_eq!(asked(), None);
        #[cfg(not(windows))]
        assert!(record(SIGINT));
        #[cfg(windows)]
        {
            // Through the console handler: closing the console is left to the default, the
            // first Ctrl-Break handled, a later Ctrl-C passed on.
            use windows_sys::Win32::System::Console::{
                CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT,
            };
            // SAFETY: the handler only touches the atomic.
            unsafe {
                assert_eq!(on_console_event(CTRL_CLOSE_EVENT), 0);
                assert_eq!(asked(), None);
                assert_eq!(on_console_event(CTRL_BREAK_EVENT), 1);
                assert_eq!(on_console_event(CTRL_C_EVENT), 0);
            }
        }
        assert_eq!(asked(), Some(SIGINT));
        assert!(!record(15));
        assert!(!record(SIGINT));
        assert_eq!(
            asked(),
            Some(SIGINT),
            "a later signal must not replace the first"
        );
    }
}
