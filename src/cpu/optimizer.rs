//! CPU twin of `shaders/optimizer.wgsl`: SGD (momentum, nesterov, weight decay) and Adam/AdamW,
//! with PyTorch's update rules.

use super::Real;
use crate::ops::{adam_bias_correction, OptimizerStep};

/// Reference update of `param` from `grad`. `states` holds the velocity (SGD) or the first and
/// second moments (Adam), each as long as `param`.
pub fn optimizer_step<R: Real>(
    step: &OptimizerStep,
    param: &mut [R],
    grad: &[R],
    states: &mut [&mut [R]],
) {
    match *step {
        OptimizerStep::Sgd {
            lr,
            momentum,
            nesterov,
            weight_decay,
            grad_scale,
        } => {
            let (lr, mu, wd) = (lr as f64, momentum as f64, weight_decay as f64);
            let vel = &mut states[0];
            for i in 0..param.len() {
                let w = param[i].to_f64();
                let g = grad[i].to_f64() * grad_scale as f64 + wd * w;
                let v = mu * vel[i].to_f64() + g;
                vel[i] = R::from_f64(v);
                let update = if nesterov { g + mu * v } else { v };
                param[i] = R::from_f64(w - lr * update);
            }
        }
        OptimizerStep::Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
            t,
            grad_scale,
        } => {
            let (lr, b1, b2, eps, wd) = (
                lr as f64,
                beta1 as f64,
                beta2 as f64,
                eps as f64,
                weight_decay as f64,
            );
            let (c1, c2) = (
                adam_bias_correction(beta1, t),
                adam_bias_correction(beta2, t),
            );
            let (m_state, rest) = states.split_at_mut(1);
            let (m_state, v_state) = (&mut m_state[0], &mut rest[0]);
            for i in 0..param.len() {
                let mut w = param[i].to_f64();
                let mut g = grad[i].to_f64() * grad_scale as f64;
                if decoupled {
                    w *= 1.0 - lr * wd;
                } else {
                    g += wd * w;
                }
                let m = b1 * m_state[i].to_f64() + (1.0 - b1) * g;
                let v = b2 * v_state[i].to_f64() + (1.0 - b2) * g * g;
                m_state[i] = R::from_f64(m);
                v_state[i] = R::from_f64(v);
                param[i] = R::from_f64(w - lr * (m / c1) / ((v / c2).sqrt() + eps));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::optimizer_step;
    use crate::ops::OptimizerStep;

    /// Adam's weights after one update at step `t` from fixed weights, gradient and moments.
    fn adam_at(t: u32) -> Vec<f32> {
        let step = OptimizerStep::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            t,
            grad_scale: 1.0,
        };
        let mut param = vec![0.5f32, -1.0, 2.0];
        let (mut m, mut v) = (vec![0.1f32, 0.0, -0.2], vec![0.01f32, 0.02, 0.03]);
        optimizer_step(&step, &mut param, &[0.3, -0.4, 0.5], &mut [&mut m, &mut v]);
        param
    }

    #[test]
    fn adam_past_two_to_the_31_steps_updates_as_with_corrections_of_one() {
        // At 2²⁰ steps βᵗ is 0 in f64 for both betas, so both corrections are exactly 1; a
        // step count past i32::MAX once wrapped negative in `powi` (no update, or NaN).
        let settled = adam_at(1 << 20);
        for t in [i32::MAX as u32, 1 << 31, u32::MAX - 100, u32::MAX] {
            assert_eq!(adam_at(t), settled, "t = {t}");
        }
        assert!(settled.iter().all(|w| w.is_finite()));
        assert_ne!(adam_at(1), settled, "the correction matters early");
    }
}
