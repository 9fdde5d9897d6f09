#!/usr/bin/env bash
# The main job on the embedded default, on CPU:
#   set-up → demo SA-Med2D set from package-shipped images and masks → Med-GRIT conversations
#   → the untrained model (same preset and seed) saved → training → batch inference of the trained
#   and the untrained model, and of the trained one with its VG/RO test images shuffled (image-blind
#   ablation) → image-blind baselines → evaluation → loss curve, VG gallery and the comparison in
#   reports/demo/summary.md.
#
# Outputs: DEMO_DIR (data/demo), OUTPUT_DIR (output/demo: the trained model), UNTRAINED_DIR
# (OUTPUT_DIR_untrained), REPORT_DIR (reports/demo: trained/, untrained/, baselines/ with their
# predictions and metrics, shuffled/ (the ablation's test files, predictions and metrics), summary.md, loss.png, gallery/index.html).
# Knobs (defaults are the measured demo; smaller values make a quick smoke run):
#   DEMO_MAX_IMAGES   images in the demo set (500: all 406)
#   MEDGRIT_ARGS      build_medgrit options ("--max_turns 3 --split_turns VG,RO --test_questions 4
#                     --max_mii_regions 2")
#   TRAIN_ARGS        extra --key value pairs for training, e.g. "--max_steps 2"
#   DEMO_CONFIG       the training config (paddlemix/config/BiRD/sft_argument_demo.json; the 3,000-step
#                     VG+RO run of docs/GROUNDING_RUNS.md: sft_argument_demo_grounding.json, with its own
#                     OUTPUT_DIR and REPORT_DIR so the default demo's results stay)
#   MAX_NEW_TOKENS_VG, _RO, _GC, _MII   generation budget per task (64, 16, 64, 160)
#   INFER_BATCH_SIZE  inference batch (64)
#   DEMO_LOG          where every line of output goes (REPORT_DIR/demo.log); the screen gets the stages
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-data/demo}
OUTPUT_DIR=${OUTPUT_DIR:-output/demo}
UNTRAINED_DIR=${UNTRAINED_DIR:-${OUTPUT_DIR}_untrained}
REPORT_DIR=${REPORT_DIR:-reports/demo}
CONFIG=${DEMO_CONFIG:-paddlemix/config/BiRD/sft_argument_demo.json}
SA_ROOT=$DEMO_DIR/sa_med2d
IMAGES=$SA_ROOT/images
MEDGRIT=$DEMO_DIR/medgrit
# Paddle uses one CPU thread unless told otherwise; inference gets every core. Training, unless
# OMP_NUM_THREADS is given, takes train.sh's own split (Paddle one thread, NumPy's BLAS every core).
TRAIN_THREADS=${OMP_NUM_THREADS:-}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 1)}
export MAX_NEW_TOKENS_VG=${MAX_NEW_TOKENS_VG:-64} MAX_NEW_TOKENS_RO=${MAX_NEW_TOKENS_RO:-16}
export MAX_NEW_TOKENS_GC=${MAX_NEW_TOKENS_GC:-64} MAX_NEW_TOKENS_MII=${MAX_NEW_TOKENS_MII:-160}
start=$(date +%s)

# The screen shows stage lines, progress bars and results; Paddle's INFO logs and warnings go to
# DEMO_LOG only (which keeps every line of the run).
DEMO_LOG=${DEMO_LOG:-$REPORT_DIR/demo.log}
mkdir -p "$(dirname "$DEMO_LOG")"
: > "$DEMO_LOG"
echo "demo: full log (Paddle INFO lines, warnings) in $DEMO_LOG"
exec > >(python3 scripts/log_filter.py "$DEMO_LOG") 2>&1

stage() { printf '\n=== [%s] %s (%ds)\n' "$1" "$2" "$(( $(date +%s) - start ))"; }

stage 1/9 "environment"
bash scripts/setup_env.sh
ROOT=$(pwd)
. scripts/python.sh
export PYTHON  # train.sh, infer_all.sh and eval_all.sh run the same one

