import json
import subprocess
import sys

import numpy as np
import torch

from ferlab.engine.checkpoint import load_model, save_model
from ferlab.models import create_model


def _meta():
    return {"arch": "resnet18", "labels": ["neutral", "happiness", "surprise"], "model_kwargs": {"in_chans": 1},
            "preprocess": {"img_size": 48, "channels": 1, "mean": 0.5, "std": 0.5, "framing": "fer2013"}}


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=3, in_chans=1).eval()
    save_model(tmp_path / "m", m, _meta())
    m2, meta = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 48, 48)
    torch.testing.assert_close(m(x), m2(x))
    assert meta["labels"] == ["neutral", "happiness", "surprise"]
    assert not list(tmp_path.glob(".*"))  # no temp files left behind by the atomic writes



def test_weights_past_the_file_limit_continue_in_part_files(tmp_path):
    """A ResNet-18 (44.7 MB in float32) written with a 20 MB limit: the main file and two parts, each
    under the limit, listed in the description; loading reads them all and gives the same outputs.
    Without a limit (a training run) it is one file."""
    from ferlab.engine.checkpoint import MAX_WEIGHT_FILE_BYTES, own_weight_files
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=3, in_chans=1).eval()
    save_model(tmp_path / "big", m, _meta(), max_file_bytes=MAX_WEIGHT_FILE_BYTES)
    files = own_weight_files(tmp_path / "big")
    assert [f.name for f in files] == ["big.safetensors", "big.part1.safetensors", "big.part2.safetensors"]
    assert all(f.stat().st_size <= MAX_WEIGHT_FILE_BYTES for f in files)
    assert json.loads((tmp_path / "big.json").read_text())["weight_shards"] == [f.name for f in files[1:]]
    x = torch.randn(2, 1, 48, 48)
    torch.testing.assert_close(load_model(tmp_path / "big")[0](x), m(x))
    save_model(tmp_path / "one", m, _meta())
    assert len(own_weight_files(tmp_path / "one")) == 1
    save_model(tmp_path / "small", m, _meta(), int8=True, max_file_bytes=MAX_WEIGHT_FILE_BYTES)  # 11.2 MB: one file
    assert len(own_weight_files(tmp_path / "small")) == 1

def test_export_half_and_onnx(tmp_path):
    import onnxruntime as ort
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=3, in_chans=1).eval()
    save_model(tmp_path / "m", m, _meta())
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "export", str(tmp_path / "m.safetensors"),
                        str(tmp_path / "out"), "--half", "--onnx"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "out.json").read_text())["dtype"] == "float16"
    assert (tmp_path / "out.safetensors").stat().st_size < (tmp_path / "m.safetensors").stat().st_size * 0.6
    x = torch.randn(2, 1, 48, 48)
    half, _ = load_model(tmp_path / "out")
    torch.testing.assert_close(half(x), m(x), atol=2e-2, rtol=2e-2)
    sess = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, half(x).detach().numpy(), atol=1e-3, rtol=1e-3)


def test_int8_weights_by_hand_and_round_trip(tmp_path):
    from ferlab.engine.checkpoint import INT8_SCALE, quantize_int8
    w = torch.tensor([[0.5, -1.27, 0.01], [2.54, 0.0, -0.02]])
    q, scale = quantize_int8(w)
    # per output row: scale = max|w| / 127 -> 0.01 and 0.02; q = round(w / scale)
    torch.testing.assert_close(scale, torch.tensor([0.01, 0.02]))
    assert q.dtype == torch.int8 and q.tolist() == [[50, -127, 1], [127, 0, -1]]
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=3, in_chans=1).eval()
    save_model(tmp_path / "q", m, _meta(), int8=True)
    from safetensors.torch import load_file
    sd = load_file(str(tmp_path / "q.safetensors"))
    assert sd["net.layer1.0.conv1.weight"].dtype == torch.int8 and "net.layer1.0.conv1.weight" + INT8_SCALE in sd
    assert sd["net.layer1.0.bn1.weight"].dtype == torch.float16
    m2, _ = load_model(tmp_path / "q")
    x = torch.randn(4, 1, 48, 48)
    ref, out = torch.softmax(m(x), 1), torch.softmax(m2(x), 1)
    assert (ref - out).abs().max() < 0.02 and not torch.equal(ref, out)


def test_half_and_int8_keep_float32_where_float16_cannot_hold_the_values(tmp_path):
    """A BatchNorm over large activations (DAN's BatchNorm on its logits keeps running variances near
    1e5) would become inf in float16 and the model a constant; such a tensor is stored in float32."""
    from safetensors.torch import load_file
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=3, in_chans=1).eval()
    bn = m.net.layer4[1].bn2
    with torch.no_grad():
        bn.running_var.mul_(1e5)
        bn.weight.mul_(300.0)  # the same output scale as before: an equivalent model
    x = torch.randn(4, 1, 48, 48)
    for mode in ("half", "int8"):
        save_model(tmp_path / mode, m, _meta(), **{mode: True})
        sd = load_file(str(tmp_path / f"{mode}.safetensors"))
        assert sd["net.layer4.1.bn2.running_var"].dtype == torch.float32, mode
        assert sd["net.layer4.1.bn2.running_mean"].dtype == torch.float16, mode
        m2, _ = load_model(tmp_path / mode)
        ref, out = torch.softmax(m(x), 1), torch.softmax(m2(x), 1)
        assert torch.isfinite(out).all() and (ref - out).abs().max() < 0.03, mode


def test_a_runs_checkpoints_keep_one_weights_file_for_a_model_with_weight_shards(tmp_path):
    """A model whose export splits its weights (`weight_shards`, as an ensemble's members) is saved
    by a training run as one file per checkpoint, and resuming reads every tensor back."""
    import torch.nn as nn

    from ferlab.engine.checkpoint import RunCheckpoints

    class TwoParts(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

        def weight_shards(self):
            return {"member1": "b."}

    model = TwoParts()
    run = RunCheckpoints(tmp_path / "run")
    run.save(0, model, {"arch": "two_parts"}, {"epoch": 0}, [{"epoch": 0}], {"arch": "two_parts"})
    unit = tmp_path / "run" / "checkpoints" / "epoch-0000"
    assert sorted(p.name for p in unit.glob("*.safetensors")) == ["best.safetensors", "last.safetensors"]
    assert "weight_shards" not in json.loads((unit / "last.json").read_text())
    epoch, state, weights, history = run.load()
    assert epoch == 0 and history == [{"epoch": 0}]
    assert set(weights) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(weights[k], v)
    # the export of the same model does split it
    save_model(tmp_path / "exported", model, {"arch": "two_parts"})
    assert (tmp_path / "exported.member1.safetensors").is_file()
