"""Densification and pruning of any avatar's Gaussians, as a policy object (gsplat ``strategy/`` style).

The strategy works over the avatar interface (:class:`avatar.gaussians.base.GaussianAvatar`):
its ``params`` and per-Gaussian buffers, which grow and shrink together, plus what the kind
says about sizes, opacities and where split children go. Its own state (the accumulated
gradient statistics) is held here, outside the avatar.

The trainer calls :meth:`DensifyStrategy.step_pre_backward` before ``loss.backward()`` (it
asks autograd to keep the gradient of the projected centres) and
:meth:`DensifyStrategy.step_post_backward` after it. Every ``refine_every`` steps inside
``[refine_start, refine_stop)`` Gaussians whose average screen-space gradient is high are
cloned (small ones) or split in two (large ones), and nearly transparent or oversized ones
are pruned; new Gaussians inherit their parent's per-Gaussian buffers (a mesh-bound
Gaussian's ``binding``: it stays on the same triangle). Parameters and the optimizer's
per-parameter state (Adam moments) grow and shrink together. ``max_gaussians`` caps the count.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import GaussianAvatar
from .config import DensifyConfig

__all__ = ["DensifyConfig", "DensifyStrategy"]


class DensifyStrategy:
    """Grows and prunes any :class:`GaussianAvatar` together with its optimizer.

    The optimizer must hold each parameter of ``gaussians.params`` in its own param group
    (as the trainer builds it), so that per-parameter state can be resized.
    """

    def __init__(self, cfg: DensifyConfig):
        self.cfg = cfg
        self.grad_sum: Tensor | None = None  # [N]
        self.count: Tensor | None = None  # [N]
        self.last: dict[str, int] = {"cloned": 0, "split": 0, "pruned": 0}

    def step_pre_backward(self, meta: dict) -> None:
        """Keep the gradient of ``meta["means2d"]`` (call before ``backward``)."""
        if meta["means2d"].requires_grad:
            meta["means2d"].retain_grad()

    @torch.no_grad()
    def step_post_backward(self, gaussians: GaussianAvatar, optimizer, meta: dict, step: int,
                           total_steps: int | None = None) -> dict[str, int]:
        """Accumulate screen-space gradients; refine when due. Returns what changed.

        ``total_steps``: the length of training, so that no opacity reset falls in its last
        ``reset_steps_left`` steps.
        """
        cfg = self.cfg
        if step >= cfg.refine_stop:
            return {}
        self._accumulate(gaussians, meta)
        changed: dict[str, int] = {}
        if step >= cfg.refine_start and step % cfg.refine_every == 0:
            changed = self.refine(gaussians, optimizer)
        late = total_steps is not None and step > total_steps - cfg.reset_steps_left
        if cfg.reset_opacity_every and step > 0 and step % cfg.reset_opacity_every == 0 and not late:
            self.reset_opacity(gaussians, optimizer)
        return changed

    def _accumulate(self, gaussians: GaussianAvatar, meta: dict) -> None:
        n = len(gaussians)
        grad = meta["means2d"].grad
        if self.grad_sum is None or self.grad_sum.shape[0] != n:
            device = next(iter(gaussians.params.values())).device
            self.grad_sum = torch.zeros(n, device=device)
            self.count = torch.zeros(n, device=device)
        if grad is None:
            return
        # Normalise to image units as gsplat does: pixels * 2 / size.
        g = grad.clone()
        g[..., 0] *= meta["width"] / 2.0
        g[..., 1] *= meta["height"] / 2.0
        norm = g.norm(dim=-1)  # [C, N]
        visible = (meta["radii"] > 0).all(-1)
        self.grad_sum += (norm * visible).sum(0)
        self.count += visible.sum(0)

    def refine(self, gaussians: GaussianAvatar, optimizer) -> dict[str, int]:
        cfg, p = self.cfg, gaussians.params
        mean_grad = self.grad_sum / self.count.clamp_min(1)
        size = gaussians.sizes()
        high = mean_grad > cfg.grad_threshold
        room = max(0, cfg.max_gaussians - len(gaussians))
        clone = high & (size <= cfg.split_scale)
        split = high & (size > cfg.split_scale)
        clone, split = _limit(clone, split, room, mean_grad)
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            _append(gaussians, optimizer, {k: v[clone] for k, v in p.items()},
                    {k: v[clone] for k, v in gaussians.per_gaussian_buffers().items()})
        if n_split:
            idx = split.nonzero().squeeze(-1)
            children = gaussians.split_children(idx, cfg.split_factor)
            # The parent becomes the first child; the second is appended.
            _overwrite(gaussians, optimizer, idx, {k: v[0] for k, v in children.items()})
            _append(gaussians, optimizer, {k: v[1] for k, v in children.items()},
                    {k: v[idx] for k, v in gaussians.per_gaussian_buffers().items()})
        opacity = gaussians.opacities()
        size = gaussians.sizes()
        prune = (opacity < cfg.prune_opacity) | (size > cfg.prune_scale)
        n_prune = int(prune.sum())
        if n_prune and n_prune < len(gaussians):
            _keep(gaussians, optimizer, ~prune)
        else:
            n_prune = 0
        self.grad_sum = self.count = None  # statistics restart after every refinement
        self.last = {"cloned": n_clone, "split": n_split, "pruned": n_prune}
        return self.last

    def reset_opacity(self, gaussians: GaussianAvatar, optimizer) -> None:
        """Clamp opacities down to ``2 x prune_opacity`` (kinds keep opacity as the logit
        ``params["opacity_logit"]``) and zero their optimizer moments."""
        p = gaussians.params["opacity_logit"]
        cap = 2 * self.cfg.prune_opacity
        p.data.clamp_(max=math.log(cap / (1 - cap)))
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value) and value.shape == p.shape:
                value.zero_()


def _limit(clone: Tensor, split: Tensor, room: int, score: Tensor) -> tuple[Tensor, Tensor]:
    """Keep at most ``room`` new Gaussians, those with the highest scores."""
    want = clone | split
    if int(want.sum()) <= room:
        return clone, split
    keep = torch.zeros_like(want)
    if room > 0:
        top = torch.topk(torch.where(want, score, torch.full_like(score, -1.0)), room).indices
        keep[top] = True
    return clone & keep, split & keep


def _replace_param(gaussians: GaussianAvatar, optimizer, name: str, new_value: Tensor, state_fn) -> None:
    """Swap ``params[name]`` for ``new_value`` and map the optimizer's state with ``state_fn``."""
    old = gaussians.params[name]
    new = torch.nn.Parameter(new_value, requires_grad=old.requires_grad)
    for group in optimizer.param_groups:
        for i, q in enumerate(group["params"]):
            if q is old:
                group["params"][i] = new
                state = optimizer.state.pop(old, None)
                if state is not None:
                    optimizer.state[new] = {
                        k: (state_fn(v) if torch.is_tensor(v) and v.shape == old.shape else v) for k, v in state.items()
                    }
    gaussians.params[name] = new


def _append(gaussians: GaussianAvatar, optimizer, values: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
    for name, extra in values.items():
        old = gaussians.params[name]
        _replace_param(
            gaussians, optimizer, name, torch.cat((old.data, extra)),
            lambda s, n=extra.shape[0]: torch.cat((s, s.new_zeros((n,) + s.shape[1:]))),
        )
    current = gaussians.per_gaussian_buffers()
    gaussians.set_per_gaussian_buffers({k: torch.cat((current[k], v)) for k, v in buffers.items()})


def _overwrite(gaussians: GaussianAvatar, optimizer, idx: Tensor, values: dict[str, Tensor]) -> None:
    for name, value in values.items():
        p = gaussians.params[name]
        p.data[idx] = value
        for s in optimizer.state.get(p, {}).values():
            if torch.is_tensor(s) and s.shape == p.shape:
                s[idx] = 0


def _keep(gaussians: GaussianAvatar, optimizer, mask: Tensor) -> None:
    for name in list(gaussians.params.keys()):
        _replace_param(gaussians, optimizer, name, gaussians.params[name].data[mask], lambda s: s[mask])
    gaussians.set_per_gaussian_buffers({k: v[mask] for k, v in gaussians.per_gaussian_buffers().items()})
