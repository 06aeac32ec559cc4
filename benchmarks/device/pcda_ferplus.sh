# PCDA (paper 003) on FER+ on a GPU machine lent through the `device` tool: the same committed
# commands the README quotes, run there because the CPU chain (landmark net ~1.7 h, PCDA recipe
# ~2.2 h, then the ablation rows) does not fit one session here. Carry .carry/ (ferplus.npz from
# `ferplus_bundle.py pack`, dlib_points.npz from `ferplus_bundle.py points`), then:
#     bash benchmarks/device/pcda_ferplus.sh
# Every result lands in $OUT/pcda_results.tgz (refreshed after each step, so an interrupted run
# still returns what finished), the log in $OUT/log.txt; with PARTS=1 also the trained PCDA as
# float16 in 15 MiB parts. Both do not fit the 64 MiB that may come back in all (the 2026-11-27 run
# lost its archive that way; a second call re-copies the tree and deletes results written there
# outside runs/, so everything must come back from the one call).
# SMOKE=1 runs every step on tiny subsets (on a CPU, dlib hidden as there) to check the chain first.
set -uo pipefail
OUT=${OUT:-/tmp/pcda_device_out}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
source benchmarks/device/setup.sh >>"$LOG" 2>&1 || { echo "set-up failed"; tail -20 "$LOG"; exit 1; }
PY=${PYTHON:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
    mkdir -p /tmp/nodlib && echo 'raise ImportError("no dlib (smoke run: as on the GPU machine)")' >/tmp/nodlib/dlib.py
    export PYTHONPATH="/tmp/nodlib:$PYTHONPATH"
    LM=(landmarks.epochs=1 landmarks.train_subset=256 landmarks.max_eval=128)
    PC=(schedule.epochs=1 data.train_subset=256)
    AB=(--subset 256 --epochs 1)
else
    LM=() PC=() AB=()
fi
RUN=runs/pcda_ferplus_cpu LMRUN=runs/landmarks_ferplus

collect() {  # every small result so far, in one archive
    tar czf "$OUT/pcda_results.tgz.tmp" --exclude='*.pt' --exclude='last.*' --exclude='runs/pcda_*/best.safetensors' \
        $(ls -d "$LMRUN" "$RUN" runs/pcda_export/*.json runs/pcda_ablations benchmarks/results/pcda_* 2>/dev/null) \
        2>>"$LOG" && mv "$OUT/pcda_results.tgz.tmp" "$OUT/pcda_results.tgz"
}
step() {  # step [-k] NAME COMMAND...: timed, logged, results collected; a failed step stops the
    local keep=0; [ "$1" = -k ] && { keep=1; shift; }  # chain, unless -k (nothing later needs it)
    local name=$1; shift
    echo "== $(date -u +%T) $name: $*" | tee -a "$LOG"
    local t0=$SECONDS
    "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "== $(date -u +%T) $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
    collect
    if [ $rc -ne 0 ]; then tail -30 "$LOG"; [ $keep = 1 ] || exit $rc; fi
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >>"$LOG" 2>&1
step landmarks ferlab landmarks train configs/landmarks_ferplus.yaml "${LM[@]}"
step pcda ferlab train configs/pcda_ferplus_cpu.yaml train.progress=false "${PC[@]}"
# the trained PCDA as float16, in parts under the 16 MiB a returned file may have (cat them to rejoin)
if [ "${PARTS:-0}" = 1 ]; then
    step -k export ferlab export "$RUN/best" runs/pcda_export/pcda_ferplus_fp16 --half
    split -b 15M runs/pcda_export/pcda_ferplus_fp16.safetensors "$OUT/pcda_ferplus_fp16.safetensors.part-"
fi
# the ablation first: it needs the GPU; the results and the figure could be redone on a CPU from the parts
step -k ablations $PY benchmarks/ablations.py pcda "${AB[@]}"
step -k results $PY benchmarks/ferplus_results.py "$RUN/best" pcda \
    "ferlab train configs/pcda_ferplus_cpu.yaml train.progress=false"
step -k explain $PY benchmarks/explain_examples.py "$RUN/best" benchmarks/results/pcda_explain_ferplus_test.png
tail -40 "$LOG"
