"""Benchmark of avatar.render.rasterization: prints ONE JSON line.

Scene (from the issue): N Gaussians, means ~ Normal(0, 0.3 m) around 3 m depth, scales
uniform 3-13 mm, random rotations, opacity uniform 0-0.8, fx = fy = 1.2 x width, RGB colours.
Cases: 256x256 / N=20k and 512x512 / N=100k for every available backend, and the dense
brute-force reference at 64x64 / N=2k for scale. On a CPU the forward (no grad) figure of
``torch`` uses the compiled compositor (numba) when it is installed; ``torch-ops`` is the
same case with it switched off (``AVATAR_NO_NUMBA=1``), and ``torch-exact`` the compiled compositor
with its pixel-by-pixel loop instead of the SIMD one (libm's exp; ``composite_tiles(vector=False)``), side by side in one run. Each case runs in its own process so that
its peak memory (RSS above the scene's own, or CUDA max allocated) is its own.

    python benchmarks/rasterize.py [--repeats 7] [--cases torch:256:20000,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

TARGETS = {
    "cpu torch 256x256 N=20k forward+backward ms": 250,
    "cpu torch 256x256 N=20k forward no_grad ms": 60,
    "cpu torch 256x256 N=20k peak MiB": 2048,
    "cpu torch 512x512 N=100k forward peak MiB": 4096,
    "cuda gsplat 512x512 N=100k FPS": 500,
    "cuda gsplat vs torch max abs image diff": 1e-3,
}


def make_scene(n: int, width: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.3
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, generator=g)
    scales = 0.003 + 0.010 * torch.rand(n, 3, generator=g)
    opacities = 0.8 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    viewmats = torch.eye(4)[None]
    f = 1.2 * width
    Ks = torch.tensor([[f, 0.0, width / 2], [0.0, f, width / 2], [0.0, 0.0, 1.0]])[None]
    return [t.to(device) for t in (means, quats, scales, opacities, colors, viewmats, Ks)]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run_case(backend: str, width: int, n: int, repeats: int) -> dict:
    """Time one case in this process."""
    from avatar.render import rasterization
    from avatar.render.reference import rasterize_dense

    device = torch.device("cuda" if backend == "gsplat" or (backend.endswith("cuda")) else "cpu")
    name = backend.removesuffix("-cuda").replace("torch-ops", "torch").replace("torch-exact", "torch")
    if backend == "torch-exact":
        import functools  # noqa: PLC0415

        from avatar.render import cpu_kernels  # noqa: PLC0415

        cpu_kernels.composite_tiles = functools.partial(cpu_kernels.composite_tiles, vector=False)
    means, quats, scales, opacities, colors, viewmats, Ks = make_scene(n, width, device)
    base_rss = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def forward():
        if name == "reference":
            return rasterize_dense(means, quats, scales, opacities, colors, viewmats, Ks, width, width)
        return rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, width, backend=name)

    with torch.no_grad():
        fwd_ms = _time(forward, device, repeats)
    peak_fwd = (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else _rss_mib() - base_rss

    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]

    def forward_backward():
        nonlocal means, quats, scales, opacities, colors
        means, quats, scales, opacities, colors = params
        out = forward()
        (out[0].sum() + out[1].sum()).backward()

    fb_ms = _time(forward_backward, device, max(3, repeats // 2))
    peak_fb = (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else _rss_mib() - base_rss
    from avatar.render import cpu_kernels

    result = {
        "backend": backend,
        "compiled_compositor": device.type == "cpu" and name == "torch" and cpu_kernels.available(),
        "device": str(device),
        "width": width,
        "height": width,
        "n_gaussians": n,
        "forward_no_grad_ms": round(fwd_ms, 2),
        "forward_fps": round(1e3 / fwd_ms, 1),
        "forward_backward_ms": round(fb_ms, 2),
        "peak_mib_forward": round(peak_fwd, 1),
        "peak_mib_forward_backward": round(peak_fb, 1),
    }
    if name == "gsplat":  # parity with the torch backend on the same inputs
        with torch.no_grad():
            a = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, width, backend="gsplat")
            b = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, width, backend="torch")
        result["max_abs_image_diff_vs_torch"] = float((a[0] - b[0]).abs().max())
        result["max_abs_alpha_diff_vs_torch"] = float((a[1] - b[1]).abs().max())
    return result


def default_cases() -> list[str]:
    cases = ["torch:256:20000", "torch-exact:256:20000", "torch-ops:256:20000", "torch:512:100000", "torch-ops:512:100000", "reference:64:2000"]
    from avatar.render import gsplat_status

    if torch.cuda.is_available():
        cases += ["torch-cuda:256:20000", "torch-cuda:512:100000"]
        if gsplat_status()[0]:
            cases += ["gsplat:256:20000", "gsplat:512:100000"]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cases", default=None, help="comma-separated backend:width:N (default: all available)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run a single case
    args = parser.parse_args()
    if args.one:
        backend, width, n = args.one.split(":")
        print(json.dumps(run_case(backend, int(width), int(n), args.repeats)))
        return
    cases = args.cases.split(",") if args.cases else default_cases()
    results = []
    for case in cases:
        env = dict(os.environ, **({"AVATAR_NO_NUMBA": "1"} if case.startswith("torch-ops") else {}))
        proc = subprocess.run(
            [sys.executable, __file__, "--one", case, "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=False, env=env,
        )
        if proc.returncode != 0:
            results.append({"case": case, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({
        "benchmark": "rasterize",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "targets": TARGETS,
        "results": results,
    }))


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
