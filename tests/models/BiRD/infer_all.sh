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
# One Python process answers every test file (the model is read once; each file is resumed or
# refused on its own, as infer.py does for one); a missing test_<TASK>.json is skipped with a note.
LIMITS=""
for TASK in VG RO GC MII; do
  eval "NEW_TOKENS=\${MAX_NEW_TOKENS_$TASK:-\${MAX_NEW_TOKENS:-256}}"
  LIMITS="$LIMITS${LIMITS:+,}$TASK=$NEW_TOKENS"
done
# shellcheck disable=SC2086
"$PYTHON" "$HERE/infer.py" --checkpoint "$CHECKPOINT" --test_dir "$TEST_DIR" --image_root "$IMAGE_ROOT" \
  --pred_dir "$PRED_DIR" --tasks VG,RO,GC,MII --task_max_new_tokens "$LIMITS" --batch_size "${BATCH_SIZE:-8}" \
  --prompt_format "${PROMPT_FORMAT:-chatml}" ${EXTRA_ARGS:-}
