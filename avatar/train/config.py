"""The training config: a plain dataclass (no torch), so that the command line can check and
document ``train.*`` without importing the training code."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..gaussians.config import DensifyConfig, MeshGaussiansConfig


@dataclass
class TrainConfig:
    iterations: int = 3000  # training steps (one frame each)
    resolution: int | None = 256  # training width in pixels (None: the capture's)
    holdout: float = 0.15  # last fraction of usable frames kept out for evaluation
    mask: str = "head"  # "head": person mask cut to the tracked head (+ hair margin); "person": as captured (avatar=portrait's default)
    head_dilate: float = 0.04  # hair margin around the head's silhouette, fraction of the width
    neck_below_chin: float | None = 0.04  # mask=head: cut across the neck this far under the chin (metres); None: no cut
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB in 0..1 behind the masked subject
    # Each training step puts the masked frame and the render on a random uniform colour instead of
    # `background` (evaluation keeps `background`): Gaussians along the silhouette cannot take the
    # background's colour to match the mask's soft edge, they have to turn transparent there.
    random_background: bool = False
    seed: int = 0  # frame order, densification noise: same seed, same run (with one thread)
    # Learning rates per parameter kind; positions decay exponentially to lr_xyz_final.
    lr_xyz: float = 2e-3  # local units: the parent triangle's size
    lr_xyz_final: float = 2e-5  # where lr_xyz has decayed to at the last step
    lr_quat: float = 1e-3  # Gaussian rotations (quaternions relative to their anchor)
    lr_scale: float = 5e-3  # log-scales
    lr_opacity: float = 5e-2  # opacity logits
    lr_sh0: float = 2.5e-3  # base colour (SH band 0)
    lr_shN: float = 1.25e-4  # view-dependent colour (SH bands 1-3)
    lr_deform: float = 1e-3  # the expression deformer's MLP (avatar=mesh_gaussians_dynamic)
    lr_torso_texture: float = 1e-2  # avatar=portrait (kind portrait_texture): the body texture (colour and opacity logits, fine channels)
    lr_torso_anchors: float = 5e-3  # its anchor Gaussians: offsets (torso units), log-sizes, opacity logits
    lr_torso_decoder: float = 1e-3  # its pose-dependent fine-colour decoder
    # Joint refinement of the tracking: per-frame offsets of rotation, translation and
    # expression trained with the Gaussians (held-out frames keep their tracking).
    refine_tracking: bool = False
    lr_rotation: float = 1e-4  # radians
    lr_translation: float = 1e-5  # metres
    lr_expression: float = 1e-3  # refine_tracking: expression coefficients
    # Evaluation: also report metrics after aligning each held-out frame's head pose to the
    # image (rotation + translation only, Gaussians and expression frozen), as a photometric
    # tracker would; 0 steps: only the tracked poses.
    eval_pose_steps: int = 0
    eval_lr_rotation: float = 2e-3  # radians
    eval_lr_translation: float = 2e-4  # metres
    # Align on images this many times smaller each way (faster, but biased: a render at half size is
    # not the full render pooled (its 2D dilation is wider in the frame's pixels), and the pose that
    # matches the pooled frame best lowered held-out PSNR by 1.8 dB on head_talking; 1 raised it ~1 dB).
    eval_pose_downscale: int = 1
    # Held-out frames whose head pose is further than this from every training frame's
    # (tracked rotations) are "novel-pose" frames; metrics.json reports both groups apart.
    eval_novel_pose_deg: float = 5.0
    sh_increase_every: int = 1000  # one more SH degree every this many steps
    # (1 - w) L1 + w D-SSIM, D-SSIM = (1 - SSIM) / 2: 0.4 weighs (1 - SSIM) by 0.2 as 3DGS does
    ssim_weight: float = 0.4
    alpha_weight: float = 0.1  # rendered opacity vs the foreground mask
    scale_weight: float = 1.0  # weight of the penalty on Gaussians larger than scale_threshold
    scale_threshold: float = 0.6  # Gaussian std beyond this many triangle sizes is penalised
    xyz_weight: float = 0.01  # weight of the penalty on Gaussians further than xyz_threshold from their anchor
    xyz_threshold: float = 1.0  # distance from the triangle centroid beyond this (triangle sizes) is penalised
    # Flat Gaussians: weight of the penalty on a Gaussian's extent along its triangle's normal beyond
    # flat_threshold (triangle sizes); 0: off. Discs lying on the surface, as surfel splatting does (a
    # portrait's off-mesh and torso Gaussians are left as they are).
    flat_weight: float = 0.0
    flat_threshold: float = 0.05
    # Gaussians on the model's eyeballs (its tracking profile's eyeball parts) kept on the eyeball:
    # weight of the penalty on their offset from, and extent along, the eyeball's normal beyond
    # eyeball_threshold (triangle sizes, about 2.7 mm on ICT's eyeballs); 0: off. The eyelids close
    # over the eyeballs a fraction of a millimetre away: eyeball Gaussians lifted off it (left free,
    # they rose up to 2.6 mm and painted the lashes and lid margins of the open eye, which do not
    # move with a blink) show through a closed lid, and a driven blink read as eyes two-thirds open.
    eyeball_weight: float = 1.0
    eyeball_threshold: float = 0.05
    # More parts held the same way (name patterns of the model's parts, e.g. ICT's eye_socket*, the
    # lids' inner lining); the eyeballs are always in. eye_socket* measured: no tighter shut lids
    # than the eyeballs alone on head_talking or selfie_upperbody (docs/experiments.md); none by default.
    eyeball_extra_parts: list = field(default_factory=list)
    # Expression-conditioned kinds: standard deviation of Gaussian noise added to the expression
    # coefficients the deformer reads during training (the mesh keeps the tracked ones); 0: off. A
    # smoother map from expressions to offsets, less able to remember single frames by their codes.
    condition_noise: float = 0.0
    # Extra L1 weight on the pixels whose front-most model triangle the expressions move, graded by how
    # much (per vertex the mean over the blendshapes of its displacement, each blendshape's largest
    # counting 1: on ICT the lips and chin most, the lids and brows a third to a half); FlashAvatar
    # weights its mouth region the same way. 0: off. Heads with expression blendshapes only.
    active_weight: float = 0.0
    # Shut lids that look shut: every shut_lids_every-th step the frame is also drawn with the model's
    # blink blendshapes at 1 (its eye-widening ones at 0), and the pixels where the frame's eyeballs
    # showed (each eye's, from the tracked mesh) are held by an L1 term at that eye's surrounding skin
    # (the median colour of the frame in a ring round the eye opening). A clip with few blinks pins its
    # closed lids loosely: they read as a smeared, half-open eye. 0: off, not recommended (measured:
    # head_talking's shut lids read more shut, but the expression MLP learns to paint a full blink's
    # whole eye region over, selfie_upperbody's glasses and brows with it, and drive_expressive loses
    # the closed lids its own blinks taught; docs/experiments.md). Heads whose model
    # names blinks and eyeballs (its tracking profile's); only a window round the eyes is drawn
    # (training about 20% slower at shut_lids_every=2).
    shut_lids_weight: float = 0.0
    shut_lids_every: int = 2
    # Heads whose model has eyeballs and gaze blendshapes (ICT): each training frame's eyeballs turned
    # by the gaze read off its MediaPipe irises at the tracked head pose (avatar.tracking.gaze), less
    # the clip's median gaze, so the eyeballs' Gaussians learn one iris that the frames agree on
    # instead of a smear of every look. False: the eyeballs stay put, as the model has them.
    turn_eyes: bool = False
    turn_eyes_vertical: float = 1.0  # the up-down turn's share (0: side to side only)
    preview_every: int = 500  # progress/step_*.png (ground truth | render | error) every this many steps; 0: none
    checkpoint_every: int = 500  # checkpoints/step_*.pt every this many steps (resume=true goes on); 0: at the end
    viewer: bool = False  # serve the avatar being trained in a web browser (avatar view's viewer), loss and PSNR plotted
    viewer_every: int = 100  # send the avatar to the viewer every this many steps
    viewer_host: str = "127.0.0.1"  # the viewer's address; any other than localhost warns (the page has no login)
    viewer_port: int = 8080  # the viewer's TCP port (0: any free one)
    # image: this process renders each page's view and sends the picture (a page costs the training next to
    # nothing); splats: the browser splats the Gaussians itself (smooth orbiting, but software WebGL on the
    # same cores slows training); switchable on the page
    viewer_mode: str = "image"
    viewer_max_side: int = 512  # image mode: the pictures' longest side in pixels (smaller pages: their size)
    viewer_plot_seconds: float = 5.0  # the page's loss / PSNR plot and status line are refreshed this often
    gaussians: MeshGaussiansConfig = field(default_factory=MeshGaussiansConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
