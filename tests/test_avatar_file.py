"""The avatar file: one writer and reader, earlier layouts still load, bad files are named."""

from __future__ import annotations

import pytest
import torch
from avatar_files import write_test_avatar

from avatar.gaussians.base import FrameState
from avatar.gaussians.mesh_gaussians import MeshGaussians, MeshGaussiansConfig
from avatar.gaussians.package import AvatarPackage
from avatar.io.avatar_file import AVATAR_FORMAT, AvatarFileError, read_avatar, upgrade


@pytest.fixture(scope="module")
def ict(ict_assets):
    import avatar.models

    model = avatar.models.load("ict", asset_path=str(ict_assets))
    g = MeshGaussians.from_uv_grid(model, MeshGaussiansConfig(uv_resolution=8, sh_degree=1, init_opacity=0.9))
    with torch.no_grad():
        g.params["local_xyz"].add_(torch.randn_like(g.params["local_xyz"]) * 0.1)
    return model, g


def _posed(pkg: AvatarPackage):
    e = torch.zeros(1, len(pkg.expression_names))
    e[0, pkg.expression_names.index("jawOpen")] = 0.5
    return pkg.posed_gaussians(e, torch.tensor([[0.1, 0.2, 0.0]]), torch.tensor([[0.0, 0.0, -0.6]]))


def test_written_avatar_reads_back_with_its_kind_and_model_options(ict, ict_assets, tmp_path):
    model, g = ict
    path = write_test_avatar(tmp_path / "avatar.pt", g, model_options={"asset_path": str(ict_assets)})
    state = read_avatar(tmp_path)  # a run folder: its avatar.pt
    assert state["format"] == AVATAR_FORMAT and state["avatar"]["kind"] == "mesh_gaussians"
    assert state["model_options"] == {"asset_path": str(ict_assets)}
    pkg = AvatarPackage.load(path, torch.device("cpu"))
    assert isinstance(pkg.gaussians, MeshGaussians) and torch.equal(pkg.gaussians.binding, g.binding)
    with torch.no_grad():
        w = g(FrameState(model(expression=torch.zeros(1, 53)).vertices, rotation=torch.zeros(1, 3)))
        back = pkg.gaussians(FrameState(model(expression=torch.zeros(1, 53)).vertices, rotation=torch.zeros(1, 3)))
    torch.testing.assert_close(back.means, w.means)


def test_an_avatar_file_of_the_earlier_layout_still_loads(ict, tmp_path):
    """Format 1, as ``avatar train`` wrote it before the avatar interface: the Gaussians' entries at
    the top level, no format-2 keys, no model options."""
    model, g = ict
    new = AvatarPackage.load(write_test_avatar(tmp_path / "new.pt", g), torch.device("cpu"))
    legacy = {"format": 1, "model": "ict", "expression_names": list(model.expression_names), "shape": torch.zeros(100),
              "faces": g.faces, "binding": g.binding, "params": {k: v.detach() for k, v in g.params.items()},
              "sh_degree": g.sh_degree, "sh_frame": g.sh_frame, "K": new.state["K"], "viewmat": new.state["viewmat"],
              "width": 64, "height": 64, "background": torch.ones(3), "reference_rotation": torch.zeros(3),
              "reference_translation": torch.tensor([0, 0, -0.6])}
    torch.save(legacy, tmp_path / "old.pt")
    old = AvatarPackage.load(tmp_path / "old.pt", torch.device("cpu"))
    assert old.state["avatar"]["kind"] == "mesh_gaussians" and old.state["model_options"] == {}
    for name in ("means", "quats", "scales", "opacities", "sh"):
        torch.testing.assert_close(getattr(_posed(old), name), getattr(_posed(new), name))


def test_bad_avatar_files_are_named_with_what_to_do(ict, tmp_path):
    model, g = ict
    good = write_test_avatar(tmp_path / "avatar.pt", g)
    state = torch.load(good, weights_only=True)

    with pytest.raises(AvatarFileError, match="does not exist: train an avatar first"):
        read_avatar(tmp_path / "missing.pt")
    torch.save({**state, "format": AVATAR_FORMAT + 1}, tmp_path / "newer.pt")
    with pytest.raises(AvatarFileError, match=r"newer.pt is avatar format 3, newer than this version .*upgrade"):
        read_avatar(tmp_path / "newer.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(AvatarFileError, match="cut.pt is not a readable avatar file"):
        read_avatar(tmp_path / "cut.pt")
    torch.save({**state, "extra": Sneaky()}, tmp_path / "code.pt")
    with pytest.raises(AvatarFileError, match="code.pt was refused.*may be unsafe.*not loaded") as err:
        read_avatar(tmp_path / "code.pt")
    assert "weights_only" not in str(err.value) and "can still be loaded" not in str(err.value)
    assert "(print)" in str(err.value) and "\x1b" not in str(err.value)
    torch.save({k: v for k, v in state.items() if k != "K"}, tmp_path / "partial.pt")
    with pytest.raises(AvatarFileError, match="partial.pt lacks K"):
        read_avatar(tmp_path / "partial.pt")
    torch.save({**state, "avatar": {**state["avatar"], "kind": "hologram"}}, tmp_path / "kind.pt")
    with pytest.raises(ValueError, match="unknown avatar kind 'hologram'; this version has: mesh_gaussians"):
        AvatarPackage.load(tmp_path / "kind.pt", torch.device("cpu"))


def test_a_model_file_that_moved_names_the_option_to_set(ict, tmp_path):
    _, g = ict
    path = write_test_avatar(tmp_path / "avatar.pt", g, model_name="flame",
                             model_options={"model_path": str(tmp_path / "gone" / "generic_model.pkl")})
    with pytest.raises(AvatarFileError, match=r"trained with the 'flame' model from .*gone/generic_model.pkl.*"
                                              r"model_options.model_path="):
        AvatarPackage.load(path, torch.device("cpu"))


def test_render_and_live_exit_1_naming_the_file_and_the_key(ict, tmp_path, capsys):
    from avatar import cli

    _, g = ict
    moved = write_test_avatar(tmp_path / "flame" / "avatar.pt", g, model_name="flame",
                              model_options={"model_path": str(tmp_path / "gone.pkl")})
    state = torch.load(moved, weights_only=True)
    torch.save({**state, "format": AVATAR_FORMAT + 1}, tmp_path / "newer.pt")
    csv = tmp_path / "take.csv"
    csv.write_text("Timecode,BlendShapeCount,JawOpen\n00:00:00:00.000,1,0.5\n")
    for run, expected in ((moved, "model_options.model_path="), (tmp_path / "newer.pt", "upgrade the toolkit")):
        assert cli.main(["render", f"run={run}", f"drive={csv}", f"out={tmp_path / 'out' / 'a.mp4'}"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(run) in err[0] and expected in err[0], err
        assert cli.main(["live", f"run={run}", "source=0", "display=false", f"report={tmp_path / 'r.json'}"]) == 1
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing left behind


def test_upgrade_leaves_current_files_alone():
    state = {"format": AVATAR_FORMAT, "model": "ict", "avatar": {"kind": "mesh_gaussians"}}
    assert upgrade(state) is state


class Sneaky:
    """Pickled as a call to ``print``: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("this ran",))
