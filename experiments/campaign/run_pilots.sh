#!/usr/bin/env bash
# Run the campaign pilots one after the other, each from a git worktree pinned at the current commit
# (so edits to src/ never change a running job), with one OpenMP thread each (equal CPU time is the
# comparison; thread count changes the CPU cost of an iteration). Usage, from the repository root:
#   bash experiments/campaign/run_pilots.sh RUNS_DIR pilot.yaml [pilot.yaml ...]
# Each pilot writes RUNS_DIR/<config stem>/ (resumed when its state.pt exists).
set -euo pipefail
mkdir -p "$1"; runs=$(realpath "$1"); shift
commit=$(git rev-parse HEAD)
tree="$(dirname "$(git rev-parse --show-toplevel)")/wt/pilots-$commit"
[ -d "$tree" ] || git worktree add --detach "$tree" "$commit" >/dev/null
# The configs name the data as ../shared/...: give the worktree's parent a link to it.
[ -e "$(dirname "$tree")/shared" ] || ln -s "$(realpath ../shared)" "$(dirname "$tree")/shared"
for config in "$@"; do
    name=$(basename "$config" .yaml)
    out="$runs/$name"
    resume=()
    [ -f "$out/state.pt" ] && resume=(--resume "$out")
    echo "== $name (commit $commit) -> $out"
    (cd "$tree" && OMP_NUM_THREADS=1 PYTHONPATH="$tree/src" python -m llflow train "$config" --output "$out" "${resume[@]}") \
        >> "$runs/$name.console.log" 2>&1
done
