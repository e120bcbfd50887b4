#!/usr/bin/env bash
# Rehearses run_gpu.sh on this machine (lavapipe, or whatever adapter it has) before a device
# lease is spent on it: the script itself runs unchanged, over wrappers in place of the staged
# executables that scale issue 4's shapes down (4096 -> 64, 1024 -> 32, 784 -> 24, 256 -> 16,
# 8192 -> 512; the benches' small and large steps -> tiny) and list the tests a filter selects
# instead of running them (failing where a filter selects none). So every part's commands, its
# options and environment, its test filters, the results' packing and the variant report are
# checked in minutes; the times mean nothing.
#
#   bash benches/reference/rehearse_gpu.sh [PART...]     (run_gpu.sh's parts; default: its own)
#   COHORT_COOP=emulate bash benches/reference/rehearse_gpu.sh unroll   (the tensor-core builds too,
#                                                         in plain WGSL: slow to compile on lavapipe;
#     the commands that force the 2x2:4x4 layout then fail here, its 44 KiB of workgroup memory
#     being over lavapipe's 32: on 2026-12-05 `check unroll tune` so took 27 minutes, every other
#     command exit 0; the variants and tensorcores parts' split-f32 commands need it too, else
#     they fail here for want of tensor cores)
#
# Needs cargo (it builds the release executables, as ../shared/gpu/stage.sh does), python3 and
# perl. Prints where the results are and exits non-zero if any command of the call failed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
work=$(mktemp -d /tmp/cohort-rehearsal.XXXXXX)
mkdir -p "$work/.gpu/bin" "$work/.gpu/data" "$work/path" "$work/out"
ln -s "$repo/benches" "$work/benches"
[ -d "$repo/../shared/data/mnist10k" ] && ln -s "$repo/../shared/data/mnist10k" "$work/.gpu/data/mnist10k"
echo "$(git rev-parse HEAD) (rehearsal)" >"$work/.gpu/COMMIT"

# Runs the real executable ($2, staged as $1) with the shapes in its arguments and environment
# scaled down; a test executable lists what its filter selects instead.
cat >"$work/.gpu/shrink" <<'SHRINK'
#!/usr/bin/env bash
staged=$1 real=$2; shift 2
scale() {
  perl -pe 's/(?<![0-9])4096(?![0-9])/64/g; s/(?<![0-9])1024(?![0-9])/32/g;
            s/(?<![0-9])784(?![0-9])/24/g; s/(?<![0-9])256(?![0-9])/16/g;
            s/(?<![0-9])8192(?![0-9])/512/g' <<<"$1"
}
for var in COHORT_BENCH_SHAPES COHORT_BENCH_LOGITS; do
  [ -n "${!var:-}" ] && export "$var=$(scale "${!var}")"
done
[ -n "${COHORT_BENCH_STEPS:-}" ] && export COHORT_BENCH_STEPS=$(sed -E 's/small|large/tiny/g' <<<"$COHORT_BENCH_STEPS")
# The tensor-core probes: a few steps of two workgroups (on lavapipe, the emulated operations).
[ "$staged" = bench-coop_peak ] && export COHORT_PEAK_STEPS=16 COHORT_PEAK_GROUPS=2
args=()
for a in "$@"; do args+=("$(scale "$a")"); done
case "$staged" in
  test-*|lib-*-test)
    listed=$("$real" "${args[@]}" --list) || exit 1
    echo "$listed"
    count=$(grep -c ": test$" <<<"$listed" || true)
    [ "$count" -gt 0 ] || { echo "no test matches: $*"; exit 1; }
    echo "test result: ok. $count listed (rehearsal: not run)" ;;
  *) exec "$real" "${args[@]}" ;;
esac
SHRINK
chmod +x "$work/.gpu/shrink"
printf '#!/bin/sh\necho "rehearsal: no NVIDIA GPU"\n' >"$work/path/nvidia-smi"
chmod +x "$work/path/nvidia-smi"

# The executables, named as ../shared/gpu/stage.sh names them (bench-matmul, test-kernels,
# bin-cohort, ...), each a wrapper around the build's own.
cargo build --release --all-targets --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
bin_dir = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kind, name = m["target"]["kind"][0], m["target"]["name"]
    test = m.get("profile", {}).get("test", False)
    staged = os.path.join(bin_dir, "%s-%s%s" % (kind, name, "-test" if test and kind in ("lib", "bin") else ""))
    with open(staged, "w") as f:
        f.write("#!/bin/sh\nexec \"$(dirname \"$0\")/../shrink\" %s %s \"$@\"\n" % (os.path.basename(staged), m["executable"]))
    os.chmod(staged, 0o755)
' "$work/.gpu/bin"
ls "$work/.gpu/bin" | tr '\n' ' '
echo

cd "$work"
rc=0
PATH="$work/path:$PATH" OUT="$work/out" COHORT_HARDWARE_ONLY=0 COHORT_GPU_COMMAND_SECONDS="${COHORT_GPU_COMMAND_SECONDS:-3600}" \
  COHORT_GPU_SECONDS="${COHORT_GPU_SECONDS:-3600}" bash benches/reference/run_gpu.sh "$@" || rc=$?
echo
echo "rehearsal results: $work/out (summary.log, results.tar.gz); run_gpu.sh exit $rc"
grep -E "^=== .* exit [1-9]|TIMED OUT|SKIPPED" "$work/out/summary.log" || echo "every command exited 0"
exit $rc
