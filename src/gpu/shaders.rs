//! The WGSL sources, compiled into the binary. Each file in `shaders/` has a CPU twin in `src/cpu/`
//! with the same name ([`Shader::twin`]; the matmul variants share `cpu/matmul.rs`).

/// The cooperative-matrix operations `shaders/matmul_coop.wgsl` is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoopOps {
    /// 16×16×16 f16 → f32 cooperative matrices (NVIDIA tensor cores): `include/coop16.wgsl`.
    Native16,
    /// 8×8×8 f16 → f32 cooperative matrices (e.g. Mesa's lavapipe): `include/coop8.wgsl`.
    Native8,
    /// The same operations in plain WGSL, 16×16 and 32 invocations per "subgroup", for any
    /// adapter with f16 shaders: checks the kernel's tiling where no cooperative matrices exist.
    Emulated,
}

impl CoopOps {
    /// The WGSL of these operations, which a kernel using them begins with: the `enable`
    /// directives, the types `FragA`, `FragB`, `Acc` and the constant `FRAG`, and the functions
    /// `frag_a`, `frag_b`, `frag_a_mn`, `frag_b_mn`, `mma` and `stash`, over the kernel's
    /// workgroup arrays `tile_a`, `tile_b` (of `vec4<f16>`) and `out_tile` (of `f32`), its
    /// strides `KS` and `MS` and (emulated) its private `lane` (see `shaders/matmul_coop.wgsl`).
    pub fn operations(self) -> &'static str {
        match self {
            CoopOps::Native16 => concat!(
                include_str!("../../shaders/include/coop16.wgsl"),
                include_str!("../../shaders/include/coop_ops.wgsl")
            ),
            CoopOps::Native8 => concat!(
                include_str!("../../shaders/include/coop8.wgsl"),
                include_str!("../../shaders/include/coop_ops.wgsl")
            ),
            CoopOps::Emulated => include_str!("../../shaders/include/coop_emulated.wgsl"),
        }
    }

    /// The fragment edge: 16 or 8.
    pub fn frag(self) -> u32 {
        match self {
            CoopOps::Native8 => 8,
            CoopOps::Native16 | CoopOps::Emulated => 16,
        }
    }
}

/// The element types of the matmul kernels' storage operands: A, B and the fused epilogues'
/// `aux` (the layer output Y written, or the pre-activation read), each f32 or f16 (`true`). C
/// and the bias are always f32. WGSL fixes a binding's type in the source, so each combination
/// is a module of its own (`include/matmul_io.wgsl`'s `ElemA`, `ElemB`, `ElemAux`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MatmulStorage {
    /// A is f16.
    pub a_f16: bool,
    /// B is f16.
    pub b_f16: bool,
    /// aux is f16.
    pub aux_f16: bool,
}

impl MatmulStorage {
    /// Every operand f32.
    pub const F32: MatmulStorage = MatmulStorage {
        a_f16: false,
        b_f16: false,
        aux_f16: false,
    };

    /// All eight combinations.
    pub fn all() -> impl Iterator<Item = MatmulStorage> {
        (0..8u8).map(|bits| MatmulStorage {
            a_f16: bits & 1 != 0,
            b_f16: bits & 2 != 0,
            aux_f16: bits & 4 != 0,
        })
    }

    /// Whether any operand is f16 (the module then needs f16 shaders).
    pub fn any_f16(self) -> bool {
        self.a_f16 || self.b_f16 || self.aux_f16
    }

    /// The WGSL type aliases that declare these types.
    fn aliases(self) -> String {
        let ty = |f16: bool| if f16 { "f16" } else { "f32" };
        format!(
            "\nalias ElemA = {};\nalias ElemB = {};\nalias ElemAux = {};\n",
            ty(self.a_f16),
            ty(self.b_f16),
            ty(self.aux_f16)
        )
    }
}

/// How the row kernels' (losses, accuracy counts) threads of one row meet and reduce
/// (`shaders/include/row_softmax.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowReduction {
    /// Through workgroup memory, a barrier per step (`include/rows_workgroup.wgsl`): any adapter.
    Workgroup,
    /// By shuffles within a subgroup, no barriers (`include/rows_subgroup.wgsl`): adapters with
    /// subgroup operations.
    Subgroup,
}

/// How every kernel declares its parameters, and the storage form of that declaration.
const PARAMS_IN_UNIFORM: &str = "@group(0) @binding(0) var<uniform> p: Params;";
const PARAMS_IN_STORAGE: &str = "@group(0) @binding(0) var<storage, read> p: Params;";

