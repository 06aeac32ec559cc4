# One FER+ CPU recipe trained on a GPU machine lent through the `device` tool (carry .carry/):
#     bash benchmarks/device/train_recipe.sh NAME        # configs/NAME_ferplus_cpu.yaml, unchanged
# (further arguments are overrides, for a smoke run here: ... NAME schedule.epochs=1 data.train_subset=256)
# Returns in $OUT the run's log, best-on-valid weights (best.safetensors + best.json: record them
# here with benchmarks/ferplus_results.py), history.json and its one test pass (test_metrics.json).
set -uo pipefail
NAME=${1:?usage: bash benchmarks/device/train_recipe.sh NAME [overrides]}
shift
OUT=${OUT:-/tmp/recipe_device_out}
mkdir -p "$OUT"
source benchmarks/device/setup.sh >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
RUN=$(PYTHONPATH=src "${PYTHON:-python3}" -c "from ferlab.engine.config import load_config; import sys; print(load_config('configs/${NAME}_ferplus_cpu.yaml', sys.argv[1:])['train']['out_dir'])" "$@")
ferlab train "configs/${NAME}_ferplus_cpu.yaml" train.progress=false "$@" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
for f in best.safetensors best.json history.json test_metrics.json; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/$f"
done
exit "$rc"
