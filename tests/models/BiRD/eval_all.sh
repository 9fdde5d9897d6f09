#!/bin/sh
# Score every prediction file of a run and summarise them.
#
#   sh tests/models/BiRD/eval_all.sh [PRED_DIR] [OUT_DIR]
#
# PRED_DIR holds pred_VG.jsonl, pred_RO.jsonl, pred_GC.jsonl, pred_MII.jsonl (any of them) and,
# for LLaVA-Med's QA set, pred_QA.jsonl;
# OUT_DIR (default: PRED_DIR) receives metrics_<TASK>.json, summary.md, summary.csv and the paper's
# table (paper_table.md / paper_table.json).
# Both may also come from the environment variables of the same names. Options:
#   PYTHON (see scripts/python.sh), BOOTSTRAP (resamples, default 0), CLEAN (none|upstream), IOU (0.5).
# Exit codes as every tool's (paddlemix/cli.py): 2 when nothing could be scored or a file is bad,
# 1 when a scorer crashed.
set -u

PRED_DIR=${1:-${PRED_DIR:-}}
OUT_DIR=${2:-${OUT_DIR:-$PRED_DIR}}
if [ -z "$PRED_DIR" ]; then
    echo "usage: sh $0 PRED_DIR [OUT_DIR]   (or set PRED_DIR / OUT_DIR)" >&2
    exit 2
fi
if [ ! -d "$PRED_DIR" ]; then
    echo "error: PRED_DIR '$PRED_DIR' is not a directory" >&2
    exit 2
fi

HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH= cd -- "$HERE/../../.." && pwd)
. "$ROOT/scripts/python.sh"
mkdir -p "$OUT_DIR" || exit 2

# The positional parameters collect the metrics files written.
set --
missing=""
failed=""
crashed=0
for TASK in VG RO GC MII QA; do
    PRED="$PRED_DIR/pred_$TASK.jsonl"
    if [ ! -f "$PRED" ]; then
        # QA (LLaVA-Med) is a separate benchmark: its absence is not worth a message.
        [ "$TASK" = QA ] || missing="$missing $TASK"
        continue
    fi
    echo "== $TASK: $PRED"
    if "$PYTHON" "$HERE/eval.py" --task "$TASK" --pred_file "$PRED" \
        --out_json "$OUT_DIR/metrics_$TASK.json" \
        --bootstrap "${BOOTSTRAP:-0}" --clean "${CLEAN:-none}" --iou "${IOU:-0.5}"; then
        set -- "$@" "$OUT_DIR/metrics_$TASK.json"
    else
        rc=$?
        failed="$failed $TASK"
        # A crash (1) outranks bad input (2) in the script's own exit code.
        [ "$rc" -eq 2 ] || crashed=1
    fi
done

if [ -n "$missing" ]; then
    echo "missing (not scored):$(for t in $missing; do printf ' pred_%s.jsonl' "$t"; done) in $PRED_DIR"
fi
if [ $# -eq 0 ]; then
    echo "error: nothing scored in $PRED_DIR" >&2
    [ "$crashed" -eq 1 ] && exit 1
    exit 2
fi
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m paddlemix.tools.report --out_dir "$OUT_DIR" "$@" || exit $?
# The paper's table from the metrics just written (rows without predictions say so).
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m paddlemix.tools.paper_table --pred_dir "$PRED_DIR" \
    --metrics_dir "$OUT_DIR" --metrics_only || exit $?
if [ -n "$failed" ]; then
    echo "error: scoring failed for:$failed" >&2
    [ "$crashed" -eq 1 ] && exit 1
    exit 2
fi
