"""The parametric head restricted to its 478 embedded MediaPipe landmarks.

ICT is linear before the rigid transform, so the landmarks are exactly
``template_l + shapedirs_l · shape + exprdirs_l · expression`` with the rows of the basis
taken at the landmark triangles' corners and mixed by the barycentrics: evaluating them
costs a few small matrix products instead of a full-mesh forward.

Gaze: ICT's ``eyeLook*`` shapes only deform the eyelids; its eyeballs do not turn. The
iris centres (MediaPipe 468 right, 473 left) are therefore modelled as points on the
eyeball rotated about the eyeball's centre by a yaw/pitch read from the ``eyeLook*``
coefficients (coefficient 1 = :data:`GAZE_MAX_YAW` / :data:`GAZE_MAX_PITCH`), the usual
ARKit reading of those shapes. Renderers that turn the eyeballs should use
:func:`gaze_angles`.

Camera: world = the model's (+y up, +z toward the viewer); the tracking camera sits at
the world origin looking down -z, i.e. ``viewmat = diag(1, -1, -1, 1)`` (OpenCV), and the
head is placed by ``rotation``/``translation`` (translation z < 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry.rotations import axis_angle_to_matrix

IRIS_RIGHT, IRIS_LEFT = 468, 473  # iris centres (subject's right / left eye)
GAZE_MAX_YAW = math.radians(30.0)
GAZE_MAX_PITCH = math.radians(25.0)
CAMERA_FLIP = (1.0, -1.0, -1.0)  # world -> OpenCV camera axes


def tracking_viewmat(device=None, dtype=torch.float32) -> Tensor:
    """``[4, 4]`` world-to-camera of the tracking camera (origin, looking down world -z)."""
    return torch.diag(torch.tensor(CAMERA_FLIP + (1.0,), device=device, dtype=dtype))


@dataclass
class LandmarkModel:
    """Blendshape basis at the embedded landmarks (``L = 478``).

    Attributes:
        template: ``[L, 3]``; shapedirs ``[L, 3, S]``; exprdirs ``[L, 3, E]`` (metres).
        corner_*: the same at the 3 corners of each landmark triangle ``[L, 3, 3(, K)]``, for normals.
        eye_template / eye_shapedirs: eyeball centres ``[2, 3]`` / ``[2, 3, S]`` (right, left).
        contour: ``[L]`` bool face-oval landmarks; expression_names: the ``E`` names.
        view_offsets: ``[L, 3, 2]`` or None, the embedding's first-order sliding of each point
        with the view direction (:func:`view_directions`).
    """

    template: Tensor
    shapedirs: Tensor
    exprdirs: Tensor
    corner_template: Tensor
    corner_shapedirs: Tensor
    corner_exprdirs: Tensor
    eye_template: Tensor
    eye_shapedirs: Tensor
    contour: Tensor
    expression_names: tuple[str, ...]
    model_name: str
    view_offsets: Tensor | None = None  # [L, 3, 2] sliding with the view direction (see avatar.landmarks.embedding)

    @classmethod
    def from_model(cls, model, embedding) -> "LandmarkModel":
        corners = model.faces[embedding.faces]  # [L, 3]
        bary = embedding.bary.to(model.template.dtype)
        ct, cs, ce = model.template[corners], model.shapedirs[corners], model.exprdirs[corners]
        mix = lambda x: torch.einsum("lc,lc...->l...", bary, x)  # noqa: E731
        parts = model.parts
        eyes = [parts[n].vertices for n in ("eyeball_right", "eyeball_left")] if "eyeball_left" in parts else None
        if eyes is None:
            raise ValueError(f"model '{model.name}' has no eyeball parts: load it with parts including 'eyeballs'")
        eye_t = torch.stack([model.template[m].mean(0) for m in eyes])
        eye_s = torch.stack([model.shapedirs[m].mean(0) for m in eyes])
        offsets = getattr(embedding, "view_offsets", None)
        return cls(mix(ct), mix(cs), mix(ce), ct, cs, ce, eye_t, eye_s, embedding.contour.clone(),
                   tuple(model.expression_names), model.name,
                   None if offsets is None else offsets.to(model.template.dtype).clone())

    @property
    def num_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_expression(self) -> int:
        return self.exprdirs.shape[-1]

    def to(self, device=None, dtype=None) -> "LandmarkModel":
        kw = {}
        for k, v in self.__dict__.items():
            if isinstance(v, Tensor):
                v = v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
            kw[k] = v
        return LandmarkModel(**kw)

    def index(self, name: str) -> int:
        return self.expression_names.index(name)

    def points(self, shape: Tensor, expression: Tensor, view: Tensor | None = None) -> Tensor:
        """Model-space landmarks ``[B, L, 3]`` for ``shape [S] or [B, S]``, ``expression [B, E]``,
        iris centres turned by the gaze; ``view [B, 2]`` (:func:`view_directions`) slides the
        points as MediaPipe's do at that view (None: frontal, no sliding)."""
        if shape.dim() == 1:  # one identity: blend it once, not per frame
            p = (self.template + torch.einsum("lks,s->lk", self.shapedirs, shape))[None]
        else:
            p = self.template + torch.einsum("lks,bs->blk", self.shapedirs, shape)
        p = p + torch.einsum("lke,be->blk", self.exprdirs, expression)
        if view is not None and self.view_offsets is not None:
            p = p + torch.einsum("lkd,bd->blk", self.view_offsets, view)
        shape = shape.expand(expression.shape[0], -1)
        centres = self.eye_centres(shape)  # [B, 2, 3]
        R = gaze_rotations(self, expression)  # [B, 2, 3, 3]
        iris = p[:, [IRIS_RIGHT, IRIS_LEFT]]
        turned = centres + torch.einsum("beij,bej->bei", R, iris - centres)
        return torch.cat((p[:, :IRIS_RIGHT], turned[:, :1], p[:, IRIS_RIGHT + 1 : IRIS_LEFT], turned[:, 1:],
                          p[:, IRIS_LEFT + 1 :]), dim=1)

    def eye_centres(self, shape: Tensor) -> Tensor:
        return self.eye_template + torch.einsum("eks,bs->bek", self.eye_shapedirs, shape)

    def normals(self, shape: Tensor, expression: Tensor) -> Tensor:
        """Unit normals ``[B, L, 3]`` (model space) of the landmark triangles."""
        shape = shape.expand(expression.shape[0], -1)
        c = self.corner_template + torch.einsum("lcks,bs->blck", self.corner_shapedirs, shape)
        c = c + torch.einsum("lcke,be->blck", self.corner_exprdirs, expression)
        n = torch.linalg.cross(c[:, :, 1] - c[:, :, 0], c[:, :, 2] - c[:, :, 0])
        return torch.nn.functional.normalize(n, dim=-1)


