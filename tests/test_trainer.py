"""Training on a small synthetic capture: a textured sheet that bends and turns, rendered by a teacher.

The teacher is a set of mesh-bound Gaussians with a known colour pattern; the capture holds
its renders (PNG, lossless) and silhouettes; the tracking is the true sequence. A student
starts from the UV-grid initialisation and must reproduce held-out frames.
"""

from __future__ import annotations

import os
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avatar.io.capture import Capture, CaptureMeta, CaptureWriter, Landmarks
from avatar.gaussians.base import FrameState
from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig
from avatar.gaussians.strategy import DensifyConfig
from avatar.geometry import axis_angle_to_matrix
from avatar.io.avatar_file import checkpoint_avatar, read_checkpoint
from avatar.models.engine import Part
from avatar.render import rasterization
from avatar.io.tracking import TrackedSequence
from avatar.train import trainer as trainer_mod
from avatar.train.data import TrainDataError, load_frames, split_frames
from avatar.train.trainer import TrainConfig, Trainer, init_gaussians

SIZE = 48


class SheetModel(torch.nn.Module):
    """A 16 cm square sheet in the z = 0 plane; one expression raises a bump; rigid pose on top."""

    def __init__(self, n: int = 8):
        super().__init__()
        g = torch.linspace(0, 1, n + 1)
        y, x = torch.meshgrid(g, g, indexing="ij")
        uv = torch.stack((x, y), -1).reshape(-1, 2)
        self.register_buffer("template", torch.cat(((uv - 0.5) * 0.16, torch.zeros(len(uv), 1)), -1))
        self.register_buffer("bump", torch.exp(-((uv - 0.5) ** 2).sum(-1) / 0.05)[:, None] * torch.tensor([0, 0, 0.03]))
        i = torch.arange(n)
        a = (i[:, None] * (n + 1) + i[None, :]).reshape(-1)
        quads = torch.stack((a, a + 1, a + n + 2, a + n + 1), -1)
        self.faces = torch.cat((quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]))
        self.uvs, self.uv_faces = uv, self.faces.clone()
        self.parts = {"sheet": Part(torch.ones(len(uv), dtype=torch.bool), torch.ones(len(self.faces), dtype=torch.bool))}

    def forward(self, shape=None, expression=None, rotation=None, translation=None):
        zeros = torch.zeros(1, 3)
        expression = torch.zeros(1, 1) if expression is None else expression
        rotation = zeros if rotation is None else rotation
        translation = zeros if translation is None else translation
        v = self.template + expression[:, :1, None] * self.bump
        v = v @ axis_angle_to_matrix(rotation).transpose(-1, -2) + translation[:, None, :]
        return SimpleNamespace(vertices=v)


def _sequence(n_frames: int) -> TrackedSequence:
    t = np.linspace(0, 1, n_frames)
    f = 1.6 * SIZE
    return TrackedSequence(
        model="sheet", shape=np.zeros(1, np.float32), expression=(0.5 + 0.5 * np.sin(6 * t))[:, None].astype(np.float32),
        expression_names=("bump",), rotation=np.stack((0.2 * np.sin(4 * t), 0.4 * np.sin(3 * t), 0 * t), -1).astype(np.float32),
        translation=np.tile([0.0, 0.0, -0.35], (n_frames, 1)).astype(np.float32),
        K=np.array([[f, 0, SIZE / 2], [0, f, SIZE / 2], [0, 0, 1]], np.float32),
        viewmat=np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32), width=SIZE, height=SIZE,
        valid=np.ones(n_frames, bool),
    )


@pytest.fixture(scope="module")
def sheet_capture(tmp_path_factory):
    """A capture of a teacher avatar (a colour pattern on the sheet) and its true tracking."""
    root = tmp_path_factory.mktemp("sheet") / "capture"
    model, seq = SheetModel(), _sequence(24)
    teacher = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=40, sh_degree=0, init_opacity=0.9))
    uv = (model.uvs[model.uv_faces[teacher.binding]].mean(1))  # roughly each Gaussian's UV
    colour = torch.stack((0.5 + 0.4 * torch.sin(12 * uv[:, 0]), 0.5 + 0.4 * torch.cos(9 * uv[:, 1]),
                          0.5 + 0.3 * torch.sin(7 * (uv[:, 0] + uv[:, 1]))), -1)
    with torch.no_grad():
        teacher.params["sh0"][:, 0] = (colour - 0.5) / 0.28209479177387814
    writer = CaptureWriter(root, frame_format="png")
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    verts = model(expression=t(seq.expression), rotation=t(seq.rotation), translation=t(seq.translation)).vertices
    for i in range(seq.n_frames):
        with torch.no_grad():
            w = teacher(FrameState(verts[i], rotation=t(seq.rotation[i])))
            img, alpha, _ = rasterization(w.means[0], w.quats[0], w.scales[0], w.opacities, w.sh, t(seq.viewmat)[None],
                                          t(seq.K)[None], SIZE, SIZE, sh_degree=0, backgrounds=torch.ones(1, 3))
        writer.write_frame(i, (img[0].numpy() * 255 + 0.5).astype(np.uint8))
        writer.write_mask(i, alpha[0, ..., 0].numpy())
    meta = CaptureMeta(source="synthetic:sheet", fps=25.0, width=SIZE, height=SIZE, n_frames=seq.n_frames)
    writer.finish(meta, Landmarks(face=np.zeros((seq.n_frames, 478, 3), np.float32), face_present=np.ones(seq.n_frames, bool)))
    return root, seq


