//! The CPU reference: every kernel as plain, obviously correct loops (f64 arithmetic inside), one file
//! per kernel named like its shader. [`CpuBackend`] runs them behind the [`Backend`] API, so it is
//! both the test oracle and a working fallback when no GPU exists. Only the matmul, nearly all of
//! a training step's arithmetic, is arranged for speed (rows walked in order, large products'
//! rows shared among the cores), and it gives the textbook loop's sums bit for bit (tested).

pub mod axpby;
pub mod bias_act;
pub mod convert;
pub mod count_correct;
pub mod dml_loss;
pub mod gather;
pub mod kl_div;
pub mod matmul;
pub mod optimizer;
pub mod reduce_sum;
pub mod softmax_ce;

use crate::backend::Backend;
use crate::error::{host_vec, CohortError, Result};
use crate::ops::{self, Activation, Axpby, BiasActDims, CrossEntropySpec, KlSpec, MatmulDims};
use crate::ops::{DmlLossSpec, MatmulSpec, OptimizerStep, ReduceDims, ReduceSpec};
use crate::tensor::{DType, Shape, TensorInfo};

/// Storage the CPU twins compute on: f32 for the backend, f64 for gradient checks.
pub trait Real: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// Widen to f64.
    fn to_f64(self) -> f64;
    /// Narrow from f64.
    fn from_f64(v: f64) -> Self;
    /// The nearest f16 (ties to even), as the GPU rounds a mixed-precision input.
    fn to_f16(self) -> half::f16;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f16(self) -> half::f16 {
        half::f16::from_f32(self)
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    /// Not `half::f16::from_f64`: half 2.7 misrounds values just past a tie, in software (it
    /// drops the low 32 mantissa bits first, half-rs issue 151) and with x86's F16C (through
    /// f32, issue 116). Here the value goes to f32 rounded to odd (toward zero, then the last
    /// bit set where anything was cut), which keeps every bit the f16 rounding looks at: 24
    /// bits are at least 11 + 2, so the one rounding to f16 is the only one that counts.
    fn to_f16(self) -> half::f16 {
        let nearest = self as f32;
        if nearest as f64 == self || !nearest.is_finite() {
            return half::f16::from_f32(nearest);
        }
        // Toward zero: one step back in magnitude where rounding went away from zero.
        let mut bits = nearest.to_bits();
        if (nearest as f64).abs() > self.abs() {
            bits -= 1;
        }
        half::f16::from_f32(f32::from_bits(bits | 1))
    }
}

/// Host memory of a [`CpuTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum CpuData {
    /// F32 elements.
    F32(Vec<f32>),
    /// U32 elements.
    U32(Vec<u32>),
    /// F16 elements.
    F16(Vec<half::f16>),
}

/// A tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    shape: Shape,
    data: CpuData,
}

impl TensorInfo for CpuTensor {
    fn shape(&self) -> &Shape {
        &self.shape
    }
    fn dtype(&self) -> DType {
        match self.data {
            CpuData::F32(_) => DType::F32,
            CpuData::U32(_) => DType::U32,
            CpuData::F16(_) => DType::F16,
        }
    }
}

fn wrong_dtype(want: &str, got: DType) -> CohortError {
    CohortError::shape(
        "cpu",
        format!("expected {want} tensor, got a tensor of {got:?}"),
    )
}

impl CpuTensor {
    /// The F32 elements (a shape error for another dtype).
    pub fn f32(&self) -> Result<&[f32]> {
        match &self.data {
            CpuData::F32(v) => Ok(v),
            _ => Err(wrong_dtype("an F32", self.dtype())),
        }
    }

    /// The F32 elements, mutable.
    pub fn f32_mut(&mut self) -> Result<&mut [f32]> {
        let got = self.dtype();
        match &mut self.data {
            CpuData::F32(v) => Ok(v),
            _ => Err(wrong_dtype("an F32", got)),
        }
    }

    /// The U32 elements.
    pub fn u32(&self) -> Result<&[u32]> {
        match &self.data {
            CpuData::U32(v) => Ok(v),
            _ => Err(wrong_dtype("a U32", self.dtype())),
        }
    }

    /// The U32 elements, mutable.
    pub fn u32_mut(&mut self) -> Result<&mut [u32]> {
        let got = self.dtype();
        match &mut self.data {
            CpuData::U32(v) => Ok(v),
            _ => Err(wrong_dtype("a U32", got)),
        }
    }

    /// The values of an F32 or F16 tensor as f32 (F16 widened, exactly).
    pub fn values(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        match &self.data {
            CpuData::F32(v) => Ok(std::borrow::Cow::Borrowed(v)),
            CpuData::F16(v) => Ok(std::borrow::Cow::Owned(
                v.iter().map(|x| x.to_f32()).collect(),
            )),
            CpuData::U32(_) => Err(wrong_dtype("an F32 or F16", DType::U32)),
        }
    }

