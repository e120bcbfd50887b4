//! The kernels without the trainer: cohort's fused DML loss on a batch of logits from three
//! peers, run through the `Backend` trait on the GPU and on the CPU reference, compared element
//! by element; then one matrix product timed on the GPU's clock.
//!
//! ```text
//! cargo run --release --example kernels
//! ```

use cohort::ops::{DmlLossSpec, MatmulSpec};
use cohort::{Backend, CpuBackend, DType, GpuBackend, Result};

/// Peers, rows and classes of the batch.
const PEERS: usize = 3;
const ROWS: usize = 4;
const CLASSES: usize = 5;

/// Each peer's per-row cross-entropy and KL term `[2, P, B]` and the logits' gradient
/// `[P, B, C]`, from the fused kernel on `backend`.
fn dml_loss<B: Backend>(
    backend: &B,
    logits: &[f32],
    labels: &[u32],
    spec: &DmlLossSpec,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let z = backend.tensor(&[PEERS, ROWS, CLASSES], logits)?;
    let y = backend.tensor_u32(&[ROWS], labels)?;
    let mut losses = backend.zeros(&[2, PEERS, ROWS], DType::F32)?;
    let mut dz = backend.zeros(&[PEERS, ROWS, CLASSES], DType::F32)?;
    backend.dml_loss(&z, &y, &mut losses, &mut dz, spec)?;
    Ok((backend.read(&losses)?, backend.read(&dz)?))
}

/// The largest |a − b| over two equally long slices.
fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() -> Result<()> {
    let gpu = match GpuBackend::from_env() {
        Ok(gpu) => gpu,
        Err(
            e @ cohort::CohortError::NoAdapter {
                requested: None, ..
            },
        ) => {
            eprintln!("{e}: this example compares the GPU with the CPU reference");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    println!("GPU: {}", gpu.describe());

    // Logits of three peers that mostly agree (a shared part per row and class, a smaller one
    // of each peer's own), and labels: the first peer's classes, but for the last row.
    let logits: Vec<f32> = (0..PEERS * ROWS * CLASSES)
        .map(|i| {
            let (peer, cell) = (i / (ROWS * CLASSES), i % (ROWS * CLASSES));
            ((cell * 7 % 11) as f32 - 5.0) * 0.6 + ((peer + cell) % 3) as f32 * 0.3
        })
        .collect();
    let mut labels: Vec<u32> = logits[..ROWS * CLASSES]
        .chunks(CLASSES)
        .map(|row| {
            (0..CLASSES)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap() as u32
        })
        .collect();
    labels[ROWS - 1] = (labels[ROWS - 1] + 1) % CLASSES as u32;
    // Each peer's gradient of CE(y, p_i) + α/(K−1)·Σ_{j≠i} T²·KL(p_j ‖ p_i), batch mean, with
    // α = 1 and T = 2.
    let spec = DmlLossSpec {
        label_smoothing: 0.0,
        ce_scale: 1.0 / ROWS as f32,
        temperature: 2.0,
        kl_scale: 1.0 / ROWS as f32,
        peers: 0..PEERS,
    };
    let (gpu_losses, gpu_grad) = dml_loss(&gpu, &logits, &labels, &spec)?;
    let (cpu_losses, cpu_grad) = dml_loss(&CpuBackend, &logits, &labels, &spec)?;
    for peer in 0..PEERS {
        let mean = |part: usize| {
            let start = (part * PEERS + peer) * ROWS;
            gpu_losses[start..start + ROWS].iter().sum::<f32>() / ROWS as f32
        };
        println!(
            "peer {peer}: cross-entropy {:.4}, T²-scaled KL to the others {:.4}",
            mean(0),
            mean(1)
        );
    }
    println!(
        "GPU against the CPU reference: losses within {:.1e}, gradients within {:.1e}",
        max_difference(&gpu_losses, &cpu_losses),
        max_difference(&gpu_grad, &cpu_grad)
    );

    // One product (2048³; 256³ on a software adapter), its time taken by timestamp queries
    // around the dispatch (the first call builds the pipeline, so it runs once untimed).
    let n = if gpu.is_software() { 256 } else { 2048 };
    let ones = vec![1.0; n * n];
    let a = gpu.tensor(&[n, n], &ones)?;
    let b = gpu.tensor(&[n, n], &ones)?;
    let mut c = gpu.zeros(&[n, n], DType::F32)?;
    let spec = MatmulSpec::default();
    gpu.matmul(&a, &b, &mut c, &spec)?;
    let ((), time) = gpu.runtime().time(|| gpu.matmul(&a, &b, &mut c, &spec))?;
    let corner = gpu.read(&c)?[0];
    match time {
        Some(t) => println!(
            "matmul {n}³: {:.3} ms on the GPU's clock, {:.1} GFLOP/s (C[0,0] = {corner})",
            t.as_secs_f64() * 1e3,
            2.0 * (n * n * n) as f64 / t.as_secs_f64() / 1e9
        ),
        None => println!("matmul {n}³: C[0,0] = {corner} (this adapter has no timestamp queries)"),
    }
    Ok(())
}