/// A WGSL source file of cohort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// `shaders/matmul.wgsl`, with the given operand types
    Matmul(MatmulStorage),
    /// `shaders/matmul_coop.wgsl`, built with the given cooperative-matrix operations and
    /// operand types
    MatmulCoop(CoopOps, MatmulStorage),
    /// `shaders/matmul_narrow.wgsl` (products at most 16 columns wide), with the given operand
    /// types
    MatmulNarrow(MatmulStorage),
    /// `shaders/bias_act.wgsl`
    BiasAct,
    /// `shaders/reduce_sum.wgsl`
    ReduceSum,
    /// `shaders/softmax_ce.wgsl`, its rows reduced as given
    SoftmaxCe(RowReduction),
    /// `shaders/kl_div.wgsl`, its rows reduced as given
    KlDiv(RowReduction),
    /// `shaders/dml_loss.wgsl`, its rows reduced as given
    DmlLoss(RowReduction),
    /// `shaders/optimizer.wgsl`; with `true` also its entries that write an f16 copy of the
    /// parameters (`include/optimizer_f16.wgsl`, needs f16 shaders)
    Optimizer(bool),
    /// `shaders/axpby.wgsl`
    Axpby,
    /// `shaders/convert.wgsl`, to f16 (`true`) or to f32
    Convert(bool),
    /// `shaders/count_correct.wgsl`, its rows reduced as given
    CountCorrect(RowReduction),
    /// `shaders/gather.wgsl`
    Gather,
}

impl Shader {
    /// Every shader file, for validation and warm-up (the matmuls with f32 operands; see
    /// [`MatmulStorage::all`] for the others).
    pub const ALL: [Shader; 21] = [
        Shader::Matmul(MatmulStorage::F32),
        Shader::MatmulNarrow(MatmulStorage::F32),
        Shader::MatmulCoop(CoopOps::Native16, MatmulStorage::F32),
        Shader::MatmulCoop(CoopOps::Native8, MatmulStorage::F32),
        Shader::MatmulCoop(CoopOps::Emulated, MatmulStorage::F32),
        Shader::BiasAct,
        Shader::ReduceSum,
        Shader::SoftmaxCe(RowReduction::Workgroup),
        Shader::SoftmaxCe(RowReduction::Subgroup),
        Shader::KlDiv(RowReduction::Workgroup),
        Shader::KlDiv(RowReduction::Subgroup),
        Shader::DmlLoss(RowReduction::Workgroup),
        Shader::DmlLoss(RowReduction::Subgroup),
        Shader::Optimizer(false),
        Shader::Optimizer(true),
        Shader::Axpby,
        Shader::Convert(true),
        Shader::Convert(false),
        Shader::CountCorrect(RowReduction::Workgroup),
        Shader::CountCorrect(RowReduction::Subgroup),
        Shader::Gather,
    ];

    /// The file name, with the build for matmuls: `matmul_coop.wgsl[Native16, A f16, B f16]`.
    pub fn describe(self) -> String {
        let storage = |s: MatmulStorage| {
            [
                (s.a_f16, "A f16"),
                (s.b_f16, "B f16"),
                (s.aux_f16, "aux f16"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
        };
        let build = match self {
            Shader::Matmul(s) | Shader::MatmulNarrow(s) => storage(s),
            Shader::MatmulCoop(ops, s) => {
                let mut parts = vec![match ops {
                    CoopOps::Native16 => "Native16",
                    CoopOps::Native8 => "Native8",
                    CoopOps::Emulated => "Emulated",
                }];
                parts.extend(storage(s));
                parts
            }
            _ if self.row_reduction() == Some(RowReduction::Subgroup) => vec!["subgroup rows"],
            Shader::Optimizer(true) => vec!["f16 copies"],
            Shader::Convert(to_f16) => vec![if to_f16 { "to f16" } else { "to f32" }],
            _ => Vec::new(),
        };
        match build.is_empty() {
            true => self.file_name().to_string(),
            false => format!("{}[{}]", self.file_name(), build.join(", ")),
        }
    }

    /// Whether this is one of the matmul kernels, which the matmul plans run.
    pub fn is_matmul(self) -> bool {
        matches!(
            self,
            Shader::Matmul(_) | Shader::MatmulCoop(..) | Shader::MatmulNarrow(_)
        )
    }

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Matmul(_) => "matmul.wgsl",
            Shader::MatmulCoop(..) => "matmul_coop.wgsl",
            Shader::MatmulNarrow(_) => "matmul_narrow.wgsl",
            Shader::BiasAct => "bias_act.wgsl",
            Shader::ReduceSum => "reduce_sum.wgsl",
            Shader::SoftmaxCe(_) => "softmax_ce.wgsl",
            Shader::KlDiv(_) => "kl_div.wgsl",
            Shader::DmlLoss(_) => "dml_loss.wgsl",
            Shader::Optimizer(_) => "optimizer.wgsl",
            Shader::Axpby => "axpby.wgsl",
            Shader::Convert(_) => "convert.wgsl",
            Shader::CountCorrect(_) => "count_correct.wgsl",
            Shader::Gather => "gather.wgsl",
        }
    }

