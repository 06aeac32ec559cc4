#!/usr/bin/env bash
# Every FER+ number the README publishes, in the order we produce them on the 2-core CPU (about
# 20 h in all). Each step resumes from its checkpoints when the script is run again after an
# interruption; a step whose results are recorded is not trained again unless its run folder is
# removed. Run from the repository root after `make demo` or `make test` (they create .venv).
set -euo pipefail
F=.venv/bin/ferlab
P=.venv/bin/python
step() { echo "== $(date -u +%FT%TZ) $*"; }

train() {  # train CONFIG: run (or resume) a recipe to its end
    step "train $1"
    $F train "$1" train.progress=false --resume
}

train configs/resnet18_ferplus_cpu.yaml
$P benchmarks/default_model.py runs/resnet18_ferplus_cpu/best
train configs/rasa_ferplus_cpu.yaml
$P benchmarks/ferplus_results.py runs/rasa_ferplus_cpu/best rasa "$F train configs/rasa_ferplus_cpu.yaml train.progress=false"
$P benchmarks/ablations.py rasa --subset 6000 --epochs 5
train configs/dan_ferplus_cpu.yaml
$P benchmarks/ferplus_results.py runs/dan_ferplus_cpu/best dan "$F train configs/dan_ferplus_cpu.yaml train.progress=false"
$P benchmarks/ablations.py dan
train configs/swin_se_ferplus_cpu.yaml
$P benchmarks/ferplus_results.py runs/swin_se_ferplus_cpu/best swin_se "$F train configs/swin_se_ferplus_cpu.yaml train.progress=false"
$P benchmarks/ablations.py swin_se
step "landmark net"
[ -f runs/landmarks_ferplus/report.json ] || $F landmarks train configs/landmarks_ferplus.yaml
$P benchmarks/landmarks_results.py runs/landmarks_ferplus "$F landmarks train configs/landmarks_ferplus.yaml"
train configs/pcda_ferplus_cpu.yaml
$P benchmarks/ferplus_results.py runs/pcda_ferplus_cpu/best pcda "$F train configs/pcda_ferplus_cpu.yaml train.progress=false"
$P benchmarks/pcda_costs.py
step "resnet18, 8 epochs (PCDA's epochs)"
$F train configs/resnet18_ferplus_cpu.yaml schedule.epochs=8 train.out_dir=runs/resnet18_ferplus_8ep train.progress=false --resume
$P benchmarks/ferplus_results.py runs/resnet18_ferplus_8ep/best resnet18_8ep "$F train configs/resnet18_ferplus_cpu.yaml schedule.epochs=8 train.out_dir=runs/resnet18_ferplus_8ep train.progress=false"
train configs/convcut_ferplus_cpu.yaml
$P benchmarks/ferplus_results.py runs/convcut_ferplus_cpu/best convcut "$F train configs/convcut_ferplus_cpu.yaml train.progress=false"
for m in pcda convcut; do $P benchmarks/explain_examples.py runs/${m}_ferplus_cpu/best benchmarks/results/${m}_explain_ferplus_test.png; done
$F explain --tsne --model runs/convcut_ferplus_cpu/best.safetensors --split test --out benchmarks/results/convcut_tsne_ferplus_test.png
$P benchmarks/cpu_latency.py
$P benchmarks/ablations.py pcda
$P benchmarks/ablations.py convcut
