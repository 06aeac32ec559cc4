"""ferlab: facial expression recognition — face detection, landmarks, alignment, models, training."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("ferlab")  # one source: pyproject.toml
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
from .app.defaults import DEFAULT_MODEL  # the model every command and FaceAnalyzer() run unless told otherwise

__all__ = ["DEFAULT_MODEL", "FaceAnalyzer", "adapt", "create_model", "list_models", "__version__"]


def __getattr__(name):  # lazy: `import ferlab` stays cheap; torch loads on first use
    if name == "FaceAnalyzer":
        from .app.analyzer import FaceAnalyzer
        return FaceAnalyzer
    if name == "adapt":
        from .app.adapt import adapt
        return adapt
    if name in ("create_model", "list_models"):
        from . import models
        return getattr(models, name)
    raise AttributeError(name)
