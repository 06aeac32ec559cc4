"""Ship and benchmark ferlab's FER+ ResNet-18 (`resnet18_ferplus`: the default before the multi-source
model, and its starting point), recording every number we publish.

    .venv/bin/ferlab train configs/resnet18_ferplus_cpu.yaml train.progress=false   # ~2 h on 2 CPU cores
    .venv/bin/python benchmarks/default_model.py runs/resnet18_ferplus_cpu/best

Writes src/ferlab/weights/resnet18_ferplus.{safetensors,json} (the best-on-valid checkpoint with int8 weights
and per-channel scales, 11 MB instead of 45 MB in float32: it ships inside the package),
then records the *shipped* weights with benchmarks/ferplus_results.py (FER+ test once, full and
de-duplicated, valid, params, FLOPs, CPU latency) plus the whole photo pipeline's latency.
Results: benchmarks/results/resnet18_ferplus.json and resnet18_ferplus_test_predictions.csv.
"""
import sys
from pathlib import Path

from ferlab.app.analyzer import FaceAnalyzer, default_model_path
from ferlab.engine.checkpoint import load_model, save_model
from ferlab.engine.profiling import latency_ms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ferplus_results import record  # noqa: E402

TRAINING_COMMAND = "ferlab train configs/resnet18_ferplus_cpu.yaml train.progress=false"


def main(ckpt):
    ckpt = Path(ckpt)
    model, meta = load_model(ckpt)
    ship = default_model_path().with_name("resnet18_ferplus")
    ship.parent.mkdir(parents=True, exist_ok=True)
    ship_meta = {k: v for k, v in meta.items() if k != "config"}
    ship_meta.update({"dtype": "int8 weights (per-channel scales)", "trained_with": TRAINING_COMMAND,
                      "training_config": meta.get("config")})
    save_model(ship, model, ship_meta, int8=True)

    fa = FaceAnalyzer("resnet18_ferplus")
    from skimage import data
    astro = data.astronaut()
    n_faces = len(fa.analyze(astro))
    record(ship, "resnet18", TRAINING_COMMAND, label="resnet18 (from scratch, 48x48 gray)", extra={
        "weights": "src/ferlab/weights/resnet18_ferplus.safetensors (int8 weights, per-channel scales; "
                   "src/ferlab/weights/default.safetensors until the multi-source default replaced it)",
        "cpu_latency_ms_per_photo_pipeline": latency_ms(lambda: fa.analyze(astro), 10, 2),
        "pipeline_photo": f"skimage astronaut 512x512, {n_faces} face(s) found"})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/resnet18_ferplus_cpu/best")
