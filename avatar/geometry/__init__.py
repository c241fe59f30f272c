"""Cameras (OpenCV convention), rotations and mesh operations."""

from .rotations import axis_angle_to_matrix, normalize_quaternion, quaternion_to_matrix

__all__ = ["axis_angle_to_matrix", "normalize_quaternion", "quaternion_to_matrix"]
