"""The model every command and `FaceAnalyzer()` run unless told otherwise: a name shipped in
ferlab/weights. Kept in a module of its own so the CLI reads it without importing torch."""
DEFAULT_MODEL = "default"


def package_version() -> str:
    """ferlab's installed version (pyproject.toml's, through the package metadata), or "0+unknown" in a
    source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ferlab")
    except PackageNotFoundError:
        return "0+unknown"
