"""The parametric head restricted to its 478 embedded MediaPipe landmarks.

ICT is linear before the rigid transform, so the landmarks are exactly
``template_l + shapedirs_l · shape + exprdirs_l · expression`` with the rows of the basis
taken at the landmark triangles' corners and mixed by the barycentrics: evaluating them
costs a few small matrix products instead of a full-mesh forward.

What is model-specific comes from the model's tracking profile
(:class:`avatar.models.profile.TrackingProfile`): the eyes, the gaze, the antagonist
blendshapes and the range of the expression coefficients.

Gaze: ICT's ``eyeLook*`` shapes only deform the eyelids; its eyeballs do not turn. The
iris centres (MediaPipe 468 right, 473 left) are therefore modelled as points on the
eyeball rotated about the eyeball's centre by a yaw/pitch read from the profile's gaze
blendshapes (coefficient 1 = :data:`GAZE_MAX_YAW` / :data:`GAZE_MAX_PITCH`), the usual
ARKit reading of those shapes. Renderers that turn the eyeballs should use
:func:`gaze_angles`. A model whose gaze is not an expression (FLAME turns its eye joints)
keeps the iris centres fixed, and the fitters leave them out.

Skinned models (FLAME) rotate about their root joint, not about the model origin: the
fitters work with ``R p + t`` (rotation about the origin) throughout and
:func:`model_translation` turns their translation into the model's own at the end.

Camera: world = the model's (+y up, +z toward the viewer); the tracking camera sits at
the world origin looking down -z, i.e. ``viewmat = diag(1, -1, -1, 1)`` (OpenCV), and the
head is placed by ``rotation``/``translation`` (translation z < 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry.rotations import axis_angle_to_matrix, yaw_pitch_matrix
from ..models.profile import GazeBlendshapes, require_profile

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
        gaze: the gaze blendshapes, or None (gaze is not an expression: iris centres stay put).
        expression_bounds: ``(low, high)`` of the coefficients; a negative ``low`` means a signed
        (PCA) space, which the fitters regularise with an L2 prior instead of L1.
        antagonists: blendshape pairs not to be active together (names).
        root_template / root_shapedirs / root_exprdirs: the root joint's rest position ``[3]``,
        ``[3, S]``, ``[3, E]`` for skinned models (None without a skeleton; see
        :func:`model_translation`).
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
    view_offsets: Tensor | None = None  # [L, 3, 2] sliding with the view direction (see avatar.tracking.embedding)
    gaze: GazeBlendshapes | None = None
    expression_bounds: tuple[float, float] = (0.0, 1.0)
    antagonists: tuple[tuple[str, str], ...] = ()
    root_template: Tensor | None = None  # [3]
    root_shapedirs: Tensor | None = None  # [3, S]
    root_exprdirs: Tensor | None = None  # [3, E]

    @classmethod
    def from_model(cls, model, embedding) -> "LandmarkModel":
        """The landmark rows of ``model``'s basis at ``embedding``'s points, with what its
        tracking profile says (raises :class:`~avatar.models.profile.TrackingProfileError`
        for a model without one)."""
        profile = require_profile(model)
        corners = model.faces[embedding.faces]  # [L, 3]
        bary = embedding.bary.to(model.template.dtype)
        ct, cs, ce = model.template[corners], model.shapedirs[corners], model.exprdirs[corners]
        mix = lambda x: torch.einsum("lc,lc...->l...", bary, x)  # noqa: E731
        if profile.eyeball_parts is not None:  # the eyeballs' centres
            parts = model.parts
            eyes = [parts[n].vertices for n in profile.eyeball_parts]
            eye_t = torch.stack([model.template[m].mean(0) for m in eyes])
            eye_s = torch.stack([model.shapedirs[m].mean(0) for m in eyes])
        else:  # the eye joints' rest positions
            eye_t, eye_s, _ = _joint_basis(model, [model.joint_names.index(n) for n in profile.eye_joints])
        root = _joint_basis(model, [0]) if getattr(model, "has_skeleton", False) else (None, None, None)
        offsets = getattr(embedding, "view_offsets", None)
        return cls(mix(ct), mix(cs), mix(ce), ct, cs, ce, eye_t, eye_s, embedding.contour.clone(),
                   tuple(model.expression_names), model.name,
                   None if offsets is None else offsets.to(model.template.dtype).clone(),
                   gaze=profile.gaze, expression_bounds=tuple(profile.expression_bounds),
                   antagonists=tuple(profile.antagonists),
                   root_template=None if root[0] is None else root[0][0],
                   root_shapedirs=None if root[1] is None else root[1][0],
                   root_exprdirs=None if root[2] is None else root[2][0])

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

    @property
    def signed_expressions(self) -> bool:
        """Coefficients may be negative (a PCA space): L2 prior instead of L1 in the fitters."""
        return self.expression_bounds[0] < 0

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
        if self.gaze is None:  # the iris centres do not turn with an expression
            return p
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


def _joint_basis(model, joints: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Rest positions of ``joints`` as a linear model: ``[J, 3]``, ``[J, 3, S]``, ``[J, 3, E]``
    (joints are regressed from the blended, unposed vertices)."""
    reg = model.joint_regressor[joints]  # [J, V]
    return (reg @ model.template, torch.einsum("jv,vks->jks", reg, model.shapedirs),
            torch.einsum("jv,vke->jke", reg, model.exprdirs))