def gaze_angles(lm: LandmarkModel, expression: Tensor) -> tuple[Tensor, Tensor]:
    """Per-eye yaw and pitch ``[B, 2]`` (right, left eye; radians, +yaw toward the model's
    +x, +pitch down) from the ``eyeLook*`` coefficients."""
    e = lambda n: expression[:, lm.index(n)]  # noqa: E731
    yaw = torch.stack((e("eyeLookIn_R") - e("eyeLookOut_R"), e("eyeLookOut_L") - e("eyeLookIn_L")), -1)
    pitch = torch.stack((e("eyeLookDown_R") - e("eyeLookUp_R"), e("eyeLookDown_L") - e("eyeLookUp_L")), -1)
    return yaw * GAZE_MAX_YAW, pitch * GAZE_MAX_PITCH


def gaze_rotations(lm: LandmarkModel, expression: Tensor) -> Tensor:
    """Eyeball rotations ``[B, 2, 3, 3]`` = Ry(yaw) @ Rx(pitch) per eye."""
    yaw, pitch = gaze_angles(lm, expression)
    zero = torch.zeros_like(yaw)
    ry = axis_angle_to_matrix(torch.stack((zero, yaw, zero), -1))
    rx = axis_angle_to_matrix(torch.stack((pitch, zero, zero), -1))
    return ry @ rx


def view_directions(rotation: Tensor, translation: Tensor) -> Tensor:
    """``[B, 2]`` view directions (head to camera, head frame; see
    :func:`avatar.landmarks.embedding.view_directions`) of head poses ``rotation [B, 3]``
    (axis-angle) and ``translation [B, 3]``, for the tracking camera at the world origin."""
    from ..landmarks.embedding import view_directions as directions  # noqa: PLC0415

    return directions(axis_angle_to_matrix(rotation), -translation)


def to_camera(points: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
    """Model-space ``points [B, L, 3]`` -> OpenCV camera space ``[B, L, 3]`` with head pose
    ``rotation [B, 3]`` (axis-angle about the model origin) and ``translation [B, 3]``."""
    world = points @ axis_angle_to_matrix(rotation).transpose(-1, -2) + translation[:, None]
    return world * world.new_tensor(CAMERA_FLIP)


def project(cam: Tensor, focal: Tensor, principal: Tensor) -> Tensor:
    """Pixels ``[B, L, 2]`` of camera-space points; ``focal`` scalar, ``principal [2]``."""
    return focal * cam[..., :2] / cam[..., 2:].clamp_min(1e-4) + principal
