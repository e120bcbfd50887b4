#!/usr/bin/env bash
# Stages everything run_gpu.sh needs on the GPU machine into .gpu/ (git ignores it), in one
# command, from the project root with ../shared beside it:
#
#   bash benches/reference/stage_gpu.sh
#
# then `run` with carry [".gpu"]: bash .gpu/run.sh bash benches/reference/run_gpu.sh [PART...]
# It builds the release tests, benches and the cohort binary and stages them with the Vulkan
# loader (../shared/gpu/stage.sh), adds mnist10k (the train part's data), the GL vendor-neutral
# libraries (NVIDIA's Vulkan driver needs them there: with the loader alone, on 2026-11-30, wgpu
# found no adapter; `.gpu/run.sh` installs every .deb in .gpu/debs), packs the executables (86
# MiB on 2026-12-04, over the 64 MiB the device carries with the tree; packed, 34 MiB;
# run_gpu.sh unpacks them) and writes the staged commit to .gpu/COMMIT.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
[ -x ../shared/gpu/stage.sh ] || { echo "no ../shared/gpu/stage.sh beside the project" >&2; exit 1; }
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
  echo "warning: uncommitted changes: .gpu/COMMIT names HEAD, not what is built" >&2
rm -rf .gpu/bin .gpu/bin.tar.gz
../shared/gpu/stage.sh test bench bin-cohort
mkdir -p .gpu/data
rm -rf .gpu/data/mnist10k
cp -r ../shared/data/mnist10k .gpu/data/
if ! ls .gpu/debs/libglvnd0_*.deb >/dev/null 2>&1; then
  (cd .gpu/debs && apt-get -oAPT::Architecture=amd64 -oAPT::Architectures=amd64 \
    -oDir::State::Lists=/tmp/amd64-lists download libglvnd0 libgl1 libglx0 libegl1 libgles2 libopengl0)
fi
for d in libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libgles2 libopengl0; do
  ls .gpu/debs/${d}_*.deb >/dev/null 2>&1 || { echo "no .gpu/debs/${d}_*.deb: the GPU machine would find no adapter" >&2; exit 1; }
done
tar -czf .gpu/bin.tar.gz -C .gpu bin && rm -r .gpu/bin
git rev-parse HEAD >.gpu/COMMIT
ls .gpu/debs
du -sh .gpu | sed 's/^/to carry: /'
[ "$(du -sm .gpu | cut -f1)" -lt 60 ] || { echo ".gpu is over 60 MiB: the device carries at most 64 MiB with the tree" >&2; exit 1; }
