//! One API over both backends: every kernel runs on the GPU ([`crate::gpu::GpuBackend`]) or on its
//! CPU twin ([`crate::cpu::CpuBackend`]). Shapes are checked on the host (see [`crate::ops`]) before
//! anything runs. GPU calls are recorded and submitted together; `read*` and `finish` wait for them.

use crate::error::Result;
use crate::ops::{
    Activation, Axpby, BiasActDims, CrossEntropySpec, DmlLossSpec, KlSpec, MatmulSpec,
    OptimizerStep, ReduceDims, ReduceSpec,
};
use crate::tensor::{DType, TensorInfo};

/// A layer's parameters, gradients and optimizer state, for [`Backend::update_layer`].
pub struct LayerUpdate<'a, T> {
    /// The weights, `[in, out]` or `[G, in, out]`.
    pub weight: &'a mut T,
    /// Their gradient, as many elements.
    pub weight_grad: &'a T,
    /// The rule's state tensors for the weights ([`OptimizerStep::state_count`]).
    pub weight_states: &'a mut [T],
    /// The weights' F16 copy (mixed precision), rewritten from the updated weights.
    pub weight_f16: Option<&'a mut T>,
    /// The bias, `[out]` or `[G, out]`.
    pub bias: &'a mut T,
    /// The layer's pre-activation gradient, `[R, out]` or `[G, R, out]`: the bias gradient is
    /// its column sums.
    pub dpre: &'a T,
    /// The rule's state tensors for the bias.
    pub bias_states: &'a mut [T],
}

/// [`Backend::update_layer`] as its parts in turn: the weights' update (with the F16 copy, if
/// any), then the bias's.
pub fn update_layer_in_turn<B: Backend + ?Sized>(
    b: &B,
    step: &OptimizerStep,
    layer: LayerUpdate<'_, B::Tensor>,
) -> Result<()> {
    let (w, dw, states) = (layer.weight, layer.weight_grad, layer.weight_states);
    match layer.weight_f16 {
        Some(copy) => b.optimizer_step_f16_copy(step, w, dw, states, copy)?,
        None => b.optimizer_step(step, w, dw, states)?,
    }
    b.bias_optimizer_step(step, layer.bias, layer.dpre, layer.bias_states)
}

/// A device that holds tensors and runs cohort's kernels on them.
pub trait Backend {
    /// The tensor type living on this device.
    type Tensor: TensorInfo + std::fmt::Debug;

    /// A one-line description of the device (adapter name and API, or "CPU").
    fn describe(&self) -> String;

    /// Which backend made a tensor: tensors of two backends with different instances cannot
    /// be used together (each GPU backend owns its device and refuses another's tensors with
    /// [`crate::CohortError::InvalidConfig`]; every CPU backend is instance 0).
    fn instance(&self) -> u64 {
        0
    }

