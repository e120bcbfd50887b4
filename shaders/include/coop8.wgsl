// Cooperative-matrix types for matmul_coop.wgsl: 8x8 f16 fragments and an f32 accumulator per
// subgroup (adapters that list only 8x8x8, e.g. Mesa's lavapipe). Operations: coop_ops.wgsl.
enable f16;
enable wgpu_cooperative_matrix;

alias FragA = coop_mat8x8<f16, A>;
alias FragB = coop_mat8x8<f16, B>;
alias Acc = coop_mat8x8<f32, C>;
const FRAG: u32 = 8u;
