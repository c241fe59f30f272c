"""Landmarks: MediaPipe face mesh / segmentation wrappers, landmark embeddings, temporal filters."""

from .face_mesh import FaceDetection, FaceMeshDetector

__all__ = ["FaceDetection", "FaceMeshDetector"]