def _config(**kw) -> TrainConfig:
    base = dict(iterations=300, resolution=None, holdout=0.2, preview_every=0, checkpoint_every=0, sh_increase_every=100,
                gaussians=MeshGaussiansConfig(uv_resolution=24, sh_degree=1, init_opacity=0.3),
                densify=DensifyConfig(refine_start=100, refine_every=50, refine_stop=250, grad_threshold=2e-4,
                                      reset_opacity_every=0, max_gaussians=4000))
    base.update(kw)
    return TrainConfig(**base)


def _trainer(sheet_capture, out, with_model: bool = False, **kw) -> Trainer:
    root, seq = sheet_capture
    cfg = _config(**kw)
    model = SheetModel()
    frames = load_frames(Capture(root), seq, model, cfg.resolution, cfg.holdout, torch.device("cpu"))
    return Trainer(cfg, frames, init_gaussians(model, cfg.gaussians, frames), out, model=model if with_model else None)


def test_split_keeps_the_end_for_evaluation():
    train, held = split_frames(np.arange(20), 0.15)
    assert train.tolist() == list(range(17)) and held.tolist() == [17, 18, 19]
    with pytest.raises(TrainDataError, match="cannot hold out"):
        split_frames(np.arange(2), 0.5)


def test_each_epoch_trains_on_every_training_frame_once_in_a_fresh_order(sheet_capture, tmp_path):
    tr = _trainer(sheet_capture, tmp_path / "run")
    train = sorted(int(i) for i in tr.frames.train)
    n = len(train)
    epochs = [[tr.training_frame(step) for step in range(1 + e * n, 1 + (e + 1) * n)] for e in range(3)]
    for order in epochs:
        assert sorted(order) == train  # all of them, none twice, no held-out frame
    assert epochs[0] != epochs[1] != epochs[2]
    assert [tr.training_frame(s) for s in range(1, n + 1)] == epochs[0]  # a function of the step: resumable
    other = _trainer(sheet_capture, tmp_path / "run2", seed=1)
    assert [other.training_frame(s) for s in range(1, n + 1)] != epochs[0]


class BumpSheet(SheetModel):
    """The sheet with its bump as an expression blendshape, as a head model names them."""

    num_expression = 1

    @property
    def exprdirs(self):
        return self.bump[:, :, None]


def test_active_pixels_weight_what_the_expressions_move(sheet_capture, tmp_path):
    root, seq = sheet_capture
    cfg = _config(active_weight=1.0)
    model = BumpSheet()
    frames = load_frames(Capture(root), seq, model, cfg.resolution, cfg.holdout, torch.device("cpu"))
    tr = Trainer(cfg, frames, init_gaussians(model, cfg.gaussians, frames), tmp_path / "run", model=model)
    active = tr.active_pixels(0)
    tri = tr.triangle_ids(0)
    assert active.shape == (SIZE, SIZE) and float(active.min()) >= 0 and float(active.max()) <= 1
    assert bool((active[tri < 0] == 0).all())  # off the sheet: nothing moves
    # the bump's centre moves most, the sheet's corners hardly
    on = tri >= 0
    centre = ((model.uvs[model.faces[tri[on]]].mean(1) - 0.5) ** 2).sum(-1) < 0.02
    assert float(active[on][centre].mean()) > 3 * float(active[on][~centre].mean())
    assert torch.equal(tr.active_pixels(0), active) and 0 in tr._active_maps  # kept: one rasterization per frame
    assert np.isfinite(tr.train_step()["loss"])
    plain = _trainer(sheet_capture, tmp_path / "plain", with_model=True)  # a model without expression blendshapes
    assert plain.active_pixels(0) is None


def _eyed_sheet_trainer(sheet_capture, out, **kw) -> Trainer:
    """The bump sheet as a head with two "eyeballs" (discs of its triangles round uv (0.3, 0.5) and
    (0.7, 0.5)) and the bump as both eyes' blink, as a head model's tracking profile names them."""
    root, seq = sheet_capture
    cfg = _config(densify=DensifyConfig(refine_start=1000), **kw)
    model = BumpSheet()
    centres = model.uvs[model.faces].mean(1)  # [F, 2]
    every = torch.ones(len(model.template), dtype=torch.bool)
    disc = lambda x: ((centres - torch.tensor([x, 0.5])) ** 2).sum(-1) < 0.012  # noqa: E731
    model.parts = {"sheet": Part(every, ~(disc(0.3) | disc(0.7))), "eye_r": Part(every, disc(0.3)),
                   "eye_l": Part(every, disc(0.7))}
    model.expression_names = ("bump",)
    model.tracking_profile = SimpleNamespace(eyeball_parts=("eye_r", "eye_l"), blinks=("bump", "bump"), antagonists=())
    frames = load_frames(Capture(root), seq, model, cfg.resolution, cfg.holdout, torch.device("cpu"))
    return Trainer(cfg, frames, init_gaussians(model, cfg.gaussians, frames), out, model=model)


