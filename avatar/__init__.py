"""Animatable 3D Gaussian-splatting avatars from a phone video.

Subpackages (dependencies flow downward): ``geometry`` <- ``models`` <- ``tracking``;
``geometry`` <- ``render`` <- ``gaussians`` <- ``train``; ``drive`` uses tracking,
gaussians and render. Nothing here imports the CLI, ``conf/``, ``demos/`` or ``data_tools/``.
"""

__version__ = "0.1.0"
