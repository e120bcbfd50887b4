//! CPU twin of `shaders/bias_act.wgsl`: `y = act(x + bias)` and its backward `dx = dy · act'(x + bias)`.

use super::Real;
use crate::ops::{Activation, BiasActDims};

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// The activation of a pre-activation value `z`.
pub fn activate(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Identity => z,
        Activation::Relu => z.max(0.0),
        Activation::Gelu => 0.5 * z * (1.0 + (SQRT_2_OVER_PI * (z + GELU_C * z * z * z)).tanh()),
        Activation::Tanh => z.tanh(),
    }
}

/// The derivative `d act(z) / dz` (ReLU's derivative at 0 is taken as 0).
pub fn derivative(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Gelu => {
            // As the shader: beyond |z| = 15 the derivative is exactly that of ±15.
            let z = z.clamp(-15.0, 15.0);
            let u = SQRT_2_OVER_PI * (z + GELU_C * z * z * z);
            let t = u.tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * z * z);
            0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du
        }
        Activation::Tanh => 1.0 - z.tanh().powi(2),
    }
}

fn for_each<F: FnMut(usize, usize)>(d: &BiasActDims, mut f: F) {
    for g in 0..d.groups {
        for r in 0..d.rows {
            for c in 0..d.cols {
                f((g * d.rows + r) * d.cols + c, g * d.bias_stride + c);
            }
        }
    }
}

/// Reference forward: `y = act(x + bias)`.
pub fn forward<R: Real>(x: &[R], bias: &[R], y: &mut [R], d: &BiasActDims, act: Activation) {
    for_each(d, |i, b| {
        y[i] = R::from_f64(activate(act, x[i].to_f64() + bias[b].to_f64()));
    });
}

/// Reference backward: `dx = dy · act'(x + bias)`, where `x` is the forward input (before the bias).
pub fn backward<R: Real>(
    x: &[R],
    bias: &[R],
    dy: &[R],
    dx: &mut [R],
    d: &BiasActDims,
    act: Activation,
) {
    for_each(d, |i, b| {
        dx[i] = R::from_f64(dy[i].to_f64() * derivative(act, x[i].to_f64() + bias[b].to_f64()));
    });
}
