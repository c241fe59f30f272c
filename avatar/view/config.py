"""The viewer's config: a plain dataclass (no torch), so that ``avatar view --help`` and the
command line's checks do not import the viewer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ViewConfig:
    host: str = "127.0.0.1"  # address to serve the page on; any other than localhost warns (the page has no login)
    port: int = 8080  # TCP port of the page (http://host:port); 0: any free port
    fps: float | None = None  # playback rate of drive= (None: the driver's own frame rate)
    max_gaussians: int | None = None  # pose and send only the N Gaussians that show most (faster; None: all)
    deformer_dtype: str = "auto"  # the expression MLP: float32, bfloat16 (CPU) or auto (the faster on this CPU, timed at start)
    capture_image: bool = True  # show the capture's frame beside the render when the run names a capture
    seconds: float | None = None  # stop serving after this many seconds (None: until Ctrl-C)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"view.port must be in 0..65535, got {self.port}")
        if self.deformer_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"view.deformer_dtype must be auto, float32 or bfloat16, got {self.deformer_dtype!r}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"view.fps must be > 0, got {self.fps}")
