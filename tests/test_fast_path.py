"""The fast path: ONNX Runtime inference (same probabilities as PyTorch, the export cached),
threads, nothing loaded that classify_crops does not use, the fastnet students, and distillation
from a teacher's cached logits."""
import json

import numpy as np
import pytest
import torch
from skimage import data

from ferlab.app.analyzer import FaceAnalyzer
from ferlab.engine.checkpoint import load_model, save_model


def test_onnx_backend_gives_the_pytorch_probabilities():
    a, b = FaceAnalyzer(backend="onnx"), FaceAnalyzer(backend="torch")
    assert (a.backend, b.backend) == ("onnx", "torch")
    size, ch = a.pre["img_size"], a.pre["channels"]
    crops = np.random.RandomState(0).randint(0, 255, (5, ch, size, size)).astype(np.uint8)
    assert np.abs(a.predict_tensor(crops) - b.predict_tensor(crops)).max() < 1e-4
    fa, fb = a.analyze(data.astronaut()), b.analyze(data.astronaut())
    assert fa[0]["label"] == fb[0]["label"] == "happiness"
    assert max(abs(fa[0]["probs"][k] - fb[0]["probs"][k]) for k in a.labels) < 1e-4
    flip_a, flip_b = FaceAnalyzer(backend="onnx", flip_tta=True), FaceAnalyzer(backend="torch", flip_tta=True)
    assert np.abs(flip_a.predict_tensor(crops) - flip_b.predict_tensor(crops)).max() < 1e-4


def test_every_shipped_model_runs_on_onnx_runtime_as_on_pytorch():
    """Each name --model takes (the papers' models included: RASA with its two inputs, the ensembles
    with their members) exports to ONNX Runtime and gives PyTorch's probabilities on a real face."""
    from ferlab.app.analyzer import shipped_models
    img = data.astronaut()
    for name in shipped_models():
        a, b = FaceAnalyzer(name, backend="onnx"), FaceAnalyzer(name, backend="torch")
        assert a.backend == "onnx", name
        fa, fb = a.analyze(img), b.analyze(img)
        assert fa[0]["label"] == fb[0]["label"] == "happiness", name
        assert max(abs(fa[0]["probs"][k] - fb[0]["probs"][k]) for k in a.labels) < 1e-4, name


def test_the_export_is_made_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path / "cache"))
    FaceAnalyzer(backend="onnx")
    files = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    import ferlab.engine.onnx_runtime as ort_mod
    monkeypatch.setattr(ort_mod, "export_onnx", lambda *a, **k: pytest.fail("exported again"))
    FaceAnalyzer(backend="onnx")
    assert files[0].stat().st_mtime_ns == mtime


def test_classify_crops_loads_no_detector_or_landmarker():
    fa = FaceAnalyzer()
    assert fa._detector is None and fa._landmarker is None
    r = fa.classify_crops([data.astronaut()[60:200, 160:300]])
    assert r[0]["label"] and fa._detector is None and fa._landmarker is None
    fa.analyze(data.astronaut())
    assert fa._detector is not None and fa._landmarker is not None


@pytest.mark.parametrize("kw", [{"backend": "tensorrt"}, {"threads": 0}, {"detector": "mtcnn"}])
def test_bad_engine_settings_are_refused_at_once(kw):
    with pytest.raises(ValueError):
        FaceAnalyzer(**kw)


def test_a_model_onnx_cannot_take_stays_on_pytorch(monkeypatch):
    import ferlab.engine.onnx_runtime as ort_mod

    def refuse(model, meta, path):
        raise ort_mod.OnnxUnavailable("test: this model does not export")
    monkeypatch.setattr(ort_mod, "cached_onnx", refuse)
    fa = FaceAnalyzer()
    assert fa.backend == "torch" and "does not export" in fa.backend_note
    with pytest.raises(ValueError, match="does not export"):
        FaceAnalyzer(backend="onnx")