def test_render_window_is_the_frame_cropped(sheet_capture, tmp_path):
    tr = _trainer(sheet_capture, tmp_path / "run")
    with torch.no_grad():
        full, alpha, _ = tr.render(3)
        part, part_alpha, _ = tr.render(3, window=(10, 14, 40, 30))
    assert part.shape == (16, 30, 3)
    assert torch.allclose(part, full[14:30, 10:40], atol=1e-5) and torch.allclose(part_alpha, alpha[14:30, 10:40], atol=1e-5)


def test_shut_lids_weight_holds_shut_eyes_at_the_skin_round_them(sheet_capture, tmp_path):
    """``train.shut_lids_weight``: each eye's opening (where its eyeball is the front-most triangle)
    and a ring of skin round it; the frame drawn with the blinks at 1 is pulled, over the openings,
    to the ring's median colour of the frame; nothing for a model without blinks or eyeballs."""
    tr = _eyed_sheet_trainer(sheet_capture, tmp_path / "off", iterations=80)
    masks, rings = tr.eye_openings(0)
    tri = tr.triangle_ids(0)
    eyes = tr.model.parts
    assert masks.shape == (2, SIZE, SIZE) and bool(masks[0].any()) and bool(masks[1].any())
    assert torch.equal(masks[0], (tri >= 0) & eyes["eye_r"].faces[tri.clamp_min(0)])
    assert not bool((rings & masks.any(0)).any()) and bool(rings[0].any()) and bool(rings[1].any())
    assert bool((tri[rings.any(0)] >= 0).all())  # the ring lies on the model
    assert tr._shut_ids == ([0, 0], [])

    def shut_error(t: Trainer) -> float:  # mean distance of the shut render's openings from their rings' colour
        errs = []
        with torch.no_grad():
            for i in t.frames.train[:6]:
                gt, _ = t.target(int(i))
                total = t.shut_lids_loss(int(i), gt)
                errs.append(float(total) * SIZE * SIZE / float(t.eye_openings(int(i))[0].sum()))
        return float(np.mean(errs))

    on = _eyed_sheet_trainer(sheet_capture, tmp_path / "on", iterations=80, shut_lids_weight=20.0, shut_lids_every=1)
    for t in (tr, on):
        for _ in range(t.cfg.iterations):
            assert np.isfinite(t.train_step()["loss"])
    # Measured: 0.141 without, 0.091 with (the sheet's "eyeballs" are also what its open frames show, so
    # the image holds them back; a head's shut lids are other Gaussians than its eyes). Both runs are
    # seeded alike: without the term the two would match.
    assert shut_error(on) < 0.75 * shut_error(tr), (shut_error(on), shut_error(tr))
    assert _trainer(sheet_capture, tmp_path / "plain", with_model=True).eye_openings(0) is None  # no profile


def test_training_reproduces_heldout_frames(sheet_capture, tmp_path):
    tr = _trainer(sheet_capture, tmp_path / "run")
    before = tr.evaluate()
    losses = []
    for _ in range(tr.cfg.iterations):
        losses.append(tr.train_step()["loss"])
    after = tr.evaluate()
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:30])
    # Measured: 13.1 dB at initialisation (grey Gaussians), 29.0 dB (SSIM 0.93) after 300 steps.
    # 24 dB means the pattern and the bending are reproduced on frames never trained on.
    assert before["psnr"] < 18 and after["psnr"] > 24, (before, after)
    assert after["ssim"] > 0.85
    assert len(tr.gaussians) != 576  # densification ran


def test_flat_weight_lays_the_gaussians_on_their_triangles(sheet_capture, tmp_path):
    """``train.flat_weight`` shrinks the Gaussians' extent across their triangles (off by default)."""
    def across(**kw):
        tr = _trainer(sheet_capture, tmp_path / f"run{len(kw)}", iterations=60,
                      densify=DensifyConfig(refine_start=1000), **kw)
        for _ in range(tr.cfg.iterations):
            tr.train_step()
        with torch.no_grad():
            return float(tr.gaussians.normal_extents().median())

    free, flat = across(), across(flat_weight=1.0, flat_threshold=0.05)
    assert flat < 0.8 * free, (flat, free)


