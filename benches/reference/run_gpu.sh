#!/usr/bin/env bash
# Everything cohort measures on a real GPU, most important first, for the GPU machine (no Rust there).
#
# Here:   bash benches/reference/stage_gpu.sh (builds and stages the executables, mnist10k, the
#         Vulkan loader and the GL libraries NVIDIA's driver needs into .gpu/, packed to fit the
#         device's 64 MiB; see its header).
# First, here: bash benches/reference/rehearse_gpu.sh [PART...] runs this script on lavapipe with
#         every shape scaled down and the tests only listed (about 9 minutes for the queued call
#         on 2026-12-05): a renamed test, a bad option or a broken part shows before the lease.
# There:  run with carry [".gpu"]:  bash .gpu/run.sh bash benches/reference/run_gpu.sh [PART...]
#         The parts run in the order given; by default (most important first):
#           check     `cohort devices` and `cohort check` (every kernel against its CPU twin)
#           torch     cuBLAS and PyTorch's DML step (torch.json, rewritten after each measure);
#                     the ratios and issue 4's targets against every cohort JSON come at the
#                     end of the call (targets.log), so it runs early: a lease cut short still
#                     has the reference
#           peak      the tensor-core kernel's inner loop alone (benches/coop_peak.rs): its
#                     fragment products from registers, then with fragment loads from staged
#                     slices, a barrier per k-slice, the next slice's stores (all but the
#                     global reads): the ceiling the kernel stands against, cost by cost
#                     (seconds; added 2026-12-06, not yet run on a GPU)
#           narrow    the output layers' products (10 columns) on the narrow kernel (the default
#                     since 2026-12-02) against the tiled and tensor-core kernels with their K
#                     splits (COHORT_NARROW=0), f32 and f16; the steps, f32 and mixed, both ways
#           overlap   the steps, f32 and mixed, in one compute pass (COHORT_ONE_PASS=1: wgpu's
#                     barriers only, no batches of independent kernels) and with a barrier
#                     before every dispatch (COHORT_SERIAL_DISPATCHES=1), against narrow's runs
#                     (by default since 2026-12-02 the backward in batches, each a pass: a
#                     layer's gradients beside the update of the layer above); the small step
#                     with K never split
#           rows      the loss and accuracy kernels' rows reduced by subgroup shuffles, a thread
#                     per class (the default since 2026-12-02, fourth session), against
#                     workgroup memory (COHORT_ROW_SUBGROUPS=0, 16 classes per thread) and 4
#                     classes per thread (COHORT_ROW_CLASSES_PER_LANE=4): the losses bench, the
#                     small steps f32 and mixed
#           stats     what the driver made of each kernel of the large step (f32 with each tile,
#                     mixed) and the small mixed step: registers, workgroup and local (spilled)
#                     memory per pipeline (`cohort profile --driver-stats`)
#           matmul    f32 and f16 products, issue 4's shapes, all transposes; the f32 kernel's
#                     fused epilogues at the large step's shapes
#           tiles     the f32 kernel's 64 and 128 tiles on the products; one workgroup buffer
#                     against two; the large step with the tile chosen by shape
#           losses    softmax-CE and KL
#           step      the cohort step: tiny, small, large (f32), small, large (mixed); the
#                     small one with each layer's update in two dispatches
#           tune      the steps with each product's plan tuned (COHORT_MATMUL_TUNE=1), the
#                     small and large steps' tuned plans (f32 and mixed) with every
#                     candidate's time and the gain over the plans by shape, then
#                     the matmul part's products tuned (NN, f32 and f16); all the plans and
#                     timings in matmul-plans.json
#           profile   where the small and large steps' GPU time goes, kernel by kernel
#           train     mnist10k, f32 and mixed, 3 epochs, seeds 0-2
#           tests     every staged test binary (kernels against CPU twins, PyTorch parity, ...)
#           coop      the cooperative-matrix kernel's layouts
#           unroll    (not by default; first after check in a short lease) the tensor-core
#                     kernel's candidates against its default: the k-step written out
#                     (COHORT_COOP_UNROLL=1), its operands staged one f16 per store
#                     (COHORT_COOP_STORES=scalar, the way before 2026-12-04's vec4 stores),
#                     every kernel's loops marked for unrolling in SPIR-V (COHORT_UNROLL_HINTS=1)
#                     its k-slices read two steps ahead (COHORT_COOP_PREFETCH=2), 64 k
#                     per step in the small layout (COHORT_COOP_K_STEP=64), and the last
#                     four together:
#                     f16 products, the mixed steps; f32 products and steps with and without the
#                     hints, and reading two k-slices ahead (COHORT_MATMUL_PREFETCH=2); the
#                     4x4-accumulator layout written out at 4096³; the driver's
#                     statistics written out and hinted; first, the tensor-core tests of
#                     every build it times, and the hints' tests
#           tensorcores  (not by default) the tensor-core path alone: its tests, f16 products,
#                     staging and index-clamping A/Bs, the mixed and split-f32 steps
#           variants  the A/B sweeps: mixed and split-f32 products, split K, step
#                     variants, the independent-vs-mutual comparison
#           ab        wgpu's loop bounding kept (loss kernels), index clamping dropped everywhere
#         COHORT_GPU_SECONDS (default 480) bounds the whole run: each part's commands get what is
#         left, at most COHORT_GPU_COMMAND_SECONDS (150) each (so one hung command cannot take
#         the lease; the torch part 240), and parts that find under 20 s left are logged as
#         SKIPPED (out of time). A lease of 15 device minutes holds one such call (the machine's
#         start takes a minute or two). The benches write each measure to their JSON as they
#         take it, so a command cut short keeps what it measured.
# Back here: $OUT holds results.tar.gz (every log and JSON file; the device tool returns at most
#         8 files, so they travel packed, repacked after each command so that a call cut short
#         still returns what it finished) and summary.log, which ends with issue 4's targets
#         (targets.log in the results; again by hand, no PyTorch needed:
#         python3 benches/reference/torch_reference.py --from-json RESULTS/torch.json
#           --cohort-json RESULTS/cohort*.json --targets, or --no-pytorch for --from-json where
#         the torch part did not run).
#         Every A/B variant against its part's default (variants.log in the results, its list of
#         variants 3% or more faster at the end of summary.log; again by hand:
#         python3 benches/reference/torch_reference.py --cohort-json RESULTS/cohort*.json --variants)
#
# Each part runs even if an earlier one failed.
set -u
[ -d .gpu/bin ] || tar -xzf .gpu/bin.tar.gz -C .gpu || { echo "no .gpu/bin or .gpu/bin.tar.gz: stage first (see above)"; exit 1; }
dest="${OUT:-/tmp/cohort-gpu-out}"
out=$(mktemp -d /tmp/cohort-gpu-results.XXXXXX)
mkdir -p "$dest"
deadline=$(( $(date +%s) + ${COHORT_GPU_SECONDS:-480} ))
pack() {
  tar -czf "$dest/results.tar.gz.part" -C "$out" . && mv "$dest/results.tar.gz.part" "$dest/results.tar.gz"
  cp "$out/summary.log" "$dest/summary.log" 2>/dev/null
  # The reports a session reads first, beside the packed results (the device returns 8 files).
  for f in targets.log variants.log; do [ -e "$out/$f" ] && cp "$out/$f" "$dest/$f"; done
  return 0
}
export COHORT_BIN=.gpu/bin/bin-cohort
export COHORT_HARDWARE_ONLY=${COHORT_HARDWARE_ONLY:-1}
status=0
run() { # name, command...: runs it with the time left, logs it, keeps the summary lines
  local name=$1; shift
  local left=$(( deadline - $(date +%s) ))
  if [ $left -lt 20 ]; then
    echo "=== $name SKIPPED (out of time: ${left}s left of COHORT_GPU_SECONDS)" | tee -a "$out/summary.log"
    return 0
  fi
  # One command gets at most COHORT_GPU_COMMAND_SECONDS (default 150; a part may raise it for
  # its own), so that one hung or pathologically slow build cannot take the rest of the lease.
  local cap=${COMMAND_SECONDS:-${COHORT_GPU_COMMAND_SECONDS:-150}}
  [ $left -gt $cap ] && left=$cap
  echo "=== $name ($(date +%T), ${left}s for it): $*" | tee -a "$out/summary.log"
  timeout -k 5 $left "$@" >"$out/$name.log" 2>&1
  local rc=$?
  if [ "$(wc -l <"$out/$name.log")" -le 30 ]; then cat "$out/$name.log"; else grep -hE "test result|SUMMARY|whole step|max \|gpu|max \|cohort|cases passed|SKIPPED|error|panicked|epoch|ratio|targets met|worst|FAIL|device memory|MiB|timed alone|driver statistics|\.wgsl(\[[^]]*\])?::|Regist|Local|Spill" "$out/$name.log" | tail -40; fi | tee -a "$out/summary.log"
  # 124: stopped at its deadline; 137: killed 5 s after, where it did not stop.
  { [ $rc = 124 ] || [ $rc = 137 ]; } && echo "=== $name TIMED OUT (after ${left}s)" | tee -a "$out/summary.log"
  echo "=== $name exit $rc" | tee -a "$out/summary.log"
  [ $rc = 0 ] || status=1
  pack
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
# Which build is measured: write `git rev-parse HEAD > .gpu/COMMIT` when staging.
echo "staged commit: $(cat .gpu/COMMIT 2>/dev/null || echo unknown)" | tee -a "$out/summary.log"

quick="--warm-up-time 0.5 --measurement-time 1"

part_check() {
  run devices .gpu/bin/bin-cohort devices
  run check .gpu/bin/bin-cohort check
  # Without a hardware adapter every later part would measure the CPU backend: stop here.
  if grep -q "no GPU adapter" "$out/check.log"; then
    echo "=== no hardware GPU adapter: stopping (see devices.log; are the .gpu/debs above staged?)" | tee -a "$out/summary.log"
    { echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"; ls -l /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1
      ldconfig -p | grep -E 'libvulkan|libGLX_nvidia|libEGL_nvidia|libnvidia-glcore' ; } 2>&1 | tee -a "$out/summary.log"
    pack
    exit 1
  fi
}

export COHORT_BENCH_JSON="$out/cohort.json"
shapes=4096x4096x4096,1024x1024x1024,256x1024x784,1024x784x256
# Measurements more than one part takes.
profile_step() { # name, width, batch, precision, steps, more flags...: `cohort profile` of the
  # benchmarks' steps (two peers 784-width-width-10 on blobs, SGD with momentum, no weight decay)
  local name=$1 width=$2 batch=$3 prec=$4 steps=$5
  shift 5
  run "$name" .gpu/bin/bin-cohort profile --data blobs:8192,10,784 --peers "2x_-$width-$width-_" \
    --batch "$batch" --precision "$prec" --optimizer sgd --weight-decay 0 --steps "$steps" "$@"
}
f16_products() { # [FILTER]: f16 products at $shapes, F16 tensors (as cuBLAS HGEMM gets them)
  COHORT_BENCH_SHAPES=$shapes COHORT_BENCH_PRECISION=f16 \
    run bench-matmul-f16 .gpu/bin/bench-matmul --bench $quick "$@"
}
bench_step() { # name: the step bench's GPU steps (COHORT_BENCH_* as the caller sets them)
  run "$1" .gpu/bin/bench-step --bench $quick step/gpu
}
mixed_steps() {
  COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 \
    bench_step bench-step-mixed
}
split_f32() { # SHAPES: f32 products split into f16 parts on the tensor cores (three f16 products each), then the steps
  COHORT_F32_MATMUL=split-f16 COHORT_BENCH_SHAPES=$1 COHORT_BENCH_TRANSPOSES=nn COHORT_BENCH_JSON="$out/cohort-split-f32.json" \
    run bench-matmul-split-f32 .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  COHORT_F32_MATMUL=split-f16 COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-step-split-f32.json" \
    bench_step bench-step-split-f32
}
part_peak() {
  run bench-coop-peak .gpu/bin/bench-coop_peak --bench $quick
}
part_matmul() {
  COHORT_BENCH_SHAPES=$shapes run bench-matmul .gpu/bin/bench-matmul --bench $quick
  f16_products
  # The fused epilogues of the f32 kernel (the large step's hidden layers use them unsplit).
  for epilogue in bias_act act_grad; do
    COHORT_BENCH_EPILOGUE=$epilogue COHORT_BENCH_SHAPES=2b1024x4096x4096,2b1024x4096x784 COHORT_BENCH_TRANSPOSES=nn,nt \
      run bench-matmul-$epilogue .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  done
}
part_tiles() {
  # Each f32 tile forced, to check the default (64): the 128 tile ran 18x slower on the H200
  # before its accumulators were read with constant indices only (2026-11-30, unmeasured since).
  for tile in 64 128; do
    COHORT_BENCH_SHAPES=$shapes COHORT_MATMUL_TILE=$tile COHORT_BENCH_JSON="$out/cohort-tile$tile.json" \
      run bench-matmul-tile$tile .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  done
  # The 64 tile with one workgroup buffer per operand (two barriers per k-slice), as before
  # 2026-11-30 (the default now has two buffers and one barrier): products and both steps.
  COHORT_MATMUL_BUFFERS=1 COHORT_BENCH_SHAPES=$shapes COHORT_BENCH_TRANSPOSES=nn \
    COHORT_BENCH_JSON="$out/cohort-single-buffer.json" \
    run bench-matmul-single-buffer .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  COHORT_MATMUL_BUFFERS=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-step-single-buffer.json" \
    bench_step bench-step-single-buffer
  # The large step with the tile chosen by shape (128 for its hidden layers' products, 64 for
  # the output layer's; the small step has no product big enough, so it would not change).
  COHORT_MATMUL_TILE=shape COHORT_BENCH_STEPS=large COHORT_BENCH_JSON="$out/cohort-step-tileshape.json" \
    bench_step bench-step-tileshape
}
part_losses() {
  COHORT_BENCH_LOGITS=2x256x10,2x1024x10,4x1024x100 \
    run bench-losses .gpu/bin/bench-losses --bench $quick losses-gpu
}
part_step() {
  COHORT_BENCH_STEPS=tiny,small,large bench_step bench-step
  mixed_steps
  # Each layer's update in two dispatches (weights, then bias), as on software adapters, against
  # the default one (the small step: 3 dispatches fewer per step).
  COHORT_FUSED_UPDATE=0 COHORT_BENCH_STEPS=small COHORT_BENCH_JSON="$out/cohort-step-update-parts.json" \
    bench_step bench-step-update-parts
}
part_narrow() {
  # The output layers' forward (NN) and weight gradient (TN) of the small and large steps, 2
  # peers batched, with the narrow kernel (by default) and without it (COHORT_NARROW=0: the
  # 64 tile or the tensor cores, K split as chosen, then the reduction); then the steps.
  local thin=2b256x10x1024,2b1024x10x256,2b1024x10x4096,2b4096x10x1024
  for narrow in default 0; do
    for prec in f32 f16; do
      COHORT_NARROW=${narrow/default/1} COHORT_BENCH_SHAPES=$thin COHORT_BENCH_TRANSPOSES=nn,tn COHORT_BENCH_PRECISION=$prec \
        COHORT_BENCH_JSON="$out/cohort-narrow-$narrow-$prec.json" \
        run "bench-matmul-narrow-$narrow-$prec" .gpu/bin/bench-matmul --bench $quick matmul-gpu/
    done
    for prec in f32 f16; do
      COHORT_NARROW=${narrow/default/1} COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=$prec \
        COHORT_BENCH_JSON="$out/cohort-step-narrow-$narrow-$prec.json" \
        bench_step "bench-step-narrow-$narrow-$prec"
    done
  done
}
part_overlap() {
  # The steps in one compute pass (wgpu's barriers before dependent dispatches only), then with
  # every dispatch after a barrier, so that none overlaps the one before: against the narrow
  # part's default runs of the same build (the backward in batches of independent kernels, a
  # pass each), what the batches give and what running independent kernels side by side
  # gives. Then K never split: the small step's input gradient 2 x 256x1024x1024 (128 tiles) is
  # split in two by default; its batch's weight gradient and update now run beside the split's
  # partial products, so the split may no longer pay.
  for prec in f32 f16; do
    COHORT_ONE_PASS=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=$prec \
      COHORT_BENCH_JSON="$out/cohort-step-one-pass-$prec.json" bench_step "bench-step-one-pass-$prec"
    COHORT_SERIAL_DISPATCHES=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=$prec \
      COHORT_BENCH_JSON="$out/cohort-step-serial-$prec.json" bench_step "bench-step-serial-$prec"
    COHORT_SPLIT_K=1 COHORT_BENCH_STEPS=small COHORT_BENCH_PRECISION=$prec \
      COHORT_BENCH_JSON="$out/cohort-step-unsplit-$prec.json" bench_step "bench-step-unsplit-$prec"
  done
}
part_rows() {
  # The row kernels (softmax-CE, KL, the DML loss; the accuracy counts run inside the steps):
  # by default in subgroups with a thread per class; through workgroup memory (as before
  # 2026-12-02); in subgroups with 4 classes per thread. The small steps each way.
  local logits=2x256x10,2x1024x10,4x1024x100
  for way in default:: workgroup:0: four:1:4; do
    IFS=: read -r name subgroups per_lane <<<"$way"
    COHORT_ROW_SUBGROUPS=$subgroups COHORT_ROW_CLASSES_PER_LANE=$per_lane COHORT_BENCH_LOGITS=$logits \
      COHORT_BENCH_JSON="$out/cohort-losses-rows-$name.json" run "bench-losses-rows-$name" .gpu/bin/bench-losses --bench $quick losses-gpu
    for prec in f32 f16; do
      COHORT_ROW_SUBGROUPS=$subgroups COHORT_ROW_CLASSES_PER_LANE=$per_lane COHORT_BENCH_STEPS=small \
        COHORT_BENCH_PRECISION=$prec COHORT_BENCH_JSON="$out/cohort-step-rows-$name-$prec.json" \
        bench_step "bench-step-rows-$name-$prec"
    done
  done
}
part_tune() {
  # COHORT_MATMUL_TUNE=1: each product shape's plans (tiles, buffer counts, tensor-core layouts
  # at 32 and 64 k per step reading one and two slices ahead, K split or not) timed once and the
  # fastest kept, against the defaults' choices by shape
  # (the step part): the steps f32 and mixed, then the small and large steps' profiles (f32
  # and mixed), which list the plan each shape got, its gain over the shape's own plan and what
  # every candidate took, then the matmul part's
  # products (NN; f32 and f16), whose tile and layout it then chooses. The plans and every
  # candidate's time are kept in matmul-plans.json (with the results) and shared by these runs.
  local -x COHORT_MATMUL_TUNE_FILE="$out/matmul-plans.json"
  COHORT_MATMUL_TUNE=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-step-tuned.json" \
    bench_step bench-step-tuned
  COHORT_MATMUL_TUNE=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 \
    COHORT_BENCH_JSON="$out/cohort-step-mixed-tuned.json" bench_step bench-step-mixed-tuned
  for config in small:1024:256 large:4096:1024; do
    IFS=: read -r name width batch <<<"$config"
    for prec in f32 mixed; do
      COHORT_MATMUL_TUNE=1 profile_step "profile-$name-$prec-tuned" "$width" "$batch" "$prec" 20
    done
  done
  # The products of the matmul part, NN, tuned: f32, then f16 on F16 tensors.
  COHORT_MATMUL_TUNE=1 COHORT_BENCH_SHAPES=$shapes COHORT_BENCH_TRANSPOSES=nn \
    COHORT_BENCH_JSON="$out/cohort-matmul-tuned.json" run bench-matmul-tuned .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  COHORT_MATMUL_TUNE=1 COHORT_BENCH_SHAPES=$shapes COHORT_BENCH_TRANSPOSES=nn COHORT_BENCH_PRECISION=f16 \
    COHORT_BENCH_JSON="$out/cohort-matmul-f16-tuned.json" run bench-matmul-f16-tuned .gpu/bin/bench-matmul --bench $quick matmul-gpu/
}
part_stats() {
  # The driver's statistics of every pipeline a step runs (VK_KHR_pipeline_executable_properties,
  # `cohort profile --driver-stats`): whether the 128 tile's accumulators and the tensor-core
  # kernel's fragments stay in registers (no local memory) and how many registers each takes.
  for tile in 64 128; do
    COHORT_MATMUL_TILE=$tile profile_step "stats-large-f32-tile$tile" 4096 1024 f32 2 --driver-stats
  done
  for config in small:1024:256 large:4096:1024; do
    IFS=: read -r name width batch <<<"$config"
    profile_step "stats-$name-mixed" "$width" "$batch" mixed 2 --driver-stats
  done
  # The tensor-core layout of 4 subgroups with 4x4 accumulators each (64x64 per subgroup), as
  # fast as the default at 4096³ with clamping on (call 1): does it spill?
  COHORT_COOP_LAYOUT=2x2:4x4 profile_step "stats-large-mixed-2x2:4x4" 4096 1024 mixed 2 --driver-stats
}
part_profile() {
  # `cohort profile`: every dispatch of 20 steps timed alone, per kernel and shape, f32 and mixed.
  for config in small:1024:256 large:4096:1024; do
    IFS=: read -r name width batch <<<"$config"
    for prec in f32 mixed; do
      profile_step "profile-$name-$prec" "$width" "$batch" "$prec" 20
    done
  done
}
part_torch() {
  python3 -c "import torch" 2>/dev/null || { echo "=== torch SKIPPED (no PyTorch here)" | tee -a "$out/summary.log"; return 0; }
  # Ratios to every cohort JSON of this call so far, and issue 4's targets with the best variant
  # of each. The shapes are the matmul part's (the training shapes with batch 1024 too).
  # Up to 4 minutes (about 30 s on the H200 in the second lease).
  COMMAND_SECONDS=240 run torch python3 benches/reference/torch_reference.py --json "$out/torch.json" \
    --iters 20 --dml-iters 30
}
part_train() {
  [ -d .gpu/data/mnist10k ] || { echo "=== train SKIPPED (no .gpu/data/mnist10k)" | tee -a "$out/summary.log"; return 0; }
  # Mixed precision against f32 over three seeds (one seed cannot tell a gap from noise).
  for seed in 0 1 2; do
    for prec in f32 mixed; do
      run train-mnist10k-$prec-seed$seed .gpu/bin/bin-cohort train --device gpu --data idx:.gpu/data/mnist10k \
        --peers 2x_-1024-1024-_ --batch 256 --epochs 3 --precision $prec --seed $seed
    done
  done
}
part_tests() {
  # As in CI: a GPU test that finds no adapter fails instead of skipping. Not the Khronos
  # validation test: the GPU machine has no validation layer, and Debian's (1.3.239) predates
  # the cooperative matrices the H200's device enables.
  # Not test-examples: stage_gpu.sh leaves the example programs out, for room, and under CI
  # their test fails for want of them (the examples run in CI and on lavapipe).
  export CI=true
  for t in .gpu/bin/test-*; do
    [ "$(basename "$t")" = test-examples ] && { echo "=== test-examples left out (examples not staged)" | tee -a "$out/summary.log"; continue; }
    run "$(basename "$t")" "$t" --nocapture --test-threads 4 --skip khronos_validation
  done
  [ -x .gpu/bin/lib-cohort-test ] && run lib-cohort-test .gpu/bin/lib-cohort-test
}
part_tensorcores() {
  # The tensor-core path alone, for a short lease after a change to it (after part check, whose
  # self-test says whether f16 products run on it): f16 products with the operands staged as
  # stored and all k-contiguous, with wgpu's index clamping (off by default in this kernel), the
  # steps that use it, then its kernel tests.
  f16_products matmul-gpu/
  COHORT_COOP_STAGING=k COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 COHORT_BENCH_PRECISION=f16 \
    COHORT_BENCH_JSON="$out/cohort-coop-k-staging.json" \
    run bench-matmul-f16-k-staging .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  COHORT_UNCHECKED_INDEXING=0 COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 COHORT_BENCH_TRANSPOSES=nn \
    COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-coop-checked.json" \
    run bench-matmul-f16-checked .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  mixed_steps
  split_f32 4096x4096x4096,256x1024x784
  CI=true run test-kernels-coop .gpu/bin/test-kernels --nocapture --test-threads 8 matmul_coop_on_the_adapters
}
part_unroll() {
  # The tensor-core kernel's candidates against its default in the same call: its k-step written
  # out for every fragment, accumulators indexed by constants (COHORT_COOP_UNROLL=1), and its
  # operands staged one f16 per store (COHORT_COOP_STORES=scalar; four per vec4 store is the
  # default since 2026-12-04, unmeasured on a GPU): f16 products (F16 tensors), the mixed steps.
  # Then the 2x2:4x4 layout written out at 4096³ (a subgroup of FR x FC accumulators loads
  # FR + FC fragments from workgroup memory for FR·FC products: 8 for 16 against the default's
  # 6 for 8), what the driver made of the large mixed step's pipelines written out (registers,
  # local memory: compare the stats part's stats-large-mixed).
  # The kernels with their loops marked for unrolling (COHORT_UNROLL_HINTS=1: SPIR-V that cohort
  # writes itself, every loop without a barrier or counting to a pipeline constant marked
  # Unroll) are timed here too, and for the f32 kernel as well (f32 NN products and steps, with
  # and without): if NVIDIA's compiler left loops over register arrays rolled (the accumulator
  # switches' 1.8x suggests it did), the arrays live in local memory and the hints bring them
  # back (stats-large-*-hints against the stats part's).
  # The k-slices read two steps ahead (COHORT_COOP_PREFETCH=2: two register sets, so that each
  # global read has two steps' products to arrive instead of one) are a fifth build; 64 k per
  # step (COHORT_COOP_K_STEP=64: half the steps and barriers, in the small layout only, the
  # big one's slices would not fit 48 KiB) a sixth, on the products and step that use the small
  # layout; and the four that could add up (written out, hinted, two slices ahead, 64 deep)
  # together a seventh.
  # First the builds timed below against the CPU twin on the adapter's own tensor cores (the
  # test forces each: written out, scalar stores, k-contiguous staging, two slices ahead, 64
  # deep; in each layout),
  # so that a wrong build is known before its time is read.
  CI=true run test-kernels-coop-builds .gpu/bin/test-kernels --nocapture --test-threads 8 matmul_coop_on_the_adapters
  # The products timed in every build (kstep64 takes the small layout's only).
  local products=4096x4096x4096,1024x1024x1024,256x1024x784
  for build in default unroll scalar-stores hints prefetch2 kstep64 combined; do
    local unroll=0 stores=wide hints=0 prefetch=1 kstep=32
    local sq=$products steps=small,large
    [ $build = unroll ] && unroll=1
    [ $build = scalar-stores ] && stores=scalar
    [ $build = hints ] && hints=1
    [ $build = prefetch2 ] && prefetch=2
    [ $build = kstep64 ] && kstep=64 sq=1024x1024x1024,256x1024x784 steps=small
    [ $build = combined ] && unroll=1 hints=1 prefetch=2 kstep=64
    local -x COHORT_COOP_UNROLL=$unroll COHORT_COOP_STORES=$stores COHORT_UNROLL_HINTS=$hints \
      COHORT_COOP_PREFETCH=$prefetch COHORT_COOP_K_STEP=$kstep
    COHORT_BENCH_SHAPES=$sq COHORT_BENCH_TRANSPOSES=nn COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-coop-$build.json" \
      run "bench-matmul-f16-$build" .gpu/bin/bench-matmul --bench $quick matmul-gpu/
    COHORT_BENCH_STEPS=$steps COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-step-mixed-$build.json" \
      bench_step "bench-step-mixed-$build"
  done
  unset COHORT_COOP_UNROLL COHORT_COOP_STORES COHORT_UNROLL_HINTS COHORT_COOP_PREFETCH COHORT_COOP_K_STEP
  # The f32 kernel: by default (hints0), hinted (hints1), and reading its k-slices two ahead
  # (COHORT_MATMUL_PREFETCH=2, aimed at the small step's products, which give each compute unit
  # one or two workgroups, too few to hide a global read behind another's work).
  for build in hints0 hints1 prefetch2; do
    local -x COHORT_UNROLL_HINTS=0 COHORT_MATMUL_PREFETCH=1
    [ $build = hints1 ] && COHORT_UNROLL_HINTS=1
    [ $build = prefetch2 ] && COHORT_MATMUL_PREFETCH=2
    COHORT_BENCH_SHAPES=$products,1024x784x256 COHORT_BENCH_TRANSPOSES=nn \
      COHORT_BENCH_JSON="$out/cohort-f32-$build.json" \
      run "bench-matmul-f32-$build" .gpu/bin/bench-matmul --bench $quick matmul-gpu/
    COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-step-f32-$build.json" \
      bench_step "bench-step-f32-$build"
  done
  unset COHORT_UNROLL_HINTS COHORT_MATMUL_PREFETCH
  # Issue 4's f32 targets at the training shapes NT and TN (the builds above time NN only).
  COHORT_BENCH_SHAPES=256x1024x784,1024x784x256 COHORT_BENCH_TRANSPOSES=nt,tn \
    COHORT_BENCH_JSON="$out/cohort-f32-training.json" \
    run bench-matmul-f32-training .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  COHORT_UNROLL_HINTS=1 profile_step stats-large-mixed-hints 4096 1024 mixed 2 --driver-stats
  COHORT_UNROLL_HINTS=1 profile_step stats-large-f32-hints 4096 1024 f32 2 --driver-stats
  CI=true run test-kernels-hints .gpu/bin/test-kernels --nocapture unrolling_hints
  COHORT_COOP_UNROLL=1 COHORT_COOP_LAYOUT=2x2:4x4 COHORT_BENCH_SHAPES=4096x4096x4096 COHORT_BENCH_TRANSPOSES=nn \
    COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-coop-unroll-2x2-4x4.json" \
    run bench-matmul-f16-unroll-2x2-4x4 .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  COHORT_COOP_UNROLL=1 profile_step stats-large-mixed-unrolled 4096 1024 mixed 2 --driver-stats
}
part_coop() {
  # The cooperative-matrix kernel's layouts (subgroup grid : accumulators per subgroup), f16:
  # 64 tiles with 4 and 2 subgroups, then 128 tiles with 8 subgroups of 2x4 and 4x2 and 4
  # subgroups of 4x4 accumulators. The default picks 2x2:2x2 or 4x2:2x4 by shape.
  for layout in 2x2:2x2 1x2:4x2 4x2:2x4 2x4:4x2 2x2:4x4; do
    COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 COHORT_BENCH_TRANSPOSES=nn COHORT_BENCH_PRECISION=f16 \
      COHORT_COOP_LAYOUT=$layout COHORT_BENCH_JSON="$out/cohort-coop-${layout/:/-}.json" \
      run "bench-matmul-coop-${layout/:/-}" .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  done
}
part_variants() {
  # Mixed: f32 tensors rounded to f16 as loaded, against the F16 tensors of the matmul part.
  COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 COHORT_BENCH_PRECISION=mixed COHORT_BENCH_TRANSPOSES=nn \
    run bench-matmul-mixed .gpu/bin/bench-matmul --bench $quick matmul-gpu/
  split_f32 "$shapes"
  # The mixed step without tensor cores (the f32 kernel rounding to f16), and without the F16
  # weight copies and activations (f32 tensors rounded as loaded).
  COHORT_COOP=off COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-mixed-no-coop.json" \
    bench_step bench-step-mixed-no-coop
  COHORT_F16_TENSORS=0 COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-mixed-f32-tensors.json" \
    bench_step bench-step-mixed-f32-tensors
  # Split K on products with few tiles (the output layers' forward, 10 columns, on the tiled
  # kernels: COHORT_NARROW=0; a hidden layer's forward, 128 tiles): as chosen, then never split
  # (COHORT_SPLIT_K=1), f32 and f16; and the steps without splits.
  thin=2b256x10x1024,2b1024x10x4096,2b256x1024x1024
  for s in auto 1; do
    for prec in f32 f16; do
      COHORT_NARROW=0 COHORT_SPLIT_K=${s/auto/} COHORT_BENCH_SHAPES=$thin COHORT_BENCH_TRANSPOSES=nn COHORT_BENCH_PRECISION=$prec \
        COHORT_BENCH_JSON="$out/cohort-splitk-$s-$prec.json" \
        run "bench-matmul-splitk-$s-$prec" .gpu/bin/bench-matmul --bench $quick matmul-gpu/
    done
  done
  COHORT_SPLIT_K=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-step-splitk-off.json" \
    bench_step bench-step-splitk-off
  COHORT_SPLIT_K=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-step-mixed-splitk-off.json" \
    bench_step bench-step-mixed-splitk-off
  if [ -d .gpu/data/mnist10k ]; then
    COHORT_F32_MATMUL=split-f16 \
      run train-mnist10k-split-f32 .gpu/bin/bin-cohort train --device gpu --data idx:.gpu/data/mnist10k --peers 2x_-1024-1024-_ --batch 256 --epochs 3
    run compare-mnist10k .gpu/bin/bin-cohort compare --device gpu --data idx:.gpu/data/mnist10k --peers 2x128 --epochs 10 --seeds 3
  fi
}
part_ab() {
  # wgpu's loop-bounding counters kept everywhere (the default drops them), on the loss kernels
  # against the losses part (not on the steps: the matmuls ran 28x slower with them on the H200).
  COHORT_LOOP_BOUNDING=1 COHORT_BENCH_LOGITS=2x256x10,4x1024x100 COHORT_BENCH_JSON="$out/cohort-loop-bounding-1.json" \
    run bench-losses-loop-bounding-1 .gpu/bin/bench-losses --bench $quick losses-gpu
  # wgpu's index clamping dropped in every kernel (by default only in the tensor-core matmul).
  COHORT_UNCHECKED_INDEXING=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 COHORT_BENCH_TRANSPOSES=nn \
    COHORT_BENCH_JSON="$out/cohort-unchecked.json" \
    run bench-unchecked bash -c ".gpu/bin/bench-step --bench $quick step/gpu && .gpu/bin/bench-matmul --bench $quick matmul-gpu/"
}
for part in ${*:-check torch peak narrow overlap rows stats matmul tiles losses step tune profile train tests coop variants ab}; do
  declare -F "part_$part" >/dev/null || { echo "unknown part: $part" | tee -a "$out/summary.log"; status=1; continue; }
  "part_$part"
done
# Every variant against its baseline, measure by measure (python3 only, no PyTorch): the
# variants.log to read first, its list of variants faster than their defaults in the summary.
jsons=("$out"/cohort*.json)
if [ -e "${jsons[0]}" ] && [ ${#jsons[@]} -ge 2 ] && command -v python3 >/dev/null; then
  python3 benches/reference/torch_reference.py --cohort-json "${jsons[@]}" --variants >"$out/variants.log" 2>&1
  sed -n '/^Faster than\|^No variant/,$p' "$out/variants.log" | tee -a "$out/summary.log"
fi
# Issue 4's targets over every cohort JSON of the call: against this call's PyTorch where the
# torch part ran (the ratios to each file too), else the absolute goals only.
if [ -e "${jsons[0]}" ] && command -v python3 >/dev/null; then
  if [ -e "$out/torch.json" ]; then pytorch=(--from-json "$out/torch.json"); else pytorch=(--no-pytorch); fi
  python3 benches/reference/torch_reference.py "${pytorch[@]}" --cohort-json "${jsons[@]}" --targets >"$out/targets.log" 2>&1
  sed -n "/^Issue 4's targets/,\$p" "$out/targets.log" | tee -a "$out/summary.log"
fi
pack
exit $status