@pytest.mark.parametrize("name", ["fastnet_s", "fastnet_m", "fastnet_l"])
def test_students_are_small_and_export(name, tmp_path):
    from ferlab.engine.onnx_runtime import OnnxClassifier, export_onnx
    from ferlab.engine.profiling import count_flops
    from ferlab.models import create_model
    m = create_model(name, num_classes=8, in_chans=1).eval()
    assert count_flops(m, (1, 1, 48, 48)) < 0.2 * count_flops(create_model("resnet18", num_classes=8, in_chans=1),
                                                              (1, 1, 48, 48))
    x = torch.randn(3, 1, 48, 48)
    path = export_onnx(m, {"preprocess": {"img_size": 48, "channels": 1}}, tmp_path / "m.onnx")
    with torch.no_grad():
        assert np.abs(OnnxClassifier(path)(x.numpy()) - m(x).numpy()).max() < 1e-4


def _tiny_teacher(tmp_path, name="teacher", size=32):
    """A random fastnet_s over three labels saved as a ferlab model: (model, meta, path)."""
    from ferlab.models import create_model
    teacher = create_model("fastnet_s", num_classes=3, in_chans=1).eval()
    meta = {"arch": "fastnet_s", "labels": ["neutral", "happiness", "surprise"], "model_kwargs": {"in_chans": 1},
            "preprocess": {"img_size": size, "channels": 1, "mean": 0.5, "std": 0.5}}
    save_model(tmp_path / name, teacher, meta)
    return teacher, meta, tmp_path / f"{name}.safetensors"


def _student_overrides(root, out, teacher, *more) -> list[str]:
    """Overrides of a tiny distillation run on the class-folder fixture (32x32 gray fastnet_s)."""
    return ["data.dataset=folder", f"data.root={root}", "data.labels=[neutral,happiness,surprise]",
            "data.img_size=32", "data.channels=1", "model.name=fastnet_s", "optim.name=adam", "optim.lr=0.003",
            "optim.weight_decay=0", "schedule.name=constant", "schedule.epochs=2", "train.batch_size=8",
            "train.threads=1", "train.progress=false", f"train.out_dir={out}", "augment.erasing=0",
            f"distill.teacher={teacher}", *more]


def test_distillation_trains_on_the_teachers_logits_cached_once(class_folder_dataset, tmp_path):
    from ferlab.engine.config import load_config
    from ferlab.engine.distill import distill
    from ferlab.losses.distillation import DistillationLoss
    _, _, teacher = _tiny_teacher(tmp_path)
    cfg = load_config(None, _student_overrides(class_folder_dataset, tmp_path / "run", teacher,
                                               "distill.temperature=2.0", "distill.alpha=1.0"))
    log = []
    r = distill(cfg, log=log.append)
    assert r["best_epoch"] >= 0 and "test" in r
    assert any("teacher logits cached" in m for m in log)
    cache = torch.load(tmp_path / "run" / "teacher_logits.pt", weights_only=True)
    assert cache["train"].shape == cache["train_flip"].shape == (36, 3)
    meta_out = json.loads((tmp_path / "run" / "best.json").read_text())
    assert meta_out["distilled_from"]["teacher"].endswith("teacher.safetensors")
    # alpha 1: the loss is the teacher's KL only; a student equal to the teacher has none
    loss = DistillationLoss(2.0, 1.0)
    z = torch.randn(4, 3)
    assert float(loss(z, z, torch.full((4, 3), 1 / 3))) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(z, -z, torch.full((4, 3), 1 / 3))) > 0.1
    # a second run reads the cache instead of computing the teacher again
    log2 = []
    distill({**cfg, "train": {**cfg["train"], "out_dir": str(tmp_path / "run2")},
             "distill": {**cfg["distill"], "cache_file": str(tmp_path / "run" / "teacher_logits.pt")}}, log=log2.append)
    assert not any("teacher logits cached" in m for m in log2)


