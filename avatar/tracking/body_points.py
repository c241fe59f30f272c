"""Fast posed points of a body model for tracking: the 33 pose landmarks and a vertex subset.

A body fit evaluates the model hundreds of times over every frame; skinning all of Anny's
13,718 vertices each time costs about a second per step for 65 frames on one CPU core.
Tracking needs only the landmarks and a few hundred vertices (for the silhouette), so:

- the landmarks are linear in the skinning transforms: with the regressor ``R [33, V]`` and
  the skinning weights ``W [V, J]``, landmark ``l`` is
  ``sum_j T_j [a_lj; w_lj]`` where ``a_lj = sum_v R_lv W_vj v_v`` (the rest vertex ``v_v``
  is linear in the shape coefficients) and ``w_lj = sum_v R_lv W_vj``. ``a`` and ``w`` are
  precomputed once (``[33, J, 3, K]``), so a step costs ``33 x J`` small products, exactly
  the model's own landmarks (no pose correctives: :meth:`BodyPoints.check` says when a
  model has them);
- the vertex subset is skinned directly from its own rows of the model's buffers, each vertex
  over its few bones only (as gathered lists, not a dense ``[N, J]`` product).

Conventions are those of :class:`avatar.models.body.BodyModel` (global rotation applied at
the root joint, about its rest position; then the translation). Device and dtype follow
the model's buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avatar.geometry.skeleton import forward_kinematics


class BodyPoints(torch.nn.Module):
    """Posed pose-landmarks and a vertex subset of ``body`` (a :class:`~avatar.models.body.BodyModel`).

    Args:
        body: the body model (its buffers are copied; the model itself is not kept).
        vertex_ids: ``[N]`` vertex indices to pose (may be empty).
    """

    def __init__(self, body, vertex_ids: Tensor | None = None):
        super().__init__()
        dt = body.template.dtype
        weight, template, shapedirs = landmark_blend(body.landmark_regressor, body.lbs_weights, body.template,
                                                     body.shapedirs)
        self.register_buffer("lmk_weight", weight, persistent=False)  # [L, J]
        self.register_buffer("lmk_template", template, persistent=False)  # [L, J, 3]
        self.register_buffer("lmk_shapedirs", shapedirs, persistent=False)  # [L, J, 3, K]
        ids = torch.as_tensor([] if vertex_ids is None else vertex_ids, dtype=torch.long, device=body.template.device)
        self.register_buffer("vertex_ids", ids, persistent=False)
        self.register_buffer("v_template", body.template[ids], persistent=False)
        self.register_buffer("v_shapedirs", body.shapedirs[ids], persistent=False)
        weights = body.lbs_weights[ids]  # [N, J], a few bones per vertex: kept as (bone, weight) lists
        k = max(1, int((weights > 0).sum(1).max())) if len(ids) else 1
        w, bones = weights.topk(k, dim=1) if len(ids) else (weights.new_zeros(0, 1), ids.new_zeros(0, 1))
        self.register_buffer("v_bones", bones, persistent=False)  # [N, k]
        self.register_buffer("v_bone_weights", w, persistent=False)  # [N, k]
        self.register_buffer("joint_template", body.joint_template, persistent=False)
        self.register_buffer("joint_shapedirs", body.joint_shapedirs, persistent=False)
        self.register_buffer("parents", body.parents, persistent=False)
        self.shape_map = body.shape_map
        self.has_posedirs = body.posedirs is not None
        self._levels = body._levels

    def coefficients(self, shape: Tensor) -> Tensor:
        """Blend coefficients ``[1, K]`` of shape parameters ``[S]`` or ``[1, S]``."""
        shape = shape.reshape(1, -1)
        return shape if self.shape_map is None else self.shape_map(shape)

    def rest_joints(self, shape: Tensor) -> Tensor:
        """``[1, J, 3]`` shaped rest skeleton."""
        return self.joint_template + torch.einsum("bk,jdk->bjd", self.coefficients(shape), self.joint_shapedirs)

    def forward(self, shape: Tensor, rotations: Tensor, translation: Tensor,
                vertices: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Posed ``(landmarks [F, 33, 3], vertices [F, N, 3], joints [F, J, 3])``.

        Args:
            shape: ``[S]`` shape parameters (one body for all frames).
            rotations: ``[F, J, 3, 3]`` local joint rotations, the global rotation already
                folded into the root's (``rotations[:, 0] = R_global @ pose_root``).
            translation: ``[F, 3]`` metres.
            vertices: pose the vertex subset (else an empty ``[F, 0, 3]`` comes back).
        """
        F, J = rotations.shape[:2]
        assert rotations.shape == (F, J, 3, 3) and translation.shape == (F, 3)
        c = self.coefficients(shape)  # [1, K]
        rest_joints = (self.joint_template + torch.einsum("bk,jdk->bjd", c, self.joint_shapedirs)).expand(F, -1, -1)
        joints, T = forward_kinematics(rest_joints, self.parents, rotations, self._levels)
        joints = joints + translation[:, None]
        rot, trans = T[:, :, :3, :3], T[:, :, :3, 3] + translation[:, None]  # [F, J, 3, 3], [F, J, 3]
        a = self.lmk_template + torch.einsum("k,ljdk->ljd", c[0], self.lmk_shapedirs)  # [L, J, 3]
        landmarks = torch.einsum("fjab,ljb->fla", rot, a) + torch.einsum("fja,lj->fla", trans, self.lmk_weight)
        if vertices and self.vertex_ids.numel():
            rest = (self.v_template + torch.einsum("k,vdk->vd", c[0], self.v_shapedirs)).expand(F, -1, -1)
            T = torch.cat((rot, trans[..., None]), -1)[:, self.v_bones]  # [F, N, k, 3, 4]
            blended = (self.v_bone_weights[None, :, :, None, None] * T).sum(2)  # [F, N, 3, 4]
            vertices = (blended[..., :3] @ rest[..., None])[..., 0] + blended[..., 3]
        else:
            vertices = landmarks.new_zeros(F, 0, 3)
        return landmarks, vertices, joints


