"""ferlab: facial expression recognition — face detection, landmarks, alignment, models, training."""
from .app.defaults import DEFAULT_MODEL, package_version  # DEFAULT_MODEL: what every command runs unless told

__version__ = package_version()

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
