"""The held-out error split by region (avatar/train/regions.py) and the trainer's use of it."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avatar.train.regions import REGIONS, RegionErrors, pixel_regions, triangle_regions


def _model(n_faces: int, parts: dict[str, list[int]]):
    masks = {}
    for name, faces in parts.items():
        m = torch.zeros(n_faces, dtype=torch.bool)
        m[faces] = True
        masks[name] = SimpleNamespace(faces=m)
    return SimpleNamespace(parts=masks)


def test_triangle_regions_follow_the_named_parts():
    model = _model(5, {"face": [0], "teeth": [1], "eyeball_left": [2], "head_and_neck": [3], "unknown_part": [4]})
    names = [REGIONS[i] for i in triangle_regions(model, 5)]
    assert names == ["face", "mouth", "eyes", "head", "mesh"]
    assert [REGIONS[i] for i in triangle_regions(SimpleNamespace(), 2)] == ["mesh", "mesh"]


def test_pixel_regions_band_background_and_beyond_mesh():
    tri = torch.full((20, 20), -1, dtype=torch.long)
    tri[5:15, 5:10] = 0  # a "face" triangle covers the left half of the mask
    mask = torch.zeros(20, 20)
    mask[4:16, 4:16] = 1
    labels = pixel_regions(tri, mask, torch.tensor([REGIONS.index("face")]), band=1)
    name = lambda y, x: REGIONS[int(labels[y, x])]  # noqa: E731
    assert name(0, 0) == "background"
    assert name(10, 7) == "face"
    assert name(10, 12) == "beyond_mesh"  # inside the mask, no triangle
    assert name(4, 10) == name(3, 10) == "silhouette"  # both sides of the mask edge
    assert name(10, 2) == "background"
    # Without a band the edge pixels keep their region.
    assert REGIONS[int(pixel_regions(tri, mask, torch.tensor([0]), band=0)[4, 10])] == "beyond_mesh"


def test_region_errors_split_the_squared_error():
    labels = torch.tensor([[0, 0], [5, 7]])
    pred = torch.zeros(2, 2, 3)
    target = torch.zeros(2, 2, 3)
    target[0, 0] = 0.1  # face pixel off by 0.1
    target[1, 0] = 0.3  # beyond-mesh pixel off by 0.3
    errs = RegionErrors()
    errs.add("novel", pred, target, labels)
    out = errs.summary("novel")
    assert set(out) == {"face", "beyond_mesh", "background"}
    assert out["face"]["psnr"] == pytest.approx(10 * math.log10(1 / (0.01 / 2)), abs=1e-3)
    assert out["beyond_mesh"]["error_share"] == pytest.approx(0.09 / 0.10, abs=1e-4)
    assert out["background"]["psnr"] is None and out["background"]["error_share"] == 0
    assert sum(v["pixel_share"] for v in out.values()) == pytest.approx(1)
    assert errs.summary("seen") is None


def test_quality_benchmark_correlations():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("quality", Path(__file__).parents[1] / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    frames = [{"psnr": 30 - d, "pose_distance_deg": d, "expression_distance": float(e)}
              for d, e in zip(np.arange(6.0), [3, 1, 2, 5, 4, 0])]
    corr = quality.frame_correlations(frames)
    assert corr["pose_distance_deg"] == pytest.approx(-1.0)
    assert -1 < corr["expression_distance"] < 1
    assert quality.frame_correlations([{"psnr": 1, "pose_distance_deg": None}])["pose_distance_deg"] is None
