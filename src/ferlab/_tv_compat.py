"""Make torchvision importable beside a CPU-only torch build.

The torchvision wheel on PyPI is built against CUDA torch; next to the CPU build its C++ extension
does not load, and `import torchvision` then fails in its meta registrations with
"operator torchvision::nms does not exist". timm imports torchvision, so ferlab would not import.
Defining the schemas of the two ops registered unconditionally lets the import finish; calling
them still raises (ferlab never does: it uses cv2.dnn.NMSBoxes). Applied only when needed.
"""
from __future__ import annotations

import importlib.util

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_lib = None


def ensure_torchvision_importable() -> None:
    global _lib
    if _lib is not None or importlib.util.find_spec("torchvision") is None:
        return
    import torch
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if not missing or _extension_loads():
        return
    _lib = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _lib.define(_SCHEMAS[name])


def _op_exists(name: str) -> bool:
    import torch
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _extension_loads() -> bool:
    """True when torchvision's own C++ ops load (a matching torch build): no shim is needed."""
    import torch
    spec = importlib.util.find_spec("torchvision")
    from pathlib import Path
    libs = list(Path(spec.origin).parent.glob("_C*.so")) + list(Path(spec.origin).parent.glob("_C*.pyd"))
    for lib in libs:
        try:
            torch.ops.load_library(str(lib))
            return True
        except (OSError, RuntimeError):
            return False
    return False
