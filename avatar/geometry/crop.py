"""Square crop boxes in images: temporal smoothing of a face track, box <-> crop affines, cutting.

Pixel convention: continuous coordinates as MediaPipe's landmarks (pixel ``i`` covers
``[i, i + 1)``); boxes are ``[x0, y0, x1, y1]`` in source pixels.
"""

from __future__ import annotations

import numpy as np

CROP_MODES = ("follow", "fixed", "full")


def smooth_track(times: np.ndarray, values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase smoothing of ``values`` [F, D] over ``times`` [F] (seconds): local linear fits.

    Each row gets the value at its time of a line fitted by least squares to the ``valid``
    [F] rows, weighted by a Gaussian of standard deviation ``sigma`` seconds (cut at 4
    sigma). A local line rather than a local mean keeps steady motion unbiased, also at
    the ends of the track. Rows before the first / after the last valid row hold that
    row's smoothed value; a row with no valid row within reach (or ``sigma == 0``) takes
    the nearest valid value. Weights follow timestamps: variable frame rates are handled.
    """
    assert times.ndim == 1 and values.shape[0] == times.shape[0] == valid.shape[0]
    if not valid.any():
        raise ValueError("smooth_track needs at least one valid row")
    t_ok, v_ok = times[valid], values[valid].astype(float)
    out = np.empty(values.shape, float)
    for i, t in enumerate(np.clip(times, t_ok[0], t_ok[-1])):
        lo, hi = np.searchsorted(t_ok, [t - 4 * sigma, t + 4 * sigma], side="left") if sigma > 0 else (0, 0)
        if hi - lo < 1:
            out[i] = v_ok[np.argmin(np.abs(t_ok - t))]
            continue
        dt = t_ok[lo:hi] - t
        w = np.exp(-0.5 * (dt / sigma) ** 2)
        sw, swt, swtt = w.sum(), w @ dt, w @ (dt * dt)
        m0, m1 = w @ v_ok[lo:hi], (w * dt) @ v_ok[lo:hi]
        det = sw * swtt - swt * swt
        out[i] = (swtt * m0 - swt * m1) / det if det > 1e-6 * sw * sw * sigma * sigma else m0 / sw
    return out


def square(centers: np.ndarray, sides: np.ndarray) -> np.ndarray:
    half = 0.5 * np.asarray(sides, float)[..., None]
    return np.concatenate((centers - half, centers + half), axis=-1)


def crop_boxes(track: FaceTrack, mode: str, scale: float, sigma: float, lift: float = 0.0) -> np.ndarray:
    """Square crop box per frame, ``[F, 4]`` x0, y0, x1, y1 in source pixels (see module doc).

    ``scale``: crop side / face size; ``sigma``: temporal smoothing (seconds, ``follow``);
    ``lift``: upward shift of the crop centre, as a fraction of the face size.
    """
    F = len(track.times)
    w, h = track.frame_size
    if mode == "full":
        return np.tile(square(np.array([w / 2, h / 2]), max(w, h)), (F, 1))
    present = track.present
    centers, sizes = track.centers, track.sizes
    centers[:, 1] -= lift * sizes
    if mode == "fixed":
        center = np.median(centers[present], axis=0)
        reach = np.abs(track.boxes[present] - np.concatenate((center, center))).max()
        side = max(scale * float(np.median(sizes[present])), 2.0 * reach * 1.1)
        return np.tile(square(center, side), (F, 1))
    if mode != "follow":
        raise ValueError(f"unknown crop mode {mode!r}: choose one of {CROP_MODES}")
    track_cs = np.concatenate((centers, sizes[:, None]), axis=1)
    smooth = smooth_track(track.times, np.where(present[:, None], track_cs, 0.0), present, sigma)
    return square(smooth[:, :2], scale * smooth[:, 2])


def crop_transform(box: np.ndarray, resolution: int) -> np.ndarray:
    """2x3 affine from source pixels to the pixels of the ``resolution``-sided crop of ``box``.

    Both in continuous pixel coordinates, as MediaPipe's landmarks: pixel ``i`` covers
    ``[i, i + 1)``, so the box edge ``x0`` maps to 0 and ``x1`` to ``resolution``.
    """
    s = resolution / (box[2] - box[0])
    return np.array([[s, 0.0, -box[0] * s], [0.0, s, -box[1] * s]])


def _index_affine(M: np.ndarray) -> np.ndarray:
    """The affine ``M`` (continuous coordinates) for pixel indices (centres at integers), as OpenCV uses."""
    out = M.copy()
    out[:, 2] += M[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out


def crop_image(image: np.ndarray, box: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square ``box`` out of ``image`` [H, W, 3] and resize it to ``resolution``.

    Returns the ``[resolution, resolution, 3]`` crop (black outside the image) and the 2x3
    affine from source to crop pixels (:func:`crop_transform`). Strong downscaling is
    anti-aliased by an area resize of the whole image first.
    """
    import cv2  # noqa: PLC0415

    A = crop_transform(box, resolution)
    src, M = image, A
    if A[0, 0] < 0.5:  # shrink to about twice the output scale first, with area averaging
        h, w = image.shape[:2]
        nw, nh = max(1, round(w * 2 * A[0, 0])), max(1, round(h * 2 * A[0, 0]))
        src = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        M = A @ np.diag([w / nw, h / nh, 1.0])  # small-image pixels -> crop pixels
    crop = cv2.warpAffine(src, _index_affine(M), (resolution, resolution), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, A


def transform_landmarks(landmarks: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Map ``[..., 478, 3]`` source-pixel landmarks into crop pixels (z scaled like x)."""
    out = np.empty_like(landmarks)
    out[..., :2] = landmarks[..., :2] @ A[:, :2].T + A[:, 2]
    out[..., 2] = landmarks[..., 2] * A[0, 0]
    return out
