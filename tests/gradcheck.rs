//! Gradient checks by central finite differences, in f64 on the CPU twins: every analytic gradient
//! the kernels produce (CE with label smoothing, KL with T ≠ 1, matmul's dA and dB, bias and
//! activations) equals the numerical derivative of the matching loss. The GPU kernels are checked
//! against these same twins in `tests/kernels.rs`, so the GPU gradients inherit the check.

use cohort::cpu::{bias_act, kl_div, matmul, reduce_sum, softmax_ce};
use cohort::ops::{
    Activation, BiasActDims, CrossEntropySpec, KlSpec, LogitDims, MatmulDims, ReduceDims,
};
use cohort::rng::Rng;

const H: f64 = 1e-6;

fn random(seed: u64, n: usize, scale: f64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| scale * (2.0 * rng.uniform() - 1.0))
        .collect()
}

/// Checks `grad` against central differences of `loss` at `x`, relative to the gradient's size.
fn check(what: &str, x: &[f64], grad: &[f64], loss: impl Fn(&[f64]) -> f64) {
    let scale = grad.iter().fold(1e-3f64, |m, g| m.max(g.abs()));
    let mut probe = x.to_vec();
    for i in 0..x.len() {
        probe[i] = x[i] + H;
        let up = loss(&probe);
        probe[i] = x[i] - H;
        let down = loss(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * H);
        let err = (numeric - grad[i]).abs() / scale;
        assert!(
            err < 1e-6,
            "{what}[{i}]: analytic {} vs numeric {numeric} (relative error {err:.2e})",
            grad[i]
        );
    }
}

#[test]
fn cross_entropy_gradient_with_label_smoothing() {
    for (smoothing, groups, rows, classes) in [(0.0, 1, 4, 5), (0.1, 2, 3, 7), (0.3, 1, 1, 2)] {
        let d = LogitDims {
            groups,
            rows,
            classes,
        };
        let n = groups * rows * classes;
        let z = random(1, n, 4.0);
        let mut rng = Rng::new(2);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(classes) as u32).collect();
        let spec = CrossEntropySpec {
            label_smoothing: smoothing,
            grad_scale: 1.0 / rows as f32,
        };
        let mean_loss = |z: &[f64]| {
            let mut losses = vec![0.0; groups * rows];
            let mut scratch = vec![0.0; n];
            softmax_ce::softmax_ce(z, &labels, &mut losses, &mut scratch, &d, &spec);
            losses.iter().sum::<f64>() / rows as f64
        };
        let mut losses = vec![0.0; groups * rows];
        let mut grad = vec![0.0; n];
        softmax_ce::softmax_ce(&z, &labels, &mut losses, &mut grad, &d, &spec);
        check(&format!("CE ε={smoothing}"), &z, &grad, mean_loss);
    }
}

#[test]
fn kl_gradient_with_temperature_for_two_and_three_peers() {
    for (peers, rows, classes, t) in [
        (2, 3, 5, 1.0),
        (2, 4, 6, 3.0),
        (3, 2, 4, 2.0),
        (4, 1, 3, 0.5),
    ] {
        let d = LogitDims {
            groups: peers,
            rows,
            classes,
        };
        let n = peers * rows * classes;
        let z = random(3, n, 3.0);
        for me in 0..peers {
            let spec = KlSpec {
                temperature: t as f32,
                grad_scale: 1.0 / rows as f32,
                accumulate: false,
                peers: me..me + 1,
            };
            // The batch-mean KL of peer `me`, as a function of all logits; the peers' rows are
            // constants in the analytic gradient, so only `me`'s block is compared.
            let loss = |z: &[f64]| {
                let mut losses = vec![0.0; peers * rows];
                let mut scratch = vec![0.0; n];
                kl_div::kl_div(z, &mut losses, &mut scratch, &d, &spec);
                losses[me * rows..(me + 1) * rows].iter().sum::<f64>() / rows as f64
            };
            let mut losses = vec![0.0; peers * rows];
            let mut grad = vec![0.0; n];
            kl_div::kl_div(&z, &mut losses, &mut grad, &d, &spec);
            let block = me * rows * classes..(me + 1) * rows * classes;
            let partial = |zi: &[f64]| {
                let mut full = z.clone();
                full[block.clone()].copy_from_slice(zi);
                loss(&full)
            };
            check(
                &format!("KL P={peers} T={t} peer {me}"),
                &z[block.clone()],
                &grad[block.clone()],
                partial,
            );
        }
    }
}

