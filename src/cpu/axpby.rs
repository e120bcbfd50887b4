//! CPU twin of `shaders/axpby.wgsl`: `y = a·x + b·y + c`, and the fill `y = c`.

use super::Real;
use crate::ops::Axpby;

/// Reference `y = a·x + b·y + c`; without `x` the `a·x` term is absent. `b == 0` ignores the old y.
pub fn axpby<R: Real>(x: Option<&[R]>, y: &mut [R], k: &Axpby) {
    for i in 0..y.len() {
        let ax = x.map_or(0.0, |x| k.a as f64 * x[i].to_f64());
        let by = if k.b == 0.0 {
            0.0
        } else {
            k.b as f64 * y[i].to_f64()
        };
        y[i] = R::from_f64(ax + by + k.c as f64);
    }
}
