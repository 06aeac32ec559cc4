# Source on a GPU machine lent through the `device` tool, in the repo root:
#     source benchmarks/device/setup.sh
# ferlab from src/ without installing (that machine has torch, timm, OpenCV, scikit-learn; no dlib,
# no internet), and FER+ rebuilt from the carried bundle (benchmarks/device/ferplus_bundle.py).
export PYTHONPATH="$PWD/src" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export FERLAB_CACHE=/tmp/ferlab_cache FERLAB_FERPLUS=/tmp/ferplus
if [ ! -f /tmp/ferplus/FER2013Test/label.csv ]; then
    python3 benchmarks/device/ferplus_bundle.py unpack .carry/ferplus.npz /tmp/ferplus || return 1
fi
ferlab() { python3 -m ferlab.cli "$@"; }