def test_eyeball_weight_keeps_eyeball_gaussians_on_their_surface(sheet_capture, tmp_path):
    """``train.eyeball_weight`` holds the Gaussians on the model's eyeball parts (its tracking
    profile's) on the surface, lifted and spread along the normal no further than the threshold;
    the other Gaussians are left to the image; nothing for a model without eyeballs."""
    def trained(steps: int = 60, **kw):
        root, seq = sheet_capture
        cfg = _config(iterations=steps, densify=DensifyConfig(refine_start=1000), lr_xyz_final=2e-3, **kw)
        model = SheetModel()
        n = len(model.faces)
        a, b = torch.arange(n) < n // 4, (torch.arange(n) >= n // 4) & (torch.arange(n) < n // 2)
        half = a | b
        every = torch.ones(len(model.template), dtype=torch.bool)
        model.parts = {"sheet": Part(every, ~half), "eye_a": Part(every, a), "eye_b": Part(every, b)}
        model.tracking_profile = SimpleNamespace(eyeball_parts=("eye_b", "eye_a"))
        frames = load_frames(Capture(root), seq, model, cfg.resolution, cfg.holdout, torch.device("cpu"))
        tr = Trainer(cfg, frames, init_gaussians(model, cfg.gaussians, frames), tmp_path / f"run{len(kw)}", model=model)
        with torch.no_grad():  # start every Gaussian lifted 0.1 triangle sizes off its triangle
            tr.gaussians.params["local_xyz"][:, 2] = 0.1
        for _ in range(tr.cfg.iterations):
            tr.train_step()
        on = tr.eyeball_gaussians()
        if kw.get("eyeball_extra_parts"):  # more parts by name pattern: here the rest of the sheet
            assert on is not None and bool(on.all())
            return None
        assert on is not None and 0 < int(on.sum()) < len(on)
        assert torch.equal(on, half[tr.gaussians.binding])
        with torch.no_grad():
            lift = tr.gaussians.params["local_xyz"][:, 2].abs()
        return float(lift[on].median()), float(lift[~on].median())

    free_eyes, free_rest = trained(eyeball_weight=0.0)
    held_eyes, held_rest = trained(eyeball_weight=10.0, eyeball_threshold=0.02)
    assert held_eyes < 0.5 * free_eyes, (held_eyes, free_eyes)
    assert held_rest > 0.8 * free_rest, (held_rest, free_rest)
    trained(steps=0, eyeball_extra_parts=["sh*"])
    assert _trainer(sheet_capture, tmp_path / "plain", with_model=True).eyeball_gaussians() is None  # no profile


def _first_step_state(tr) -> FrameState:
    """The posed model ``tr``'s first training step hands its avatar."""
    seen = []
    forward = tr.gaussians.forward
    tr.gaussians.forward = lambda state: (seen.append(state), forward(state))[1]
    tr.train_step()
    tr.gaussians.forward = forward
    return seen[-1]


def test_condition_noise_reaches_the_deformer_only(sheet_capture, tmp_path):
    """``train.condition_noise`` perturbs the expression the deformer reads in training (drawn from
    the seed and the step), never the mesh; off (0) the deformer reads the tracked expression."""
    kw = dict(gaussians=MeshGaussiansConfig(uv_resolution=24, sh_degree=1, deform=True, deform_hidden=16, deform_layers=1))
    tr = _trainer(sheet_capture, tmp_path / "noisy", condition_noise=0.1, **kw)
    noisy = _first_step_state(tr)
    index = tr.training_frame(1)
    plain = tr.mesh(index)
    assert torch.equal(noisy.vertices, plain.vertices)
    assert not torch.equal(noisy.expression, plain.expression)
    assert torch.equal(tr._noisy_state(index).expression, noisy.expression)  # same step: the same draw
    draws = []
    for step in range(2, 60):  # other steps: other draws, of the configured spread
        tr.step = step
        draws.append(tr._noisy_state(index).expression - plain.expression)
    assert 0.07 < float(torch.cat(draws).std()) < 0.13

    quiet = _trainer(sheet_capture, tmp_path / "quiet", **kw)
    assert torch.equal(_first_step_state(quiet).expression, quiet.mesh(quiet.training_frame(1)).expression)


def test_random_background_puts_each_training_step_on_its_own_colour(sheet_capture, tmp_path):
    """``train.random_background``: every step renders and targets the frame on a colour drawn from
    the seed and the step (a resumed run draws the same); evaluation keeps ``train.background``."""
    tr = _trainer(sheet_capture, tmp_path / "random", random_background=True)
    colours = [tr.step_background(s) for s in range(1, 6)]
    assert all(c.shape == (3,) and bool(((c >= 0) & (c <= 1)).all()) for c in colours)
    assert len({tuple(c.tolist()) for c in colours}) == 5
    assert torch.equal(colours[0], tr.step_background(1))
    index = tr.training_frame(1)
    gt, mask = tr.target(index, colours[0])
    assert torch.allclose(gt[mask == 0], colours[0].expand(int((mask == 0).sum()), 3))
    seen = []
    render = tr.render
    tr.render = lambda *a, **k: (seen.append(k.get("background")), render(*a, **k))[1]
    tr.train_step()
    tr.render = render
    assert torch.equal(seen[0], colours[0])
    img_default, alpha, _ = tr.render(index)
    img_black, _, _ = tr.render(index, background=torch.zeros(3))
    empty = alpha[..., 0] < 1e-3  # nothing drawn there: the background shows
    assert bool(empty.any()) and torch.allclose(img_default[empty], tr.background.expand(int(empty.sum()), 3))
    assert torch.allclose(img_black[empty], torch.zeros(int(empty.sum()), 3))
    assert _trainer(sheet_capture, tmp_path / "plain").step_background(1) is None


