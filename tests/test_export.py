"""Exports: the .spz codec against its quantisation steps and a third-party reader, SH turned
into world axes, posed and driven exports in the canonical frame, and `avatar export` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from avatar_files import write_test_avatar

from avatar.drive.sources import ARKIT_BLENDSHAPES, ARKIT_OTHER
from avatar.gaussians.ply import load_ply
from avatar.geometry.rotations import axis_angle_to_matrix
from avatar.io.spz import SpzError, decode_spz, encode_spz, quantisation_steps, read_spz, write_spz
from avatar.render.sh import eval_sh, rotate_sh


def _gaussians(n: int, degree: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"means": rng.normal(size=(n, 3)) * 0.2 - [0, 0, 0.6], "quats": rng.normal(size=(n, 4)),
            "scales": np.exp(rng.uniform(-8, -2, (n, 3))), "opacities": rng.uniform(0, 1, n),
            "sh": np.concatenate((rng.uniform(-3, 3, (n, 1, 3)), rng.uniform(-0.9, 0.9, (n, (degree + 1) ** 2 - 1, 3))), 1)}


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_spz_decodes_to_the_encoded_gaussians_within_half_a_step(degree):
    g = _gaussians(500, degree)
    d = decode_spz(encode_spz(**g))
    step = quantisation_steps(d["fractional_bits"])
    half = lambda a, b, s: np.abs(a - b).max() / s  # noqa: E731  in steps
    assert half(d["means"], g["means"], step["position"]) <= 0.5 + 1e-3
    assert half(np.log(d["scales"]), np.log(g["scales"]), step["log_scale"]) <= 0.5 + 1e-3
    assert half(d["opacities"], g["opacities"], step["opacity"]) <= 0.5 + 1e-3
    assert half(d["sh"][:, 0], g["sh"][:, 0], step["sh0"]) <= 0.5 + 1e-3
    if degree:
        assert half(d["sh"][:, 1:], g["sh"][:, 1:], step["sh"]) <= 0.5 + 1e-3
    q = g["quats"] / np.linalg.norm(g["quats"], axis=1, keepdims=True)
    q *= np.sign((q * d["quats"]).sum(1, keepdims=True))  # q and -q are one rotation
    assert np.abs(d["quats"] - q).max() <= 2 * step["quaternion"]  # three stored halves, the fourth from the norm
    assert d["sh"].shape == g["sh"].shape and d["means"].dtype == np.float32
    g["sh"][0] = 5.0  # beyond what the format holds: clipped to its range
    assert decode_spz(encode_spz(**g))["sh"][0].min() == pytest.approx(127.5 / 255 / 0.15 if degree == 0 else 127 / 128)


def test_spz_file_round_trip_and_refusals(tmp_path):
    g = _gaussians(50, 2)
    path = write_spz(tmp_path / "a.spz", **g)
    assert np.array_equal(read_spz(path)["means"], decode_spz(encode_spz(**g))["means"])
    (tmp_path / "b.spz").write_bytes(b"not gzip")
    with pytest.raises(SpzError, match="b.spz is not an SPZ file"):
        read_spz(tmp_path / "b.spz")
    with pytest.raises(ValueError, match="sh \\[N,K,3\\]"):
        encode_spz(**{**g, "sh": g["sh"][:, :5]})
    with pytest.raises(ValueError, match="do not fit 24 bits"):
        encode_spz(**{**g, "means": g["means"] * 1e4}, fractional_bits=16)


def test_spz_reads_back_in_a_third_party_reader(tmp_path):
    gsply = pytest.importorskip("gsply", reason="gsply (the dev extras' third-party SPZ reader) is not installed")
    g = _gaussians(300, 3)
    path = write_spz(tmp_path / "a.spz", **g)
    before = gsply.active_backend()
    gsply.use_backend("auto")  # its C++ reader where the wheel has one (the Python one compiles ~15 s at first use)
    try:
        ours, theirs = read_spz(path), gsply.read_spz(str(path))
    finally:
        gsply.use_backend(before)
    np.testing.assert_allclose(theirs.means, ours["means"], atol=1e-6)
    np.testing.assert_allclose(np.exp(theirs.scales), ours["scales"], rtol=1e-5)
    np.testing.assert_allclose(theirs.quats, ours["quats"], atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-theirs.opacities.astype(np.float64))), ours["opacities"], atol=1e-5)
    np.testing.assert_allclose(theirs.sh0, ours["sh"][:, 0], atol=1e-5)
    np.testing.assert_allclose(theirs.shN, ours["sh"][:, 1:], atol=1e-6)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_rotated_sh_in_world_axes_match_the_frame_evaluation(degree):
    gen = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(7, (degree + 1) ** 2, 3, generator=gen, dtype=torch.float64)
    frame = axis_angle_to_matrix(torch.randn(3, generator=gen, dtype=torch.float64))
    dirs = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    turned = rotate_sh(coeffs, frame)
    torch.testing.assert_close(eval_sh(degree, dirs, turned), eval_sh(degree, dirs @ frame, coeffs))
    assert not torch.allclose(turned, coeffs)


def test_expression_weights_by_arkit_or_model_name():
    from avatar.drive.sources import DriveError, expression_from_weights
    from avatar.models.ict import EXPRESSION_NAMES

    names = list(EXPRESSION_NAMES)
    e = expression_from_weights({"JawOpen": 0.5, "browInnerUp": 1, "eyeBlink_R": 0.25}, names)
    assert e[names.index("jawOpen")] == 0.5 and e[names.index("eyeBlink_R")] == 0.25
    assert e[names.index("browInnerUp_L")] == e[names.index("browInnerUp_R")] == 1  # no side: both
    assert np.count_nonzero(e) == 4
    with pytest.raises(DriveError, match="unknown expression 'eyeBlinkLft'.*close names: eyeBlinkLeft"):
        expression_from_weights({"eyeBlinkLft": 1}, names)
    with pytest.raises(DriveError, match="'jawOpen': weight 'wide' is not a number"):
        expression_from_weights({"jawOpen": "wide"}, names)


@pytest.fixture(scope="module")
def avatar_run(tmp_path_factory, ict_assets):
    """A run folder holding only an avatar.pt: ICT, ~1200 anisotropic Gaussians, SH degree 2 in the head's frame."""
    import avatar.models
    from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=16, sh_degree=2, init_opacity=0.9,
                                                              sh_frame="head"))
    gen = torch.Generator().manual_seed(0)
    g.params["shN"].data.normal_(0, 0.2, generator=gen)
    g.params["log_scale"].data += torch.randn(len(g), 3, generator=gen) * 0.5  # anisotropic: rotations show
    g.params["local_quat"].data = torch.randn(len(g), 4, generator=gen)
    run = tmp_path_factory.mktemp("run")
    write_test_avatar(run / "avatar.pt", g, expression_names=list(model.expression_names),
                      reference_rotation=torch.tensor([0.1, 0.3, 0.0]))
    return run


