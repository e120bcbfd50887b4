// Cooperative-matrix types for matmul_coop.wgsl: 16x16 f16 fragments and an f32 accumulator per
// subgroup (NVIDIA tensor cores through Vulkan's KHR_cooperative_matrix). Operations: coop_ops.wgsl.
enable f16;
enable wgpu_cooperative_matrix;

alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias Acc = coop_mat16x16<f32, C>;
const FRAG: u32 = 16u;
