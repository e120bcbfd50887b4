//! CPU twin of `shaders/optimizer.wgsl`: SGD (momentum, nesterov, weight decay) and Adam/AdamW,
//! with PyTorch's update rules.

use super::Real;
use crate::ops::OptimizerStep;

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
            let c1 = 1.0 - b1.powi(t as i32);
            let c2 = 1.0 - b2.powi(t as i32);
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
