//! cohort: Deep Mutual Learning on any GPU.
//!
//! A cohort of K ≥ 2 networks trains together; each peer minimises its cross-entropy plus the mean
//! KL divergence from the other peers' (constant) predictions. The hot path is hand-written WGSL
//! (`shaders/`), run through wgpu by [`gpu::GpuBackend`]; every kernel has a plain-loop CPU twin in
//! [`cpu`], which is both the test oracle and a fallback backend. Both sit behind [`Backend`].
#![warn(missing_docs)]

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gpu;
pub mod metrics;
pub mod ops;
pub mod rng;
pub mod tensor;
pub mod trainer;
pub mod validate;

pub use backend::Backend;
pub use cpu::CpuBackend;
pub use error::{CohortError, Result};
pub use gpu::{GpuBackend, GpuOptions};
pub use tensor::{DType, Shape, TensorInfo};