    /// The kernel's entry points.
    pub fn entries(self) -> &'static [&'static str] {
        match self {
            Shader::Matmul(_) => &[
                "main",
                "main_bias_act",
                "main_act_grad",
                "reduce_splits",
                "reduce_splits_bias_act",
                "reduce_splits_act_grad",
            ],
            Shader::MatmulCoop(..) | Shader::MatmulNarrow(_) => {
                &["main", "main_bias_act", "main_act_grad"]
            }
            Shader::BiasAct => &["forward", "backward"],
            Shader::Optimizer(false) => &[
                "sgd",
                "adam",
                "sgd_bias",
                "adam_bias",
                "sgd_layer",
                "adam_layer",
            ],
            Shader::Optimizer(true) => &[
                "sgd",
                "adam",
                "sgd_bias",
                "adam_bias",
                "sgd_f16",
                "adam_f16",
                "sgd_layer",
                "adam_layer",
                "sgd_layer_f16",
                "adam_layer_f16",
            ],
            Shader::Axpby => &["axpby", "affine"],
            _ => &["main"],
        }
    }

    /// Whether launches of `entry` pass pipeline constants (the products' transposes and tiles,
    /// the row kernels' lanes), so that its pipelines are built per shape at their first
    /// launch: only the split-K reductions of the products and the other kernels take none.
    pub fn specialised(self, entry: &str) -> bool {
        match self {
            Shader::Matmul(_) => !entry.starts_with("reduce_splits"),
            Shader::MatmulCoop(..) | Shader::MatmulNarrow(_) => true,
            _ => self.row_reduction().is_some(),
        }
    }

    /// How a row kernel (the losses, the accuracy counts) reduces its rows; `None` for the
    /// other kernels.
    pub fn row_reduction(self) -> Option<RowReduction> {
        match self {
            Shader::SoftmaxCe(r)
            | Shader::KlDiv(r)
            | Shader::DmlLoss(r)
            | Shader::CountCorrect(r) => Some(r),
            _ => None,
        }
    }

    /// The CPU twin's module under `src/cpu/` (a variant shares its op's twin).
    pub fn twin(self) -> &'static str {
        match self {
            Shader::MatmulCoop(..) | Shader::MatmulNarrow(_) => "matmul",
            other => other.file_name().trim_end_matches(".wgsl"),
        }
    }

    /// Whether the kernel keeps wgpu's index clamping by default (see
    /// `GpuOptions::unchecked_indexing`). Measured on the H200 (BENCHMARKS.md): without it the
    /// cooperative-matrix matmul ran 2× faster (86 against 43 TFLOP/s at 4096³, f16), the f32
    /// matmul within 5% either way; the others keep it until measured otherwise.
    pub fn bounds_checks(self) -> bool {
        !matches!(self, Shader::MatmulCoop(..))
    }

    /// The WGSL source as compiled: the file, plus the shared helpers in `shaders/include/` that
    /// it uses (WGSL has no includes; the cooperative-matrix headers come first, as they carry
    /// `enable` directives), plus the matmuls' operand types or the row kernels' reduction.
    pub fn source(self) -> String {
        match self {
            Shader::Matmul(storage) | Shader::MatmulNarrow(storage) => {
                let enable = if storage.any_f16() {
                    "enable f16;\n"
                } else {
                    ""
                };
                format!("{enable}{}{}", self.files(), storage.aliases())
            }
            Shader::MatmulCoop(ops, storage) => {
                format!("{}{}{}", ops.operations(), self.files(), storage.aliases())
            }
            Shader::Optimizer(true) => format!(
                "enable f16;\n{}{}",
                self.files(),
                include_str!("../../shaders/include/optimizer_f16.wgsl")
            ),
            Shader::Convert(to_f16) => {
                let (from, to) = if to_f16 {
                    ("f32", "f16")
                } else {
                    ("f16", "f32")
                };
                format!(
                    "enable f16;\n{}\nalias Src = {from};\nalias Dst = {to};\n",
                    self.files()
                )
            }
            _ => {
                // The row kernels' reduction, the one part their builds differ in.
                let reduction = match self.row_reduction() {
                    None => "",
                    Some(RowReduction::Workgroup) => {
                        include_str!("../../shaders/include/rows_workgroup.wgsl")
                    }
                    Some(RowReduction::Subgroup) => {
                        include_str!("../../shaders/include/rows_subgroup.wgsl")
                    }
                };
                format!("{}{reduction}", self.files())
            }
        }
    }

    /// [`Shader::source`] with the kernel's parameters read from a read-only storage buffer
    /// instead of a uniform one (`GpuOptions::params_in_storage`): the one declaration of `p`
    /// changed, nothing else.
    pub fn source_with_params_in_storage(self) -> String {
        self.source()
            .replacen(PARAMS_IN_UNIFORM, PARAMS_IN_STORAGE, 1)
    }

    /// The files of [`Shader::source`] that every build of the shader shares, concatenated.
    fn files(self) -> &'static str {
        match self {
            Shader::Matmul(_) => concat!(
                include_str!("../../shaders/matmul.wgsl"),
                include_str!("../../shaders/include/constant_index.wgsl"),
                include_str!("../../shaders/include/matmul_io.wgsl"),
                include_str!("../../shaders/include/activation.wgsl"),
                include_str!("../../shaders/include/f16_rounding.wgsl")
            ),
            Shader::MatmulNarrow(_) => concat!(
                include_str!("../../shaders/matmul_narrow.wgsl"),
                include_str!("../../shaders/include/matmul_io.wgsl"),
                include_str!("../../shaders/include/activation.wgsl"),
                include_str!("../../shaders/include/f16_rounding.wgsl")
            ),
            Shader::MatmulCoop(..) => concat!(
                include_str!("../../shaders/matmul_coop.wgsl"),
                include_str!("../../shaders/include/constant_index.wgsl"),
                include_str!("../../shaders/include/matmul_io.wgsl"),
                include_str!("../../shaders/include/activation.wgsl")
            ),
            Shader::BiasAct => concat!(
                include_str!("../../shaders/bias_act.wgsl"),
                include_str!("../../shaders/include/activation.wgsl")
            ),
            Shader::ReduceSum => concat!(
                include_str!("../../shaders/reduce_sum.wgsl"),
                include_str!("../../shaders/include/column_sum.wgsl")
            ),
            Shader::SoftmaxCe(_) => concat!(
                include_str!("../../shaders/softmax_ce.wgsl"),
                include_str!("../../shaders/include/row_softmax.wgsl")
            ),
            Shader::DmlLoss(_) => concat!(
                include_str!("../../shaders/dml_loss.wgsl"),
                include_str!("../../shaders/include/row_softmax.wgsl"),
                include_str!("../../shaders/include/peer_kl.wgsl")
            ),
            Shader::KlDiv(_) => concat!(
                include_str!("../../shaders/kl_div.wgsl"),
                include_str!("../../shaders/include/row_softmax.wgsl"),
                include_str!("../../shaders/include/peer_kl.wgsl")
            ),
            Shader::Optimizer(_) => concat!(
                include_str!("../../shaders/optimizer.wgsl"),
                include_str!("../../shaders/include/column_sum.wgsl")
            ),
            Shader::Axpby => include_str!("../../shaders/axpby.wgsl"),
            Shader::Convert(_) => include_str!("../../shaders/convert.wgsl"),
            Shader::CountCorrect(_) => concat!(
                include_str!("../../shaders/count_correct.wgsl"),
                include_str!("../../shaders/include/row_softmax.wgsl")
            ),
            Shader::Gather => include_str!("../../shaders/gather.wgsl"),
        }
    }
}

/// `source` (a [`Shader::source`], or one with its parameters in storage) with f32 values
/// rounded to f16 in integer operations instead of WGSL's packing conversions
/// (`GpuOptions::integer_f16_rounding`): `include/f16_rounding.wgsl` swapped for
/// `include/f16_rounding_integer.wgsl`, nothing else; sources without it are returned as they
/// are.
pub fn with_integer_f16_rounding(source: &str) -> String {
    source.replacen(F16_ROUNDING_BY_CONVERSION, F16_ROUNDING_BY_INTEGERS, 1)
}

/// The f32-to-f16 rounding helper, by conversion and in integer operations.
const F16_ROUNDING_BY_CONVERSION: &str = include_str!("../../shaders/include/f16_rounding.wgsl");
const F16_ROUNDING_BY_INTEGERS: &str =
    include_str!("../../shaders/include/f16_rounding_integer.wgsl");
