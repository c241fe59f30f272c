"""Cameras (OpenCV convention), rotations and mesh operations."""

from .rotations import (
    axis_angle_to_matrix,
    euler_to_axis_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    normalize_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
    yaw_pitch_matrix,
)

__all__ = [
    "axis_angle_to_matrix", "euler_to_axis_angle", "matrix_to_axis_angle", "matrix_to_quaternion", "normalize_quaternion", "quaternion_multiply", "quaternion_to_matrix",
    "yaw_pitch_matrix",
]