#[test]
fn kl_loss_equals_the_pytorch_definition() {
    // PyTorch: kl_div(log_softmax(z_s/T), softmax(z_p/T), reduction='batchmean') * T².
    let (rows, classes, t) = (5, 6, 2.5);
    let z = random(9, 2 * rows * classes, 4.0);
    let d = LogitDims {
        groups: 2,
        rows,
        classes,
    };
    let spec = KlSpec {
        temperature: t as f32,
        grad_scale: 1.0,
        accumulate: false,
        peers: 0..2,
    };
    let mut losses = vec![0.0; 2 * rows];
    let mut grad = vec![0.0; 2 * rows * classes];
    kl_div::kl_div(&z, &mut losses, &mut grad, &d, &spec);
    let softmax = |row: &[f64]| {
        let e: Vec<f64> = row.iter().map(|v| (v / t).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect::<Vec<_>>()
    };
    for (me, other) in [(0, 1), (1, 0)] {
        let mut batchmean = 0.0;
        for r in 0..rows {
            let ps = softmax(&z[(me * rows + r) * classes..(me * rows + r + 1) * classes]);
            let pp = softmax(&z[(other * rows + r) * classes..(other * rows + r + 1) * classes]);
            batchmean += (0..classes)
                .map(|c| pp[c] * (pp[c].ln() - ps[c].ln()))
                .sum::<f64>();
        }
        batchmean = batchmean / rows as f64 * t * t;
        let ours = losses[me * rows..(me + 1) * rows].iter().sum::<f64>() / rows as f64;
        assert!(
            (ours - batchmean).abs() < 1e-12,
            "peer {me}: {ours} vs {batchmean}"
        );
    }
}

#[test]
fn matmul_gradients_are_the_transposed_products() {
    // L = Σ G ⊙ (A·B): dL/dA = G·Bᵀ and dL/dB = Aᵀ·G, computed with the transpose flags.
    let (m, n, k) = (3, 4, 5);
    let a = random(4, m * k, 1.0);
    let b = random(5, k * n, 1.0);
    let g = random(6, m * n, 1.0);
    let dims = |m, n, k, ta, tb| MatmulDims {
        batch: 1,
        m,
        n,
        k,
        stride_a: 0,
        stride_b: 0,
        trans_a: ta,
        trans_b: tb,
        f16_inputs: false,
    };
    let loss = |a: &[f64], b: &[f64]| {
        let mut c = vec![0.0; m * n];
        matmul::matmul(a, b, &mut c, &dims(m, n, k, false, false), 1.0, 0.0);
        c.iter().zip(&g).map(|(c, g)| c * g).sum::<f64>()
    };
    let mut da = vec![0.0; m * k];
    matmul::matmul(&g, &b, &mut da, &dims(m, k, n, false, true), 1.0, 0.0);
    check("dA = G·Bᵀ", &a, &da, |a| loss(a, &b));
    let mut db = vec![0.0; k * n];
    matmul::matmul(&a, &g, &mut db, &dims(k, n, m, true, false), 1.0, 0.0);
    check("dB = Aᵀ·G", &b, &db, |b| loss(&a, b));
}

#[test]
fn bias_and_activation_gradients() {
    let (groups, rows, cols) = (2, 3, 4);
    let d = BiasActDims {
        groups,
        rows,
        cols,
        bias_stride: cols,
    };
    let n = groups * rows * cols;
    for act in [
        Activation::Identity,
        Activation::Relu,
        Activation::Gelu,
        Activation::Tanh,
    ] {
        // A bias of its own a column (with none, a derivative taken at x instead of x + b
        // passed); pre-activations kept away from ReLU's kink so the finite difference is
        // valid.
        let bias = random(9, groups * cols, 0.5);
        let mut x = random(7, n, 2.0);
        for (i, v) in x.iter_mut().enumerate() {
            let b = bias[i / (rows * cols) * cols + i % cols];
            if (*v + b).abs() < 0.05 {
                *v += 0.2;
            }
        }
        let g = random(8, n, 1.0);
        let loss = |x: &[f64], bias: &[f64]| {
            let mut y = vec![0.0; n];
            bias_act::forward(x, bias, &mut y, &d, act);
            y.iter().zip(&g).map(|(y, g)| y * g).sum::<f64>()
        };
        let mut dx = vec![0.0; n];
        bias_act::backward(&x, &bias, &g, &mut dx, &d, act);
        check(&format!("{act:?} dx"), &x, &dx, |x| loss(x, &bias));
        let mut db = vec![0.0; groups * cols];
        reduce_sum::reduce_sum(
            &dx,
            &mut db,
            &ReduceDims {
                outer: groups,
                n: rows,
                inner: cols,
            },
            1.0,
            false,
        );
        check(&format!("{act:?} db"), &bias, &db, |b| loss(&x, b));
    }
}
