#!/usr/bin/env bash
# Everything cohort measures on a real GPU, in a few calls, for the GPU machine (no Rust there).
#
# Here:   ../shared/gpu/stage.sh test bench bin-cohort && mkdir -p .gpu/data && cp -r ../shared/data/mnist10k .gpu/data/
#         tar -czf .gpu/bin.tar.gz -C .gpu bin && rm -r .gpu/bin
#         (the executables staged were 60 MiB on 2026-11-25, too near the 64 MiB the device
#         carries with the tree; packed, 25 MiB. This script unpacks them on the GPU machine.)
# There:  run with carry [".gpu"]:  bash .gpu/run.sh bash benches/reference/run_gpu.sh [PART...]
#         PART: tests, matmul, losses, step, torch, train, ab (default: all, in that order). The
#         whole set needs more than one 10-minute call. Criterion's settings below give about
#         5 minutes of measuring to "matmul" alone (~90 benchmarks of 1 s warm-up and 2-3 s
#         each; an estimate from the settings, not a measurement), so: "tests losses step" in
#         one call, "matmul torch" in the next, "train ab" in a third. The ratios printed by
#         "torch" use the cohort JSON files of the same call.
# Back here: each call's $OUT holds results.tar.gz (every log and JSON file; the device tool
#         returns at most 8 files, so they travel packed, repacked after each part so that a
#         call cut short still returns what it finished) and summary.log. Unpack each call into
#         a folder of its own and compare across calls, with issue 4's targets (no PyTorch needed):
#         python3 benches/reference/torch_reference.py --from-json CALL2/torch.json
#           --cohort-json CALL*/cohort*.json --targets     (CALL2: the call that ran "torch")
#
# The logs and JSON: the test binaries' output (max error per kernel), kernel and step
# benchmarks, the PyTorch/cuBLAS reference, their ratios, and the epoch time of training on
# mnist10k. Each part runs even if an earlier one failed.
set -u
[ -d .gpu/bin ] || tar -xzf .gpu/bin.tar.gz -C .gpu || { echo "no .gpu/bin or .gpu/bin.tar.gz: stage first (see above)"; exit 1; }
dest="${OUT:-/tmp/cohort-gpu-out}"
out=$(mktemp -d /tmp/cohort-gpu-results.XXXXXX)
mkdir -p "$dest"
pack() {
  tar -czf "$dest/results.tar.gz.part" -C "$out" . && mv "$dest/results.tar.gz.part" "$dest/results.tar.gz"
  cp "$out/summary.log" "$dest/summary.log" 2>/dev/null
  return 0
}
export COHORT_BIN=.gpu/bin/bin-cohort
export COHORT_HARDWARE_ONLY=${COHORT_HARDWARE_ONLY:-1}
status=0
run() { # name, command...
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$out/summary.log"
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  grep -hE "test result|SUMMARY|max \|gpu|max \|cohort|cases passed|SKIPPED|error|panicked|epoch|ratio|targets met" "$out/$name.log" | tail -40 | tee -a "$out/summary.log"
  echo "=== $name exit $rc" | tee -a "$out/summary.log"
  [ $rc = 0 ] || status=1
  pack
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"

parts=${*:-tests matmul losses step torch train ab}
want() { case " $parts " in *" $1 "*) return 0;; *) return 1;; esac; }

if want tests; then
  for t in .gpu/bin/test-*; do
    run "$(basename "$t")" "$t" --nocapture --test-threads 1
  done
  [ -x .gpu/bin/lib-cohort-test ] && run lib-cohort-test .gpu/bin/lib-cohort-test
fi

export COHORT_BENCH_JSON="$out/cohort.json"
shapes=4096x4096x4096,1024x1024x1024,256x1024x784,1024x784x256,256x1024x1024,1024x1024x256
if want matmul; then
  COHORT_BENCH_SHAPES=$shapes \
    run bench-matmul .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 3
  # f16: F16 tensors (as cuBLAS HGEMM gets them); mixed: f32 tensors rounded as loaded.
  COHORT_BENCH_SHAPES=$shapes COHORT_BENCH_PRECISION=f16 \
    run bench-matmul-f16 .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 3
  COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 COHORT_BENCH_PRECISION=mixed \
    run bench-matmul-mixed .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 2 matmul-gpu/NN
  # f32 products split into f16 parts on the tensor cores (three f16 products each), against
  # the f32 kernel of the first run.
  COHORT_F32_MATMUL=split-f16 COHORT_BENCH_SHAPES=$shapes COHORT_BENCH_JSON="$out/cohort-split-f32.json" \
    run bench-matmul-split-f32 .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 2 matmul-gpu/NN
  # Each f32 tile forced, to check the default's choice (their JSON goes to files of their own).
  for tile in 64 128; do
    COHORT_BENCH_SHAPES=$shapes COHORT_MATMUL_TILE=$tile COHORT_BENCH_JSON="$out/cohort-tile$tile.json" \
      run bench-matmul-tile$tile .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 2 matmul-gpu/NN
  done
  # Split K on products with few tiles (the output layers' forward, 10 columns; a hidden layer's
  # forward, 128 tiles): as chosen, then never split (COHORT_SPLIT_K=1), f32 and f16.
  thin=2b256x10x1024,2b1024x10x4096,2b256x1024x1024
  for s in auto 1; do
    for prec in f32 f16; do
      COHORT_SPLIT_K=${s/auto/} COHORT_BENCH_SHAPES=$thin COHORT_BENCH_PRECISION=$prec \
        COHORT_BENCH_JSON="$out/cohort-splitk-$s-$prec.json" \
        run "bench-matmul-splitk-$s-$prec" .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 2 matmul-gpu/NN
    done
  done
  # The cooperative-matrix kernel's layouts (subgroup grid : accumulators per subgroup), f16:
  # 64 tiles with 4 and 2 subgroups, then 128 tiles with 8 subgroups of 2x4 and 4x2 and 4
  # subgroups of 4x4 accumulators. The default picks 2x2:2x2 or 4x2:2x4 by shape.
  for layout in 2x2:2x2 1x2:4x2 4x2:2x4 2x4:4x2 2x2:4x4; do
    COHORT_BENCH_SHAPES=4096x4096x4096,1024x1024x1024,256x1024x784 COHORT_BENCH_PRECISION=f16 \
      COHORT_COOP_LAYOUT=$layout COHORT_BENCH_JSON="$out/cohort-coop-${layout/:/-}.json" \
      run "bench-matmul-coop-${layout/:/-}" .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 2 matmul-gpu/NN
  done
