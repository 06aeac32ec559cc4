"""The model every command and `FaceAnalyzer()` run unless told otherwise: a name shipped in
ferlab/weights. Kept in a module of its own so the CLI reads it without importing torch."""
DEFAULT_MODEL = "default"
