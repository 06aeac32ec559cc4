# Source on a GPU machine lent through the `device` tool, in the repo root:
#     source benchmarks/device/setup.sh
# ferlab from src/ without installing (that machine has torch, timm, OpenCV, scikit-learn; no dlib,
# no internet), and FER+ rebuilt from the carried bundle (benchmarks/device/ferplus_bundle.py).
export PYTHONPATH="$PWD/src" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export FERLAB_CACHE=/tmp/ferlab_cache FERLAB_FERPLUS=/tmp/ferplus
if [ ! -f /tmp/ferplus/FER2013Test/label.csv ]; then
    "${PYTHON:-python3}" benchmarks/device/ferplus_bundle.py unpack .carry/ferplus.npz /tmp/ferplus || return 1
fi
if [ -f .carry/dlib_points.npz ] && [ ! -f /tmp/ferlab_cache/.seeded ]; then  # dlib's targets (no dlib there)
    "${PYTHON:-python3}" benchmarks/device/ferplus_bundle.py seed-points .carry/dlib_points.npz && touch /tmp/ferlab_cache/.seeded || return 1
fi
ferlab() { "${PYTHON:-python3}" -m ferlab.cli "$@"; }