@pytest.fixture(scope="module")
def package(avatar_run):
    from avatar.gaussians.package import AvatarPackage

    return AvatarPackage.load(avatar_run, torch.device("cpu"))


def _render(s, viewmat, package) -> np.ndarray:
    """``s`` (world-axis SH) seen by ``viewmat`` and the package's camera, on its background, 0..255."""
    from avatar.render.rasterization import rasterization

    K, width, height = package.camera()
    img, _, _ = rasterization(s.means, s.quats, s.scales, s.opacities, s.sh, viewmat[None], K[None], width, height,
                              sh_degree=package.gaussians.sh_degree, backend="torch",
                              backgrounds=package.state["background"].float()[None])
    return img[0].clamp(0, 1).numpy() * 255


def test_posed_export_moved_to_the_canonical_frame_renders_as_the_avatar_does(package):
    """The reference pose's Gaussians, moved into the canonical frame with their SH turned to world
    axes, seen by the reference camera moved alike, render as the avatar itself (head-frame SH)."""
    from avatar.drive.export import canonical_transform, posed_splats, reference_camera

    ref_r, ref_t = package.reference_pose_or(None, None)
    e = np.zeros(len(package.expression_names), np.float32)
    e[package.expression_names.index("jawOpen")] = 0.7
    turned = np.array([0.2, 0.9, 0.1], np.float32)  # 53 degrees from the reference pose: SH must turn
    moved = posed_splats(package, e, turned, ref_t, canonical_transform(package))
    viewmat = package.state["viewmat"].float()
    img, _, _ = package.render_frame(e, turned, ref_t, viewmat, *package.camera(), renderer={"backend": "torch"})
    camera = torch.tensor(reference_camera(package.model, package.state)["viewmat"])  # the same camera, in the canonical frame
    diff = np.abs(_render(moved, camera, package) - img)
    assert diff.mean() < 0.5 and (img < 200).mean() > 0.05  # the head is in view and matches
    # The reference pose lands on the canonical avatar.
    at_reference = posed_splats(package, e, ref_r, ref_t, canonical_transform(package))
    canonical = posed_splats(package, e, np.zeros(3), np.zeros(3))
    torch.testing.assert_close(at_reference.means, canonical.means, atol=1e-5, rtol=0)
    torch.testing.assert_close(at_reference.sh, canonical.sh, atol=1e-5, rtol=0)


