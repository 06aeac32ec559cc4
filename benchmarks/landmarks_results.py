"""Record the landmark net trained by `ferlab landmarks train`: its error against dlib (valid,
chosen there; test, once) and its speed against dlib's shape predictor in the face front end.

    .venv/bin/python benchmarks/landmarks_results.py runs/landmarks_ferplus "TRAINING COMMAND"

Speed: median ms per face on one CPU thread pair, (a) on a photo (the astronaut: a detected face
box -> 68 points, as FaceAnalyzer does) and (b) on FER+ test crops (48x48, as the landmark cache
does: dlib upscales the crop 4x first). Agreement on the photo is the NME between the two.
Writes benchmarks/results/landmarks_ferplus.json.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ferlab.data.arrays import load_images, load_splits
from ferlab.engine.landmark_training import normalised_mean_error
from ferlab.engine.profiling import git_commit, latency_ms, machine_info, now_utc
from ferlab.faces import DlibLandmarks, FaceDetector
from ferlab.faces.landmarks import NetLandmarks

ROOT = Path(__file__).resolve().parents[1]


def main():
    run, training_command = Path(sys.argv[1]), sys.argv[2]
    report = json.loads((run / "report.json").read_text())
    torch.set_num_threads(2)
    dlib_lm, net_lm = DlibLandmarks(), NetLandmarks(run / "best.safetensors")
    from skimage import data as skdata
    photo = skdata.astronaut()
    box = FaceDetector("auto")(photo)[0].box
    photo_ms = {"dlib": latency_ms(lambda: dlib_lm(photo, box), 50), "net": latency_ms(lambda: net_lm(photo, box), 50)}
    agree = float(normalised_mean_error(net_lm(photo, box)[None], dlib_lm(photo, box)[None])[0])
    test = load_splits({"dataset": "ferplus", "label_mode": "majority"})["test"]
    imgs, ok = load_images(test, 48, 1)
    crops = [imgs[i, 0] for i in np.flatnonzero(ok)[:200]]
    it = iter(range(10 ** 9))
    crop_ms = {"dlib": latency_ms(lambda: dlib_lm.on_crop(crops[next(it) % len(crops)]), 100),
               "net": latency_ms(lambda: net_lm.on_crop(crops[next(it) % len(crops)]), 100),
               "net_batch_of_200_per_face": latency_ms(lambda: net_lm.on_crops(crops), 5) / len(crops)}
    res = {"weights": str(run / "best.safetensors"), "best_epoch": report["best_epoch"],
           "valid_nme_vs_dlib": report["valid_nme"], "test_vs_dlib": report.get("test"),
           "params": report["params"], "flops": report["flops"],
           "ms_per_face_photo": photo_ms, "ms_per_face_ferplus_crop": crop_ms, "photo_nme_net_vs_dlib": agree,
           "training_command": training_command,
           "command": f'python benchmarks/landmarks_results.py {run} "{training_command}"',
           "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    out = ROOT / "benchmarks" / "results" / "landmarks_ferplus.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    t = res["test_vs_dlib"] or {}
    print(f"NME vs dlib: valid {res['valid_nme_vs_dlib']:.4f}, test {t.get('nme', float('nan')):.4f} "
          f"(failures > 0.1: {t.get('failures_0.1', float('nan')):.1%}); photo agreement {agree:.4f}")
    print(f"ms per face, photo: dlib {photo_ms['dlib']:.2f}, net {photo_ms['net']:.2f}; FER+ crop: dlib "
          f"{crop_ms['dlib']:.2f}, net {crop_ms['net']:.2f} (batched {crop_ms['net_batch_of_200_per_face']:.2f})")


if __name__ == "__main__":
    main()