    /// Overwrites an F32 or F16 tensor with `data` (rounded to the nearest f16 for F16).
    fn set_values(&mut self, data: &[f32]) -> Result<()> {
        ops::check_len(self.shape.dims(), data.len())?;
        match &mut self.data {
            CpuData::F32(v) => v.copy_from_slice(data),
            CpuData::F16(v) => {
                for (d, &x) in v.iter_mut().zip(data) {
                    *d = half::f16::from_f32(x);
                }
            }
            CpuData::U32(_) => return Err(wrong_dtype("an F32 or F16", DType::U32)),
        }
        Ok(())
    }
}

/// The CPU backend: runs the reference twins. Slow, simple and always available.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn describe(&self) -> String {
        "CPU reference backend".into()
    }

    fn tensor(&self, shape: &[usize], data: &[f32]) -> Result<CpuTensor> {
        ops::check_len(shape, data.len())?;
        let mut t = self.zeros(shape, DType::F32)?;
        if let CpuData::F32(v) = &mut t.data {
            v.copy_from_slice(data);
        }
        Ok(t)
    }

    fn tensor_u32(&self, shape: &[usize], data: &[u32]) -> Result<CpuTensor> {
        ops::check_len(shape, data.len())?;
        let mut t = self.zeros(shape, DType::U32)?;
        if let CpuData::U32(v) = &mut t.data {
            v.copy_from_slice(data);
        }
        Ok(t)
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<CpuTensor> {
        let shape = Shape::new(shape);
        let bytes = shape.bytes(dtype).unwrap_or(u64::MAX);
        if bytes > isize::MAX as u64 {
            return Err(CohortError::BufferTooLarge {
                what: format!("CPU tensor {shape}"),
                bytes,
                limit: isize::MAX as u64,
            });
        }
        let n = shape.numel();
        let what = || format!("CPU tensor {shape}");
        let data = match dtype {
            DType::F32 => CpuData::F32(host_vec(n, what)?),
            DType::U32 => CpuData::U32(host_vec(n, what)?),
            DType::F16 => CpuData::F16(host_vec(n, what)?),
        };
        Ok(CpuTensor { shape, data })
    }

    fn write(&self, t: &mut CpuTensor, data: &[f32]) -> Result<()> {
        t.set_values(data)
    }

    fn write_u32(&self, t: &mut CpuTensor, data: &[u32]) -> Result<()> {
        ops::check_len(t.shape.dims(), data.len())?;
        t.u32_mut()?.copy_from_slice(data);
        Ok(())
    }

    fn read(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.values()?.into_owned())
    }

    fn read_u32(&self, t: &CpuTensor) -> Result<Vec<u32>> {
        Ok(t.u32()?.to_vec())
    }

    fn copy(
        &self,
        src: &CpuTensor,
        src_offset: usize,
        dst: &mut CpuTensor,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        ops::copy_range(src, src_offset, dst, dst_offset, len)?;
        match (&src.data, &mut dst.data) {
            (CpuData::F32(s), CpuData::F32(d)) => {
                d[dst_offset..dst_offset + len].copy_from_slice(&s[src_offset..src_offset + len])
            }
            (CpuData::U32(s), CpuData::U32(d)) => {
                d[dst_offset..dst_offset + len].copy_from_slice(&s[src_offset..src_offset + len])
            }
            (CpuData::F16(s), CpuData::F16(d)) => {
                d[dst_offset..dst_offset + len].copy_from_slice(&s[src_offset..src_offset + len])
            }
            _ => return Err(CohortError::shape("copy", "src and dst dtypes differ")),
        }
        Ok(())
    }

    fn matmul(
        &self,
        a: &CpuTensor,
        b: &CpuTensor,
        c: &mut CpuTensor,
        spec: &MatmulSpec,
    ) -> Result<()> {
        let d = MatmulDims::infer(a, b, c, spec)?;
        matmul::matmul(
            &a.values()?,
            &b.values()?,
            c.f32_mut()?,
            &d,
            spec.alpha as f64,
            spec.beta as f64,
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_bias_act(
        &self,
        a: &CpuTensor,
        b: &CpuTensor,
        bias: &CpuTensor,
        pre: &mut CpuTensor,
        y: &mut CpuTensor,
        spec: &MatmulSpec,
        act: Activation,
    ) -> Result<()> {
        let d = BiasActDims::infer_fused(pre, bias, y)?;
        self.matmul(a, b, pre, spec)?;
        let mut out = vec![0.0; pre.shape.numel()];
        bias_act::forward(pre.f32()?, bias.f32()?, &mut out, &d, act);
        y.set_values(&out)
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_act_grad(
        &self,
        a: &CpuTensor,
        b: &CpuTensor,
        pre: &CpuTensor,
        bias: &CpuTensor,
        dpre: &mut CpuTensor,
        spec: &MatmulSpec,
        act: Activation,
    ) -> Result<()> {
        let d = BiasActDims::infer_fused(dpre, bias, pre)?;
        self.matmul(a, b, dpre, spec)?;
        let product = dpre.f32()?.to_vec();
        bias_act::backward(
            &pre.values()?,
            bias.f32()?,
            &product,
            dpre.f32_mut()?,
            &d,
            act,
        );
        Ok(())
    }

    fn bias_act(
        &self,
        x: &CpuTensor,
        bias: &CpuTensor,
        y: &mut CpuTensor,
        act: Activation,
    ) -> Result<()> {
        let d = BiasActDims::infer(x, bias, y)?;
        bias_act::forward(x.f32()?, bias.f32()?, y.f32_mut()?, &d, act);
        Ok(())
    }

    fn bias_act_backward(
        &self,
        x: &CpuTensor,
        bias: &CpuTensor,
        dy: &CpuTensor,
        dx: &mut CpuTensor,
        act: Activation,
    ) -> Result<()> {
        let d = BiasActDims::infer(x, bias, dx)?;
        BiasActDims::infer(x, bias, dy)?;
        bias_act::backward(x.f32()?, bias.f32()?, dy.f32()?, dx.f32_mut()?, &d, act);
        Ok(())
    }

    fn reduce_sum(
        &self,
        x: &CpuTensor,
        axis: usize,
        out: &mut CpuTensor,
        spec: &ReduceSpec,
    ) -> Result<()> {
        let (d, offset) = ReduceDims::infer_into(x, axis, out, spec.out_row)?;
        let out = &mut out.f32_mut()?[offset..offset + d.outer * d.inner];
        reduce_sum::reduce_sum(x.f32()?, out, &d, spec.scale as f64, spec.accumulate);
        Ok(())
    }

    fn softmax_ce(
        &self,
        logits: &CpuTensor,
        labels: &CpuTensor,
        losses: &mut CpuTensor,
        dlogits: &mut CpuTensor,
        spec: &CrossEntropySpec,
    ) -> Result<()> {
        let d = spec.infer(logits, labels, losses, dlogits)?;
        softmax_ce::softmax_ce(
            logits.f32()?,
            labels.u32()?,
            losses.f32_mut()?,
            dlogits.f32_mut()?,
            &d,
            spec,
        );
        Ok(())
    }

    fn kl_div(
        &self,
        logits: &CpuTensor,
        losses: &mut CpuTensor,
        dlogits: &mut CpuTensor,
        spec: &KlSpec,
    ) -> Result<()> {
        let d = spec.infer(logits, losses, dlogits)?;
        kl_div::kl_div(
            logits.f32()?,
            losses.f32_mut()?,
            dlogits.f32_mut()?,
            &d,
            spec,
        );
        Ok(())
    }

    fn dml_loss(
        &self,
        logits: &CpuTensor,
        labels: &CpuTensor,
        losses: &mut CpuTensor,
        dlogits: &mut CpuTensor,
        spec: &DmlLossSpec,
    ) -> Result<()> {
        let d = spec.infer(logits, labels, losses, dlogits)?;
        let (ce_rows, kl_rows) = losses.f32_mut()?.split_at_mut(d.groups * d.rows);
        let (z, y, dz) = (logits.f32()?, labels.u32()?, dlogits.f32_mut()?);
        dml_loss::dml_loss(z, y, ce_rows, kl_rows, dz, &d, spec);
        Ok(())
    }

    fn optimizer_step(
        &self,
        step: &OptimizerStep,
        param: &mut CpuTensor,
        grad: &CpuTensor,
        states: &mut [CpuTensor],
    ) -> Result<()> {
        step.check(param, grad, states)?;
        let mut slices = states
            .iter_mut()
            .map(|s| s.f32_mut())
            .collect::<Result<Vec<_>>>()?;
        optimizer::optimizer_step(step, param.f32_mut()?, grad.f32()?, &mut slices);
        Ok(())
    }

    fn convert(&self, src: &CpuTensor, dst: &mut CpuTensor) -> Result<()> {
        ops::convert_len(src, dst)?;
        match (&src.data, &mut dst.data) {
            (CpuData::F32(s), CpuData::F16(d)) => convert::to_f16(s, d),
            (CpuData::F16(s), CpuData::F32(d)) => convert::to_f32(s, d),
            _ => unreachable!("convert_len admits F32 <-> F16 only"),
        }
        Ok(())
    }

    fn f16_tensors(&self) -> bool {
        true
    }

    fn axpby(&self, x: Option<&CpuTensor>, y: &mut CpuTensor, k: &Axpby) -> Result<()> {
        if let Some(x) = x {
            ops::axpby_len(x, y)?;
        }
        let x = x.map(|x| x.f32()).transpose()?;
        axpby::axpby(x, y.f32_mut()?, k);
        Ok(())
    }

    fn count_correct(
        &self,
        logits: &CpuTensor,
        labels: &CpuTensor,
        counts: &mut CpuTensor,
    ) -> Result<()> {
        let d = ops::accuracy_dims(logits, labels, counts)?;
        count_correct::count_correct(logits.f32()?, labels.u32()?, counts.u32_mut()?, &d);
        Ok(())
    }

    fn gather_batch(
        &self,
        features: &CpuTensor,
        labels: &CpuTensor,
        index: &CpuTensor,
        offset: usize,
        x: &mut CpuTensor,
        y: &mut CpuTensor,
    ) -> Result<()> {
        let g = ops::gather_batch_dims(features, labels, index, offset, x, y)?;
        let index = &index.u32()?[offset..offset + g.rows];
        for ((src, dst), d) in [(features, x), (labels, y)].into_iter().zip(g.widths) {
            match (&src.data, &mut dst.data) {
                (CpuData::F32(s), CpuData::F32(o)) => gather::gather_rows(s, index, o, g.n, d),
                (CpuData::U32(s), CpuData::U32(o)) => gather::gather_rows(s, index, o, g.n, d),
                (CpuData::F16(s), CpuData::F16(o)) => gather::gather_rows(s, index, o, g.n, d),
                _ => {
                    return Err(CohortError::shape(
                        "gather_batch",
                        "source and output dtypes differ",
                    ))
                }
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Real;
    use half::f16;

    /// The nearest finite f16 by search over all of them, ties to the even bit pattern, or
    /// infinity from 65520 (the tie past the largest, 65504) on.
    fn nearest_f16(v: f64, all: &[(f64, u16)]) -> u16 {
        let sign = if v.is_sign_negative() { 0x8000 } else { 0 };
        let m = v.abs();
        if m >= 65520.0 {
            return sign | 0x7c00;
        }
        let above = all.partition_point(|&(x, _)| x < m);
        let (lo, hi) = (all[above.max(1) - 1], all[above.min(all.len() - 1)]);
        let pick = match (m - lo.0).partial_cmp(&(hi.0 - m)).unwrap() {
            std::cmp::Ordering::Less => lo.1,
            std::cmp::Ordering::Greater => hi.1,
            std::cmp::Ordering::Equal if lo.1 % 2 == 0 => lo.1,
            std::cmp::Ordering::Equal => hi.1,
        };
        sign | pick
    }

    #[test]
    fn rounding_to_f16_is_to_the_nearest_with_ties_to_even() {
        let all: Vec<(f64, u16)> = (0..0x7c00u16)
            .map(|b| (f16::from_bits(b).to_f64(), b))
            .collect();
        // Ties between neighbours, and one f64 step either side: where half 2.7's from_f64
        // goes wrong (2⁻²⁵ just above the tie, the middle of 1 and 1 + 2⁻¹⁰, half-rs issues 116
        // and 151), across subnormals, normals and the overflow edge.
        let mut values = vec![
            2f64.powi(-25) * (1.0 + 2f64.powi(-23)),
            1.0 + 2f64.powi(-11) + 2f64.powi(-22),
            2f64.powi(-14) - 2f64.powi(-25) - 2f64.powi(-65),
            0x1f_fdff_ffffu64 as f64 * 2f64.powi(-26),
            65504.0,
            65519.99,
            65520.0,
            1e300,
            1e-300,
        ];
        for pair in all.windows(2).step_by(97) {
            let tie = (pair[0].0 + pair[1].0) / 2.0;
            values.extend([tie, tie.next_down(), tie.next_up()]);
        }
        let mut rng = crate::rng::Rng::new(16);
        values.extend((0..20_000).map(|_| rng.normal() * 2f64.powi(rng.below(50) as i32 - 30)));
        for v in values.iter().flat_map(|&v| [v, -v]) {
            let want = nearest_f16(v, &all);
            assert_eq!(v.to_f16().to_bits(), want, "f64 {v:e}");
            let single = v as f32;
            if single as f64 == v {
                assert_eq!(single.to_f16().to_bits(), want, "f32 {single:e}");
            }
        }
        assert!(f64::NAN.to_f16().is_nan());
    }
}
