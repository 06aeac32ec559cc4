"""Dataset readers for the real on-disk layouts; each registers itself by name."""
from .base import DATASET_READERS, DatasetError, SampleList, build_samples, register_dataset
from . import affectnet, ckplus, fer2013, ferplus, folders, rafdb  # noqa: F401

__all__ = ["DATASET_READERS", "DatasetError", "SampleList", "build_samples", "register_dataset"]