def gaze_angles(lm: LandmarkModel, expression: Tensor) -> tuple[Tensor, Tensor]:
    """Per-eye yaw and pitch ``[B, 2]`` (right, left eye; radians, +yaw toward the model's
    +x, +pitch down) from the gaze blendshapes (zeros when gaze is not an expression)."""
    if lm.gaze is None:
        zero = expression.new_zeros(expression.shape[0], 2)
        return zero, zero
    return blendshape_gaze_angles(lm.gaze, lm.index, expression)


def blendshape_gaze_angles(g, index, expression: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`gaze_angles` for the gaze blendshapes ``g`` (:class:`~avatar.models.profile.GazeBlendshapes`)
    of a model whose expression ``name`` sits in column ``index(name)`` of ``expression [B, E]``."""
    e = lambda n: expression[:, index(n)]  # noqa: E731
    (in_r, in_l), (out_r, out_l), (up_r, up_l), (down_r, down_l) = g.look_in, g.look_out, g.look_up, g.look_down
    yaw = torch.stack((e(in_r) - e(out_r), e(out_l) - e(in_l)), -1)
    pitch = torch.stack((e(down_r) - e(up_r), e(down_l) - e(up_l)), -1)
    return yaw * GAZE_MAX_YAW, pitch * GAZE_MAX_PITCH


def model_translation(lm: LandmarkModel, shape: Tensor, expression: Tensor, rotation: Tensor,
                      translation: Tensor) -> Tensor:
    """The model's own translation ``[B, 3]`` for a tracked pose ``R p + translation``.

    Skinned models turn about their root joint ``j`` (which follows ``shape [S] or [B, S]`` and
    ``expression [B, E]``): ``model(rotation, t')`` places ``p`` at ``R (p - j) + j + t'``, so
    ``t' = translation + R j - j``. Models without a skeleton: ``translation`` itself.
    """
    if lm.root_template is None:
        return translation
    if shape.dim() == 1:
        shape = shape[None]
    j = lm.root_template + shape @ lm.root_shapedirs.T + expression @ lm.root_exprdirs.T  # [B, 3]
    return translation + (axis_angle_to_matrix(rotation) @ j[..., None])[..., 0] - j


def gaze_rotations(lm: LandmarkModel, expression: Tensor) -> Tensor:
    """Eyeball rotations ``[B, 2, 3, 3]`` = Ry(yaw) @ Rx(pitch) per eye."""
    return eye_rotations(*gaze_angles(lm, expression))


def eye_rotations(yaw: Tensor, pitch: Tensor) -> Tensor:
    """``Ry(yaw) @ Rx(pitch)`` ``[B, 2, 3, 3]`` for per-eye angles ``[B, 2]`` (radians)."""
    return yaw_pitch_matrix(yaw, pitch)


def view_directions(rotation: Tensor, translation: Tensor) -> Tensor:
    """``[B, 2]`` view directions (head to camera, head frame; see
    :func:`avatar.tracking.embedding.view_directions`) of head poses ``rotation [B, 3]``
    (axis-angle) and ``translation [B, 3]``, for the tracking camera at the world origin."""
    from avatar.tracking.embedding import view_directions as directions  # noqa: PLC0415

    return directions(axis_angle_to_matrix(rotation), -translation)


def to_camera(points: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
    """Model-space ``points [B, L, 3]`` -> OpenCV camera space ``[B, L, 3]`` with head pose
    ``rotation [B, 3]`` (axis-angle about the model origin) and ``translation [B, 3]``."""
    world = points @ axis_angle_to_matrix(rotation).transpose(-1, -2) + translation[:, None]
    return world * world.new_tensor(CAMERA_FLIP)


def project(cam: Tensor, focal: Tensor, principal: Tensor) -> Tensor:
    """Pixels ``[B, L, 2]`` of camera-space points; ``focal`` scalar, ``principal [2]``."""
    return focal * cam[..., :2] / cam[..., 2:].clamp_min(1e-4) + principal
