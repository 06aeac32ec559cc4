"""The app: `FaceAnalyzer` (detection -> landmarks -> alignment -> model -> plain face records),
drawing, and explanations (Grad-CAM, attention maps, t-SNE)."""
__all__ = ["FaceAnalyzer", "default_model_path", "draw_faces"]


def __getattr__(name):  # lazy, like the package root: importing one app module loads only what it needs
    if name in ("FaceAnalyzer", "default_model_path"):
        from . import analyzer
        return getattr(analyzer, name)
    if name == "draw_faces":
        from .draw import draw_faces
        return draw_faces
    raise AttributeError(name)
