#!/usr/bin/env bash
# The main job on the embedded default, on CPU:
#   set-up → demo SA-Med2D set from package-shipped images and masks → Med-GRIT conversations
#   → train the tiny Qwen-VL preset → batch inference → evaluation → report (reports/demo/).
# Stages whose code is not in the repository yet are reported as missing and skipped.
#   DEMO_DIR (data/demo), OUTPUT_DIR (output/demo), REPORT_DIR (reports/demo) move the outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-data/demo}
OUTPUT_DIR=${OUTPUT_DIR:-output/demo}
REPORT_DIR=${REPORT_DIR:-reports/demo}
PY=.venv/bin/python
start=$(date +%s)
missing=()

stage() { printf '\n=== [%s] %s (%ds)\n' "$1" "$2" "$(( $(date +%s) - start ))"; }
have_module() { [ -f "$1" ]; }

stage 1/7 "environment"
bash scripts/setup_env.sh

stage 2/7 "embedded demo set (SA-Med2D layout) → $DEMO_DIR/sa_med2d"
if have_module paddlemix/tools/build_demo_data.py; then
  $PY -m paddlemix.tools.build_demo_data --out_dir "$DEMO_DIR/sa_med2d"
else missing+=("demo data builder (paddlemix/tools/build_demo_data.py)"); fi

stage 3/7 "Med-GRIT conversations → $DEMO_DIR/medgrit"
if have_module paddlemix/tools/build_medgrit.py && [ -d "$DEMO_DIR/sa_med2d" ]; then
  $PY -m paddlemix.tools.build_medgrit --sa_root "$DEMO_DIR/sa_med2d" --out_dir "$DEMO_DIR/medgrit"
else missing+=("Med-GRIT construction (paddlemix/tools/build_medgrit.py)"); fi

stage 4/7 "training the tiny preset on CPU → $OUTPUT_DIR"
if have_module paddlemix/tools/supervised_finetune.py && [ -f paddlemix/config/BiRD/sft_argument_demo.json ]; then
  sh train.sh cpu paddlemix/config/BiRD/sft_argument_demo.json --train_json "$DEMO_DIR/medgrit/train.json" \
    --image_root "$DEMO_DIR/sa_med2d/images" --output_dir "$OUTPUT_DIR" --overwrite_output_dir true ${TRAIN_ARGS:-}
else missing+=("training (paddlemix/tools/supervised_finetune.py, sft_argument_demo.json)"); fi

stage 5/7 "batch inference → $REPORT_DIR/pred"
if have_module tests/models/BiRD/infer.py && [ -d "$OUTPUT_DIR" ]; then
  rm -rf "$REPORT_DIR/pred"  # predictions of an earlier model must not be resumed into this one's
  CHECKPOINT="$OUTPUT_DIR" TEST_DIR="$DEMO_DIR/medgrit" IMAGE_ROOT="$DEMO_DIR/sa_med2d/images" PRED_DIR="$REPORT_DIR/pred" \
    PYTHON=$PY sh tests/models/BiRD/infer_all.sh
else missing+=("batch inference (tests/models/BiRD/infer.py)"); fi

stage 6/7 "evaluation → $REPORT_DIR"
if have_module tests/models/BiRD/eval.py && [ -d "$REPORT_DIR/pred" ]; then
  PYTHON=$PY sh tests/models/BiRD/eval_all.sh "$REPORT_DIR/pred" "$REPORT_DIR"
else missing+=("evaluation (tests/models/BiRD/eval.py)"); fi

stage 7/7 "report"
if [ -f "$REPORT_DIR/summary.md" ]; then cat "$REPORT_DIR/summary.md"; fi
printf '\ndemo finished in %ds\n' "$(( $(date +%s) - start ))"
if [ ${#missing[@]} -gt 0 ]; then
  echo "not in the repository yet, skipped:"
  printf '  - %s\n' "${missing[@]}"
fi