@pytest.fixture
def one_thread():
    """Bit-exact comparisons need one thread: multithreaded BLAS/OpenMP reductions may split work
    differently when the machine is busy, which changes the last bits of a sum."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("deform", [False, True], ids=["static", "dynamic"])
def test_resume_matches_an_uninterrupted_run(sheet_capture, tmp_path, one_thread, deform):
    kw = dict(iterations=40, checkpoint_every=20,
              gaussians=MeshGaussiansConfig(uv_resolution=24, sh_degree=1, init_opacity=0.3, deform=deform,
                                            deform_hidden=32, deform_layers=2),
              densify=DensifyConfig(refine_start=10, refine_every=10, grad_threshold=1e-5, reset_opacity_every=15))
    full = _trainer(sheet_capture, tmp_path / "full", **kw)
    full.run(progress=False)
    first = _trainer(sheet_capture, tmp_path / "split", **kw)
    first.run(until=20, progress=False)  # "interrupted" after the checkpoint at step 20
    second = _trainer(sheet_capture, tmp_path / "split", **kw)
    assert second.resume() and second.step == 20
    second.run(progress=False)
    assert torch.equal(full.gaussians.binding, second.gaussians.binding)
    for name, p in full.gaussians.params.items():
        assert torch.equal(p, second.gaussians.params[name]), name
    if deform:
        for (name, p), q in zip(full.gaussians.deformer.state_dict().items(), second.gaussians.deformer.state_dict().values()):
            assert torch.equal(p, q), name
        assert full.gaussians.deformer.mlp[-1].weight.abs().max() > 0  # the deformer was trained


def test_a_stopped_run_checkpoints_where_it_stopped(sheet_capture, tmp_path):
    tr = _trainer(sheet_capture, tmp_path / "run", iterations=40, checkpoint_every=0)
    tr.run(progress=False, stop=lambda: tr.step >= 3)  # Ctrl-C noted during step 3
    assert tr.step == 3 and read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 3


def test_resume_from_a_checkpoint_of_the_earlier_layout(sheet_capture, tmp_path, one_thread):
    """Checkpoints written before the avatar file format 2 kept the Gaussians' entries at the top level."""
    kw = dict(iterations=20, checkpoint_every=10)
    first = _trainer(sheet_capture, tmp_path / "run", **kw)
    first.run(until=10, progress=False)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    state = read_checkpoint(path)
    kind, avatar_state = checkpoint_avatar(state)
    legacy = {k: v for k, v in state.items() if k not in ("format", "avatar")}
    legacy.update(avatar_state)  # faces, binding, params, sh_degree, sh_frame at the top, no format
    torch.save(legacy, path)
    second = _trainer(sheet_capture, tmp_path / "run", **kw)
    assert second.resume() and second.step == 10
    assert torch.equal(second.gaussians.binding, first.gaussians.binding)
    for name, p in first.gaussians.params.items():
        assert torch.equal(p.detach(), second.gaussians.params[name].detach()), name
    second.run(progress=False)
    assert second.step == 20


