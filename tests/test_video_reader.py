"""Frame sources: containers, rotation metadata, variable frame rate, subsampling, image
folders, and clear errors on bad files. Every input is generated here in tmp_path.

``write_test_video`` and ``astronaut_scene`` are also used by test_preprocess.py.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from avatar.io.video_reader import VideoReadError, open_source, upright

CODECS = {".mp4": "libx264", ".mov": "libx264", ".webm": "libvpx", ".avi": "mpeg4", ".mkv": "libx264"}


def write_test_video(path: Path, frames, fps: float = 25.0, rotation: int | None = None,
                     times: list[float] | None = None, faststart: bool = False) -> Path:
    """Encode ``frames`` ([H, W, 3] uint8, stored as given) to ``path``.

    ``rotation``: display rotation metadata, degrees counter-clockwise (as a phone writes
    it for a portrait video stored landscape); ``times``: per-frame timestamps in seconds
    (variable frame rate), else ``i / fps``.
    """
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(CODECS[path.suffix], rate=round(fps))
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = round(times[i] * 1000) if times is not None else i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def astronaut_scene(w: int, h: int, heads=((0.5, 0.5, 1.0),), seed: int = 0, noise: bool = False) -> np.ndarray:
    """``[h, w, 3]`` uint8: a smooth random background with the skimage astronaut's head
    pasted at each ``(cx, cy, scale)`` (centre as fractions of w, h); ``noise``: pure noise."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    if noise:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # A calm background (a random colourful mosaic makes MediaPipe see faces in it).
    img = cv2.resize(rng.integers(90, 170, (4, 5, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    head = data.astronaut()[20:300, 120:360]  # 280x240: helmet, face, collar
    for cx, cy, scale in heads:
        patch = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ph, pw = patch.shape[:2]
        x0, y0 = int(round(cx * w - pw / 2)), int(round(cy * h - ph / 2))
        img[y0:y0 + ph, x0:x0 + pw] = patch
    return img


def _gradient_frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    """Frames whose content tells the orientation apart and encodes the frame number."""
    frames = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]  # red grows to the right
        img[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]  # green grows downwards
        img[..., 2] = (10 * i) % 250
        frames.append(img)
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".webm", ".avi"])
def test_containers_round_trip(tmp_path, suffix):
    frames = _gradient_frames(10)
    path = write_test_video(tmp_path / f"clip{suffix}", frames, fps=25)
    source = open_source(path)
    assert (source.info.width, source.info.height, source.info.rotation) == (64, 48, 0)
    assert source.info.fps == pytest.approx(25.0)
    got = list(source.frames())
    assert [f.index for f in got] == list(range(10))
    np.testing.assert_allclose([f.time for f in got], np.arange(10) / 25.0, atol=1e-3)
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in got)
    assert abs(float(got[5].image[..., 2].mean()) - 50) < 8  # the frame's own content
    assert source.decode_error is None


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_makes_frames_upright(tmp_path, rotation):
    upright_frames = [np.ascontiguousarray(f) for f in _gradient_frames(4, w=48, h=64)]  # portrait
    stored = [np.ascontiguousarray(np.rot90(f, -rotation // 90)) for f in upright_frames]
    path = write_test_video(tmp_path / "phone.mp4", stored, rotation=rotation)
    source = open_source(path)
    assert source.info.rotation == rotation % 360
    assert (source.info.width, source.info.height) == (48, 64)
    for got, want in zip(source.frames(), upright_frames):
        assert got.image.shape == want.shape
        assert np.abs(got.image.astype(int) - want).mean() < 6


def test_legacy_rotate_tag_is_clockwise():
    from types import SimpleNamespace

    from avatar.io.video_reader import VideoSource

    assert VideoSource._rotate_tag(SimpleNamespace(metadata={"rotate": "90"})) == 270
    assert VideoSource._rotate_tag(SimpleNamespace(metadata={"rotate": "180"})) == 180
    assert VideoSource._rotate_tag(SimpleNamespace(metadata={})) == 0


def test_upright_turns_counter_clockwise():
    img = np.arange(6).reshape(2, 3)
    assert upright(img, 90).tolist() == [[2, 5], [1, 4], [0, 3]]  # right column comes to the top
    assert upright(img, 0) is img


def test_variable_frame_rate_keeps_timestamps_and_subsamples(tmp_path):
    times = [0.0, 0.03, 0.05, 0.3, 0.31, 0.5, 0.52, 0.9, 1.3, 1.31]
    path = write_test_video(tmp_path / "vfr.mp4", _gradient_frames(len(times)), fps=30, times=times)
    source = open_source(path)
    np.testing.assert_allclose([f.time for f in source.frames()], times, atol=2e-3)
    kept = list(source.frames(fps=4.0))  # at most one frame per 0.25 s slot
    assert [f.index for f in kept] == [0, 3, 5, 7, 8]
    assert source.sampling.skipped == 5
    assert [f.index for f in source.frames(max_frames=3, fps=4.0)] == [0, 3, 5]


def test_fps_and_max_frames_on_constant_rate(tmp_path):
    path = write_test_video(tmp_path / "clip.mp4", _gradient_frames(50), fps=25)
    source = open_source(path)
    kept = list(source.frames(fps=10.0))
    assert len(kept) == 20 and np.all(np.diff([f.time for f in kept]) > 0.07)
    assert len(list(source.frames(max_frames=7))) == 7
    assert source.decode_error is None  # stopping at max_frames is not an error
    with pytest.raises(ValueError, match="fps"):
        list(source.frames(fps=0))


def test_image_folder_sorted_by_name(tmp_path):
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(_gradient_frames(5)):
        cv2.imwrite(str(folder / f"img_{i:03d}.{'png' if i % 2 else 'jpg'}"), img[..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    source = open_source(folder, image_fps=10)
    assert source.info.kind == "images" and source.info.n_frames == 5
    got = list(source.frames())
    assert [f.index for f in got] == list(range(5))
    np.testing.assert_allclose([f.time for f in got], np.arange(5) / 10)
    assert [round(float(f.image[..., 2].mean()) / 10) for f in got] == list(range(5))

    cv2.imwrite(str(folder / "img_009.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(VideoReadError, match=r"img_009\.png is 10x10.*one size"):
        list(open_source(folder).frames())
    (folder / "img_009.png").write_bytes(b"garbage")
    with pytest.raises(VideoReadError, match=r"cannot read image .*img_009\.png"):
        list(open_source(folder).frames())


def test_empty_image_folder(tmp_path):
    with pytest.raises(VideoReadError, match="no .jpg/.jpeg/.png image"):
        open_source(tmp_path)


def test_bad_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"empty\.mp4 is empty \(0 bytes\)"):
        open_source(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoReadError, match=r"cannot open .*notes\.mp4 as a video"):
        open_source(text)
    with pytest.raises(VideoReadError, match=r"missing\.mp4 does not exist"):
        open_source(tmp_path / "missing.mp4")


def test_audio_only_file(tmp_path):
    import av

    path = tmp_path / "voice.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoReadError, match=r"voice\.wav holds no video stream"):
        open_source(path)


def test_truncated_video(tmp_path):
    frames = [astronaut_scene(64, 48, seed=i, noise=True) for i in range(40)]  # every frame costs bytes
    # Index at the end (FFmpeg's default): cut in half, the file cannot be opened or decoded.
    full = write_test_video(tmp_path / "full.mp4", frames).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(VideoReadError, match=r"cut\.mp4.*truncated"):
        open_source(cut)
    # Index first ("faststart", common for phone and web videos): the frames before the cut
    # are decoded, and the reader says where it stopped.
    full = write_test_video(tmp_path / "fast.mp4", frames, faststart=True).read_bytes()
    cut.write_bytes(full[: len(full) // 2])
    source = open_source(cut)
    got = list(source.frames())
    assert 0 < len(got) < 40
    assert "truncated" in source.decode_error and "40 frames" in source.decode_error