def test_a_teacher_of_another_input_reads_the_same_faces_at_its_own(class_folder_dataset, tmp_path):
    """A colour 40 px teacher teaches a gray 32 px student: its cached logits are its own on the same
    train faces (same order) at its input; the student can start from a trained model (init_from)."""
    from ferlab.engine.config import load_config
    from ferlab.engine.distill import distill, teacher_logits
    from ferlab.engine.train import load_split_arrays
    from ferlab.models import create_model
    labels = ["neutral", "happiness", "surprise"]
    torch.manual_seed(1)
    teacher = create_model("fastnet_s", num_classes=3, in_chans=3).eval()
    tmeta = {"arch": "fastnet_s", "labels": labels, "model_kwargs": {"in_chans": 3},
             "preprocess": {"img_size": 40, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": 0.5}}
    save_model(tmp_path / "teacher", teacher, tmeta)
    start = create_model("fastnet_s", num_classes=3, in_chans=1).eval()
    save_model(tmp_path / "start", start, {"arch": "fastnet_s", "labels": labels, "model_kwargs": {"in_chans": 1},
                                           "preprocess": {"img_size": 32, "channels": 1, "mean": 0.5, "std": 0.5}})
    over = ["data.dataset=folder", f"data.root={class_folder_dataset}", "data.labels=[neutral,happiness,surprise]",
            "data.img_size=32", "data.channels=1", "model.name=fastnet_s", "optim.name=sgd", "optim.lr=0",
            "optim.weight_decay=0", "schedule.name=constant", "schedule.epochs=1", "train.batch_size=8",
            "train.threads=1", "train.progress=false", f"train.out_dir={tmp_path / 'run'}", "augment.erasing=0",
            f"train.init_from={tmp_path / 'start.safetensors'}", f"distill.teacher={tmp_path / 'teacher.safetensors'}"]
    cfg = load_config(None, over)
    log = []
    distill(cfg, log=log.append)
    assert any("teacher's input" in m for m in log) and any("initialised from" in m for m in log)
    cache = torch.load(tmp_path / "run" / "teacher_logits.pt", weights_only=True)
    splits, arrays = load_split_arrays({**cfg["data"], "img_size": 40, "channels": 3})
    assert arrays["train"].shape[1:] == (3, 40, 40)
    student_splits, _ = load_split_arrays(cfg["data"])
    assert [str(p) for p in splits["train"].paths] == [str(p) for p in student_splits["train"].paths]
    own = teacher_logits(teacher, tmeta, tmp_path / "teacher.safetensors", arrays["train"])
    assert torch.allclose(cache["train"], own, atol=1e-4)
    # a learning rate of 0: the student is still the model it started from
    out, _ = load_model(tmp_path / "run" / "best.safetensors")
    for k, v in start.state_dict().items():
        if v.is_floating_point() and "running" not in k:
            assert torch.allclose(out.state_dict()[k], v, atol=1e-5), k


def test_teacher_targets_follow_the_view_or_average_both():
    from ferlab.engine.distill import teacher_targets
    cache = {"train": torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]),
             "train_flip": torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])}
    idx, mirrored = torch.tensor([2, 0]), torch.tensor([True, False])
    assert teacher_targets(cache, idx, mirrored, False).tolist() == [[0.0, 3.0], [1.0, 0.0]]
    assert teacher_targets(cache, idx, mirrored, True).tolist() == [[1.5, 1.5], [0.5, 0.5]]