def test_the_avatar_starts_from_the_seed_alone(sheet_capture):
    """An expression MLP's initial weights do not depend on what used the random state before."""
    root, seq = sheet_capture
    frames = load_frames(Capture(root), seq, SheetModel(), None, 0.2, torch.device("cpu"))
    cfg = MeshGaussiansConfig(uv_resolution=12, sh_degree=0, deform=True, deform_hidden=8, deform_layers=1)
    a = init_gaussians(SheetModel(), cfg, frames, seed=3)
    torch.rand(7)  # someone else draws random numbers in between
    b = init_gaussians(SheetModel(), cfg, frames, seed=3)
    c = init_gaussians(SheetModel(), cfg, frames, seed=4)
    wa, wb, wc = (g.deformer.mlp[0].weight for g in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_non_finite_loss_skips_the_step_and_lowers_the_lr(sheet_capture, tmp_path, monkeypatch):
    tr = _trainer(sheet_capture, tmp_path / "run", iterations=6)
    real = trainer_mod.photometric
    monkeypatch.setattr(trainer_mod, "photometric",
                        lambda *a, **k: real(*a, **k) * (float("nan") if tr.step == 3 else 1.0))
    for _ in range(6):
        tr.train_step()
    assert tr.skipped_steps == [3] and tr.lr_factor == 0.5
    assert all(torch.isfinite(p).all() for p in tr.gaussians.params.values())
    path = tr.save_checkpoint()
    kind, state = checkpoint_avatar(read_checkpoint(path))
    assert kind == "mesh_gaussians" and all(torch.isfinite(v).all() for v in state["params"].values())


def test_frame_count_mismatch_is_a_clear_error(sheet_capture):
    root, seq = sheet_capture
    short = _sequence(10)
    with pytest.raises(TrainDataError, match="re-run avatar track"):
        load_frames(Capture(root), short, SheetModel(), None, 0.2, torch.device("cpu"))


def test_train_eval_export_commands(sheet_capture, tmp_path, monkeypatch, capsys):
    """The real CLI on the sheet capture: run folder contents, refusal to overwrite, eval and export."""
    from avatar import cli
    from avatar.gaussians.ply import load_ply
    from avatar.train import session

    root, seq = sheet_capture
    seq.save(root / "tracking.npz")
    monkeypatch.setattr(session, "_load_model", lambda name, device, options=None: SheetModel().to(device))
    out = tmp_path / "run"
    args = [f"capture={root}", f"out={out}", "train.iterations=30", "train.resolution=null", "train.holdout=0.2",
            "train.preview_every=10", "train.checkpoint_every=10", "train.gaussians.uv_resolution=24", "train.gaussians.sh_degree=1",
            "renderer=torch"]
    assert cli.main(["train", *args]) == 0
    for name in ("config.yaml", "metrics.json", "avatar.ply", "avatar.pt", "heldout_side_by_side.mp4",
                 "checkpoints/last.pt", "checkpoints/step_000030.pt", "progress/step_000010.png"):
        assert (out / name).is_file(), name
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 30 and metrics["heldout_frames"] == 5 and metrics["backend"] == "torch"
    assert metrics["psnr"] > 10 and metrics["n_gaussians"] == len(load_ply(out / "avatar.ply")["means"])
    from avatar.geometry.rotations import training_turn_range
    from avatar.io.avatar_file import read_avatar

    # the avatar file holds how far its training frames turned (retarget.turn_margin_deg reads it)
    turns = read_avatar(out)["turn_range"]
    np.testing.assert_allclose(np.asarray(turns), training_turn_range(seq.rotation[:19], seq.rotation[0]), atol=1e-5)
    capsys.readouterr()
    assert cli.main(["train", *args]) == 1  # never overwrites a trained run
    assert "already holds a trained run" in capsys.readouterr().err
    recorded = (out / "config.yaml").read_text()
    from omegaconf import OmegaConf

    assert Path(OmegaConf.load(out / "config.yaml").capture).is_absolute()  # found from any directory
    assert cli.main(["eval", f"run={out}", "renderer.eps2d=0.3"]) == 0
    assert (out / "config.yaml").read_text() == recorded  # eval never rewrites the run's record
    again = json.loads((out / "eval" / "metrics.json").read_text())
    assert abs(again["psnr"] - metrics["psnr"]) < 1e-4
    # the held-out poses aligned on full-size frames unless told otherwise, whatever the run recorded
    for extra, downscale in (([], 1), (["pose_downscale=2"], 2)):
        assert cli.main(["eval", f"run={out}", "pose_steps=2", f"out={tmp_path / 'aligned'}", *extra]) == 0
        aligned = json.loads((tmp_path / "aligned" / "metrics.json").read_text())["pose_aligned"]
        assert aligned["pose_steps"] == 2 and aligned["downscale"] == downscale and aligned["frames"] == 5
    assert cli.main(["export", f"run={out}"]) == 0
    assert all((out / "export" / name).is_file() for name in ("avatar.ply", "avatar.spz", "avatar.pt"))
    capsys.readouterr()
    assert cli.main(["eval", f"run={tmp_path / 'nothing'}"]) == 1
    assert "is not a trained run" in capsys.readouterr().err
    # A run recorded before captures were absolute: capture and out as typed in the directory
    # training ran in (tmp_path); eval from elsewhere still finds the capture.
    old_style = OmegaConf.load(out / "config.yaml")
    old_style.capture, old_style.out = os.path.relpath(root, tmp_path), "run"
    (out / "config.yaml").write_text(OmegaConf.to_yaml(old_style))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["eval", f"run={out}", f"out={tmp_path / 'from_elsewhere'}"]) == 0
    assert abs(json.loads((tmp_path / "from_elsewhere" / "metrics.json").read_text())["psnr"] - metrics["psnr"]) < 1e-4


def test_train_without_tracking_says_run_track(sheet_capture, tmp_path, capsys):
    from avatar import cli

    root, _ = sheet_capture
    bare = tmp_path / "bare"
    import shutil

    shutil.copytree(root, bare)
    (bare / "tracking.npz").unlink(missing_ok=True)
    assert cli.main(["train", f"capture={bare}", f"out={tmp_path / 'run'}"]) == 1
    assert "avatar track" in capsys.readouterr().err


