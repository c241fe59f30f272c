"""Portrait avatars (avatar.gaussians.portrait) and the shoulder state (avatar.tracking.shoulders),
on a tiny synthetic sheet "head" in front of a camera; no model files, no video."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avatar.gaussians.base import FrameState
from avatar.gaussians.config import DensifyConfig, MeshGaussiansConfig
from avatar.gaussians.portrait import OFFMESH, SURFACE, TORSO, PortraitGaussians, offmesh_seeds, rest_torso
from avatar.gaussians.registry import avatar_from_state
from avatar.gaussians.strategy import DensifyStrategy
from avatar.geometry import axis_angle_to_matrix
from avatar.io.tracking import TrackedSequence, TrackingError, load_tracking
from avatar.models.engine import Part
from avatar.tracking.shoulders import shoulder_state, torso_transforms

SIZE = 40
VIEW = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
K = torch.tensor([[60.0, 0, SIZE / 2], [0, 60.0, SIZE / 2], [0, 0, 1]])


class Sheet(torch.nn.Module):
    """A 10 cm square facing the camera; its lowest vertex row is the "chin" (the landmarks)."""

    def __init__(self, n: int = 4):
        super().__init__()
        g = torch.linspace(0, 1, n + 1)
        y, x = torch.meshgrid(g, g, indexing="ij")
        uv = torch.stack((x, y), -1).reshape(-1, 2)
        self.register_buffer("template", torch.cat(((uv - 0.5) * 0.1, torch.zeros(len(uv), 1)), -1))
        i = torch.arange(n)
        a = (i[:, None] * (n + 1) + i[None, :]).reshape(-1)
        quads = torch.stack((a, a + 1, a + n + 2, a + n + 1), -1)
        self.faces = torch.cat((quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]))
        self.uvs, self.uv_faces = uv, self.faces.clone()
        self.parts = {"face": Part(torch.ones(len(uv), dtype=torch.bool), torch.ones(len(self.faces), dtype=torch.bool))}
        self.lmk_faces = torch.zeros(0, dtype=torch.long)

    def forward(self, shape=None, expression=None, rotation=None, translation=None):
        rotation = torch.zeros(1, 3) if rotation is None else rotation
        translation = torch.zeros(1, 3) if translation is None else translation
        v = self.template @ axis_angle_to_matrix(rotation).transpose(-1, -2) + translation[:, None, :]
        return SimpleNamespace(vertices=v)


def _frames(n: int = 3, torso: torch.Tensor | None = None):
    """A frame set: the sheet 0.5 m away; the person mask is the sheet grown by a band above it
    (hair) and a wide block under it (shoulders)."""
    model = Sheet()
    rotation = torch.zeros(n, 3)
    translation = torch.tensor([0.0, 0.03, -0.5]).expand(n, 3)
    verts = model(rotation=rotation, translation=translation).vertices
    masks = torch.zeros(n, SIZE, SIZE)
    masks[:, 6:22, 14:26] = 1  # sheet (rows ~ 11-21) plus 5 rows of hair above it
    masks[:, 30:, 4:36] = 1  # shoulders, well under the sheet's lowest row
    images = (torch.rand(n, SIZE, SIZE, 3) * 255).to(torch.uint8)
    return model, SimpleNamespace(
        images=images, masks=(masks * 255).to(torch.uint8), vertices=verts, conditions=torch.zeros(n, 1),
        shape=torch.zeros(1), rotation=rotation, translation=translation, train=np.arange(n), heldout=np.arange(0),
        K=K.expand(n, 3, 3), viewmat=VIEW, width=SIZE, height=SIZE, torso=torso,
        image=lambda i: images[i].float() / 255, mask=lambda i: masks[i])


def _config(**kw) -> MeshGaussiansConfig:
    base = dict(kind="portrait", uv_resolution=8, sh_degree=1, offmesh_frames=2, offmesh_stride=1, neck_length=0.02)
    base.update(kw)
    return MeshGaussiansConfig(**base)


def _project(points: torch.Tensor) -> torch.Tensor:
    cam = points @ VIEW[:3, :3].T
    return (cam @ K.T)[:, :2] / cam[:, 2:]


def test_offmesh_seeds_lift_uncovered_mask_pixels_to_the_given_depth():
    mask = torch.zeros(10, 10)
    mask[2:8, 2:8] = 1
    covered = torch.zeros(10, 10, dtype=torch.bool)
    covered[:, :5] = True
    points, spacing, pixels = offmesh_seeds(mask, covered, K, VIEW, 0.4, stride=1)
    assert points.shape == (18, 3) and spacing.shape == (18,)  # 3 uncovered columns x 6 rows
    assert set(pixels[:, 0].tolist()) == {5.0, 6.0, 7.0}
    cam = points @ VIEW[:3, :3].T
    assert torch.allclose(cam[:, 2], torch.full((18,), 0.4))
    assert torch.allclose(_project(points), pixels + 0.5, atol=1e-4)  # back onto the pixel centres
    assert torch.allclose(spacing, torch.full((18,), 0.4 / 60.0))


def test_offmesh_init_from_a_mask_splits_hair_from_torso():
    model, frames = _frames()
    g = PortraitGaussians.initialise(model, _config(), n_condition=1, frames=frames)
    counts = torch.bincount(g.group.long(), minlength=3)
    assert counts[SURFACE] > 0 and counts[OFFMESH] > 0 and counts[TORSO] > 0
    with torch.no_grad():
        w = g(FrameState(frames.vertices[:1], rotation=frames.rotation[:1]))
    px = _project(w.means[0])
    rows = px[:, 1]
    # Off-mesh Gaussians sit in the hair band (above the sheet), torso ones in the shoulder block.
    assert (rows[g.group == OFFMESH] < 12).all()
    assert (rows[g.group == TORSO] >= 29.5).all()
    # Hair is not held to the surface, surface Gaussians are.
    d = g.anchor_distances()
    assert (d[g.group != SURFACE] == 0).all() and (d[g.group == SURFACE] > 0).any()
    e = g.normal_extents()  # nor laid flat (train.flat_weight)
    assert (e[g.group != SURFACE] == 0).all() and (e[g.group == SURFACE] > 0).all()
    assert torch.equal(g.held_to_surface(), g.group == SURFACE)  # nor held on an eyeball (train.eyeball_weight)
    # Colour comes from the image under each seed.
    assert g.params["sh0"][g.group == TORSO].std() > 0.1


def test_the_neck_under_the_cut_is_skinned_between_head_and_torso():
    """The sheet's lower half plays the neck (neck_length < 0 puts the cut 3.5 cm above its bottom edge,
    the blend 3 cm): its upper rows follow the head, its bottom row the torso, the row between a blend."""
    torso = rest_torso(torch.tensor([0.0, -0.05, -0.5]))[None].repeat(3, 1, 1)
    model, frames = _frames(torso=torso)
    g = PortraitGaussians.initialise(model, _config(neck_length=-0.035, neck_blend=0.03), n_condition=1, frames=frames)
    w = g.neck["weight"]
    height = (frames.vertices[0] - frames.translation[0])[:, 1]
    assert torch.allclose(w, ((height - (-0.015 - 0.03)) / 0.03).clamp(0, 1))
    assert (w == 0).any() and (w == 1).any() and ((w > 0) & (w < 1)).any()
    # At the first frame's head pose and torso every vertex is where the head puts it.
    shift = torch.tensor([0.01, 0.0, 0.0])
    moved_torso = torso[:1].clone()
    moved_torso[0, :3, 3] += shift
    turned = model(rotation=torch.tensor([[0.0, 0.3, 0.0]]), translation=frames.translation[:1]).vertices
    with torch.no_grad():
        rest = g(FrameState(frames.vertices[:1], rotation=frames.rotation[:1], torso=torso[:1])).means[0]
        assert torch.allclose(rest, PortraitGaussians.initialise(model, _config(neck_length=-0.035, neck_blend=0.0),
                                                                 n_condition=1, frames=frames)(
            FrameState(frames.vertices[:1], rotation=frames.rotation[:1], torso=torso[:1])).means[0], atol=1e-6)
        slid = g(FrameState(frames.vertices[:1], rotation=frames.rotation[:1], torso=moved_torso)).means[0]
        head_turned = g(FrameState(turned, rotation=torch.tensor([[0.0, 0.3, 0.0]]), torso=torso[:1])).means[0]
    on = g.group == SURFACE
    share = w[g.faces[g.binding.clamp_min(0)]].mean(-1)  # the Gaussian's triangle's head share
    # The torso slid 1 cm: Gaussians on the fully torso-carried rows slide with it, the head's stay.
    low, high = on & (share == 0), on & (share == 1)
    assert torch.allclose(slid[low] - rest[low], shift.expand(int(low.sum()), 3), atol=1e-5)
    assert torch.allclose(slid[high], rest[high], atol=1e-6)
    # The head turned: the head's rows turn, the torso's stay where they were.
    assert torch.allclose(head_turned[low], rest[low], atol=1e-5)
    assert (head_turned[high] - rest[high]).norm(dim=-1).mean() > 3e-3
    # Saved and compacted with the avatar.
    back = avatar_from_state("portrait", g.state())
    assert torch.equal(back.neck["weight"], w) and torch.equal(back.neck["local"], g.neck["local"])
    vidx, sub = g.compact()
    assert torch.equal(sub.neck["weight"], w[vidx] if vidx is not None else w)


def test_forward_shapes_and_torso_motion():
    model, frames = _frames()
    g = PortraitGaussians.initialise(model, _config(), n_condition=1, frames=frames)
    n = len(g)
    verts = frames.vertices[:2]
    torso = g.torso_rest[None].repeat(2, 1, 1)
    torso[1, :3, 3] += torch.tensor([0.02, 0.0, 0.0])
    with torch.no_grad():
        w = g(FrameState(verts, rotation=frames.rotation[:2], torso=torso))
        rest = g(FrameState(verts[:1], rotation=frames.rotation[:1]))
    assert w.means.shape == (2, n, 3) and w.quats.shape == (2, n, 4) and w.scales.shape == (2, n, 3)
    assert w.opacities.shape == (n,) and w.sh.shape == (n, 4, 3)
    shift = w.means[1] - w.means[0]
    on_torso = g.group == TORSO
    assert torch.allclose(shift[on_torso], torch.tensor([0.02, 0.0, 0.0]).expand(int(on_torso.sum()), 3), atol=1e-6)
    assert torch.allclose(shift[~on_torso], torch.zeros(1), atol=1e-7)  # the head stays
    assert torch.allclose(w.means[0], rest.means[0], atol=1e-6)  # no torso given: the rest torso


def test_state_round_trip_subset_and_compact():
    model, frames = _frames()
    g = PortraitGaussians.initialise(model, _config(deform=True, deform_hidden=8, deform_layers=1), n_condition=1,
                                     frames=frames)
    back = avatar_from_state("portrait", g.state())
    s = FrameState(frames.vertices[:1], torch.ones(1, 1), frames.rotation[:1])
    with torch.no_grad():
        a, b = g(s), back(s)
        assert torch.equal(back.group, g.group) and torch.allclose(a.means, b.means)
        keep = g.group != OFFMESH
        sub = g.subset(keep)
        assert torch.allclose(sub(s).means, a.means[:, keep])
        vidx, compact = g.compact()
        c = compact(FrameState(frames.vertices[:1, vidx], torch.ones(1, 1), frames.rotation[:1]))
        assert torch.allclose(c.means, a.means, atol=1e-6)


def test_the_fixed_deformer_poses_a_portrait_as_its_mlp_does(monkeypatch):
    """Live and the viewer pose with the expression MLP's first layer precomputed: a portrait's
    surface, off-mesh and torso Gaussians land where the MLP puts them, and a frame no longer
    recomputes the canonical positions the fixed deformer was built on."""
    from avatar.gaussians.deform import FixedDeformer

    model, frames = _frames()
    g = PortraitGaussians.initialise(model, _config(deform=True, deform_hidden=8, deform_layers=2), n_condition=1,
                                     frames=frames)
    assert (g.group == TORSO).any() and (g.group == OFFMESH).any()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in g.deformer.parameters():
            p.normal_(0, 0.1)
    torso = g.torso_rest[None].clone()
    torso[0, :3, 3] += torch.tensor([0.01, -0.02, 0.0])
    s = FrameState(frames.vertices[:1], torch.full((1, 1), 0.7), frames.rotation[:1], torso=torso)
    with torch.no_grad():
        full = g(s)
        g.deformer = FixedDeformer(g.deformer, g.canonical_positions())
        monkeypatch.setattr(PortraitGaussians, "canonical_positions", lambda self: pytest.fail("recomputed"))
        fast = g(s)
    assert torch.allclose(fast.means, full.means, atol=1e-6) and torch.allclose(fast.scales, full.scales, atol=1e-6)
    assert torch.allclose(fast.quats, full.quats, atol=1e-6)


def test_densification_keeps_groups_in_step():
    model, frames = _frames()
    g = PortraitGaussians.initialise(model, _config(), n_condition=1, frames=frames)
    opt = torch.optim.Adam([{"params": [p], "name": k} for k, p in g.params.items()])
    strategy = DensifyStrategy(DensifyConfig(grad_threshold=0.0, max_gaussians=10_000))
    n = len(g)
    strategy.grad_sum = torch.ones(n)
    strategy.count = torch.ones(n)
    before = torch.bincount(g.group.long(), minlength=3)
    strategy.refine(g, opt)
    after = torch.bincount(g.group.long(), minlength=3)
    assert len(g) == 2 * n and torch.equal(after, 2 * before)
    assert g.binding.shape == g.group.shape == (2 * n,)
    assert (g.binding[g.group == TORSO] == -1).all() and (g.binding[g.group != TORSO] >= 0).all()


# ---------------------------------------------------------------------------------- shoulder state
def _pose_of(left: np.ndarray, right: np.ndarray, Kf: np.ndarray) -> np.ndarray:
    """Pose landmarks [F, 33, 4] whose shoulders project from world points [F, 3] (depth offsets in z)."""
    F = left.shape[0]
    pose = np.zeros((F, 33, 4), np.float32)
    V = VIEW.numpy()
    for idx, p in ((11, left), (12, right)):
        cam = p @ V[:3, :3].T
        xy = (cam @ Kf.T)[:, :2] / cam[:, 2:]
        pose[:, idx, :2] = xy
        pose[:, idx, 3] = 1.0
    # MediaPipe's relative depth in pixels (scaled like x) at the head's depth.
    zl, zr = (left @ V[:3, :3].T)[:, 2], (right @ V[:3, :3].T)[:, 2]
    pose[:, 11, 2] = (zl - zr) / 2 / 0.6 * Kf[0, 0]
    pose[:, 12, 2] = -pose[:, 11, 2]
    return pose


def test_shoulder_state_recovers_shoulders_and_torso_turn():
    F, Kf = 5, np.array([[300.0, 0, 100], [0, 300.0, 100], [0, 0, 1]])
    yaw = np.deg2rad(20)
    half = 0.18 * np.array([np.cos(yaw), 0, -np.sin(yaw)])  # left shoulder turned away from the camera
    centre = np.array([0.0, -0.15, -0.6])
    left, right = np.tile(centre + half, (F, 1)), np.tile(centre - half, (F, 1))
    pose = _pose_of(left, right, Kf)
    head = np.tile([0.0, 0.0, -0.6], (F, 1))
    state = shoulder_state(pose, np.ones(F, bool), Kf, VIEW.numpy(), head, 200, 200, smooth_sigma=0)
    assert np.allclose(state.shoulders[:, 0], left, atol=2e-3) and np.allclose(state.shoulders[:, 1], right, atol=2e-3)
    R = state.transforms()[:, :3, :3]
    assert np.allclose(R[:, :, 0], half / np.linalg.norm(half), atol=1e-2)  # x: right -> left shoulder
    assert np.allclose(np.abs(state.torso_rotation[:, 1]), yaw, atol=1e-2)
    assert np.allclose(state.neck, 0.5 * (centre + head), atol=2e-3)
    assert state.measured.all()


def test_shoulder_state_interpolates_and_flags_missing_frames():
    F, Kf = 7, np.array([[300.0, 0, 100], [0, 300.0, 100], [0, 0, 1]])
    x = np.linspace(-0.05, 0.05, F)
    left = np.stack((x + 0.18, np.full(F, -0.15), np.full(F, -0.6)), -1)
    right = left - [0.36, 0, 0]
    pose = _pose_of(left, right, Kf)
    present = np.ones(F, bool)
    present[3] = False  # no pose
    pose[5, 11, 0] = 470  # left shoulder out of the frame
    head = np.tile([0.0, 0.0, -0.6], (F, 1))
    state = shoulder_state(pose, present, Kf, VIEW.numpy(), head, 400, 400, smooth_sigma=0)
    assert state.measured.tolist() == [True, True, True, False, True, False, True]
    assert np.allclose(state.shoulders[[3, 5], 0], left[[3, 5]], atol=2e-3)  # linear motion: interpolated exactly
    assert shoulder_state(pose, np.zeros(F, bool), Kf, VIEW.numpy(), head, 400, 400) is None


def test_tracking_round_trips_the_shoulder_state(tmp_path):
    F = 3
    seq = TrackedSequence(
        model="sheet", shape=np.zeros(1, np.float32), expression=np.zeros((F, 1), np.float32), expression_names=("a",),
        rotation=np.zeros((F, 3), np.float32), translation=np.zeros((F, 3), np.float32), K=K.numpy(),
        viewmat=VIEW.numpy(), width=SIZE, height=SIZE, valid=np.ones(F, bool),
        shoulders=np.random.rand(F, 2, 3).astype(np.float32), torso_rotation=np.zeros((F, 3), np.float32),
        neck=np.zeros((F, 3), np.float32), torso_measured=np.array([True, False, True]))
    seq.save(tmp_path / "tracking.npz")
    back = load_tracking(tmp_path)
    assert np.allclose(back.shoulders, seq.shoulders) and back.torso_measured.tolist() == [True, False, True]
    T = torso_transforms(back)
    assert T.shape == (F, 4, 4) and np.allclose(T[:, :3, 3], seq.shoulders.mean(1))
    with pytest.raises(TrackingError, match="shoulder state"):
        TrackedSequence(**{**seq.__dict__, "neck": None})


# ---------------------------------------------------------------------------------- driving the torso
def _driver_pose(yaw: np.ndarray, roll: np.ndarray, mid: np.ndarray, width_px: float = 100.0) -> np.ndarray:
    """Pose landmarks whose shoulders are turned by ``yaw`` (out of the image) and ``roll`` and centred at ``mid``."""
    F = yaw.shape[0]
    half = 0.5 * width_px * np.stack((np.cos(yaw) * np.cos(roll), -np.cos(yaw) * np.sin(roll), np.sin(yaw)), -1)
    pose = np.zeros((F, 33, 4), np.float32)
    pose[:, 11, :3] = np.concatenate((mid, np.zeros((F, 1))), -1) + half
    pose[:, 12, :3] = np.concatenate((mid, np.zeros((F, 1))), -1) - half
    pose[:, 11:13, 3] = 1
    return pose


def test_driver_shoulders_turn_and_move_the_avatar_torso():
    from avatar.drive.torso import OnlineTorso, torso_motion

    F = 9
    yaw = np.zeros(F)
    yaw[-1] = 0.3
    roll = np.zeros(F)
    roll[-2] = 0.2
    mid = np.tile([200.0, 150.0], (F, 1))
    mid[-3, 0] += 50  # half a shoulder width to the image's right
    motion = torso_motion(_driver_pose(yaw, roll, mid), np.ones(F, bool), 400, 300, smooth_sigma=0)
    assert np.allclose(motion.yaw, yaw, atol=1e-6) and np.allclose(motion.roll, roll, atol=1e-6)
    rest = np.eye(4, dtype=np.float32)
    rest[:3, 3] = [0.0, -0.15, -0.6]
    T = motion.transforms(rest, shoulder_width=0.4)
    assert np.allclose(T[0], rest, atol=1e-6)  # at the driver's reference: the rest torso
    assert np.allclose(T[-3, :3, 3], rest[:3, 3] + [0.2, 0, 0], atol=1e-6)  # half of 0.4 m to the right
    assert np.isclose(T[-1, 0, 2], -np.sin(0.3), atol=1e-6) or np.isclose(T[-1, 2, 0], -np.sin(0.3), atol=1e-6)
    assert np.isclose(np.arctan2(T[-2, 1, 0], T[-2, 0, 0]), 0.2, atol=1e-6)  # left shoulder higher in the image: up
    # No shoulders anywhere: no motion (the torso stays at rest).
    assert torso_motion(_driver_pose(yaw, roll, mid), np.zeros(F, bool), 400, 300) is None
    # Live: None until shoulders are seen, then the reference is the running median.
    online = OnlineTorso(rest, 0.4, 400, 300, smoothing=0.0)
    assert online(None) is None
    poses = _driver_pose(yaw, roll, mid)
    outs = [online(p) for p in poses[:4]]
    assert all(np.allclose(o, rest, atol=1e-6) for o in outs)
    assert online(None) is not None and online.missing == 2


def test_live_torso_glides_between_the_held_detections():
    """Detections every 3rd frame, held between: the shown torso moves a third of each step per
    frame, arrives on the detection 3 frames later, stays a rotation, and None resets it."""
    from avatar.drive.torso import TorsoGlide
    from avatar.tracking.shoulders import rotation_matrices

    def torso(yaw, x):
        T = np.eye(4, dtype=np.float32)
        T[:3, :3] = rotation_matrices(np.array([[0.0, yaw, 0.0]]))[0]
        T[:3, 3] = [x, -0.15, -0.6]
        return T

    held = [torso(0.0, 0.0)] * 3 + [torso(0.3, 0.06)] * 3 + [torso(0.3, 0.06)] * 2
    glide = TorsoGlide(3)
    shown = [glide(T) for T in held]
    assert np.allclose(shown[0], held[0])  # the first detection is shown as it is
    xs = [T[0, 3] for T in shown]
    assert np.allclose(xs, [0, 0, 0, 0.02, 0.04, 0.06, 0.06, 0.06], atol=1e-6)  # no step of 0.06 at once
    yaws = [np.arctan2(T[0, 2], T[0, 0]) for T in shown]
    assert np.all(np.diff(yaws) < 0.11) and np.isclose(yaws[5], 0.3, atol=1e-6)  # thirds of 0.3, not 0.3 at once
    for T in shown:
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5) and np.allclose(T[3], [0, 0, 0, 1])
    # A detection arriving mid-glide starts from where the torso is shown.
    glide = TorsoGlide(3)
    glide(torso(0.0, 0.0))
    mid = glide(torso(0.0, 0.09))
    assert np.isclose(mid[0, 3], 0.03, atol=1e-6)
    again = glide(torso(0.0, 0.0))
    assert np.isclose(again[0, 3], 0.02, atol=1e-6)  # a third of the way from 0.03 back to 0
    assert glide(None) is None and glide(torso(0.0, 0.09))[0, 3] == np.float32(0.09)  # after None: no glide
    assert TorsoGlide(1)(torso(0.2, 0.05)) is not None


def test_a_driver_without_a_body_keeps_the_torso_at_rest():
    from avatar.drive.animate import driven_torso
    from avatar.drive.sequence import DriveSequence

    package = SimpleNamespace(has_torso=True, gaussians=SimpleNamespace(torso_rest=torch.eye(4)), state={})
    drive = DriveSequence(np.zeros((3, 1)), np.zeros((3, 3)), np.zeros((3, 3)), 25.0, "arkit.csv")
    notes: list = []
    assert driven_torso(package, drive, notes) is None and "no body" in notes[0]
    drive.pose, drive.pose_present, drive.frame_size = np.zeros((3, 33, 4), np.float32), np.zeros(3, bool), (64, 64)
    assert driven_torso(package, drive, notes) is None and "both shoulders" in notes[1]
    drive.pose = _driver_pose(np.zeros(3), np.zeros(3), np.tile([32.0, 40.0], (3, 1)), 30.0)
    drive.pose_present = np.array([True, False, True])
    T = driven_torso(package, drive, notes)
    assert T.shape == (3, 4, 4) and "1 of 3 driver frames" in notes[2]


def test_avatar_portrait_trains_on_the_person_mask_by_default(repo_root):
    from hydra import compose, initialize_config_dir

    import avatar.apps.train  # noqa: F401  (registers the train schema)

    with initialize_config_dir(config_dir=str(repo_root / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["avatar=portrait_gaussians", "capture=c", "out=o"])
        head = compose("train", overrides=["avatar=portrait_gaussians", "capture=c", "out=o", "train.mask=head"])
        plain = compose("train", overrides=["capture=c", "out=o"])
    assert cfg.train.mask == "person" and cfg.train.gaussians.kind == "portrait" and cfg.train.gaussians.deform
    assert head.train.mask == "head"
    assert plain.train.mask == "head" and plain.train.gaussians.kind == "mesh_gaussians"


def test_person_mask_falls_back_to_the_head_where_shoulders_were_not_seen(tmp_path):
    from avatar.io.capture import Capture, CaptureMeta, CaptureWriter, Landmarks
    from avatar.train.data import load_frames

    F = 4
    writer = CaptureWriter(tmp_path / "cap", frame_format="png")
    for i in range(F):
        writer.write_frame(i, np.full((SIZE, SIZE, 3), 128, np.uint8))
        writer.write_mask(i, np.ones((SIZE, SIZE), np.float32))
    writer.finish(CaptureMeta(source="synthetic", fps=25.0, width=SIZE, height=SIZE, n_frames=F),
                  Landmarks(face=np.zeros((F, 478, 3), np.float32), face_present=np.ones(F, bool)))
    seq = TrackedSequence(
        model="sheet", shape=np.zeros(1, np.float32), expression=np.zeros((F, 1), np.float32), expression_names=("a",),
        rotation=np.zeros((F, 3), np.float32), translation=np.tile([0.0, 0.0, -0.5], (F, 1)).astype(np.float32),
        K=K.numpy(), viewmat=VIEW.numpy(), width=SIZE, height=SIZE, valid=np.ones(F, bool),
        shoulders=np.tile([[[0.18, -0.15, -0.5], [-0.18, -0.15, -0.5]]], (F, 1, 1)).astype(np.float32),
        torso_rotation=np.zeros((F, 3), np.float32), neck=np.zeros((F, 3), np.float32),
        torso_measured=np.array([True, False, True, True]))
    frames = load_frames(Capture(tmp_path / "cap"), seq, Sheet(), None, 0.0, torch.device("cpu"), mask="person",
                         head_dilate=0.05)
    assert frames.head_only.tolist() == [False, True, False, False]
    assert (frames.masks[0] == 255).all() and (frames.masks[2] == 255).all()
    assert 0 < int((frames.masks[1] > 0).sum()) < SIZE * SIZE  # cut to the sheet's silhouette (+ margin)
    assert frames.torso.shape == (F, 4, 4) and torch.allclose(frames.torso[:, 1, 3], torch.full((F,), -0.15))