def test_distillation_refuses_a_teacher_of_other_labels(class_folder_dataset, tmp_path):
    from ferlab.engine.config import load_config
    from ferlab.engine.distill import distill
    from ferlab.models import create_model
    save_model(tmp_path / "t", create_model("fastnet_s", num_classes=8, in_chans=1),
               {"arch": "fastnet_s", "labels": ["a", "b", "c", "d", "e", "f", "g", "h"], "model_kwargs": {"in_chans": 1},
                "preprocess": {"img_size": 32, "channels": 1, "mean": 0.5, "std": 0.5}})
    cfg = load_config(None, ["data.dataset=folder", f"data.root={class_folder_dataset}",
                             "data.labels=[neutral,happiness,surprise]", "data.img_size=32", "data.channels=1",
                             "model.name=fastnet_s", f"train.out_dir={tmp_path / 'r'}", "train.progress=false",
                             f"distill.teacher={tmp_path / 't.safetensors'}"])
    with pytest.raises(ValueError, match="predicts"):
        distill(cfg)
    for bad in ({"temperature": 0}, {"alpha": 2}, {"alpha": "much"}, {"flip_average": "yes"}):
        with pytest.raises(ValueError, match="distill"):
            distill({**cfg, "distill": {**cfg["distill"], **bad}})