def test_joint_tracking_refinement_removes_pose_jitter(sheet_capture, tmp_path):
    """Per-frame pose errors shrink when the tracking is refined with the Gaussians.

    A rotation shared by all frames is a gauge the Gaussians can absorb, so errors are
    compared after removing their mean over the training frames.
    """
    root, seq = sheet_capture
    noise = np.random.default_rng(0).normal(0, 0.04, seq.rotation.shape) * np.array([1, 1, 0])
    bad = TrackedSequence(**{**seq.__dict__, "rotation": (seq.rotation + noise).astype(np.float32)})
    cfg = _config(iterations=250, refine_tracking=True, lr_rotation=1e-3, lr_translation=0.0, lr_expression=0.0,
                  gaussians=MeshGaussiansConfig(uv_resolution=24, sh_degree=0, init_opacity=0.3))
    model = SheetModel()
    frames = load_frames(Capture(root), bad, model, None, cfg.holdout, torch.device("cpu"))
    tr = Trainer(cfg, frames, init_gaussians(model, cfg.gaussians, frames), tmp_path / "run", model=model)
    tr.run(progress=False)
    ids = frames.frame_ids[frames.train]
    refined = (frames.rotation[frames.train] + tr.offsets["rotation"][frames.train].detach()).numpy()

    def jitter(rotation):
        d = rotation - seq.rotation[ids]
        return float(np.abs(d - d.mean(0)).mean())

    # Measured (300 steps): 0.021 rad before, 0.005 rad after.
    assert jitter(refined) < 0.5 * jitter(bad.rotation[ids]), (jitter(bad.rotation[ids]), jitter(refined))
    assert tr.offsets["rotation"][frames.heldout].abs().max() == 0  # held-out frames keep their tracking


def test_head_mask_cuts_the_person_mask_to_the_tracked_mesh(sheet_capture):
    root, seq = sheet_capture
    person = load_frames(Capture(root), seq, SheetModel(), None, 0.2, torch.device("cpu"), mask="person")
    head = load_frames(Capture(root), seq, SheetModel(), None, 0.2, torch.device("cpu"), mask="head", head_dilate=0.0)
    assert (head.masks <= person.masks).all()
    # The teacher's Gaussians spill a little past the sheet's edges; with no margin that spill is cut.
    assert head.masks.float().sum() < person.masks.float().sum()
    grown = load_frames(Capture(root), seq, SheetModel(), None, 0.2, torch.device("cpu"), mask="head", head_dilate=0.2)
    assert torch.equal(grown.masks, person.masks)  # a wide margin keeps everything the sheet shows
    with pytest.raises(TrainDataError, match="train.mask"):
        load_frames(Capture(root), seq, SheetModel(), None, 0.2, torch.device("cpu"), mask="torso")


