"""A trained avatar as render, live, export and the viewer use it: the avatar file's
content, its parametric model and its Gaussians, posed per frame.

:meth:`AvatarPackage.load` reads the file through :mod:`avatar.io.avatar_file`, builds the model
with the options recorded at training (``model_options``, e.g. a FLAME ``model_path``) and the
avatar of the recorded kind through :mod:`avatar.gaussians.registry`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io.avatar_file import AvatarFileError, avatar_path, read_avatar
from .base import FrameState
from .registry import avatar_from_state


def load_model(name: str, options: dict, path: str | os.PathLike = "<avatar>"):
    """``avatar.models.load(name, **options)``, with an error that says which key to set when
    the model's files are no longer where they were at training."""
    from .. import models  # noqa: PLC0415

    try:
        return models.load(name, **options)
    except FileNotFoundError as exc:
        where = options.get("model_path") or options.get("asset_path")
        key = "model_path" if "model_path" in options or name != "ict" else "asset_path"
        raise AvatarFileError(
            f"{path} was trained with the {name!r} model" + (f" from {where}" if where else "")
            + f", which cannot be loaded now ({str(exc).splitlines()[0]}); point model_options.{key}= at the "
            f"model's file") from None
    except (TypeError, ValueError) as exc:
        raise AvatarFileError(f"{path}: model {name!r} with options {options} cannot be built ({exc})") from None


