#!/usr/bin/env bash
# A user's install, as the README gives it: a fresh virtual environment that already holds the CPU
# build of torch 2.13.0, then the README's pip line for this repository (pip builds ferlab's wheel).
# Checks that the torch already there is kept, that `ferlab demo` runs BlazeFace from the package's
# own files, and that `ferlab predict` works from a folder outside the clone.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
PIP="$WORK/venv/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q torch==2.13.0
# the README's line (kept identical: tests/test_readme.py checks that the README says this)
(cd "$ROOT" && "$PIP" install -q . torchvision==0.28.0)
cd "$WORK"
TORCH="$("$WORK/venv/bin/python" -c 'import torch; print(torch.__version__)')"
case "$TORCH" in 2.13.0*) ;; *) echo "fresh install: torch became $TORCH (was 2.13.0)"; exit 1 ;; esac
HF_HUB_OFFLINE=1 "$WORK/venv/bin/ferlab" demo --out "$WORK/demo" > demo.txt 2>&1 || { cat demo.txt; exit 1; }
grep -q "detector=blazeface" demo.txt || { echo "fresh install: the demo did not run BlazeFace"; cat demo.txt; exit 1; }
grep -q "happiness" demo.txt || { echo "fresh install: the demo did not find the astronaut happy"; cat demo.txt; exit 1; }
"$WORK/venv/bin/python" -c 'from skimage import data; from PIL import Image; Image.fromarray(data.astronaut()).save("photo.jpg")'
HF_HUB_OFFLINE=1 "$WORK/venv/bin/ferlab" predict photo.jpg --out "$WORK/pred" > pred.txt 2>&1 || { cat pred.txt; exit 1; }
grep -q "1 face" pred.txt || { echo "fresh install: predict found no face"; cat pred.txt; exit 1; }
echo "fresh install: torch $TORCH kept; demo ran BlazeFace; predict worked outside the clone"
