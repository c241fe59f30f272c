"""The portrait whose upper body is a neural texture read through an anchor-Gaussian warp
(avatar.gaussians.torso_texture), on the synthetic sheet "head" of test_portrait."""

from __future__ import annotations

import pytest
import torch

from avatar.gaussians.base import FrameState
from avatar.gaussians.portrait import TORSO, rest_torso
from avatar.gaussians.registry import avatar_from_state
from avatar.gaussians.torso_texture import PortraitTextureGaussians, TorsoTexture

from test_portrait import K, SIZE, VIEW, _config, _frames

RED = torch.tensor([255, 0, 0], dtype=torch.uint8)


def _avatar(**kw):
    """A texture portrait on sheet frames whose shoulder block (rows 30 and below) is red and whose
    tracked torso sits under the sheet, facing the camera."""
    torso = rest_torso(torch.tensor([0.0, -0.05, -0.5]))[None].repeat(3, 1, 1)
    model, frames = _frames(torso=torso)
    frames.images[:, 30:] = RED
    g = PortraitTextureGaussians.initialise(model, _config(kind="portrait_texture", **kw), n_condition=1, frames=frames)
    return g, frames


def _render(g, frames, torso=None, background=(0.0, 0.0, 1.0)):
    w = g(FrameState(frames.vertices[:1], rotation=frames.rotation[:1], torso=torso))
    return w.render(VIEW[None], K[None], SIZE, SIZE, 1, backgrounds=torch.tensor([background]))


def test_the_body_is_a_texture_not_gaussians_and_starts_from_the_frames():
    g, frames = _avatar()
    assert len(g) > 0 and not (g.group == TORSO).any()  # head Gaussians only
    t = g.torso_texture
    assert t is not None and t.anchors.shape[0] >= 4
    with torch.no_grad():
        colour, opacity = t.layer(g.torso_rest, VIEW[None], K[None], SIZE, SIZE)
    assert colour.shape == (1, SIZE, SIZE, 3) and opacity.shape == (1, SIZE, SIZE, 1)
    # the shoulder block reads red and opaque through the anchors' warp; far above it, nothing
    assert opacity[0, 34:, 10:30].min() > 0.5
    assert torch.allclose(colour[0, 32:38, 10:30], torch.tensor([1.0, 0.0, 0.0]).expand(6, 20, 3), atol=0.05)
    assert opacity[0, :8].max() < 0.01


