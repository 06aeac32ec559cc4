"""Dataset readers for the real on-disk layouts; each registers itself by name."""
from . import affectnet, ckplus, expw, fer2013, ferplus, folders, rafdb, twperformers  # noqa: F401
from .base import DATASET_READERS, DatasetError, SampleList, build_samples, register_dataset

__all__ = ["DATASET_READERS", "DatasetError", "SampleList", "build_samples", "register_dataset"]
