#!/usr/bin/env bash
# The GPU measurements the open issues ask for, in parts that each fit one call of the
# lent device machine (10 minutes a call, 30 minutes of device time a session).
#
#   bash benchmarks/gpu_session.sh PART [--quick]
#
# PART:
#   bench   issue 7: structured layers against dense (bf16, widths 4096-16384),
#           the BTT layouts, and the MPS classifier step against TensorKrowch on cuda.
#   sweeps  issue 19: the bond update against the GEMM rate (benchmarks/mps_sweep.py),
#           then the sweep runs of the mps_bond_dim figure
#           (configs/mps_mnist_sweep.py, max_bond 40, 80, 120), smallest first.
# --quick: smoke sizes (seconds on a CPU): checks the script end to end before a session
#          spends device time on it.
#
# Results go to $OUT (the device machine's return folder; default benchmarks/out/gpu):
# the benchmarks' .json / .md, and each run directory without its checkpoints (copy
# those into runs/<config>/<arg>/seed0/ here and `tnlib figures NAME --plot-only`
# draws them). Every part stops its remaining work at PART_LIMIT seconds (default 540)
# so that what finished still comes back; a log with each step's wall time is in
# $OUT/gpu_session_PART.log. The device recipe (wheels, editable install) is in
# benchmarks/README.md, "On a lent GPU".
set -euo pipefail

part=${1:?usage: bash benchmarks/gpu_session.sh bench|sweeps [--quick]}
quick=${2:-}
if [[ -n "$quick" && "$quick" != "--quick" ]]; then
    echo "gpu_session.sh: unknown option '$quick' (expected --quick)" >&2
    exit 2
fi
case "$part" in
bench | sweeps) ;;
*)
    echo "gpu_session.sh: unknown part '$part' (expected bench or sweeps)" >&2
    exit 2
    ;;
esac
out=${OUT:-benchmarks/out/gpu}
limit=${PART_LIMIT:-540}
mkdir -p "$out"
log="$out/gpu_session_$part.log"
start=$(date +%s)
python=${PYTHON:-python3}
scratch=$(mktemp -d)  # --quick runs go here, never into runs/
trap 'rm -rf "$scratch"' EXIT

failed=()
left() { echo $((limit - ($(date +%s) - start))); }

step() {  # step NAME COMMAND...: run with the time left, log its wall time and status
    local name=$1
    shift
    local budget
    budget=$(left)
    if ((budget < 10)); then
        echo "$name: not run (part time limit ${limit}s reached)" | tee -a "$log"
        failed+=("$name")
        return 0
    fi
    local t0=$SECONDS rc=0
    timeout "$budget" "$@" >>"$log" 2>&1 || rc=$?
    echo "$name: rc=$rc wall_s=$((SECONDS - t0))" | tee -a "$log"
    ((rc == 0)) || failed+=("$name")
}

keep_run() {  # keep_run DIR NAME: copy a run directory to $out/runs/NAME, no checkpoints
    local dir=$1 dest="$out/runs/$2"
    [[ -d "$dir" ]] || return 0
    mkdir -p "$dest"
    find "$dir" -maxdepth 1 -type f ! -name run.lock -exec cp {} "$dest/" \;
}

{
    echo "# gpu_session.sh $part $quick ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
    "$python" -c "import jax; print('jax', jax.__version__, jax.devices())"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
} | tee "$log"

case "$part" in
bench)
    # shortest first: a step cut off by the part's time limit loses only itself
    if [[ -n "$quick" ]]; then
        step mps_train "$python" benchmarks/mps_train.py --quick
        step btt_layout "$python" benchmarks/btt_layout.py --quick
        step layers "$python" benchmarks/layers.py --quick --dtypes bfloat16 --tltorch-widths
    else
        step mps_train "$python" benchmarks/mps_train.py --device cuda
        step btt_layout "$python" benchmarks/btt_layout.py
        step layers "$python" benchmarks/layers.py
    fi
    for f in layers btt_layout mps_train; do
        for ext in json md; do
            src=benchmarks/out/$f${quick:+_quick}.$ext
            [[ -f $src ]] || src=benchmarks/out/$f.$ext
            [[ -f $src ]] && cp "$src" "$out/"
        done
    done
    ;;
sweeps)
    if [[ -n "$quick" ]]; then
        step mps_sweep "$python" benchmarks/mps_sweep.py --quick
        bonds=(4)
        args=(--set train.num_sweeps=1 --set data.n_train=500 --set data.n_test=200
              --set train.passes=1 --set train.eval_batch_size=200
              --set model.init_per_class=5)
    else
        step mps_sweep "$python" benchmarks/mps_sweep.py --sweep-chi 60
        bonds=(40 80 120)
        args=()
    fi
    for ext in json md; do
        src=benchmarks/out/mps_sweep.$ext
        [[ -f $src ]] && cp "$src" "$out/"
    done
    for b in "${bonds[@]}"; do
        name=mps_mnist_sweep/max_bond=$b/seed0
        dir=${quick:+$scratch/}runs/$name
        step "sweep max_bond=$b" "$python" -m tnlib.experiments.cli run \
            "configs/mps_mnist_sweep.py:max_bond=$b" --workdir "$dir" "${args[@]}"
        keep_run "$dir" "$name"
    done
    ;;
esac
echo "done in $(($(date +%s) - start)) s; failed: ${failed[*]:-none}" | tee -a "$log"
((${#failed[@]} == 0))
