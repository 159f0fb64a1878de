"""SynthAV: a small synthetic video+audio dataset, deterministic for a seed.

Each video shows a textured, slowly drifting background, a main shape whose motion is the action
class, and sometimes a slowly drifting distractor shape. The soundtrack is made from the scene:
the main shape's timbre depends on its type, its pitch on its height, its loudness on its size, and
every impact (bounce on the floor or a wall) is a sharp click starting at the exact sample of the
impact frame (frame k at k / fps seconds). Videos are real H.264/AAC mp4 files; a manifest
(`manifest.csv`) lists them with their split, label and the diagnostics columns `action`, `shape`
and `impacts` (semicolon-separated impact frame indices).

Coordinates are in frame units: x right and y down in [0, 1]; angles grow clockwise on screen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmssl.data.generated import GeneratedVideo, ensure_dataset, generate_dataset, split_sizes
from mmssl.data.manifest import ManifestRow
from mmssl.io import probe, write_media

CLASSES = (
    "move_left", "move_right", "move_up", "move_down", "grow", "shrink",
    "rotate_cw", "rotate_ccw", "fall_bounce", "slide_stop",
)
SHAPES = ("circle", "square", "triangle", "star")
SPLITS = ("pretrain", "train", "test")
CONFIG_NAME = "synthav.json"
GENERATOR_VERSION = 2  # bump whenever the rendered content changes, to invalidate old folders (2: layouts)

# Audio model: pitch = PITCH_LOW_HZ * 2 ** (PITCH_OCTAVES * height), height = 1 - y.
PITCH_LOW_HZ = 220.0
PITCH_OCTAVES = 2.0
TONE_GAIN = 0.15  # tone RMS at full size (radius >= FULL_SIZE_RADIUS), the same for every timbre
FULL_SIZE_RADIUS = 0.2
CLICK_GAIN = 0.6  # peak click amplitude, reached at impact speeds >= 1 frame unit / s
CLICK_SECONDS = 0.03
CLICK_DECAY_SECONDS = 0.004
# Harmonic amplitudes (fundamental first) per shape: the timbre.
TIMBRES: dict[str, tuple[float, ...]] = {
    "circle": (1.0,),                                     # pure sine
    "square": (1.0, 0.0, 1 / 3, 0.0, 1 / 5, 0.0, 1 / 7),  # odd harmonics: hollow, square-wave-like
    "triangle": (0.6, 1.0, 0.0, 0.5),                     # strong octave: nasal
    "star": (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2),    # all harmonics: bright, buzzy
}
STAR_POINTS = 5
MIN_BOUNCE_AIRTIME = 0.25  # seconds; slower bounces come to rest, so impacts stay >= 4 frames apart
# Background textures: (number of plane waves, spatial frequency range in cycles per frame, gain).
TEXTURES: dict[str, tuple[int, tuple[float, float], float]] = {
    "noise": (4, (1.0, 3.0), 2.0),
    "stripes": (1, (3.0, 6.0), 1.0),
    "gradient": (1, (0.3, 0.5), 1.0),
}
TEXTURE_AMPLITUDE = 0.1  # per-channel colour swing of the texture, in [0, 1] colour units
_VIDEO_STREAM, _PLAN_STREAM = 0, 1  # seed sequences: [seed, stream, ...]
Range = tuple[float, float]  # drawn uniformly; a range of one value draws nothing from the generator


@dataclass(frozen=True)
class Layout:
    """Where the main shape is and how large, per kind of motion (frame units), and how the plan
    orders the videos: the static cues a layout leaves are measured in datasets/synthav.md."""

    place: Range  # x and y of the shape (a travelling shape's other coordinate; a falling one's x)
    radius: Range  # every class but grow/shrink
    path_start: Range  # move_*: the coordinate along the path, first frame (mirrored for right/down)
    path_end: Range  # ... and last frame of a full-length video
    grow_small: Range  # grow/shrink: radius at the small end
    grow_big: Range  # ... and at the big end
    edge: Range  # the floor fall_bounce lands on and the wall slide_stop hits (1: the frame's edge)
    slide_start: Range  # slide_stop: x of the first frame (mirrored when sliding left)
    short_window: bool  # a short video is a random window of the full motion, not its first part
    shuffled: bool  # classes in random file order; no-audio and short videos spread over the classes


LAYOUTS = {
    # version 1: moving shapes cross [0.15, 0.85], the others sit in [0.35, 0.65], only grow/shrink
    # leave radii [0.08, 0.13], fall_bounce rests on the bottom edge: one frame tells much of the class
    "by_class": Layout(place=(0.35, 0.65), radius=(0.08, 0.13), path_start=(0.72, 0.85), path_end=(0.15, 0.28),
                       grow_small=(0.05, 0.07), grow_big=(0.17, 0.21), edge=(1.0, 1.0), slide_start=(0.15, 0.28),
                       short_window=False, shuffled=False),
    # one distribution of place and size for every class, as far as its motion allows
    "shared": Layout(place=(0.25, 0.75), radius=(0.06, 0.15), path_start=(0.6, 0.9), path_end=(0.1, 0.4),
                     grow_small=(0.04, 0.08), grow_big=(0.12, 0.2), edge=(0.6, 1.0), slide_start=(0.15, 0.3),
                     short_window=True, shuffled=True),
}


@dataclass(frozen=True)
class SynthAVConfig:
    """Every knob of SynthAV: the generated dataset is a function of these values alone."""

    seed: int = field(default=0, metadata={"help": "random seed; same seed, same videos"})
    size: int = field(default=64, metadata={"help": "frame width and height in pixels"})
    fps: float = field(default=16.0, metadata={"help": "frames per second"})
    duration: float = field(default=3.0, metadata={"help": "seconds per video"})
    short_duration: float = field(default=1.0, metadata={"help": "seconds per short video"})
    sample_rate: int = field(default=16000, metadata={"help": "audio sample rate (Hz), mono"})
    num_pretrain: int = field(default=300, metadata={"help": "unlabeled pretraining videos"})
    train_per_class: int = field(default=10, metadata={"help": "labeled train videos per class"})
    test_per_class: int = field(default=20, metadata={"help": "labeled test videos per class"})
    no_audio_share: float = field(default=0.1, metadata={"help": "share of each split without audio"})
    short_share: float = field(default=0.05, metadata={"help": "share of each split lasting short_duration"})
    distractor_prob: float = field(default=0.5, metadata={"help": "chance of a distractor shape"})
    layout: str = field(default="shared", metadata={"help": "place and size of the shapes, file order "
                                                              "(datasets/synthav.md)", "choices": sorted(LAYOUTS)})

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {sorted(LAYOUTS)}")
        if self.size < 8 or self.fps <= 0 or self.sample_rate <= 0:
            raise ValueError(f"bad size/fps/sample_rate in {self}")
        if not 0 < self.short_duration <= self.duration or self.num_frames(short=True) < 2:
            raise ValueError(f"need 0 < short_duration <= duration and >= 2 frames, got {self}")
        if min(self.num_pretrain, self.train_per_class, self.test_per_class) < 0:
            raise ValueError(f"video counts must be >= 0, got {self}")
        for share in (self.no_audio_share, self.short_share, self.distractor_prob):
            if not 0 <= share <= 1:
                raise ValueError(f"shares and probabilities must lie in [0, 1], got {self}")

    def num_frames(self, short: bool = False) -> int:
        """Frames of a regular (or short) video."""
        return round((self.short_duration if short else self.duration) * self.fps)

    def split_sizes(self) -> dict[str, int]:
        """Number of videos per split."""
        return split_sizes(self.num_pretrain, self.train_per_class, self.test_per_class, len(CLASSES))


@dataclass(frozen=True)
class VideoSpec(GeneratedVideo):
    """What one video of the dataset is, before rendering."""

    short: bool
    has_audio: bool


@dataclass(frozen=True)
class Track:
    """Per-frame state of a shape ([T] arrays) and the frames where it hits a wall."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    impacts: tuple[int, ...] = ()
    impact_speeds: tuple[float, ...] = ()


