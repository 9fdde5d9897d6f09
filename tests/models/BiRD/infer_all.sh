#!/bin/sh
# Run BiRD inference on the four Med-GRIT test files.
#   sh tests/models/BiRD/infer_all.sh [CHECKPOINT] [TEST_DIR] [IMAGE_ROOT] [PRED_DIR]
# or set the same names as environment variables. TEST_DIR holds test_{VG,RO,GC,MII}.json; each
# writes PRED_DIR/pred_<TASK>.jsonl (resumed if present). BATCH_SIZE (8), MAX_NEW_TOKENS (256),
# PROMPT_FORMAT (chatml), PYTHON (see scripts/python.sh) and EXTRA_ARGS (passed to infer.py) tune
# the run;
# MAX_NEW_TOKENS_VG, _RO, _GC, _MII override MAX_NEW_TOKENS for one task (short VG/RO answers).
set -eu
CHECKPOINT=${1:-${CHECKPOINT:?set CHECKPOINT (model directory) or pass it as the first argument}}
TEST_DIR=${2:-${TEST_DIR:?set TEST_DIR (folder with test_VG.json ...)}}
IMAGE_ROOT=${3:-${IMAGE_ROOT:?set IMAGE_ROOT (folder the test images are relative to)}}
PRED_DIR=${4:-${PRED_DIR:-$CHECKPOINT/predictions}}
HERE=$(dirname "$0")
ROOT=$(CDPATH= cd -- "$HERE/../../.." && pwd)
. "$ROOT/scripts/python.sh"
mkdir -p "$PRED_DIR"
found=0
for TASK in VG RO GC MII; do
  TEST_FILE="$TEST_DIR/test_$TASK.json"
  if [ ! -f "$TEST_FILE" ]; then
    echo "infer_all: $TEST_FILE not found, skipping $TASK" >&2
    continue
  fi
  found=$((found + 1))
  eval "NEW_TOKENS=\${MAX_NEW_TOKENS_$TASK:-\${MAX_NEW_TOKENS:-256}}"
  echo "infer_all: $TASK (max_new_tokens $NEW_TOKENS)"
  # shellcheck disable=SC2086
  "$PYTHON" "$HERE/infer.py" --checkpoint "$CHECKPOINT" --json_path "$TEST_FILE" --image_root "$IMAGE_ROOT" \
    --output_file "$PRED_DIR/pred_$TASK.jsonl" --task "$TASK" --batch_size "${BATCH_SIZE:-8}" \
    --max_new_tokens "$NEW_TOKENS" --prompt_format "${PROMPT_FORMAT:-chatml}" ${EXTRA_ARGS:-}
done
if [ "$found" -eq 0 ]; then
  echo "error: no test_<TASK>.json in $TEST_DIR" >&2
  exit 2
fi
