#!/bin/sh
# Fine-tune BiRD:  sh train.sh DEVICES CONFIG.json [--key value ...]
#   DEVICES  0,1,2,3   GPUs, one process each (paddle.distributed.launch --gpus)
#            cpu       one CPU process
#            cpu:N     N CPU processes, data parallel over gloo (tests data parallelism without GPUs)
#   CONFIG   e.g. paddlemix/config/BiRD/sft_argument_stage2.json; --key value pairs override it.
#            Relative paths (CONFIG, the paths in it, --output_dir, LOG_DIR) are relative to the
#            current directory. Exit codes: 0 done, 2 bad data or arguments (one error: line; set
#            BIRD_DEBUG=1 for the traceback), 1 anything else.
# Multi-node: set LAUNCH_ARGS to the launcher's own options, e.g.
#   LAUNCH_ARGS="--master 10.0.0.1:8090 --nnodes 2" sh train.sh 0,1,2,3,4,5,6,7 CONFIG
set -eu
if [ $# -lt 2 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
DEVICES=$1
CONFIG=$2
shift 2
# Stay in the caller's directory: CONFIG, the paths inside it, --output_dir and LOG_DIR are relative
# to where train.sh is run from, as they are for any other command; only the code is found here.
ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
. "$ROOT/scripts/python.sh"
ENTRY=$ROOT/paddlemix/tools/supervised_finetune.py
LOG_DIR=${LOG_DIR:-log}
if [ ! -f "$CONFIG" ]; then
  echo "error: config $CONFIG not found (relative to $(pwd))" >&2
  exit 2
fi

# Paddle runs CPU kernels on one thread unless OMP_NUM_THREADS says otherwise; give each CPU
# process its share of the cores (an explicit OMP_NUM_THREADS or OPENBLAS_NUM_THREADS wins).
# One CPU process: Paddle's kernels on one thread and NumPy's BLAS (the LM head's matmuls, the
# attention core) with the head's kernels on every core. With both on every core, Paddle's OpenMP
# workers spin after each small kernel and take the cores NumPy's threads need: 200 demo steps took
# 114-117 s that way, 83-100 s this way (docs/GROUNDING_RUNS.md, "Seventh attempt").
cores=$(nproc 2>/dev/null || echo 1)
case "$DEVICES" in
  cpu)
    if [ -z "${OMP_NUM_THREADS:-}" ] && [ -z "${OPENBLAS_NUM_THREADS:-}" ]; then
      export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS="$cores"
    fi
    exec "$PYTHON" "$ENTRY" "$CONFIG" --device cpu "$@"
    ;;
  cpu:*)
    N=${DEVICES#cpu:}
    per_rank=$((cores / N))
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$((per_rank > 0 ? per_rank : 1))}"
    # shellcheck disable=SC2086
    exec "$PYTHON" -m paddle.distributed.launch --log_dir "$LOG_DIR" --nproc_per_node "$N" ${LAUNCH_ARGS:-} \
      "$ENTRY" "$CONFIG" --device cpu "$@"
    ;;
  *)
    # shellcheck disable=SC2086
    exec "$PYTHON" -m paddle.distributed.launch --log_dir "$LOG_DIR" --gpus "$DEVICES" ${LAUNCH_ARGS:-} \
      "$ENTRY" "$CONFIG" "$@"
    ;;
esac
