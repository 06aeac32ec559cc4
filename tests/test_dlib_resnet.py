"""dlib's face-recognition ResNet read from dlib's own file: the parsed network gives dlib's 128-D
descriptor on real faces, every layer is checked, and bad files are one clear error."""
import importlib.util
import numpy as np
import pytest
import torch

from conftest import ROOT

has_models = importlib.util.find_spec("face_recognition_models") is not None
needs_models = pytest.mark.skipif(not has_models, reason="the face-recognition-models wheel is not installed")
TWPERFORMERS = ROOT.parent / "shared" / "data" / "twperformers"


def _dlib_chips(images):
    """dlib's own pipeline: HOG detection, 68 points, its 150x150 chip, its descriptor."""
    import dlib

    from ferlab.models.dlib_resnet import dlib_weights_path
    models = dlib_weights_path().parent
    detect = dlib.get_frontal_face_detector()
    points = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    describe = dlib.face_recognition_model_v1(str(dlib_weights_path()))
    out = []
    for img in images:
        faces = detect(img, 1)
        if not faces:
            continue
        chip = dlib.get_face_chip(img, points(img, faces[0]), size=150, padding=0.25)
        out.append((chip, np.array(describe.compute_face_descriptor(chip))))
    return out


def _ours(net, chip):
    from ferlab.models.dlib_resnet import DLIB_NORM
    x = torch.from_numpy(chip.astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor(DLIB_NORM["mean"]).view(1, 3, 1, 1)) / DLIB_NORM["std"]
    with torch.no_grad():
        return net(x)[0].numpy()


@needs_models
def test_parsed_network_gives_dlibs_own_descriptor_on_real_faces():
    from skimage import data

    from ferlab.models.dlib_resnet import DlibFaceResNet, dlib_weights_path
    net = DlibFaceResNet()
    assert net.load_dlib(dlib_weights_path()) == 29 * 4 + 1  # 29 convs and affines (2 tensors each), fc
    net.eval()
    images = [data.astronaut()]
    if TWPERFORMERS.is_dir():  # more real faces where the development set is at hand
        import cv2
        photos = sorted(TWPERFORMERS.rglob("*.jpg"))[::200][:5]
        images += [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in photos]
    pairs = _dlib_chips(images)
    assert pairs, "dlib found no face"
    for chip, ref in pairs:
        ours = _ours(net, chip)
        assert np.abs(ours - ref).max() < 1e-4
    # an identity descriptor: the same face mirrored stays within dlib's same-person distance
    chip, ref = pairs[0]
    assert np.linalg.norm(_ours(net, chip[:, ::-1].copy()) - ref) < 0.6


@needs_models
def test_fer_model_from_dlib_weights_and_its_input_size():
    from ferlab.models import create_model
    model = create_model("dlib_resnet29", num_classes=8, pretrained_file="dlib").eval()
    rand = create_model("dlib_resnet29", num_classes=8).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert model(x).shape == (2, 8)
        assert model.forward_features(x).shape == (2, 256)
        assert not torch.allclose(model.forward_features(x), rand.forward_features(x))
        with pytest.raises(ValueError, match="at least 104x104"):
            model(torch.randn(1, 3, 96, 96))
    gray = create_model("dlib_resnet29", in_chans=1, pretrained_file="dlib")
    colour_stem = model.backbone.conv1.weight
    assert torch.allclose(gray.backbone.conv1.weight, colour_stem.sum(1, keepdim=True))


@needs_models
def test_damaged_or_foreign_files_are_refused(tmp_path):
    from ferlab.models.dlib_resnet import DlibFaceResNet, dlib_weights_path, read_dlib_network
    from ferlab.models.weights import WeightsError
    good = dlib_weights_path().read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(good[:len(good) // 2])
    with pytest.raises(WeightsError, match="are not those of dlib's 29-layer|not a dlib network file"):
        DlibFaceResNet().load_dlib(cut)
    other = tmp_path / "landmarks.dat"  # another dlib file: a shape predictor, no network in it
    other.write_bytes(b"\x01\x02" + bytes(range(256)) * 10)
    with pytest.raises(WeightsError, match="no dlib network layers"):
        read_dlib_network(other)
    with pytest.raises(WeightsError, match="no such weights file"):
        read_dlib_network(tmp_path / "missing.dat")


def test_the_file_is_found_without_importing_its_package(monkeypatch):
    from ferlab.models import dlib_resnet
    from ferlab.models.weights import WeightsError
    monkeypatch.setattr(dlib_resnet, "DLIB_WHEEL", "no_such_wheel_here")
    with pytest.raises(WeightsError, match="face-recognition-models"):
        dlib_resnet.dlib_weights_path()


@needs_models
def test_a_trained_dlib_model_saves_loads_and_runs_on_onnx_runtime(tmp_path):
    import json
    import subprocess
    import sys

    import onnxruntime as ort

    from ferlab.engine.checkpoint import load_model, save_model
    from ferlab.models import create_model
    from ferlab.models.dlib_resnet import DLIB_NORM
    torch.manual_seed(0)
    m = create_model("dlib_resnet29", num_classes=3, pretrained_file="dlib")
    opt = torch.optim.AdamW(m.parameters(), 1e-3)  # one step, so that the copy is of trained weights
    torch.nn.functional.cross_entropy(m(torch.randn(2, 3, 112, 112)), torch.tensor([0, 2])).backward()
    opt.step()
    m.eval()
    meta = {"arch": "dlib_resnet29", "labels": ["neutral", "happiness", "surprise"],
            "model_kwargs": {"pretrained_file": "dlib"},
            "preprocess": {"img_size": 112, "channels": 3, **DLIB_NORM, "framing": "fer2013"}}
    save_model(tmp_path / "m", m, meta)
    m2, _ = load_model(tmp_path / "m")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x))
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "export", str(tmp_path / "m.safetensors"),
                        str(tmp_path / "out"), "--onnx"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "out.json").read_text())["arch"] == "dlib_resnet29"
    sess = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"image": x.numpy()})[0], m(x).numpy(), atol=1e-3, rtol=1e-3)
