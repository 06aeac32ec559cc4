"""ferlab models: import registers every builder."""
from .. import _tv_compat

_tv_compat.ensure_torchvision_importable()

from . import convcut, dan, dlib_resnet, efficientnet_lite, ensemble, fastnet, pcda, rasa, resnet, swin_se  # noqa: E402,F401
from .registry import create_model, list_models, model_args, model_entrypoint, needs_landmarks, register_model  # noqa: E402

__all__ = ["create_model", "list_models", "model_args", "model_entrypoint", "needs_landmarks", "register_model"]
