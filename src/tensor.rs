//! Shapes and element types, shared by every backend, so shape errors are caught on the host.

use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float (activations, weights, gradients).
    F32,
    /// 32-bit unsigned integer (labels, indices, counters).
    U32,
    /// 16-bit IEEE float (binary16): matmul operands and activations in mixed precision, read
    /// and written by the host as f32 (values round to the nearest f16).
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// Whether it holds floating-point values (F32 or F16): the host reads and writes both as f32.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }
}

/// The dimensions of a tensor, outermost first (row-major).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for a scalar of rank 0). Only for shapes known to fit, such as a
    /// tensor's: backends refuse to create one whose size overflows (see [`Shape::bytes`]).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Number of elements, or None where it overflows `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Bytes of a tensor of this shape with `dtype`, or None where the count overflows `u64`.
    /// Counted in `u64` on every host, so that a 32-bit host reports the true size of a tensor
    /// too large for it (backends refuse any past `isize::MAX` bytes).
    pub fn bytes(&self, dtype: DType) -> Option<u64> {
        self.0
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
    }

    /// The last dimension, or 1 for a scalar.
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Self {
        Shape(dims.to_vec())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// What every backend's tensor type tells about itself.
pub trait TensorInfo {
    /// Its shape.
    fn shape(&self) -> &Shape;
    /// Its element type.
    fn dtype(&self) -> DType;
}