def _write_csv(path, n: int = 4):
    header = ["Timecode", "BlendShapeCount", *ARKIT_BLENDSHAPES, *ARKIT_OTHER[2:]]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n):
            row = {h: 0.0 for h in header}
            row.update(Timecode=f"00:00:00:{i:02d}.000", BlendShapeCount=52, JawOpen=i / (n - 1), HeadYaw=0.3 * i / n)
            w.writerow([row[h] for h in header])
    return path


@pytest.mark.slow  # several `avatar export` commands, ~0.5 s of config composition each
def test_export_command_canonical_and_posed(avatar_run, package, tmp_path, capsys):
    from avatar import cli
    from avatar.drive.export import posed_splats

    out = tmp_path / "canonical"
    assert cli.main(["export", f"run={avatar_run}", f"out={out}"]) == 0
    ply, spz = load_ply(out / "avatar.ply"), read_spz(out / "avatar.spz")
    neutral = posed_splats(package, np.zeros(len(package.expression_names)), np.zeros(3), np.zeros(3))
    torch.testing.assert_close(ply["means"], neutral.means, atol=1e-6, rtol=0)
    step = quantisation_steps(spz["fractional_bits"])["position"]
    assert np.abs(spz["means"] - ply["means"].numpy()).max() <= step / 2 + 1e-7
    posed = tmp_path / "posed"
    assert cli.main(["export", f"run={avatar_run}", f"out={posed}", "expression={jawOpen:1,eyeBlinkLeft:1}",
                     "head=[30,0,0]", "formats=[ply]"]) == 0
    assert not (posed / "posed.spz").exists()
    moved = (load_ply(posed / "posed.ply")["means"] - ply["means"]).norm(dim=-1)
    assert moved.max() > 0.01  # turned by 30 degrees and the jaw open
    report = json.loads((posed / "export_report.json").read_text())
    assert report["kind"] == "posed" and report["head_deg"]["yaw"] == 30 and report["expression"]["jawOpen"] == 1
    assert len(report["reference_camera"]["viewmat"]) == 4 and "+y up" in report["axes"]
    capsys.readouterr()
    assert cli.main(["export", f"run={avatar_run}", f"out={tmp_path / 'x'}", "expression={jawOpn:1}"]) == 2
    err = capsys.readouterr().err
    assert "unknown expression 'jawOpn'" in err and "close names: jawOpen" in err
    assert cli.main(["export", f"run={tmp_path / 'empty'}", f"out={tmp_path / 'y'}"]) == 1
    assert "holds no avatar.pt" in capsys.readouterr().err


@pytest.mark.slow  # several `avatar export` commands, ~0.5 s of config composition each
def test_export_command_driven_sequence_and_one_frame(avatar_run, tmp_path, capsys):
    from avatar import cli

    take = _write_csv(tmp_path / "take.csv", n=4)
    out = tmp_path / "seq"
    assert cli.main(["export", f"run={avatar_run}", f"out={out}", f"drive={take}"]) == 0
    info = json.loads((out / "sequence" / "sequence.json").read_text())
    assert info["frames"] == 4 and info["files"][3] == ["frame_00003.ply", "frame_00003.spz"]
    first, last = (load_ply(out / "sequence" / f"frame_0000{i}.ply")["means"] for i in (0, 3))
    assert (last - first).norm(dim=-1).max() > 0.005  # the jaw opens and the head turns
    one = tmp_path / "one"
    assert cli.main(["export", f"run={avatar_run}", f"out={one}", f"drive={take}", "frame=3"]) == 0
    torch.testing.assert_close(load_ply(one / "frame_00003.ply")["means"], last)
    capsys.readouterr()
    assert cli.main(["export", f"run={avatar_run}", f"out={tmp_path / 'z'}", f"drive={take}", "frame=9"]) == 1
    assert "frame=9 is beyond the driver" in capsys.readouterr().err
    assert cli.main(["export", f"run={avatar_run}", f"out={tmp_path / 'w'}", "frame=1"]) == 2
    assert "give drive=SOURCE too" in capsys.readouterr().err