    /// An F32 tensor holding `data`.
    fn tensor(&self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor>;
    /// A U32 tensor holding `data`.
    fn tensor_u32(&self, shape: &[usize], data: &[u32]) -> Result<Self::Tensor>;
    /// An F16 tensor holding `data`, each value rounded to the nearest f16.
    fn tensor_f16(&self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor> {
        crate::ops::check_len(shape, data.len())?;
        let mut t = self.zeros(shape, DType::F16)?;
        self.write(&mut t, data)?;
        Ok(t)
    }
    /// A zero-filled tensor.
    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Self::Tensor>;
    /// Overwrites an F32 or F16 tensor with `data` (same element count; rounded for F16).
    fn write(&self, t: &mut Self::Tensor, data: &[f32]) -> Result<()>;
    /// Overwrites a U32 tensor with `data` (same element count).
    fn write_u32(&self, t: &mut Self::Tensor, data: &[u32]) -> Result<()>;
    /// Reads an F32 or F16 tensor back to the host as f32, waiting for pending work.
    fn read(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// Reads a U32 tensor back to the host, waiting for pending work.
    fn read_u32(&self, t: &Self::Tensor) -> Result<Vec<u32>>;
    /// Copies `len` elements from `src[src_offset..]` into `dst[dst_offset..]`.
    fn copy(
        &self,
        src: &Self::Tensor,
        src_offset: usize,
        dst: &mut Self::Tensor,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;

    /// Batched `C = alpha·op(A)·op(B) + beta·C` (see [`MatmulSpec`]).
    fn matmul(
        &self,
        a: &Self::Tensor,
        b: &Self::Tensor,
        c: &mut Self::Tensor,
        spec: &MatmulSpec,
    ) -> Result<()>;
    /// The forward of a layer: `pre = alpha·op(A)·op(B) + beta·pre`, then `y = act(pre + bias)`.
    /// `y` may be F16 (rounded once). Backends may fuse the two into one pass (the GPU does); the
    /// default runs them in turn.
    #[allow(clippy::too_many_arguments)]
    fn matmul_bias_act(
        &self,
        a: &Self::Tensor,
        b: &Self::Tensor,
        bias: &Self::Tensor,
        pre: &mut Self::Tensor,
        y: &mut Self::Tensor,
        spec: &MatmulSpec,
        act: Activation,
    ) -> Result<()> {
        // Checked first, as the fused kernels are: nothing is written where the epilogue's
        // tensors do not fit.
        BiasActDims::infer_fused(pre, bias, y)?;
        self.matmul(a, b, pre, spec)?;
        if y.dtype() != DType::F16 {
            return self.bias_act(pre, bias, y, act);
        }
        // F16 activations (mixed precision): through an f32 temporary, rounded once.
        let mut wide = self.zeros(y.shape().dims(), DType::F32)?;
        self.bias_act(pre, bias, &mut wide, act)?;
        self.convert(&wide, y)
    }
    /// The backward through a hidden layer: `dpre = (alpha·op(A)·op(B) + beta·dpre) ⊙
    /// act'(pre + bias)`, i.e. the product `dY·Wᵀ` (plus, with `beta`, what `dpre` held) turned
    /// into the gradient of the previous layer's pre-activation (`pre` and `bias` as in
    /// [`Backend::matmul_bias_act`]; `pre` may be F16). Backends may fuse the two into one pass (the GPU does); the
    /// default runs them in turn through a temporary.
    #[allow(clippy::too_many_arguments)]
    fn matmul_act_grad(
        &self,
        a: &Self::Tensor,
        b: &Self::Tensor,
        pre: &Self::Tensor,
        bias: &Self::Tensor,
        dpre: &mut Self::Tensor,
        spec: &MatmulSpec,
        act: Activation,
    ) -> Result<()> {
        BiasActDims::infer_fused(dpre, bias, pre)?;
        let mut dact = self.zeros(dpre.shape().dims(), DType::F32)?;
        if spec.beta != 0.0 {
            self.copy(dpre, 0, &mut dact, 0, dpre.shape().numel())?;
        }
        self.matmul(a, b, &mut dact, spec)?;
        if pre.dtype() != DType::F16 {
            return self.bias_act_backward(pre, bias, &dact, dpre, act);
        }
        // An F16 pre-activation (mixed precision), widened exactly.
        let mut wide = self.zeros(pre.shape().dims(), DType::F32)?;
        self.convert(pre, &mut wide)?;
        self.bias_act_backward(&wide, bias, &dact, dpre, act)
    }
    /// `y = act(x + bias)` for `x` `[R, H]` or `[G, R, H]`, bias `[H]` or `[G, H]`.
    fn bias_act(
        &self,
        x: &Self::Tensor,
        bias: &Self::Tensor,
        y: &mut Self::Tensor,
        act: Activation,
    ) -> Result<()>;
    /// `dx = dy · act'(x + bias)`, with `x` the forward input.
    fn bias_act_backward(
        &self,
        x: &Self::Tensor,
        bias: &Self::Tensor,
        dy: &Self::Tensor,
        dx: &mut Self::Tensor,
        act: Activation,
    ) -> Result<()>;
    /// `out = scale · sum of x over axis` (`+ out` when accumulating), into one result of `out`
    /// (see [`ReduceSpec`]).
    fn reduce_sum(
        &self,
        x: &Self::Tensor,
        axis: usize,
        out: &mut Self::Tensor,
        spec: &ReduceSpec,
    ) -> Result<()>;
    /// Fused softmax cross-entropy: per-row losses and the logits gradient. Labels are not
    /// checked here (they stay on the device; [`crate::Dataset`] checks them on the way in): a
    /// row whose label is past the classes gets a NaN loss, on every backend.
    fn softmax_ce(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Tensor,
        losses: &mut Self::Tensor,
        dlogits: &mut Self::Tensor,
        spec: &CrossEntropySpec,
    ) -> Result<()>;
    /// Mutual-learning KL between stacked peer logits `[P, B, C]` (see [`KlSpec`]).
    fn kl_div(
        &self,
        logits: &Self::Tensor,
        losses: &mut Self::Tensor,
        dlogits: &mut Self::Tensor,
        spec: &KlSpec,
    ) -> Result<()>;
    /// The fused DML loss (see [`DmlLossSpec`]): per-row CE and KL of the chosen peers and their
    /// total logit gradient, in one pass. Labels past the classes give NaN losses, as in
    /// [`Backend::softmax_ce`].
    fn dml_loss(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Tensor,
        losses: &mut Self::Tensor,
        dlogits: &mut Self::Tensor,
        spec: &DmlLossSpec,
    ) -> Result<()>;
    /// One optimizer update; `states` are the rule's state tensors ([`OptimizerStep::state_count`]).
    fn optimizer_step(
        &self,
        step: &OptimizerStep,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        states: &mut [Self::Tensor],
    ) -> Result<()>;
    /// The optimizer update of a bias from its layer's pre-activation gradient: the bias's
    /// gradient is `dpre` (`[R, H]` or `[G, R, H]`) summed over its rows, then as
    /// [`Backend::optimizer_step`] on `bias` (`[H]` or `[G, H]`). Backends may fuse the two (the
    /// GPU does: the bias gradient needs no pass of its own); the default sums into a temporary.
    fn bias_optimizer_step(
        &self,
        step: &OptimizerStep,
        bias: &mut Self::Tensor,
        dpre: &Self::Tensor,
        states: &mut [Self::Tensor],
    ) -> Result<()> {
        ReduceDims::bias_gradient(dpre, bias)?;
        let mut db = self.zeros(bias.shape().dims(), DType::F32)?;
        self.reduce_sum(
            dpre,
            dpre.shape().rank() - 2,
            &mut db,
            &ReduceSpec::scaled(1.0),
        )?;
        self.optimizer_step(step, bias, &db, states)
    }
    /// `dst = src` between an F32 and an F16 tensor of the same element count, either way
    /// (rounded to the nearest f16, or widened exactly).
    fn convert(&self, src: &Self::Tensor, dst: &mut Self::Tensor) -> Result<()>;
    /// Whether matmuls can read and write F16 tensors here (the GPU needs f16 shaders; the CPU
    /// always can).
    fn f16_tensors(&self) -> bool;
    /// Whether products of f32 inputs are computed from their f16 parts (the GPU's
    /// [`crate::gpu::F32Matmul::SplitF16`]), so that values below f16's normal range keep only
    /// 11 bits and training should scale its loss as for mixed precision. False by default.
    fn splits_f32_products(&self) -> bool {
        false
    }
    /// [`Backend::optimizer_step`], then the updated parameter rounded into the F16 tensor
    /// `copy` (same element count): the f16 weights of mixed precision. Backends may fuse the
    /// two (the GPU does); the default runs them in turn.
    fn optimizer_step_f16_copy(
        &self,
        step: &OptimizerStep,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        states: &mut [Self::Tensor],
        copy: &mut Self::Tensor,
    ) -> Result<()> {
        self.optimizer_step(step, param, grad, states)?;
        self.convert(param, copy)
    }
    /// One optimizer update of a whole layer: [`Backend::optimizer_step`] (or
    /// [`Backend::optimizer_step_f16_copy`]) of its weights and
    /// [`Backend::bias_optimizer_step`] of its bias, with the same rule. Backends may fuse them
    /// (the GPU does: one dispatch); the default runs them in turn ([`update_layer_in_turn`]).
    fn update_layer(
        &self,
        step: &OptimizerStep,
        layer: LayerUpdate<'_, Self::Tensor>,
    ) -> Result<()> {
        update_layer_in_turn(self, step, layer)
    }
    /// `y = a·x + b·y + c`; without `x`, `y = b·y + c` (with `b = 0`, a fill).
    fn axpby(&self, x: Option<&Self::Tensor>, y: &mut Self::Tensor, k: &Axpby) -> Result<()>;
    /// Adds to `counts` (`[P + 1]`, U32) the rows each peer and the ensemble classify right.
    fn count_correct(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Tensor,
        counts: &mut Self::Tensor,
    ) -> Result<()>;
    /// A batch from a data set on the device: `x[r] = features[index[offset + r]]` and
    /// `y[r] = labels[index[offset + r]]` for the R rows of `x` and `y`, so one index can hold
    /// a whole epoch's order (F32, U32, or F16 rows of even width; rows whose index is out of
    /// range become zeros). One pass on the GPU.
    fn gather_batch(
        &self,
        features: &Self::Tensor,
        labels: &Self::Tensor,
        index: &Self::Tensor,
        offset: usize,
        x: &mut Self::Tensor,
        y: &mut Self::Tensor,
    ) -> Result<()>;
    /// Submits all recorded work and waits for it.
    fn finish(&self) -> Result<()>;
    /// Sends the work recorded so far to the device without waiting for it, so the device runs
    /// it while the host records more (the GPU: one queue submission; the CPU runs as it records).
    fn submit(&self) -> Result<()> {
        Ok(())
    }
    /// A scheduling hint that never changes results: kernels recorded from here on form a new
    /// batch. On the GPU a batch is a compute pass, whose buffers wait on one barrier at its
    /// start, where their use changes, instead of one before each dispatch that changes a
    /// buffer's use; kernels of one batch that do not depend on each other may then run side by
    /// side. (The GPU still orders kernels that do depend on each other.) The CPU ignores it.
    fn next_batch(&self) -> Result<()> {
        Ok(())
    }

    /// Sets every element of an F32 tensor to `value`.
    fn fill(&self, t: &mut Self::Tensor, value: f32) -> Result<()> {
        self.axpby(
            None,
            t,
            &Axpby {
                a: 0.0,
                b: 0.0,
                c: value,
            },
        )
    }
}
