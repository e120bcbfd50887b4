//! cohort: Deep Mutual Learning on any GPU.
//!
//! A cohort of K ≥ 2 networks trains together; each peer minimises its cross-entropy plus the mean
//! KL divergence from the other peers' (constant) predictions. The hot path is hand-written WGSL
//! (`shaders/`), run through wgpu by [`gpu::GpuBackend`]; every kernel has a plain-loop CPU twin in
//! [`cpu`], which is both the test oracle and a fallback backend. Both sit behind [`Backend`].
//!
//! Every kernel runs through the same API on either backend:
//!
//! ```
//! use cohort::ops::MatmulSpec;
//! use cohort::{Backend, CpuBackend, DType};
//!
//! let cpu = CpuBackend; // or cohort::GpuBackend::from_env()?
//! let a = cpu.tensor(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let b = cpu.tensor(&[3, 1], &[1.0, 0.0, -1.0])?;
//! let mut c = cpu.zeros(&[2, 1], DType::F32)?;
//! cpu.matmul(&a, &b, &mut c, &MatmulSpec::default())?;
//! assert_eq!(cpu.read(&c)?, vec![-2.0, -2.0]);
//!
//! // Shapes are checked before anything runs.
//! let wrong = cpu.zeros(&[2, 2], DType::F32)?;
//! assert!(cpu.matmul(&a, &wrong, &mut c, &MatmulSpec::default()).is_err());
//! # Ok::<(), cohort::CohortError>(())
//! ```
//!
//! Training a cohort: see [`trainer::Trainer`] and `examples/library.rs`.
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
pub use cpu::{CpuBackend, CpuTensor};
pub use error::{CohortError, Result};
pub use gpu::{GpuBackend, GpuOptions, GpuTensor};
pub use tensor::{DType, Shape, TensorInfo};

// What a program that trains a cohort needs, without hunting through the modules.
pub use checkpoint::Checkpoint;
pub use config::{
    parse_peers, LrSchedule, OptimizerConfig, OptimizerKind, PeerSpec, Schedule, TrainConfig,
};
pub use data::{DataSource, Dataset, Split, Standardizer};
pub use ops::Activation;
pub use trainer::{
    BackendRef, DeviceData, EpochReport, Evaluation, NamedTensors, PeerReport, Predictions,
    StepProgress, Trainer,
};