def test_an_unwritable_onnx_cache_leaves_the_model_on_pytorch(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("FERLAB_CACHE", str(blocker))  # the cache folder cannot be made
    fa = FaceAnalyzer()
    assert fa.backend == "torch" and "FERLAB_CACHE" in fa.backend_note
    assert fa.classify_crops([data.astronaut()[60:200, 160:300]])[0]["label"]


def test_onnx_input_is_standardised_in_numpy_as_pytorch_does():
    """The ONNX Runtime path standardises faces in NumPy: the same float32 values as the PyTorch
    path, for one mean and std and for one per channel."""
    from ferlab.data.arrays import standardise
    x = np.random.RandomState(0).randint(0, 256, (3, 3, 64, 64)).astype(np.uint8)
    for pre in ({"mean": 0.5, "std": 0.5}, {"mean": [0.2, 0.4, 0.6], "std": [0.3, 0.25, 0.2]}):
        a = standardise(x.astype(np.float32) / np.float32(255.0), pre)
        b = standardise(torch.from_numpy(x).float() / 255.0, pre).numpy()
        assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == b.shape and np.array_equal(a, b)


def test_weight_ema_is_what_a_distillation_run_selects_saves_and_resumes(class_folder_dataset, tmp_path):
    from ferlab.engine.checkpoint import read_safetensors
    from ferlab.engine.config import load_config
    from ferlab.engine.distill import distill
    from ferlab.engine.weight_average import WeightEMA
    _, _, teacher = _tiny_teacher(tmp_path)

    def cfg(out, *more):
        return load_config(None, _student_overrides(
            class_folder_dataset, tmp_path / out, teacher, "optim.lr=0.01", "schedule.epochs=3",
            "train.evaluate_test=false", f"distill.cache_file={tmp_path / 'logits.pt'}", *more))
    distill(cfg("plain"), log=lambda *_: None)
    distill(cfg("ema", "train.ema=0.5"), log=lambda *_: None)
    plain = read_safetensors(tmp_path / "plain" / "last.safetensors")
    averaged = read_safetensors(tmp_path / "ema" / "last.safetensors")
    # the same seed and steps: the saved weights differ only by the averaging
    assert any(not torch.equal(plain[k], averaged[k]) for k in plain if plain[k].is_floating_point())
    # stopped after one epoch and resumed: the same average and trained weights as straight through
    assert distill(cfg("resumed", "train.ema=0.5", "train.stop_after_epochs=1"), log=lambda *_: None)["interrupted"]
    assert len(json.loads((tmp_path / "resumed" / "history.json").read_text())) == 1
    distill(cfg("resumed", "train.ema=0.5"), resume=True, log=lambda *_: None)
    resumed = read_safetensors(tmp_path / "resumed" / "last.safetensors")
    for k in averaged:
        assert torch.allclose(averaged[k].float(), resumed[k].float(), atol=1e-5), k
    # the average itself: after one update from equal weights it is those weights; then it moves halfway
    m = torch.nn.Linear(2, 1)
    ema = WeightEMA(m, 0.5)
    with torch.no_grad():
        ema.update()
        w0 = m.weight.clone()
        m.weight.add_(2.0)
        ema.update()
    assert torch.allclose(ema.module.weight, w0 + 1.0)
    for bad in (0, 1, 1.5, "fast"):
        with pytest.raises(ValueError, match="train.ema"):
            WeightEMA(m, bad)


def test_consistent_teaching_caches_the_teachers_logits_of_reproducible_augmented_views(class_folder_dataset, tmp_path):
    from ferlab.engine.config import load_config
    from ferlab.engine.distill import augmented_views, distill, teacher_logits
    teacher, meta, path = _tiny_teacher(tmp_path)
    overrides = _student_overrides(class_folder_dataset, tmp_path / "run", path, "augment.rotate=15",
                                   "train.evaluate_test=false", "distill.augmented_views=2")
    log = []
    distill(load_config(None, overrides), log=log.append)
    assert any("2 augmented view(s)" in m for m in log)
    cache = torch.load(tmp_path / "run" / "teacher_logits.pt", weights_only=True)
    assert cache["views"].shape == (2, 36, 3)
    # the views are the same faces every time, and the cached logits are the teacher's on them
    faces = np.random.RandomState(0).randint(0, 256, (20, 1, 32, 32)).astype(np.uint8)
    a = augmented_views(faces, {"rotate": 15}, 0, 2, chunk=8)
    assert a.shape == (2, 20, 1, 32, 32) and np.array_equal(a, augmented_views(faces, {"rotate": 15}, 0, 2, chunk=8))
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], faces)
    from ferlab.engine.train import load_split_arrays
    cfg = load_config(None, overrides)
    _, arrays = load_split_arrays(cfg["data"], 0)
    views = augmented_views(arrays["train"], {**cfg["augment"], "flip": False}, 0, 2)
    want = teacher_logits(teacher, meta, path, views[1], log=lambda *_: None)
    assert torch.allclose(cache["views"][1], want, atol=1e-4)
    # a batch: faces shown as view v take that view's pixels and logits, the others stay as they were
    from ferlab.engine.distill import show_views
    idx, shown = torch.tensor([3, 0, 7]), torch.tensor([0, 2, 1])
    x, t = torch.rand(3, 1, 32, 32), torch.randn(3, 3)
    x0, t0 = x.clone(), t.clone()
    show_views(x, t, idx, shown, views, cache["views"])
    assert torch.equal(x[0], x0[0]) and torch.equal(t[0], t0[0])
    assert torch.equal(x[1], torch.from_numpy(views[1, 0]).float() / 255) and torch.equal(t[1], cache["views"][1, 0])
    assert torch.equal(x[2], torch.from_numpy(views[0, 7]).float() / 255) and torch.equal(t[2], cache["views"][0, 7])
    # a second run finds the views' logits in the cache; another view count computes them again
    log2 = []
    distill(load_config(None, overrides + [f"train.out_dir={tmp_path / 'run2'}",
                                           f"distill.cache_file={tmp_path / 'run' / 'teacher_logits.pt'}"]), log=log2.append)
    assert not any("augmented view" in m for m in log2)
    log3 = []
    distill(load_config(None, overrides + [f"train.out_dir={tmp_path / 'run3'}", "distill.augmented_views=1",
                                           f"distill.cache_file={tmp_path / 'run' / 'teacher_logits.pt'}"]), log=log3.append)
    assert any("1 augmented view(s)" in m for m in log3)
    for bad in ("-1", "1.5", "true"):
        with pytest.raises(ValueError, match="augmented_views"):
            distill(load_config(None, overrides + [f"distill.augmented_views={bad}"]))
    _, _, teacher48 = _tiny_teacher(tmp_path, "teacher48", size=48)
    with pytest.raises(ValueError, match="student's input"):
        distill(load_config(None, overrides + [f"distill.teacher={teacher48}"]))