def test_the_layer_lies_behind_the_gaussians_and_over_the_background():
    g, frames = _avatar()
    with torch.no_grad():
        img, alpha, meta = _render(g, frames)
        w = g(FrameState(frames.vertices[:1], rotation=frames.rotation[:1]))
        w.under = None
        bare, bare_alpha, _ = w.render(VIEW[None], K[None], SIZE, SIZE, 1, backgrounds=torch.zeros(1, 3))
        colour, opacity = g.torso_texture.layer(g.torso_rest, VIEW[None], K[None], SIZE, SIZE)
    behind = colour * opacity + torch.tensor([0.0, 0.0, 1.0]) * (1 - opacity)
    assert torch.allclose(img, bare + (1 - bare_alpha) * behind, atol=1e-5)
    assert torch.allclose(alpha, bare_alpha + (1 - bare_alpha) * opacity, atol=1e-5)
    assert meta["means2d"].shape[1] == len(g)  # the strategy still sees the Gaussians' own meta
    assert img[0, 36, 20, 0] > 0.9 and img[0, 36, 20, 2] < 0.1  # body
    assert torch.allclose(img[0, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-3)  # background


def test_gradients_reach_the_texture_the_anchors_and_the_fine_colour():
    g, frames = _avatar()
    torso = g.torso_rest[None].clone()
    torso[0, :3, 3] += torch.tensor([0.01, 0.0, 0.0])  # away from rest: the fine colour is live
    img, _, _ = _render(g, frames, torso)
    (img - 0.3).square().mean().backward()
    t = g.torso_texture
    for name, p in (("texture", t.texture), ("anchor offsets", t.anchor_offset), ("anchor sizes", t.anchor_log_scale),
                    ("decoder", t.decoder.weight)):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    groups = g.other_parameters()
    assert {"torso_texture", "torso_anchors", "torso_decoder"} <= set(groups)


def test_the_body_follows_the_torso():
    g, frames = _avatar()
    shifted = g.torso_rest[None].clone()
    shifted[0, :3, 3] += torch.tensor([0.02, 0.0, 0.0])  # 2 cm to the right at 0.5 m: 2.4 px
    with torch.no_grad():
        _, a0 = g.torso_texture.layer(g.torso_rest, VIEW[None], K[None], SIZE, SIZE)
        _, a1 = g.torso_texture.layer(shifted[0], VIEW[None], K[None], SIZE, SIZE)
    xs = torch.arange(SIZE, dtype=torch.float32)
    centre = lambda a: float((a[0, 32:, :, 0] * xs).sum() / a[0, 32:, :, 0].sum())  # noqa: E731
    assert centre(a1) - centre(a0) == pytest.approx(0.02 * 60 / 0.5, abs=0.3)


def test_the_warp_drawn_small_follows_the_torso_as_the_full_one():
    """The anchors' splat drawn at a quarter of the size each way and upsampled: the body moves by
    the same pixels with the torso, and the layer inside the body matches the full-size one."""
    g, frames = _avatar()
    t = g.torso_texture
    S = 160  # four times the sheet's pictures, the camera scaled with them
    K4 = torch.tensor([[240.0, 0, S / 2], [0, 240.0, S / 2], [0, 0, 1]])
    shifted = g.torso_rest.clone()
    shifted[:3, 3] += torch.tensor([0.02, 0.0, 0.0])  # 9.6 px at this focal
    xs = torch.arange(S, dtype=torch.float32)
    centre = lambda a: float((a[0, 128:, :, 0] * xs).sum() / a[0, 128:, :, 0].sum())  # noqa: E731
    out = {}
    for d in (1, 4):
        t.warp_downscale = d
        with torch.no_grad():
            c0, a0 = t.layer(g.torso_rest, VIEW[None], K4[None], S, S)
            _, a1 = t.layer(shifted, VIEW[None], K4[None], S, S)
        out[d] = (c0, a0, centre(a1) - centre(a0))
    assert out[4][2] == pytest.approx(out[1][2], abs=0.1) and out[1][2] > 8
    inside = out[1][1][0, 136:, 40:120, 0] > 0.9
    assert inside.float().mean() > 0.5
    assert (out[4][0][0, 136:, 40:120] - out[1][0][0, 136:, 40:120]).abs().amax(-1)[inside].max() < 0.02
    assert (out[4][1][0, 136:, 40:120, 0] - out[1][1][0, 136:, 40:120, 0]).abs()[inside].max() < 0.02
    with pytest.raises(ValueError, match="warp_downscale"):
        TorsoTexture(t.anchors, t.box, t.texture.detach(), t.anchor_log_scale.detach(), t.torso_rest, t.unit,
                     t.fine_features, warp_downscale=0)


def test_state_round_trip_and_subset_keep_the_texture():
    g, frames = _avatar(deform=True, deform_hidden=8, deform_layers=1)
    back = avatar_from_state("portrait_texture", g.state())
    with torch.no_grad():
        a, _, _ = _render(g, frames)
        b, _, _ = _render(back, frames)
        part = g.subset(torch.arange(len(g)) % 2 == 0)
        c, _, _ = _render(part, frames)
    assert torch.allclose(a, b, atol=1e-6)
    assert part.torso_texture is g.torso_texture and c[0, 36, 20, 0] > 0.9


def test_without_shoulders_in_the_frames_there_is_no_texture_and_a_clear_error_for_too_few_seeds():
    g, frames = _avatar()
    model, plain = _frames()
    cut = plain.mask(0).clone()
    cut[22:] = 0  # nothing below the sheet
    plain.mask = lambda i: cut
    bare = PortraitTextureGaussians.initialise(model, _config(kind="portrait_texture"), n_condition=1, frames=plain)
    assert bare.torso_texture is None and not (bare.group == TORSO).any()
    with pytest.raises(ValueError, match="below the neck"):
        TorsoTexture.from_seeds(torch.zeros(2, 3), g.torso_rest, 0.01, _config())


def test_avatar_portrait_is_the_texture_portrait(repo_root):
    from hydra import compose, initialize_config_dir

    import avatar.apps.train  # noqa: F401  (registers the train schema)

    with initialize_config_dir(config_dir=str(repo_root / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["avatar=portrait", "capture=c", "out=o"])
    assert cfg.train.mask == "person" and cfg.train.gaussians.kind == "portrait_texture" and cfg.train.gaussians.deform
    assert cfg.train.lr_torso_texture > 0 and cfg.train.gaussians.torso_anchor_spacing > 0


def test_the_trainers_optimizer_learns_the_body_texture():
    from avatar.train.config import TrainConfig
    from avatar.train.trainer import make_optimizer

    g, frames = _avatar()
    optimizer = make_optimizer(g, TrainConfig(lr_torso_texture=0.1))  # fast, to see it move in a few steps
    names = {group["name"] for group in optimizer.param_groups}
    assert {"torso_texture", "torso_anchors", "torso_decoder"} <= names
    target = torch.tensor([0.0, 0.0, 1.0]).expand(SIZE, SIZE, 3).clone()
    target[30:, 4:36] = torch.tensor([0.0, 0.8, 0.0])  # the shoulders are green now, not the frames' red
    errors = []
    for _ in range(60):
        img, _, _ = _render(g, frames)
        loss = (img[0] - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(float((img.detach()[0, 32:38, 10:30] - target[32:38, 10:30]).abs().mean()))
    assert errors[-1] < 0.5 * errors[0]


def test_the_layer_is_drawn_again_only_when_what_it_depends_on_changes(monkeypatch):
    """Live holds the driver's shoulders between detections: a package's frames reuse the layer
    then (the picture is the same as drawing it again); a new torso, camera, warp size or weights
    draw it again, and with gradients (training) it is always drawn."""
    import numpy as np

    from avatar.gaussians.package import AvatarPackage
    from test_portrait import Sheet

    g, frames = _avatar()
    calls = []
    draw_layer = TorsoTexture._draw
    monkeypatch.setattr(TorsoTexture, "_draw", lambda self, *a, **k: calls.append(1) or draw_layer(self, *a, **k))
    package = AvatarPackage({"shape": torch.zeros(1), "background": torch.tensor([0.0, 0.0, 1.0])}, g, Sheet(),
                            torch.device("cpu"))
    r, t = frames.rotation[0].numpy(), frames.translation[0].numpy()
    rest = g.torso_rest.numpy()
    moved = rest.copy()
    moved[0, 3] += 0.02
    draw = lambda torso, k=K: package.render_frame(np.zeros(1), r, t, VIEW, k, SIZE, SIZE, torso=torso)[0]  # noqa: E731
    first = draw(rest)
    assert len(calls) == 1
    assert np.array_equal(draw(rest.copy()), first) and len(calls) == 1  # same torso: reused
    elsewhere = draw(moved)
    assert len(calls) == 2 and not np.array_equal(elsewhere, first)
    assert np.array_equal(draw(rest), first) and len(calls) == 3
    zoomed = K.clone()
    zoomed[0, 0] *= 1.1
    draw(rest, zoomed)
    assert len(calls) == 4  # another camera
    g.torso_texture.warp_downscale = 2
    draw(rest, zoomed)
    assert len(calls) == 5  # another warp size
    with torch.no_grad():
        g.torso_texture.texture[:, :3] += 0.5
    assert not np.array_equal(draw(rest, zoomed), first) and len(calls) == 6  # new weights
    texture = g.torso_texture
    for _ in range(2):
        texture.layer(g.torso_rest, VIEW[None], K[None], SIZE, SIZE)
    assert len(calls) == 8  # gradients on: drawn every time


def test_live_draws_the_warp_smaller_and_refuses_a_bad_factor():
    from types import SimpleNamespace

    from avatar.drive.animate import body_warp_downscale
    from avatar.drive.sources import DriveError

    g, _ = _avatar()
    package = SimpleNamespace(gaussians=g)
    assert g.torso_texture.warp_downscale == 1  # as trained
    assert body_warp_downscale(package, 4) == 4 and g.torso_texture.warp_downscale == 4
    for bad in (0, -2, 2.5, "4"):
        with pytest.raises(DriveError, match="body_warp_downscale"):
            body_warp_downscale(package, bad)
    assert body_warp_downscale(SimpleNamespace(gaussians=object()), 4) is None  # no body texture: nothing to set