def plan(config: SynthAVConfig) -> list[VideoSpec]:
    """All videos of the dataset, the classes balanced within each split: cycling in file order, or
    shuffled (`Layout.shuffled`). The videos without audio and the short ones are exact shares of
    each split, picked at random (when shuffled, spread over the classes as evenly as they can be)."""
    rng = np.random.default_rng([config.seed, _PLAN_STREAM])
    shuffled = LAYOUTS[config.layout].shuffled
    specs: list[VideoSpec] = []
    for split, count in config.split_sizes().items():
        classes = np.resize(np.arange(len(CLASSES)), count)
        classes = rng.permutation(classes) if shuffled else classes
        strata = classes if shuffled else None
        no_audio = _pick_share(rng, count, config.no_audio_share, strata)
        short = _pick_share(rng, count, config.short_share, strata)
        for i in range(count):
            specs.append(VideoSpec(len(specs), split, f"{split}_{i:05d}", CLASSES[classes[i]],
                                   bool(short[i]), not no_audio[i]))
    return specs


def video_rng(config: SynthAVConfig, index: int) -> np.random.Generator:
    """The generator that renders video `index` of the dataset."""
    return np.random.default_rng([config.seed, _VIDEO_STREAM, index])


def render_video(config: SynthAVConfig, action: str, rng: np.random.Generator,
                 shape: str | None = None, num_frames: int | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one video of class `action`: frames (uint8 [T, H, W, 3] RGB), audio (float32
    [T / fps * sample_rate] in [-1, 1]) and an info dict (action, shape, impacts = frame indices,
    color and mark_color = uint8 RGB of the main shape and its orientation mark, track = per-frame
    x, y, radius, angle of the main shape). `shape` forces the main shape (default: random).
    `num_frames` below a full video's shows the motion's first part, or with the layout's
    `short_window` a random window of the full-length video."""
    if action not in CLASSES:
        raise ValueError(f"unknown action {action!r}; expected one of {CLASSES}")
    drawn_shape = SHAPES[rng.integers(len(SHAPES))]
    shape = shape or drawn_shape
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    layout = LAYOUTS[config.layout]
    shown = num_frames or config.num_frames()
    num_frames = max(shown, config.num_frames()) if layout.short_window else shown
    times = np.arange(num_frames) / config.fps
    progress = np.arange(num_frames) / max(config.num_frames() - 1, 1)  # 0 -> 1 over a full video

    background, base_colour = _background(rng, config.size, times)
    track = _main_track(action, shape, rng, times, progress, 1 / config.fps, layout)
    colour = _distinct_colour(rng, [base_colour], 0.5)
    mark_colour = np.full(3, 0.1 if colour.mean() > 0.5 else 0.95)
    layers: list[tuple[str, Track, np.ndarray]] = []
    if rng.random() < config.distractor_prob:
        distractor_colour = _distinct_colour(rng, [base_colour, colour], 0.4)
        layers.append((SHAPES[rng.integers(len(SHAPES))], _drift_track(rng, times), distractor_colour))
    layers.append((shape, track, colour))
    mark = Track(track.x + 0.5 * track.radius * np.cos(track.angle),
                 track.y + 0.5 * track.radius * np.sin(track.angle),
                 np.maximum(0.2 * track.radius, 1.0 / config.size), track.angle)
    layers.append(("circle", mark, mark_colour))

    planes = background  # channels first while compositing: [3, T, H, W]
    pixels = (np.arange(config.size, dtype=np.float32) + 0.5) / config.size
    for layer_shape, layer_track, layer_colour in layers:
        coverage = np.clip(0.5 - config.size * _signed_distance(layer_shape, pixels, layer_track), 0, 1)
        planes += coverage * (layer_colour.astype(np.float32)[:, None, None, None] - planes)
    frames = np.ascontiguousarray(_to_uint8(planes).transpose(1, 2, 3, 0))

    audio = _soundtrack(shape, track, config, num_frames, rng)
    if shown < num_frames:
        frames, audio, track = _window(frames, audio, track, int(rng.integers(num_frames - shown + 1)), shown,
                                       config)
    info = {
        "action": action, "shape": shape, "impacts": list(track.impacts),
        "color": _to_uint8(colour), "mark_color": _to_uint8(mark_colour),
        "track": {"x": track.x, "y": track.y, "radius": track.radius, "angle": track.angle},
    }
    return frames, audio, info


def _window(frames: np.ndarray, audio: np.ndarray, track: Track, start: int, count: int,
            config: SynthAVConfig) -> tuple[np.ndarray, np.ndarray, Track]:
    """Frames start..start + count of a rendered video, the audio of their time and their track."""
    shown = slice(start, start + count)
    samples = round(start / config.fps * config.sample_rate)
    hits = [(k - start, v) for k, v in zip(track.impacts, track.impact_speeds) if shown.start <= k < shown.stop]
    impacts, speeds = (tuple(column) for column in zip(*hits)) if hits else ((), ())
    cut = Track(track.x[shown], track.y[shown], track.radius[shown], track.angle[shown], impacts, speeds)
    return frames[shown], audio[samples:samples + round(count / config.fps * config.sample_rate)], cut


def make_video(config: SynthAVConfig, spec: VideoSpec, out_dir: Path) -> ManifestRow:
    """Render, encode and probe one video of the dataset; returns its manifest row."""
    frames, audio, info = render_video(config, spec.action, video_rng(config, spec.index),
                                       num_frames=config.num_frames(spec.short))
    path = out_dir / "videos" / spec.split / f"{spec.name}.mp4"
    write_media(path, frames, config.fps, audio if spec.has_audio else None, config.sample_rate)
    return ManifestRow.from_info(path, probe(path), label=spec.label, split=spec.split,
                                 action=spec.action, shape=info["shape"],
                                 impacts=";".join(map(str, info["impacts"])))


def generate(out_dir: str | Path, config: SynthAVConfig | None = None,
             workers: int | None = None) -> Path:
    """Generate SynthAV into `out_dir` (videos/<split>/<name>.mp4, manifest.csv, synthav.json) and
    return the manifest path. Does nothing when the folder already holds a complete dataset made
    with the same config. `workers` processes encode in parallel (default: all cores; 1 runs
    in this process); the result does not depend on it."""
    return generate_dataset(out_dir, config or SynthAVConfig(), GENERATOR_VERSION, CONFIG_NAME, "SynthAV", plan,
                            make_video, workers)


def ensure_synthav(out_dir: str | Path, config: SynthAVConfig | None = None,
                   workers: int | None = None) -> Path:
    """The manifest of the SynthAV dataset in `out_dir`, generated on first use (`ensure_dataset`:
    without `config`, a complete SynthAV folder is accepted whatever its settings)."""
    return ensure_dataset(out_dir, config, SynthAVConfig, GENERATOR_VERSION, CONFIG_NAME, generate, workers)


def _pick_share(rng: np.random.Generator, count: int, share: float, strata: np.ndarray | None = None,
                ) -> np.ndarray:
    """Boolean mask over `count` items with exactly round(share * count) random True entries; given
    each item's stratum, every stratum gets its second pick only once each has had one, and so on."""
    order = rng.permutation(count)
    if strata is not None:
        rank = np.empty(count, dtype=np.int64)  # an item's place among its stratum's, in random order
        for stratum in np.unique(strata):
            members = order[strata[order] == stratum]
            rank[members] = np.arange(len(members))
        order = order[np.argsort(rank[order], kind="stable")]
    mask = np.zeros(count, dtype=bool)
    mask[order[:round(share * count)]] = True
    return mask


def _draw(rng: np.random.Generator, bounds: Range) -> float:
    """A uniform draw from `bounds`; a range of one value is that value, drawn without the generator
    (the "by_class" layout's fixed edge leaves version 1's random streams as they were)."""
    low, high = bounds
    return low if low == high else float(rng.uniform(low, high))


def _to_uint8(colour: np.ndarray) -> np.ndarray:
    return np.clip(colour * 255 + 0.5, 0, 255).astype(np.uint8)


def _distinct_colour(rng: np.random.Generator, avoid: list[np.ndarray], min_distance: float,
                     ) -> np.ndarray:
    """A random RGB colour in [0, 1] at least `min_distance` (Euclidean) from each of `avoid`."""
    while True:
        colour = rng.uniform(0, 1, 3)
        if all(np.linalg.norm(colour - other) >= min_distance for other in avoid):
            return colour


def _background(rng: np.random.Generator, size: int, times: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Textured background (float32 [3, T, H, W] in [0, 1]) drifting at a slow constant velocity,
    and its base colour. The texture is a sum of plane waves: smooth noise, stripes or a gradient."""
    num_waves, (low, high), gain = TEXTURES[rng.choice(list(TEXTURES))]
    directions = rng.uniform(0, 2 * np.pi, num_waves)
    wave_vectors = rng.uniform(low, high, num_waves)[:, None] * np.stack(
        [np.cos(directions), np.sin(directions)], axis=1)  # [n, 2] cycles per frame unit
    phases = rng.uniform(0, 2 * np.pi, num_waves)
    drift_angle = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(0.03, 0.08) * np.array([np.cos(drift_angle), np.sin(drift_angle)])
    base_colour = rng.uniform(0.2, 0.8, 3)
    swing = TEXTURE_AMPLITUDE * rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.0, 3)

    coords = (np.arange(size) + 0.5) / size
    spatial = 2 * np.pi * (coords[None, :, None] * wave_vectors[:, 0]
                           + coords[:, None, None] * wave_vectors[:, 1]) + phases  # [H, W, n]
    temporal = 2 * np.pi * times[:, None] * (wave_vectors @ drift)  # [T, n]: moves by drift * t
    # mean over waves of sin(spatial - temporal), expanded into products of [T] and [H * W] terms;
    # einsum, not BLAS: a multithreaded BLAS crawls inside busy worker processes
    flat = spatial.reshape(-1, num_waves)
    waves = (np.einsum("tn,pn->tp", np.cos(temporal), np.sin(flat))
             - np.einsum("tn,pn->tp", np.sin(temporal), np.cos(flat)))
    texture = np.clip(gain / num_waves * waves, -1, 1).reshape(len(times), size, size)
    planes = (base_colour[:, None, None, None] + swing[:, None, None, None] * texture).astype(np.float32)
    return planes, base_colour


def _main_track(action: str, shape: str, rng: np.random.Generator, times: np.ndarray,
                progress: np.ndarray, frame_step: float, layout: Layout) -> Track:
    """The main shape's motion for `action` at `times` (seconds, `frame_step` apart), placed and
    sized as `layout` says; `progress` runs from 0 to 1 over a full-length video. Reversible pairs
    draw from mirrored ranges, so that each one's time reversal is a sample of its partner class."""
    count = len(times)
    x = np.full(count, _draw(rng, layout.place))
    y = np.full(count, _draw(rng, layout.place))
    radius = np.full(count, _draw(rng, layout.radius))
    angle = np.full(count, rng.uniform(0, 2 * np.pi))
    impacts: tuple[int, ...] = ()
    speeds: tuple[float, ...] = ()
    if action.startswith("move_"):
        start, end = _draw(rng, layout.path_start), _draw(rng, layout.path_end)
        path = start + (end - start) * progress  # high -> low coordinate
        path = 1 - path if action in ("move_right", "move_down") else path
        if action in ("move_left", "move_right"):
            x = path
        else:
            y = path
    elif action in ("grow", "shrink"):
        small, big = _draw(rng, layout.grow_small), _draw(rng, layout.grow_big)
        radius = small + (big - small) * (progress if action == "grow" else 1 - progress)
    elif action in ("rotate_cw", "rotate_ccw"):
        speed = rng.uniform(1.0, 2.0) * (1 if action == "rotate_cw" else -1)  # rad / s
        angle = angle + speed * times
    elif action == "fall_bounce":
        gravity, restitution = rng.uniform(2.0, 3.0), rng.uniform(0.55, 0.75)
        floor = _draw(rng, layout.edge) - radius[0] * _reach(shape, angle[0], np.pi / 2)  # its lowest point lands
        x = x + rng.uniform(-0.05, 0.05) * times
        y, impacts, speeds = _bounce_1d(rng.uniform(radius[0] + 0.02, 0.3), 0.0, floor,
                                        restitution, frame_step, count, gravity=gravity,
                                        rest_speed=gravity * MIN_BOUNCE_AIRTIME / 2)
    elif action == "slide_stop":
        friction, hit_speed = rng.uniform(0.4, 0.8), rng.uniform(0.45, 0.75)
        rightward = rng.random() < 0.5  # slide toward the right or the left wall
        wall = _draw(rng, layout.edge) - radius[0] * _reach(shape, angle[0], 0.0 if rightward else np.pi)
        start = _draw(rng, layout.slide_start)  # x of a rightward slide; mirrored (1 - x) when leftward
        speed = np.sqrt(hit_speed ** 2 + 2 * friction * (wall - start))  # reaches the wall at hit_speed
        x, impacts, speeds = _bounce_1d(start, speed, wall, rng.uniform(0.4, 0.6), frame_step,
                                        count, friction=friction)
        x = x if rightward else 1 - x
    return Track(x, y, radius, angle, impacts, speeds)


def _reach(shape: str, angle: float, direction: float) -> float:
    """How far a shape of radius 1 turned by `angle` extends from its centre along `direction`
    (its support function), measured on a fine grid of its signed distance."""
    grid = np.linspace(-1.1, 1.1, 221, dtype=np.float32)
    unit = Track(np.zeros(1), np.zeros(1), np.ones(1), np.full(1, angle))
    inside = _signed_distance(shape, grid, unit)[0] <= 0
    projection = grid[None, :] * np.cos(direction) + grid[:, None] * np.sin(direction)
    return float(projection[inside].max())


def _bounce_1d(position: float, velocity: float, wall: float, restitution: float, dt: float,
               count: int, gravity: float = 0.0, friction: float = 0.0, rest_speed: float = 0.0,
               ) -> tuple[np.ndarray, tuple[int, ...], tuple[float, ...]]:
    """Per-frame (semi-implicit Euler) motion along one axis toward a wall at `wall` (approached
    from below), under constant `gravity` toward the wall and/or a `friction` deceleration.
    Reaching the wall puts the object on it at that frame (an impact) and reflects the velocity,
    damped by `restitution`; below `rest_speed` it stays at rest there.
    Returns positions [count], impact frames and impact speeds."""
    positions = np.empty(count)
    impacts: list[int] = []
    speeds: list[float] = []
    resting = False
    for k in range(count):
        if k and not resting:
            velocity += gravity * dt
            velocity -= np.sign(velocity) * min(abs(velocity), friction * dt)
            position += velocity * dt
            if position >= wall and velocity > 0:
                position = wall
                impacts.append(k)
                speeds.append(velocity)
                velocity *= -restitution
                resting = abs(velocity) < rest_speed
        positions[k] = position
    return positions, tuple(impacts), tuple(speeds)


def _drift_track(rng: np.random.Generator, times: np.ndarray) -> Track:
    """A distractor: random place, size and orientation, slow straight drift."""
    heading = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.02, 0.06)
    x0, y0 = rng.uniform(0.15, 0.85, 2)
    count = len(times)
    return Track(x0 + speed * np.cos(heading) * times, y0 + speed * np.sin(heading) * times,
                 np.full(count, rng.uniform(0.05, 0.08)), np.full(count, rng.uniform(0, 2 * np.pi)))


def _signed_distance(shape: str, pixels: np.ndarray, track: Track) -> np.ndarray:
    """Approximate signed distance (frame units, negative inside) from every pixel centre to the
    shape in every frame: float32 [T, H, W]. `pixels` holds the pixel-centre coordinates [H]."""
    def per_frame(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32)[:, None, None]

    qx = pixels[None, None, :] - per_frame(track.x)
    qy = pixels[None, :, None] - per_frame(track.y)
    radius, angle = per_frame(track.radius), per_frame(track.angle)
    distance = np.hypot(qx, qy)
    if shape == "circle":
        return distance - radius
    if shape == "star":  # polar outline with STAR_POINTS lobes, one pointing along `angle`
        lobes = np.cos(STAR_POINTS * (np.arctan2(qy, qx) - angle))
        return distance - radius * (0.7 + 0.3 * lobes)
    sides = {"square": 4, "triangle": 3}[shape]  # regular polygon, a vertex along `angle`
    normals = angle[..., None] + np.pi / sides + 2 * np.pi * np.arange(sides, dtype=np.float32) / sides
    support = qx[..., None] * np.cos(normals) + qy[..., None] * np.sin(normals)
    return support.max(-1) - radius * np.float32(np.cos(np.pi / sides))


def _soundtrack(shape: str, track: Track, config: SynthAVConfig, num_frames: int,
                rng: np.random.Generator) -> np.ndarray:
    """Mono audio for the main shape: a harmonic tone (timbre by shape) whose pitch follows the
    height and loudness the radius, both interpolated per sample between frame times, plus a
    decaying noise click starting at the sample of every impact frame."""
    rate = config.sample_rate
    num_samples = round(num_frames / config.fps * rate)
    sample_times = np.arange(num_samples) / rate
    frame_times = np.arange(num_frames) / config.fps
    pitch = np.interp(sample_times, frame_times, PITCH_LOW_HZ * 2 ** (PITCH_OCTAVES * (1 - track.y)))
    loudness = np.interp(sample_times, frame_times,
                         TONE_GAIN * np.clip(track.radius / FULL_SIZE_RADIUS, 0.2, 1.0))
    weights = np.asarray(TIMBRES[shape])
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    unit_rms = weights / np.sqrt(np.sum(weights ** 2) / 2)  # peaks stay below 2.5 (star)
    orders = np.arange(1, len(weights) + 1)
    audible = orders * pitch[:, None] < rate / 2  # drop harmonics above Nyquist: no aliasing
    audio = loudness * np.einsum("sh,h->s", np.sin(phase[:, None] * orders) * audible, unit_rms)

    click_length = round(CLICK_SECONDS * rate)
    envelope = np.exp(-np.arange(click_length) / (CLICK_DECAY_SECONDS * rate))
    for frame, speed in zip(track.impacts, track.impact_speeds):
        start = round(frame * rate / config.fps)
        noise = rng.uniform(-1, 1, click_length)
        click = CLICK_GAIN * (0.6 + 0.4 * min(speed, 1.0)) * envelope * noise / np.abs(noise).max()
        stop = min(start + click_length, num_samples)
        audio[start:stop] += click[:stop - start]
    return np.clip(audio, -1, 1).astype(np.float32)
