"""The viewer without a browser: splat packing, expression groups, camera, port and host checks,
the frame-rate meter, and `avatar view`'s errors."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avatar.view.controls import OTHER, ViewCamera, expression_groups, head_rotation
from avatar.view.server import FrameRate, ViewerError, check_port, free_port, warn_if_public
from avatar.view.splats import covariances, pack, unpack


def test_pack_round_trips_positions_covariances_and_colours():
    g = torch.Generator().manual_seed(0)
    n = 50
    means = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0, 0, -0.6])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 3e-3 + 2e-4  # 0.2-3 mm: float16 in metres would lose these
    opac, rgb = torch.rand(n, generator=g), torch.rand(n, 3, generator=g)
    out = unpack(pack(means, quats, scales, opac, rgb))
    np.testing.assert_allclose(out["means"], means.numpy(), rtol=1e-6, atol=1e-7)
    cov = covariances(quats, scales).numpy()
    np.testing.assert_allclose(out["covariances"], cov, rtol=2e-3, atol=1e-9)
    np.testing.assert_allclose(out["rgb"], rgb.numpy(), atol=1 / 255)
    np.testing.assert_allclose(out["opacities"], opac.numpy(), atol=1 / 255)


def test_covariance_of_an_axis_aligned_gaussian():
    cov = covariances(torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(cov[0].numpy(), np.diag([1.0, 4.0, 9.0]))


def test_arkit_names_are_grouped_and_others_kept():
    names = ["eyeBlink_L", "browDown_R", "jawOpen", "mouthSmile_L", "cheekPuff", "noseSneer_L", "expr_3"]
    groups = expression_groups(names)
    assert groups["Eyes"] == [0] and groups["Brows"] == [1] and groups["Jaw and mouth"] == [2, 3]
    assert groups["Cheeks and nose"] == [4, 5] and groups[OTHER] == [6]
    assert "Eyes" not in expression_groups(["expr_0"])


def test_head_rotation_turns_the_reference_by_the_offsets():
    ref = np.array([0.1, -0.2, 0.05], np.float32)
    np.testing.assert_allclose(head_rotation(ref, 0, 0, 0), ref, atol=1e-6)
    turned = head_rotation(np.zeros(3, np.float32), 30, 0, 0)
    np.testing.assert_allclose(turned, [0, math.radians(30), 0], atol=1e-6)


def test_the_view_camera_reproduces_the_avatar_camera():
    viewmat = torch.diag(torch.tensor([1.0, -1, -1, 1]))
    viewmat[2, 3] = -0.1
    K = torch.tensor([[100.0, 0, 32], [0, 100, 32], [0, 0, 1]])
    target = np.array([0.0, 0.0, -0.7])  # on the optical axis
    cam = ViewCamera.from_opencv(viewmat, K, 64, target)
    np.testing.assert_allclose(cam.up, [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(cam.viewmat().numpy(), viewmat.numpy(), atol=1e-6)
    np.testing.assert_allclose(cam.K(64, 64).numpy(), K.numpy(), rtol=1e-5)


def test_a_port_in_use_is_named_with_a_free_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ViewerError, match=rf"port {port} on 127.0.0.1 is in use.*view.port=\d+ \(free now\)"):
            check_port("127.0.0.1", port, "view.port")
    check_port("127.0.0.1", free_port())  # a free one passes


def test_a_non_local_address_warns(capsys):
    assert not warn_if_public("127.0.0.1")
    assert warn_if_public("0.0.0.0", "view.host")
    err = capsys.readouterr().err
    assert "warning" in err and "view.host=0.0.0.0" in err and "no login" in err


def test_frame_rate_counts_frames_in_its_window():
    rate = FrameRate(window=2.0)
    for i in range(21):
        rate.tick(0.01, now=10.0 + i * 0.05)  # 20 FPS
    assert rate.fps(now=11.0) == pytest.approx(20.0)
    assert rate.busy_ms() == pytest.approx(10.0)
    assert rate.fps(now=20.0) == 0.0  # nothing lately


def test_view_without_an_avatar_file_exits_1(tmp_path, capsys):
    from avatar import cli

    assert cli.main(["view", f"run={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "avatar.pt does not exist" in err and "avatar train" in err and "Traceback" not in err
    assert cli.main(["view", f"run={tmp_path}", "view.port=70000"]) == 2


def _stand_in_trainer(ict_assets, **gaussians):
    """What :class:`TrainingViewer` reads of a trainer: ICT Gaussians (``gaussians``: more
    :class:`MeshGaussiansConfig` fields) on the mean face 0.6 m in front of a camera at the origin
    looking down -z (64 px high, focal 90 px), a black background, step 0."""
    import avatar.models
    from avatar.gaussians.base import FrameState
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=8, sh_degree=0, **gaussians))
    with torch.no_grad():
        verts = model(shape=torch.zeros(1, 100), translation=torch.tensor([[0.0, 0, -0.6]])).vertices
    frames = SimpleNamespace(train=np.array([0]), viewmat=torch.diag(torch.tensor([1.0, -1, -1, 1])), height=64,
                             K=torch.tensor([[[90.0, 0, 32], [0, 90, 32], [0, 0, 1]]]))
    return SimpleNamespace(gaussians=g, frames=frames, step=0, out=Path("run"), sh_degree=lambda: 0,
                           mesh=lambda i: FrameState(verts, None, torch.zeros(1, 3)), background=torch.zeros(3))


def test_the_training_viewer_sends_the_avatar_every_n_steps(ict_assets):
    """A stand-in for the trainer (what :class:`TrainingViewer` reads of it): in splats mode, steps
    1, 2 and 4 of ``every=2`` send the avatar posed on the first training frame; every step's loss
    is kept."""
    from avatar.view.splats import unpack
    from avatar.view.training import TrainingViewer

    trainer = _stand_in_trainer(ict_assets)
    viewer = TrainingViewer(trainer, port=0, every=2, mode="splats")
    try:
        for step in range(1, 5):
            trainer.step = step
            viewer.step({"loss": 1.0 / step, "psnr": 10.0 + step})
            assert viewer.server.idle()
            assert viewer.server.rate.count == {1: 1, 2: 2, 3: 2, 4: 3}[step]
        assert viewer.steps == [1, 2, 3, 4] and viewer.psnr == [11.0, 12.0, 13.0, 14.0]
        sent = unpack(viewer.server.node.buffer)
        with torch.no_grad():
            means = trainer.gaussians(trainer.mesh(0)).means[0].numpy()
        np.testing.assert_allclose(sent["means"], means, atol=1e-6)
    finally:
        viewer.close()


def test_the_training_viewer_plots_every_plot_seconds(ict_assets):
    """The page's loss / PSNR plot and status line (``train.viewer_plot_seconds``) appear once the
    interval has passed and say the latest step; a long interval sends nothing before it ends (each
    refresh costs a page on the same cores CPU, docs/experiments.md)."""
    import time

    from avatar.view.training import TrainingViewer

    trainer = _stand_in_trainer(ict_assets)
    fast = TrainingViewer(trainer, port=0, every=100, plot_seconds=0.2)
    slow = TrainingViewer(trainer, port=0, every=100, plot_seconds=60)
    try:
        for step in range(1, 4):
            trainer.step = step
            for v in (fast, slow):
                v.step({"loss": 1.0 / step, "psnr": 10.0 + step})
        deadline = time.monotonic() + 5
        while fast.plot is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert fast.plot is not None and "step **3**" in fast.status.content
        assert slow.plot is None and slow.status.content == "starting"
    finally:
        fast.close()
        slow.close()


class _Page:
    """What the training viewer reads of a viser page: its id, camera (OpenCV axes: camera-to-world
    rotation ``wxyz``, centre, vertical fov, canvas size) and scene (the pictures it is sent)."""

    def __init__(self, viewmat: torch.Tensor, fov: float, width: int, height: int):
        from avatar.geometry.rotations import matrix_to_quaternion

        R, t = viewmat[:3, :3].double(), viewmat[:3, 3].double()
        self.client_id, self.pictures, self._moved = 7, [], []
        self.camera = SimpleNamespace(wxyz=matrix_to_quaternion(R.T).numpy(), position=(-R.T @ t).numpy(), fov=fov,
                                      image_width=width, image_height=height, on_update=self._moved.append)
        self.scene = SimpleNamespace(set_background_image=lambda image, **kw: self.pictures.append(image))

    def move(self) -> None:
        for callback in self._moved:
            callback(self.camera)


def test_the_page_camera_becomes_the_toolkits_camera():
    """A page's camera (viser: camera-to-world ``wxyz``, centre, vertical fov, canvas size) gives back
    the world-to-camera matrix it came from and intrinsics of that fov, at most ``max_side`` a side."""
    from avatar.geometry.rotations import axis_angle_to_matrix
    from avatar.view.training import client_view

    viewmat = torch.eye(4)
    viewmat[:3, :3] = axis_angle_to_matrix(torch.tensor([0.3, -0.5, 0.2]))
    viewmat[:3, 3] = torch.tensor([0.05, -0.02, 0.7])
    page = _Page(viewmat, fov=0.6, width=1200, height=800)
    got, K, width, height = client_view(page.camera, max_side=300)
    torch.testing.assert_close(got, viewmat, atol=1e-5, rtol=0)
    assert (width, height) == (300, 200)
    assert K[1, 1] == pytest.approx(100 / math.tan(0.3)) and K[0, 0] == K[1, 1]
    assert client_view(page.camera, max_side=5000)[2:] == (1200, 800)  # never larger than the page


def test_the_training_viewer_renders_each_pages_view(ict_assets):
    """Image mode: the training thread renders the page's own view and sends it as the page's
    background at step 1, at every ``every``-th step and after the page's camera moved, and not
    otherwise; the picture is the toolkit's render of that camera (the avatar in front, nothing when
    the camera looks away)."""
    from avatar.view.training import TrainingViewer, client_view

    trainer = _stand_in_trainer(ict_assets, init_opacity=0.95)
    g, viewmat = trainer.gaussians, trainer.frames.viewmat
    viewer = TrainingViewer(trainer, port=0, every=10, max_side=48, max_rate=1e6)
    page = _Page(viewmat, fov=2 * math.atan(32 / 90), width=96, height=64)
    try:
        viewer._connect(page)
        page.move()  # viser reports the page's first camera
        sent = []
        for step in range(1, 12):
            trainer.step = step
            if step == 5:
                page.move()
            viewer.step({"loss": 1.0, "psnr": 20.0})
            sent.append(len(page.pictures))
        assert sent == [1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]
        picture = page.pictures[-1]
        assert picture.shape == (32, 48, 3) and picture.dtype == np.uint8
        vm, K, width, height = client_view(page.camera, 48)
        with torch.no_grad():
            expected = g(trainer.mesh(0)).render(vm[None], K[None], width, height, 0,
                                                                            backgrounds=torch.zeros(1, 3))[0][0]
        np.testing.assert_allclose(picture, (expected.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy(), atol=1)
        assert picture.max() > 50  # the avatar is in view
        page.camera.wxyz = np.array([1.0, 0.0, 0.0, 0.0])  # looking along +z, away from the avatar (at z < 0)
        page.move()
        trainer.step = 12
        viewer.step({"loss": 1.0, "psnr": 20.0})
        assert len(page.pictures) == 4 and page.pictures[-1].max() == 0
        assert viewer.server.rate.count == 0  # no splats were sent
    finally:
        viewer.close()


@pytest.mark.parametrize("model_kind", ["mlp", "linear"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "auto"])
def test_the_fixed_deformer_poses_as_the_avatar_does(ict_assets, dtype, model_kind):
    """The expression deformer for showing (the MLP's first-layer positional part, or the linear
    model's per-blendshape offsets, computed once; `deformer_dtype` of `avatar live` and `avatar
    view`) puts the Gaussians where the avatar's own does: to float rounding in float32, well
    under a millimetre in bfloat16 (random weights, so the offsets are not small); auto keeps
    whichever of the two was faster here."""
    import avatar.models
    from avatar.gaussians.deform import FixedDeformer, fix_deformer
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig
    from avatar.gaussians.package import AvatarPackage

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=8, sh_degree=0, deform=True,
                                                              deform_model=model_kind),
                                   n_condition=len(model.expression_names))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in g.deformer.parameters():
            p.normal_(0, 0.05)
    pkg = AvatarPackage({"shape": torch.zeros(100)}, g, model, torch.device("cpu"))
    e = torch.zeros(1, len(model.expression_names))
    e[0, 5] = 0.8
    pose = (e, torch.tensor([[0.0, 0.2, 0.0]]), torch.tensor([[0.0, 0.0, -0.6]]))
    with torch.no_grad():
        full = pkg.posed_gaussians(*pose).means
        used = fix_deformer(pkg, dtype)
        assert used in (("float32", "bfloat16") if dtype == "auto" else (dtype,))
        assert isinstance(g.deformer, FixedDeformer) and fix_deformer(pkg, dtype) is None  # once is enough
        fast = pkg.posed_gaussians(*pose).means
    assert fast.dtype == torch.float32
    moved = (fast - full).norm(dim=-1)
    assert moved.max() < (2e-4 if used == "bfloat16" else 1e-6)  # metres
    assert (moved.max() > 1e-7) == (used == "bfloat16")
    with pytest.raises(ValueError, match="float16"):
        fix_deformer(pkg, "float16")