def landmark_blend(regressor: Tensor, weights: Tensor, template: Tensor, shapedirs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The landmarks' skinning sums (see the module doc): ``w [L, J]``, ``a_template [L, J, 3]``
    and ``a_shapedirs [L, J, 3, K]`` from ``regressor [L, V]``, ``weights [V, J]``,
    ``template [V, 3]`` and ``shapedirs [V, 3, K]``; sparse in both the regressor and the
    weights, so it costs about (regressor entries x bones per vertex) products."""
    L, J, K = regressor.shape[0], weights.shape[1], shapedirs.shape[-1]
    w = regressor.new_zeros(L * J)
    a = regressor.new_zeros(L * J, 3)
    ad = regressor.new_zeros(L * J, 3, K)
    for l in range(L):
        verts = torch.nonzero(regressor[l]).flatten()
        rw = regressor[l, verts, None] * weights[verts]  # [n, J]
        i, j = torch.nonzero(rw, as_tuple=True)
        v, value, slot = verts[i], rw[i, j], l * J + j
        w.index_add_(0, slot, value)
        a.index_add_(0, slot, value[:, None] * template[v])
        ad.index_add_(0, slot, value[:, None, None] * shapedirs[v])
    return w.reshape(L, J), a.reshape(L, J, 3), ad.reshape(L, J, 3, K)


def spread_vertices(vertices: Tensor, count: int, seed: int = 0) -> Tensor:
    """``count`` vertex indices spread evenly over the mesh (farthest-point sampling of the rest
    vertices ``[V, 3]``, from a seeded random start); all of them when ``count >= V``."""
    V = vertices.shape[0]
    if count >= V:
        return torch.arange(V, device=vertices.device)
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(V, (1,), generator=g))]
    dist = (vertices - vertices[chosen[0]]).pow(2).sum(-1)
    for _ in range(count - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (vertices - vertices[nxt]).pow(2).sum(-1))
    return torch.tensor(chosen, device=vertices.device)
