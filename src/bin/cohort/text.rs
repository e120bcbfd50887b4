//! How numbers are written in the CLI's lines and tables.

/// `1 epoch`, `3 epochs`.
pub(crate) fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// A fraction as a percentage with two decimals: `98.61%`.
pub(crate) fn pct(v: f32) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// A loss with four decimals, or in scientific notation where that would not fit a column
/// (a diverging run's `3.955e11`).
pub(crate) fn loss_text(v: f32) -> String {
    number_text(v.into(), 4, false)
}

/// `v` with `decimals` decimals (and its sign, where `signed`), or with three in scientific
/// notation from 1e5 on, where fixed decimals would not fit a table's column.
pub(crate) fn number_text(v: f64, decimals: usize, signed: bool) -> String {
    match (v.abs() < 1e5, signed) {
        (true, false) => format!("{v:.decimals$}"),
        (true, true) => format!("{v:+.decimals$}"),
        (false, false) => format!("{v:.3e}"),
        (false, true) => format!("{v:+.3e}"),
    }
}
