"""What the viewer's controls mean, without a server: expression groups, head-pose offsets,
the camera a viewer starts from, and the state one posed frame is made of."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

# ARKit blendshape name prefixes -> the GUI folder their sliders go in (first match wins).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Eyes", ("eye",)),
    ("Brows", ("brow",)),
    ("Jaw and mouth", ("jaw", "mouth", "tongue")),
    ("Cheeks and nose", ("cheek", "nose")),
)
OTHER = "Other expressions"


def expression_groups(names) -> dict[str, list[int]]:
    """``{folder: [expression index, ...]}`` for the model's expression ``names``: ARKit names by
    their prefix (:data:`GROUPS`, in that order), any other name (a PCA model's ``expr_7``) in
    :data:`OTHER`. Empty folders are left out."""
    groups: dict[str, list[int]] = {title: [] for title, _ in GROUPS}
    groups[OTHER] = []
    for i, name in enumerate(names):
        lower = str(name).lower()
        title = next((t for t, prefixes in GROUPS if lower.startswith(prefixes)), OTHER)
        groups[title].append(i)
    return {title: ids for title, ids in groups.items() if ids}


def head_rotation(reference: np.ndarray, yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Axis-angle ``[3]`` of the head turned from ``reference [3]`` (axis-angle, model world) by
    ``yaw`` (about the head's vertical axis), ``pitch`` (nodding) and ``roll``, in degrees, taken in
    the head's own frame (as :meth:`AvatarPackage.budget_views` does)."""
    delta = torch.tensor([math.radians(pitch_deg), math.radians(yaw_deg), math.radians(roll_deg)], dtype=torch.float64)
    R = axis_angle_to_matrix(torch.as_tensor(np.asarray(reference), dtype=torch.float64)) @ axis_angle_to_matrix(delta)
    return matrix_to_axis_angle(R).numpy().astype(np.float32)


@dataclass
class ViewCamera:
    """A viewer camera in the avatar's world (metres): where it is, what it looks at, which way is
    up, and its vertical field of view (radians)."""

    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov: float

    @classmethod
    def from_opencv(cls, viewmat: torch.Tensor, K: torch.Tensor, height: int, target: np.ndarray) -> "ViewCamera":
        """The camera of ``viewmat [4, 4]`` (world-to-camera, OpenCV axes) and ``K [3, 3]`` for an image
        ``height`` pixels high, looking at ``target [3]``: its up is the camera's -y axis in the world."""
        R, t = viewmat[:3, :3].double(), viewmat[:3, 3].double()
        position = (-R.T @ t).numpy()
        up = (-R.T @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).numpy()
        fov = 2.0 * math.atan(0.5 * height / float(K[1, 1]))
        return cls(position, np.asarray(target, np.float64), up, fov)

    def viewmat(self) -> torch.Tensor:
        """``[4, 4]`` world-to-camera (OpenCV axes) of a camera at :attr:`position` looking at
        :attr:`look_at` with :attr:`up` as its -y axis: what the browser shows."""
        z = self.look_at - self.position
        z = z / np.linalg.norm(z)
        x = np.cross(z, self.up)
        x = x / np.linalg.norm(x)
        y = np.cross(z, x)
        m = np.eye(4)
        m[:3, :3] = np.stack((x, y, z))
        m[:3, 3] = -m[:3, :3] @ self.position
        return torch.as_tensor(m, dtype=torch.float32)

    def K(self, width: int, height: int) -> torch.Tensor:
        """``[3, 3]`` intrinsics of an image ``width`` x ``height`` seen with :attr:`fov` (vertical), centred."""
        return intrinsics(self.fov, width, height)


def intrinsics(fov: float, width: int, height: int) -> torch.Tensor:
    """``[3, 3]`` centred intrinsics of an image ``width`` x ``height`` with vertical field of view ``fov`` (radians)."""
    f = 0.5 * height / math.tan(0.5 * fov)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


@dataclass
class Pose:
    """One posed frame: expression coefficients ``[E]``, head rotation offsets in degrees, and the
    driven frame the base pose comes from (None: the avatar's reference pose)."""

    expression: np.ndarray
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    frame: int | None = None