stage 2/9 "embedded demo set (SA-Med2D layout) → $SA_ROOT"
"$PYTHON" -m paddlemix.tools.build_demo_data --out_dir "$SA_ROOT" --max_images "${DEMO_MAX_IMAGES:-500}"

stage 3/9 "Med-GRIT conversations → $MEDGRIT"
# shellcheck disable=SC2086
"$PYTHON" -m paddlemix.tools.build_medgrit --sa_root "$SA_ROOT" --out_dir "$MEDGRIT" \
  ${MEDGRIT_ARGS:---max_turns 3 --split_turns VG,RO --test_questions 4 --max_mii_regions 2}

stage 4/9 "the untrained model (the run's preset and seed, before any step) → $UNTRAINED_DIR"
# The preset, seed and resampler start training will use: the config with TRAIN_ARGS over it,
# read by the training recipe's own parser (so --key=value and its defaults mean the same here).
# shellcheck disable=SC2086
read -r PRESET SEED RESAMPLER_INIT < <("$PYTHON" -c '
import sys
from paddlemix.tools.supervised_finetune import parse_arguments
model, _, training = parse_arguments(sys.argv[1:])
print(model.model_preset, training.seed, model.resampler_init)' "$CONFIG" ${TRAIN_ARGS:-})
"$PYTHON" -m paddlemix.tools.init_checkpoint --preset "$PRESET" --seed "$SEED" --resampler_init "$RESAMPLER_INIT" \
  --output_dir "$UNTRAINED_DIR"

stage 5/9 "training the $PRESET preset on CPU → $OUTPUT_DIR"
if [ -n "$TRAIN_THREADS" ]; then TRAIN_ENV="OMP_NUM_THREADS=$TRAIN_THREADS"; else TRAIN_ENV="-u OMP_NUM_THREADS"; fi
# shellcheck disable=SC2086
env $TRAIN_ENV sh train.sh cpu "$CONFIG" --train_json "$MEDGRIT/train.json" --image_root "$IMAGES" \
  --output_dir "$OUTPUT_DIR" --overwrite_output_dir true ${TRAIN_ARGS:-}

stage 6/9 "batch inference, trained and untrained → $REPORT_DIR/{trained,untrained}/pred"
rm -rf "$REPORT_DIR/trained" "$REPORT_DIR/untrained" "$REPORT_DIR/shuffled" "$REPORT_DIR/baselines" "$REPORT_DIR/gallery"
# The image-blind ablation of the trained model: its VG and RO test images exchanged within each
# modality, each question shown a slice of another slab (a neighbouring slice of its own is nearly its image).
"$PYTHON" -m paddlemix.tools.shuffle_images --test_dir "$MEDGRIT" --out_dir "$REPORT_DIR/shuffled/test" --tasks VG,RO
infer() {  # RUN CHECKPOINT TEST_DIR
  echo "--- $1: $2 on $3"
  CHECKPOINT="$2" TEST_DIR="$3" IMAGE_ROOT="$IMAGES" PRED_DIR="$REPORT_DIR/$1/pred" \
    BATCH_SIZE="${INFER_BATCH_SIZE:-64}" sh tests/models/BiRD/infer_all.sh
}
infer_trained() { infer trained "$OUTPUT_DIR" "$MEDGRIT" || return 1; infer shuffled "$OUTPUT_DIR" "$REPORT_DIR/shuffled/test"; }
infer_untrained() { infer untrained "$UNTRAINED_DIR" "$MEDGRIT"; }
# (Each step says "|| return 1": in "( job ) || ..." the shell's errexit is off.)
eval_runs() {
  for RUN in "$@"; do echo "--- $RUN"; sh tests/models/BiRD/eval_all.sh "$REPORT_DIR/$RUN/pred" "$REPORT_DIR/$RUN" || return 1; done
}
# two_at_once JOB_A JOB_B: both shell functions at once, on one core each (one after the other when
# OMP_NUM_THREADS was given or there is one core). Generation is bound by small kernels' overheads,
# so two one-thread processes beat one two-thread process: trained + untrained inference took 77 s
# at once against 117 s one after the other on 2 cores. JOB_B's output is shown when both are done.
two_at_once() {
  if [ -n "$TRAIN_THREADS" ] || [ "$OMP_NUM_THREADS" -lt 2 ]; then "$1"; "$2"; return; fi
  side_log="$REPORT_DIR/$2.log"
  ( export OMP_NUM_THREADS=1; "$2" ) > "$side_log" 2>&1 &
  side=$!
  ( export OMP_NUM_THREADS=1; "$1" ) || { wait "$side"; cat "$side_log"; return 1; }
  if ! wait "$side"; then cat "$side_log"; echo "demo: $2 failed (its output above, also in $side_log)" >&2; return 1; fi
  cat "$side_log"; rm -f "$side_log"
}
two_at_once infer_trained infer_untrained

stage 7/9 "image-blind baselines (VG class-mean box, RO majority class) → $REPORT_DIR/baselines/pred"
"$PYTHON" -m paddlemix.tools.baselines --train_json "$MEDGRIT/train.json" --test_dir "$MEDGRIT" \
  --out_dir "$REPORT_DIR/baselines/pred"

stage 8/9 "evaluation → $REPORT_DIR/{trained,shuffled,untrained,baselines}"
# The captioning scores (METEOR's and the PTB tokenizer's Java) are most of it: trained and untrained at once.
eval_trained() { eval_runs trained shuffled; }
eval_untrained() { eval_runs untrained baselines; }
two_at_once eval_trained eval_untrained

stage 9/9 "report: loss curve, VG gallery, comparison → $REPORT_DIR"
"$PYTHON" -m paddlemix.tools.plot_loss --trainer_state "$OUTPUT_DIR" --out "$REPORT_DIR/loss.png" \
  --title "BiRD demo: $PRESET preset, training loss"
"$PYTHON" -m paddlemix.tools.draw_boxes --pred_file "$REPORT_DIR/trained/pred/pred_VG.jsonl" --image_root "$IMAGES" \
  --out_dir "$REPORT_DIR/gallery"
"$PYTHON" -m paddlemix.tools.report --out_dir "$REPORT_DIR" \
  --compare trained="$REPORT_DIR/trained" shuffled="$REPORT_DIR/shuffled" untrained="$REPORT_DIR/untrained" \
  baseline="$REPORT_DIR/baselines" \
  --image_use "$REPORT_DIR/trained/pred/pred_VG.jsonl" "$REPORT_DIR/shuffled/pred/pred_VG.jsonl" \
  --note "trained: \`$CONFIG\` (preset $PRESET, seed $SEED, resampler_init $RESAMPLER_INIT) on \`$MEDGRIT/train.json\`; extra training arguments: ${TRAIN_ARGS:-none}." \
  --note "shuffled: the trained model shown, for each VG/RO question, an image of another case (slab) of the same modality (image-blind ablation); a grounding claim needs trained well above shuffled." \
  --note "untrained: the same preset and seed saved before the first step (\`$UNTRAINED_DIR\`)." \
  --note "baseline: image-blind — VG answers the class-mean training box of the asked class, RO the most frequent training name." \
  --note "Training loss: \`loss.png\`; VG boxes, worst first: \`gallery/index.html\`; per-modality tables: \`<run>/summary.md\`."
echo
cat "$REPORT_DIR/summary.md"
printf '\ndemo finished in %ds (full log: %s)\n' "$(( $(date +%s) - start ))" "$DEMO_LOG"
printf '\nserve the trained model (OpenAI-style API + web page at http://127.0.0.1:8000/):\n  %s -m paddlemix.tools.serve --checkpoint %s --examples_dir %s\n' \
  "$PYTHON" "$OUTPUT_DIR" "$IMAGES"
