"""The face front end: detection, 68-point landmarks, alignment."""
from .align import TEMPLATES, align_face, five_points
from .detect import DETECTORS, Detection, FaceDetector, HaarDetector, HogDetector
from .landmarks import DlibLandmarks, dataset_landmarks, shape_predictor_path

__all__ = ["TEMPLATES", "align_face", "five_points", "DETECTORS", "Detection", "FaceDetector", "HaarDetector", "HogDetector",
           "DlibLandmarks", "dataset_landmarks", "shape_predictor_path"]
