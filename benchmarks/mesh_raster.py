"""Benchmark of the mesh rasterizer at 512x512 on a CPU; prints one JSON line.

Meshes: a synthetic ellipsoid "head" of ICT-FaceKit size (26,318 vertices, 52,632
triangles, ~60% of the frame) and, when the archive is readable, the ICT-FaceKit neutral
head (``FaceXModel/generic_neutral_mesh.obj`` from ``FaceXModel.tar.xz``, all parts, quads
fan-triangulated) filling about 85% of the image height.

    python benchmarks/mesh_raster.py [--ict PATH] [--runs 7] [--threads N] [--save DIR]

Figures: median (and minimum) milliseconds per frame after one warm-up, for
``rasterize_mesh`` and for ``render_mesh`` (smooth Lambert shading, flat colour), with the
compiled z-buffer (numba, the default on a CPU) and, side by side in the same run, with
the torch z-buffer (``*_torch_zbuffer_ms``; the two give the same pixels). The
1-minute load average is printed too: on a shared 2-core machine, other processes make
two-thread OpenMP timings jump by 10x.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from avatar.geometry.primitives import uv_ellipsoid
from avatar.render.mesh import rasterize_mesh
from avatar.render.mesh_shade import render_mesh

SIZE = 512
ICT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared/assets/ict-facekit/FaceXModel.tar.xz"
ICT_MEMBER = "FaceXModel/generic_neutral_mesh.obj"


def ellipsoid(n_lat: int = 130, n_lon: int = 204, radii=(0.085, 0.11, 0.095)):
    """UV ellipsoid, outward normals: vertices [V, 3] (metres), faces [F, 3]."""
    return uv_ellipsoid(n_lat, n_lon, radii)


def read_obj_from_tar(archive: Path, member: str):
    """Vertices [V, 3] and fan-triangulated faces [F, 3] of one OBJ inside a tar.xz."""
    with tarfile.open(archive, "r|xz") as tar:
        for info in tar:
            if info.name == member:
                text = tar.extractfile(info).read().decode()
                break
        else:
            raise FileNotFoundError(f"{member} not in {archive}")
    verts, faces = [], []
    for line in text.splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
            idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
            faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    return torch.tensor(verts), torch.tensor(faces)


def ict_in_camera(verts_cm: torch.Tensor, f: float):
    """ICT (cm, +y up, +z to the viewer) -> metres in front of an OpenCV camera."""
    v = verts_cm * 0.01 * torch.tensor([1.0, -1.0, -1.0])  # 180 degrees about x
    v = v - (v.amin(0) + v.amax(0)) / 2
    height = float(v[:, 1].max() - v[:, 1].min())
    distance = f * height / (0.85 * SIZE) + float(v[:, 2].max())
    return v + torch.tensor([0.0, 0.0, distance])


def time_ms(fn, runs: int) -> tuple[float, float]:
    """Median and minimum wall time in ms after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 1), round(min(times), 1)


def bench_mesh(name, verts, faces, K, runs, save):
    from unittest import mock

    from avatar.render import cpu_kernels

    with torch.no_grad():
        raster = rasterize_mesh(verts, faces, K, SIZE, SIZE)
        raster_ms = time_ms(lambda: rasterize_mesh(verts, faces, K, SIZE, SIZE), runs)
        render_ms = time_ms(lambda: render_mesh(verts, faces, K, SIZE, SIZE), runs)
        with mock.patch.object(cpu_kernels, "mesh_zbuffer_available", lambda: False):
            same = torch.equal(rasterize_mesh(verts, faces, K, SIZE, SIZE).triangle_id, raster.triangle_id)
            torch_ms = time_ms(lambda: rasterize_mesh(verts, faces, K, SIZE, SIZE), runs)
            torch_render_ms = time_ms(lambda: render_mesh(verts, faces, K, SIZE, SIZE), runs)
        figures = {
            "compiled_zbuffer": cpu_kernels.mesh_zbuffer_available(),
            f"{name}_raster_ms": raster_ms[0],
            f"{name}_render_ms": render_ms[0],
            f"{name}_raster_min_ms": raster_ms[1],
            f"{name}_render_min_ms": render_ms[1],
            f"{name}_raster_torch_zbuffer_ms": torch_ms[0],
            f"{name}_render_torch_zbuffer_ms": torch_render_ms[0],
            f"{name}_raster_speedup": round(torch_ms[0] / max(raster_ms[0], 1e-9), 2),
            f"{name}_same_triangle_ids": same,
            f"{name}_vertices": int(verts.shape[0]),
            f"{name}_triangles": int(faces.shape[0]),
            f"{name}_pixels_covered": int(raster.mask.sum()),
        }
        if save:
            import cv2

            image = render_mesh(verts, faces, K, SIZE, SIZE, background=1.0).image[0]
            cv2.imwrite(str(Path(save) / f"{name}.png"), (image.numpy()[..., ::-1] * 255).round().astype(np.uint8))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict", type=Path, default=Path(os.environ.get("AVATAR_ICT_ARCHIVE", ICT_ARCHIVE)))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--save", type=str, default="", help="folder for PNG renders")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    f = 1100.0
    K = torch.tensor([[f, 0.0, SIZE / 2], [0.0, f, SIZE / 2], [0.0, 0.0, 1.0]])
    verts, faces = ellipsoid()
    result = {"benchmark": "mesh_raster", "size": SIZE, "device": "cpu", "torch_threads": torch.get_num_threads()}
    result["load_avg_1min_start"] = round(os.getloadavg()[0], 2)
    result.update(bench_mesh("ellipsoid", verts + torch.tensor([0.0, 0.0, 0.5]), faces, K, args.runs, args.save))

    if os.access(args.ict, os.R_OK):
        verts_cm, faces = read_obj_from_tar(args.ict, ICT_MEMBER)
        K_ict = K.clone()
        K_ict[0, 0] = K_ict[1, 1] = 900.0
        result.update(bench_mesh("ict", ict_in_camera(verts_cm, 900.0), faces, K_ict, args.runs, args.save))
    else:
        result["ict"] = f"skipped: {args.ict} not readable"
    result["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    result["torch_version"] = torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
