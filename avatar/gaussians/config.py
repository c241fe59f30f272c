"""The configs of the avatar kinds and of densification: plain dataclasses (no torch), so that
the command line can check and document them without importing the training code."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFORM_MODELS = ("mlp", "linear")  # MeshGaussiansConfig.deform_model's choices (avatar.gaussians.deform)


@dataclass
class MeshGaussiansConfig:
    """How to initialise mesh-bound Gaussians (YAML in ``conf/avatar/`` picks and overrides).

    The same fields configure the skinned body kind (``kind: skinned_gaussians``,
    ``avatar=body``): there ``sh_frame: head`` means the body's frame (its global rotation) and
    ``deform`` conditions the offsets on the frame's local joint rotations instead of expressions."""

    kind: str = "mesh_gaussians"  # the avatar kind built from this config (avatar.gaussians.registry)
    uv_resolution: float = 128  # samples per unit of UV (FlashAvatar: a 128x128 grid on FLAME's UV square)
    part_uv_resolution: dict = field(default_factory=dict)  # per-part overrides, e.g. {"eyeball_left": 24}
    parts: tuple[str, ...] | None = None  # model parts to cover (None: all the model has)
    sh_degree: int = 3  # view-dependent colour: SH degree 0 (none) to 3
    sh_frame: str = "head"  # axes of the SH view directions: "head" (turn with the head, or the body) or "world"
    init_opacity: float = 0.1  # opacity of every Gaussian at start
    init_scale: float = 0.6  # initial std as a fraction of the UV sample spacing on the surface
    init_color: tuple[float, float, float] = (0.5, 0.5, 0.5)  # RGB in 0..1 at start
    init_color_frames: int = 0  # >0: start each Gaussian at the mean colour it projects to in this many training frames (facing the camera, inside the mask)
    # Expression-conditioned offsets (avatar=mesh_gaussians_dynamic): an MLP of the canonical
    # position and the frame's expression (avatar.gaussians.deform.ExpressionDeformer); for the
    # skinned body kind (avatar=body_dynamic) of the local rotations of the tracked joints.
    deform: bool = False
    deform_hidden: int = 128  # expression MLP: hidden width
    deform_layers: int = 3  # expression MLP: hidden layers
    deform_frequencies: int = 4  # expression MLP: positional-encoding octaves of the canonical positions
    # "mlp": offsets an MLP of position and expression; "linear": one offset per blendshape (an MLP of the
    # position, the same sizes), weighted by its coefficient (GaussianBlendshapes). Heads only.
    deform_model: str = "mlp"
    # Heads (kind mesh_gaussians): Gaussians follow each triangle's stretch, not only its turn and size. Off:
    # a triangle's frame is a similarity (GaussianAvatars: rotation and mean edge length), so a triangle that
    # stretches one way (a lid closing over the eyeball) carries its Gaussians bunched at its centre with
    # gaps between triangles. On: each Gaussian follows the triangle's affine map from the canonical mesh
    # (a point keeps its barycentric place; the covariance is carried by the map).
    stretch: bool = False
    # Portrait avatars (avatar=portrait, avatar=portrait_gaussians; avatar.gaussians.portrait): Gaussians off the mesh where the
    # person mask shows what the mesh does not cover; above the neck they follow the head, below it the torso.
    offmesh_frames: int = 4  # training frames (spread over the sequence) whose uncovered mask pixels seed them
    offmesh_stride: int = 2  # one off-mesh Gaussian per this many pixels each way, at the training resolution
    offmesh_max: int = 12000  # at most this many off-mesh Gaussians at start (head and torso together)
    neck_length: float = 0.03  # metres under the chin where the head's off-mesh part ends and the torso's begins
    # The mesh's neck below that cut passes from the head's motion to the torso's over this many metres (linear
    # blend of the two; further down the neck follows the torso): a turned head no longer carries the collar, which
    # the lower neck's Gaussians learn, up the neck. 0: the whole mesh follows the head. Needs a tracked torso.
    neck_blend: float = 0.05
    torso_unit: float = 0.01  # metres per local unit of torso Gaussians (their xyz learning rate and size units)
    # avatar=portrait (kind portrait_texture, avatar.gaussians.torso_texture): the upper body as a texture read
    # through the splat of anchor Gaussians (GH&S), instead of avatar=portrait_gaussians' torso Gaussians.
    torso_anchor_spacing: float = 2.5  # torso units between neighbouring anchors of the warp's grid
    torso_texel: float = 0.25  # torso units per texel of the body texture
    torso_texture_max: int = 512  # cap on the texture's width and height in texels
    torso_fine_features: int = 4  # texture channels of the pose-dependent fine colour


@dataclass
class DensifyConfig:
    refine_start: int = 500  # first step that may clone, split or prune
    refine_stop: int = 15_000  # no refinement from this step on
    refine_every: int = 100  # refine every this many steps (gradient statistics restart after each)
    grad_threshold: float = 2e-4  # mean |d loss / d means2d| in normalised image units (gsplat's)
    split_scale: float = 0.5  # larger Gaussians split, smaller clone (the kind's units: the triangle's scale)
    split_factor: float = 1.6  # children of a split are this much smaller
    prune_opacity: float = 0.005  # Gaussians more transparent than this are pruned
    prune_scale: float = 4.0  # Gaussians larger than this (the kind's size units) are pruned
    reset_opacity_every: int = 3000  # 0 disables; opacities are clamped down to 2 x prune_opacity
    reset_steps_left: int = 1000  # no reset this close to the end of training (opacities need time to recover)
    max_gaussians: int = 200_000  # cap on the count; the highest-gradient candidates grow first
