#!/bin/bash
# Before (commit 7d1d4e9) / after benches with the same commands; writes bench_before_after.txt.
# Needs a git checkout with history and the project's .venv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
old=$(mktemp -d)
git -C "$repo" worktree add -q "$old/src" 7d1d4e9
mkdir -p "$old/pkg" && cp -r "$old/src/clbench" "$old/pkg/clbench"
cp -r "$old/src/strategies" "$old/pkg/clbench/strategies" && cp -r "$old/src/datasets" "$old/pkg/clbench/datasets"
cd "$old"
OLD="env PYTHONPATH=$old/pkg OMP_NUM_THREADS=1 $repo/.venv/bin/python -m clbench.cli"
NEW="env OMP_NUM_THREADS=1 $repo/.venv/bin/python -m clbench.cli"
C="--set device=cpu --set nf=20 --set train_per_class=200 --set test_images=2000 --set strategies=[er,metasp]"
F="--set data_paths=[device] --set precision=bf16 --set channels_last=true"
I="--set influences=[meta,meta_lastlayer]"
{
  echo "## loop fp32 before"; $OLD bench loop $C
  echo "## loop fp32 after"; $NEW bench loop $C $I
  echo "## loop bf16+CL before"; $OLD bench loop $C $F
  echo "## loop bf16+CL after"; $NEW bench loop $C $F $I
  echo "## loop bf16+CL after, online shape 10+10"; $NEW bench loop $C $F $I --set batch_size=10 --set replay_batch_size=10
  echo "## step fp32 before"; $OLD bench step --set device=cpu --set nf=20 --set repeats=5
  echo "## step fp32 after"; $NEW bench step --set device=cpu --set nf=20 --set repeats=5
  echo "## step bf16 after"; $NEW bench step --set device=cpu --set nf=20 --set repeats=5 --set precision=bf16
} 2>/dev/null > "$repo/results/speed_cpu/bench_before_after.txt"
git -C "$repo" worktree remove --force "$old/src"