@dataclass
class AvatarPackage:
    """A trained avatar as ``avatar train`` / ``avatar export`` write it (``avatar.pt``)."""

    state: dict
    gaussians: torch.nn.Module
    model: torch.nn.Module
    device: torch.device
    path: Path | None = None  # the avatar.pt it was loaded from

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device, model_options: dict | None = None) -> "AvatarPackage":
        """Read ``path`` (an ``avatar.pt`` or a run folder holding one) through
        :mod:`avatar.io.avatar_file` and build its model and avatar on ``device``.

        ``model_options``: overrides of the options recorded in the file (e.g. a FLAME
        ``model_path`` that moved since training)."""
        path = avatar_path(path)
        state = read_avatar(path)
        options = {**state.get("model_options", {}), **dict(model_options or {})}
        model = load_model(state["model"], options, path).to(device)
        entry = state["avatar"]
        try:
            gaussians = avatar_from_state(entry["kind"], entry["state"], device)
        except (KeyError, TypeError, ValueError) as exc:
            raise AvatarFileError(f"{path}: its {entry.get('kind')!r} avatar cannot be rebuilt ({exc})") from None
        return cls(state, gaussians, model, device, path)

    def __post_init__(self) -> None:
        self._compact = None
        self._eyes = None  # (the Gaussians it was built for, :meth:`_eyeballs`)
        self._gaze_profile = False  # not looked up yet

    def _compact_mesh(self):
        """The part of the mesh the Gaussians sit on, ready to pose per frame (built once per
        set of Gaussians): vertex ids (None: the whole mesh), the avatar re-bound to them
        (:meth:`GaussianAvatar.compact`), for models without a skeleton the identity-blended
        vertices and the expression basis there (posing then costs a small blend instead of
        the whole model), and the identity shape ``[1, S]``."""
        g = self.gaussians
        if self._compact is not None and self._compact[0] is g:
            return self._compact[1:]
        vidx, sub = g.compact()
        blend = None
        m = self.model
        shape = self.state["shape"].to(self.device, torch.float32)[None]
        if not getattr(m, "has_skeleton", True) and hasattr(m, "exprdirs"):
            keep = slice(None) if vidx is None else vidx
            with torch.no_grad():
                base = m(shape=shape).vertices[0][keep]  # identity blended, no pose
            blend = (base, m.exprdirs[keep].to(torch.float32))
        self._compact = (g, vidx, sub, blend, shape)
        return vidx, sub, blend, shape

    @property
    def is_body(self) -> bool:
        """A body avatar (its model a :class:`avatar.models.body.BodyModel`): posed by joint rotations."""
        return bool(self.state.get("body")) or bool(getattr(self.model, "is_body", False))

    def _body_rest(self):
        """The subject's shaped rest body ``(vertices [1, V, 3], joints [1, J, 3])``, computed once."""
        if getattr(self, "_rest", None) is None:
            shape = self.state["shape"].to(self.device, self.model.template.dtype)[None]
            with torch.no_grad():
                self._rest = self.model.rest(shape)
        return self._rest

    @property
    def has_torso(self) -> bool:
        """Whether the avatar has an upper body that a driver's shoulders move (``torso_rest``)."""
        return getattr(self.gaussians, "torso_rest", None) is not None

    def gaze_profile(self):
        """The model's gaze blendshapes and eyeball parts (its tracking profile) when it has both
        (ICT), else None: only then can :meth:`posed_gaussians` turn the eyeballs."""
        if self._gaze_profile is False:
            from ..models.eyes import eye_profile  # noqa: PLC0415

            self._gaze_profile = None if self.is_body else eye_profile(self.model)
        return self._gaze_profile

    def _eyeballs(self):
        """``(rows, centres)``: per eyeball (right, left) its vertices' rows in the posed mesh the
        Gaussians use (:meth:`_compact_mesh`), and the eyeballs' centres ``[2, 3]`` in the
        identity-blended, unposed model; None when the eyes cannot turn (:meth:`gaze_profile`) or
        no Gaussian sits on an eyeball."""
        vidx, _, blend, shape = self._compact_mesh()
        if self._eyes is not None and self._eyes[0] is self.gaussians:
            return self._eyes[1]
        profile = self.gaze_profile()
        eyes = None
        if profile is not None and blend is not None:
            from ..models.eyes import eyeball_geometry, eyeball_vertex_ids  # noqa: PLC0415

            with torch.no_grad():
                full = self.model(shape=shape).vertices[0]
            centres = eyeball_geometry(self.model, profile.eyeball_parts, full)[0].to(torch.float32)
            rows = [ids.to(full.device) for ids in eyeball_vertex_ids(self.model, profile.eyeball_parts)]
            if vidx is not None:  # full-mesh vertex id -> its row in the compact mesh (-1: not there)
                where = torch.full((full.shape[0],), -1, dtype=torch.long, device=full.device)
                where[vidx] = torch.arange(len(vidx), device=full.device)
                rows = [where[ids] for ids in rows]
                rows = [r[r >= 0] for r in rows]
            eyes = (rows, centres) if any(len(r) for r in rows) else None
        self._eyes = (self.gaussians, eyes)
        return eyes

    def posed_gaussians(self, expression: torch.Tensor | None, rotation: torch.Tensor, translation: torch.Tensor,
                        pose: torch.Tensor | None = None, torso: torch.Tensor | None = None,
                        gaze: torch.Tensor | None = None):
        """World Gaussians (``WorldGaussians``) for ``expression [1, E]``, ``rotation [1, 3]``, ``translation [1, 3]``
        (a body: ``pose [1, J, 3]`` joint rotations instead of the expression; None: its reference pose)
        and, for avatars with a torso, ``torso [1, 4, 4]`` (None: at rest).

        ``gaze [1, 2, 2]``: each eyeball (right, left) turned about its centre by (yaw, pitch),
        radians, in the head's frame (+yaw toward the model's +x, +pitch down, as the trackers read
        the gaze), the Gaussians on it turning with it. Ignored by avatars whose model cannot turn
        its eyes (:meth:`gaze_profile`)."""
        from ..models.engine import rigid_transform  # noqa: PLC0415

        if self.is_body:
            vidx, sub, _, _ = self._compact_mesh()
            if pose is None:
                pose = self.reference_body_pose()[None]
            rest_v, rest_j = self._body_rest()
            verts, _, _ = self.model.skin(rest_v, rest_j, pose, rotation, translation, vertex_ids=vidx)
            return sub(FrameState(verts, None, rotation, pose))
        vidx, sub, blend, shape = self._compact_mesh()
        if blend is not None:
            base, dirs = blend
            e = expression[:, : dirs.shape[-1]]
            local = base[None] + torch.einsum("vke,be->bvk", dirs[..., : e.shape[-1]], e)
            if gaze is not None and self._eyeballs() is not None:
                local = self._turn_eyes(local, gaze)
            verts = rigid_transform(local, rotation, translation)
        else:
            verts = self.model(shape=shape, expression=expression, rotation=rotation, translation=translation).vertices
            verts = verts if vidx is None else verts[:, vidx]
        return sub(FrameState(verts, expression, rotation, torso=torso))

    def _turn_eyes(self, local: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
        """``local [B, V', 3]`` (model space, unposed) with each eyeball's vertices turned about its centre."""
        from ..models.eyes import turn_about_centres  # noqa: PLC0415

        rows, centres = self._eyeballs()
        return turn_about_centres(local, rows, gaze, centres)

    @property
    def expression_names(self) -> tuple[str, ...]:
        names = getattr(self.model, "expression_names", None)
        return tuple(names if names is not None else self.state.get("expression_names", ()))

    def reference_body_pose(self) -> torch.Tensor:
        """``[J, 3]`` a body avatar's joint rotations in its first training frame (zeros when not recorded)."""
        ref = self.state.get("reference_pose")
        if ref is None:
            return torch.zeros(self.model.num_joints, 3, device=self.device)
        return torch.as_tensor(ref).to(self.device, torch.float32)

    def reference_pose(self, drive) -> tuple[np.ndarray, np.ndarray]:
        """The avatar's head pose the motion of ``drive`` (a :class:`avatar.drive.sources.DriveSequence`)
        is applied to: its first training frame
        (packages written before that was recorded: the driver's own first frame)."""
        return self.reference_pose_or(drive.rotation[0].astype(np.float32), drive.translation[0].astype(np.float32))

    def reference_pose_or(self, rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The recorded reference pose, or the given one when the package has none."""
        r, t = self.state.get("reference_rotation"), self.state.get("reference_translation")
        if r is None or t is None:
            return rotation, translation
        return np.asarray(r, np.float32), np.asarray(t, np.float32)

    def camera(self, size: int | None = None) -> tuple[torch.Tensor, int, int]:
        """The training camera's ``K [3, 3]`` scaled to ``size`` pixels high (None: as trained), and width, height."""
        height0, width0 = int(self.state["height"]), int(self.state["width"])
        height = size or height0
        K = self.state["K"].to(self.device, torch.float32).clone()
        K[:2] *= height / height0
        return K, int(round(width0 * height / height0)), height

    def budget_views(self, yaw_deg: float = 40.0, pitch_deg: float = 20.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(expression, rotation, translation)`` poses a driven avatar typically shows: the
        reference pose turned by up to ``yaw_deg`` / ``pitch_deg``, neutral and with the mouth
        open, eyes closed and a smile (for the models that name those expressions)."""
        from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: PLC0415

        names = self.expression_names
        ref_r, ref_t = self.reference_pose_or(np.zeros(3, np.float32), np.array([0, 0, -0.5], np.float32))
        if self.is_body:  # a body turns all the way round in front of the camera
            R_ref = axis_angle_to_matrix(torch.as_tensor(ref_r, dtype=torch.float64))
            turns = [axis_angle_to_matrix(torch.tensor([0.0, math.radians(a), 0.0], dtype=torch.float64)) @ R_ref
                     for a in range(0, 360, 45)]
            return [(np.zeros(0, np.float32), matrix_to_axis_angle(R).numpy().astype(np.float32),
                     np.asarray(ref_t, np.float32)) for R in turns]
        R_ref = axis_angle_to_matrix(torch.as_tensor(ref_r, dtype=torch.float64))
        expressions = [np.zeros(len(names), np.float32)]
        for group in (("jawOpen",), ("eyeBlink_L", "eyeBlink_R"), ("mouthSmile_L", "mouthSmile_R")):
            e = np.zeros(len(names), np.float32)
            for n in group:
                if n in names:
                    e[names.index(n)] = 0.8
            if e.any():
                expressions.append(e)
        views = []
        for k, (yaw, pitch) in enumerate([(0, 0), (-yaw_deg, 0), (yaw_deg, 0), (0, -pitch_deg), (0, pitch_deg),
                                          (-yaw_deg / 2, pitch_deg / 2), (yaw_deg / 2, -pitch_deg / 2)]):
            delta = torch.tensor([math.radians(pitch), math.radians(yaw), 0.0], dtype=torch.float64)
            R = R_ref @ axis_angle_to_matrix(delta)
            r = matrix_to_axis_angle(R).numpy().astype(np.float32)
            for e in expressions if k == 0 else expressions[:2]:
                views.append((e, r, np.asarray(ref_t, np.float32)))
        return views

    def visibility(self, size: int = 128, renderer: dict | None = None, progress: bool = False) -> torch.Tensor:
        """``[N]`` how much each Gaussian shows in :meth:`budget_views`: its blending weight
        summed over the pixels (:func:`avatar.gaussians.importance.visibility`), seen by the
        reference camera at ``size`` pixels high. Training stores it in the package
        (``visibility``); it is computed here for packages without it. ``progress``: a tqdm bar
        over the poses."""
        from .importance import visibility  # noqa: PLC0415

        stored = self.state.get("visibility")
        if stored is not None and stored.shape[0] == len(self.gaussians):
            return stored.to(self.device)
        dev, st = self.device, self.state
        K, width, height = self.camera(size)
        viewmat = st["viewmat"].to(dev, torch.float32)

        def worlds():
            from tqdm.auto import tqdm  # noqa: PLC0415

            views = self.budget_views()
            for e, r, t in tqdm(views, desc="visibility", unit="pose", disable=not progress, leave=False):
                tt = lambda a: torch.as_tensor(a[None], dtype=torch.float32, device=dev)  # noqa: E731
                with torch.no_grad():
                    w = self.posed_gaussians(tt(e), tt(r), tt(t))
                yield (w.means[0], *w.shapes(0), w.opacities, viewmat, K)

        return visibility(worlds(), width, height, renderer)

    def limit_gaussians(self, max_gaussians: int, size: int = 128, renderer: dict | None = None) -> int:
        """Keep the ``max_gaussians`` Gaussians that show most (:meth:`visibility`): a lighter
        avatar for live driving; returns how many Gaussians there were. No-op when the avatar
        has no more than that."""
        from .importance import top_k  # noqa: PLC0415

        n = len(self.gaussians)
        if max_gaussians is None or max_gaussians <= 0 or n <= max_gaussians:
            return n
        self.gaussians = self.gaussians.subset(top_k(self.visibility(size, renderer), max_gaussians))
        return n

    @torch.no_grad()
    def render_frame(self, expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
                     viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                     renderer: dict | None = None, pose: np.ndarray | None = None,
                     torso: np.ndarray | None = None, gaze: np.ndarray | None = None) -> tuple[np.ndarray, str, float]:
        """The avatar posed with ``expression [E]``, ``rotation [3]``, ``translation [3]`` (model world;
        a body: ``pose [J, 3]`` joint rotations; avatars with a torso: ``torso [4, 4]``, None: at rest;
        ``gaze [2, 2]``: the eyeballs turned, see :meth:`posed_gaussians`),
        seen by ``viewmat [4, 4]`` / ``K [3, 3]``: ``(uint8 image [H, W, 3], backend, rasterization seconds)``."""
        dev, st = self.device, self.state
        t = lambda a: torch.as_tensor(np.asarray(a)[None], dtype=torch.float32, device=dev)  # noqa: E731
        w = self.posed_gaussians(None if expression is None else t(expression), t(rotation), t(translation),
                                 None if pose is None else t(pose), None if torso is None else t(torso),
                                 None if gaze is None else t(gaze))
        t0 = time.perf_counter()
        img, _, meta = w.render(viewmat[None], K[None], width, height, self.gaussians.sh_degree,
                                backgrounds=st["background"].to(dev, torch.float32)[None], **(renderer or {}))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        backend = meta["backend"] + (" (compiled compositor)" if meta.get("compositor") == "compiled" else "")
        return (img[0].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8), backend, seconds


