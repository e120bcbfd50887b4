
// ---- shaders/include/activation.wgsl, appended by the host to kernels that apply activations ----
// Codes: 0 identity, 1 ReLU, 2 GELU (tanh form), 3 tanh. CPU twin: src/cpu/bias_act.rs.

const SQRT_2_OVER_PI: f32 = 0.7978845608;
const GELU_C: f32 = 0.044715;

// tanh that cannot overflow to NaN for large |u| (tanh(15) is 1 in f32).
fn safe_tanh(u: f32) -> f32 {
    return tanh(clamp(u, -15.0, 15.0));
}

fn activate(z: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return max(z, 0.0); }
        case 2u: { return 0.5 * z * (1.0 + safe_tanh(SQRT_2_OVER_PI * (z + GELU_C * z * z * z))); }
        case 3u: { return safe_tanh(z); }
        default: { return z; }
    }
}

fn derivative(z: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return select(0.0, 1.0, z > 0.0); }
        case 2u: {
            // Beyond |z| = 15, t is ±1 exactly, so the derivative is that of z = ±15 (1 or 0);
            // clamping keeps du finite there (unclamped it overflows, and 0 · inf is NaN).
            let zc = clamp(z, -15.0, 15.0);
            let t = safe_tanh(SQRT_2_OVER_PI * (zc + GELU_C * zc * zc * zc));
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * zc * zc);
            return 0.5 * (1.0 + t) + 0.5 * zc * (1.0 - t * t) * du;
        }
        case 3u: {
            let t = safe_tanh(z);
            return 1.0 - t * t;
        }
        default: { return 1.0; }
    }
}