def test_head_mask_neck_cut_follows_the_mesh_not_the_margin():
    from avatar.train.data import head_masks

    model = SheetModel()
    v = model(translation=torch.tensor([[0.0, 0.0, -0.35]])).vertices  # facing the camera, y up in the image
    f = 1.6 * SIZE
    K = torch.tensor([[[f, 0, SIZE / 2], [0, f, SIZE / 2], [0, 0, 1]]])
    vm = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    plain = head_masks(v, model.faces, K, vm, SIZE, SIZE, dilate=0.05)[0]
    cut = head_masks(v, model.faces, K, vm, SIZE, SIZE, dilate=0.05, neck=(model.template[:, 1], 0.0))[0]
    rows = plain.any(1).nonzero().squeeze(1)
    top, bottom, middle, margin = int(rows.min()), int(rows.max()), SIZE // 2, round(0.05 * SIZE)
    above = slice(top, middle - 1 - margin)  # the margin's reach above the cut line
    assert cut[top, SIZE // 2] == 1 and cut[above].sum() == plain[above].sum() > 0  # above: as before
    assert cut[middle + 1:].sum() == 0  # below the cut nothing, not even the margin
    assert cut[middle - 2, SIZE // 2] == 1  # the sheet itself is kept right down to the cut
    assert plain[bottom, SIZE // 2] == 1


def test_evaluation_separates_heldout_frames_posed_unlike_any_training_frame(sheet_capture, tmp_path):
    """metrics split the held-out frames by the angle to the nearest training head pose."""
    tr = _trainer(sheet_capture, tmp_path / "run", with_model=True, eval_novel_pose_deg=5.0)
    f = tr.frames
    deg = math.pi / 180
    f.rotation[f.train] = 0.0
    f.rotation[f.train[3]] = torch.tensor([0.0, 20 * deg, 0.0])
    held = f.heldout
    assert len(held) == 5
    f.rotation[held] = torch.tensor([[0.0, 3 * deg, 0.0], [0.0, 12 * deg, 0.0], [0.0, 0.0, 6 * deg],
                                     [0.0, 19 * deg, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(tr.pose_distance_deg(held), [3.0, 8.0, 6.0, 1.0, 0.0], atol=1e-3)
    out = tr.evaluate()
    per = out["per_frame"]
    assert [p["frame"] for p in per] == f.frame_ids[held].tolist()
    assert [p["pose_distance_deg"] for p in per] == pytest.approx([3.0, 8.0, 6.0, 1.0, 0.0], abs=0.01)
    seen, novel = out["by_pose"]["seen"], out["by_pose"]["novel"]
    assert (seen["frames"], novel["frames"], out["by_pose"]["threshold_deg"]) == (3, 2, 5.0)
    psnr = np.array([p["psnr"] for p in per])
    assert out["psnr"] == pytest.approx(psnr.mean(), abs=1e-3)
    assert novel["psnr"] == pytest.approx(psnr[[1, 2]].mean(), abs=1e-3)
    assert seen["ssim"] == pytest.approx(np.mean([per[i]["ssim"] for i in (0, 3, 4)]), abs=1e-3)
    # Where the error is: regions of the seen and novel frames; the pixel shares add up to one.
    regions = out["by_region"]
    assert regions["band_px"] >= 1 and set(regions) == {"band_px", "all", "seen", "novel"}
    assert sum(v["pixel_share"] for v in regions["novel"].values()) == pytest.approx(1, abs=1e-3)
    assert sum(v["error_share"] for v in regions["all"].values()) == pytest.approx(1, abs=1e-3)
    # Expression distance to the nearest training frame: zero for a copied expression.
    f.conditions[held[0]] = f.conditions[f.train[2]]
    f.conditions[held[1]] = f.conditions[f.train[2]] + 0.5
    dist = tr.expression_distance(held[:2])
    assert dist[0] == pytest.approx(0, abs=1e-6) and dist[1] > 0


def test_heldout_pose_alignment_recovers_a_misplaced_head(sheet_capture, tmp_path):
    """A held-out frame whose tracked pose is off scores low; aligning the pose to the image
    (Gaussians frozen) brings the score back, and the Gaussians are left untouched."""
    root, seq = sheet_capture
    model = SheetModel()
    cfg = _config(iterations=300, eval_lr_rotation=5e-3, eval_lr_translation=5e-4, eval_pose_downscale=1)
    frames = load_frames(Capture(root), seq, model, cfg.resolution, cfg.holdout, torch.device("cpu"))
    tr = Trainer(cfg, frames, init_gaussians(model, cfg.gaussians, frames), tmp_path / "run", model=model)
    tr.run(progress=False)
    held = frames.heldout[:2]
    good = tr.evaluate(held)["psnr"]
    frames.rotation[held] += torch.tensor([0.0, 0.1, 0.0])  # 5.7 degrees off
    frames.vertices[held] = model(expression=frames.conditions[held], rotation=frames.rotation[held],
                                  translation=frames.translation[held]).vertices
    before = {k: v.detach().clone() for k, v in tr.gaussians.params.items()}
    off = tr.evaluate(held)["psnr"]
    aligned = tr.evaluate(held, pose_steps=40)["psnr"]
    # Measured: 30.6 dB tracked, 24.1 dB off, 30.3 dB aligned.
    assert off < good - 3, (good, off)
    assert aligned > off + 0.6 * (good - off), (good, off, aligned)
    for k, v in tr.gaussians.params.items():
        assert torch.equal(v, before[k]) and v.requires_grad


def test_a_sweep_over_captures_trains_each_and_sums_up(sheet_capture, tmp_path, monkeypatch, capsys):
    """`avatar train -m capture=A,B` (Hydra's basic launcher): one run per capture, a failing job
    does not stop the others, and the sweep ends with summary.json and the failing job's status."""
    import json
    import shutil

    from avatar import cli
    from avatar.train import session

    root, seq = sheet_capture
    seq.save(root / "tracking.npz")
    other = tmp_path / "other"
    shutil.copytree(root, other)
    monkeypatch.setattr(session, "_load_model", lambda name, device, options=None: SheetModel().to(device))
    missing = tmp_path / "missing"
    out = tmp_path / "batch"
    status = cli.main(["train", "-m", f"capture={root},{missing},{other}", f"out={out}", "train.iterations=10",
                       "train.resolution=null", "train.holdout=0.2", "train.preview_every=0", "train.checkpoint_every=0",
                       "train.gaussians.uv_resolution=16", "train.gaussians.sh_degree=0", "renderer=torch"])
    printed = capsys.readouterr()
    assert status == 1, printed.err  # the failing job's exit status
    summary = json.loads((out / "multirun" / "summary.json").read_text())
    jobs = summary["jobs"]
    assert [j["status"] for j in jobs] == [0, 1, 0] and summary["failed"] == 1
    for job, capture in zip(jobs, (root, missing, other)):
        assert f"capture={capture}" in job["overrides"]
    for job in (jobs[0], jobs[2]):
        metrics = json.loads((Path(job["folder"]) / "metrics.json").read_text())
        assert job["figures"]["psnr"] == metrics["psnr"] and job["figures"]["iterations"] == 10
    assert jobs[1]["figures"] == {}
    lines = [line for line in printed.out.splitlines() if line.startswith(("job", "0 ", "1 ", "2 "))]
    assert lines[0].split()[:3] == ["job", "capture", "status"] and "exit 1" in lines[2], printed.out