fi
if want losses; then
  COHORT_BENCH_LOGITS=2x256x10,2x1024x10,4x1024x100 \
    run bench-losses .gpu/bin/bench-losses --bench --warm-up-time 1 --measurement-time 2
fi
if want step; then
  COHORT_BENCH_STEPS=tiny,small,large \
    run bench-step .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
  COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 \
    run bench-step-mixed .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
  # The same mixed-precision steps without tensor cores (the f32 kernel rounding to f16), and
  # without the F16 weight copies and activations (f32 tensors rounded as loaded).
  COHORT_COOP=off COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-mixed-no-coop.json" \
    run bench-step-mixed-no-coop .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
  COHORT_F16_TENSORS=0 COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-mixed-f32-tensors.json" \
    run bench-step-mixed-f32-tensors .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
  # The f32 steps with every f32 product split into f16 parts on the tensor cores.
  COHORT_F32_MATMUL=split-f16 COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-step-split-f32.json" \
    run bench-step-split-f32 .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
  # Without split K (the default splits products with few tiles: the output layers, and the
  # hidden layers of the small step), f32 and mixed.
  COHORT_SPLIT_K=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-step-splitk-off.json" \
    run bench-step-splitk-off .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
  COHORT_SPLIT_K=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_PRECISION=f16 COHORT_BENCH_JSON="$out/cohort-step-mixed-splitk-off.json" \
    run bench-step-mixed-splitk-off .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
fi
if want torch && python3 -c "import torch" 2>/dev/null; then
  # Ratios to every cohort JSON of this call, and issue 4's targets with the best variant of each.
  jsons=("$out"/cohort*.json)
  [ -e "${jsons[0]}" ] || jsons=()
  run torch python3 benches/reference/torch_reference.py --json "$out/torch.json" --targets \
    ${jsons[@]:+--cohort-json "${jsons[@]}"}
fi
if want train && [ -d .gpu/data/mnist10k ]; then
  run train-mnist10k .gpu/bin/bin-cohort train --data idx:.gpu/data/mnist10k --peers 2x_-1024-1024-_ --batch 256 --epochs 3
  run train-mnist10k-mixed .gpu/bin/bin-cohort train --data idx:.gpu/data/mnist10k --peers 2x_-1024-1024-_ --batch 256 --epochs 3 --precision mixed
  COHORT_F32_MATMUL=split-f16 \
    run train-mnist10k-split-f32 .gpu/bin/bin-cohort train --data idx:.gpu/data/mnist10k --peers 2x_-1024-1024-_ --batch 256 --epochs 3
  run compare-mnist10k .gpu/bin/bin-cohort compare --data idx:.gpu/data/mnist10k --peers 2x128 --epochs 10 --seeds 3
fi
if want ab; then
  # wgpu's loop-bounding counters forced on and off everywhere (the default is per kernel).
  for lb in 1 0; do
    COHORT_LOOP_BOUNDING=$lb COHORT_BENCH_STEPS=small,large COHORT_BENCH_JSON="$out/cohort-loop-bounding-$lb.json" \
      run bench-step-loop-bounding-$lb .gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3
    COHORT_LOOP_BOUNDING=$lb COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 COHORT_BENCH_LOGITS=2x256x10,4x1024x100 \
      COHORT_BENCH_JSON="$out/cohort-loop-bounding-$lb.json" \
      run bench-kernels-loop-bounding-$lb bash -c ".gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 2 matmul-gpu/NN && .gpu/bin/bench-losses --bench --warm-up-time 1 --measurement-time 2 losses-gpu"
  done
  # wgpu's index clamping dropped (off by default).
  COHORT_UNCHECKED_INDEXING=1 COHORT_BENCH_STEPS=small,large COHORT_BENCH_SHAPES=4096x4096x4096,256x1024x784 \
    COHORT_BENCH_JSON="$out/cohort-unchecked.json" \
    run bench-unchecked bash -c ".gpu/bin/bench-step --bench --warm-up-time 1 --measurement-time 3 && .gpu/bin/bench-matmul --bench --warm-up-time 1 --measurement-time 2 matmul-gpu/NN"
fi
pack
exit $status
