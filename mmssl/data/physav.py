"""PhysAV: a physically simulated video+audio dataset, deterministic for a seed.

Each video is a pybullet scene (rigid-body physics, CPU renderer `ER_TINY_RENDERER`, headless): one
main object and one or two distractors (blocky shapes of no category) on a textured floor, seen from
a random viewpoint under a random light. The main object's physical event is the `action` class; its category is
`object`, what it is made of `material` (drawn independently of the category). The soundtrack is
synthesised from the simulation: every contact's impulse excites the struck objects' material
modes (damped sinusoids) at the exact sample of the contact, and objects sliding or rolling on
something make band-passed noise while they do. Videos are real H.264/AAC mp4 files; the manifest
(`manifest.csv`) has SynthAV's columns plus `action`, `object`, `material` and `impacts` (the main
object's contact frame indices, semicolon-separated). See datasets/physav.md.

World coordinates are metres, z up; the floor is z = 0.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from mmssl.data.generated import GeneratedVideo, ensure_dataset, generate_dataset, split_sizes
from mmssl.data.manifest import ManifestRow
from mmssl.io import probe, write_media

CLASSES = ("drop", "throw", "push", "spin", "topple", "collide", "hit", "stack")
SPLITS = ("pretrain", "train", "test")
CONFIG_NAME = "physav.json"
GENERATOR_VERSION = 5  # bump whenever the rendered content changes, to invalidate old folders (5: nearer camera)
_VIDEO_STREAM, _PLAN_STREAM = 0, 1  # seed sequences: [seed, stream, ...]


@dataclass(frozen=True)
class Category:
    """An object category: a mesh of pybullet_data (y up, as OBJ files are) or a primitive shape, and
    how much its proportions vary within the category."""

    mesh: str = ""  # file under pybullet_data; empty for a primitive
    primitive: str = ""  # "box", "sphere" or "cylinder"
    aspect: float = 0.15  # each axis scaled by 1 +- aspect, independently
    scale: float = 1.0  # size factor that gives every category the same mean apparent area (measured)


# `scale`: sqrt(10% / the category's mean share of a 64x64 frame at scale 1, over 24 random views);
# at scale 1 a teddy (thin limbs) covered 4.7% and a box 14.6%, so apparent size named the category
CATEGORIES: dict[str, Category] = {
    "duck": Category(mesh="duck.obj", scale=1.21),
    "teddy": Category(mesh="teddy2_VHACD_CHs.obj", scale=1.40),
    "torus": Category(mesh="torus/torus_textured.obj", scale=1.06),
    "lego": Category(mesh="lego/lego.obj", scale=0.90),
    "bunny": Category(mesh="bunny.obj", scale=1.24),
    "box": Category(primitive="box", aspect=0.4, scale=0.83),
    "ball": Category(primitive="sphere", aspect=0.0, scale=1.01),
    "can": Category(primitive="cylinder", aspect=0.3, scale=0.92),
}
# Distractors: procedurally generated blocky meshes of pybullet_data, none of them a category, so the
# main object is the only object of the catalogue in the scene (the `object` label names it alone)
DISTRACTORS = tuple(Category(mesh=f"random_urdfs/{i:03d}/{i:03d}.obj") for i in range(32))


@dataclass(frozen=True)
class Material:
    """Physics and sound of a material: the modes an impact excites (Hz, relative amplitude, decay
    time in seconds) and the centre of the band of its sliding/rolling noise."""

    density: float  # kg / m^3 of the object's bounding box (a solid fills about half of it)
    restitution: float
    friction: float
    modes: tuple[tuple[float, float, float], ...]
    noise_hz: float


MATERIALS: dict[str, Material] = {
    "wood": Material(600, 0.45, 0.5, ((420, 1.0, 0.06), (1150, 0.5, 0.03), (2300, 0.25, 0.015)), 900),
    "metal": Material(7800, 0.35, 0.3, ((1870, 1.0, 0.6), (5020, 0.6, 0.4), (7150, 0.4, 0.25)), 3500),
    "plastic": Material(1100, 0.6, 0.4, ((780, 1.0, 0.05), (1960, 0.4, 0.025), (4100, 0.2, 0.01)), 2000),
    "rubber": Material(1200, 0.85, 0.9, ((180, 1.0, 0.02), (450, 0.3, 0.01)), 300),
    "glass": Material(2500, 0.5, 0.25, ((2950, 1.0, 0.35), (6800, 0.5, 0.2)), 5000),
    "stone": Material(2600, 0.3, 0.7, ((610, 1.0, 0.04), (1480, 0.7, 0.03), (3300, 0.5, 0.02)), 1200),
}
OBJECT_SIZE = 0.09  # metres: cube root of an object's bounding-box volume, before its category's scale and 0.7-1.4
SCALE_RANGE = (0.7, 1.4)
GRAVITY = 9.81
FLOOR_FRICTION = 0.6
PHYSICS_HZ = 240
SETTLE_SECONDS = 0.5  # simulated (not shown) before the first frame, so objects rest on the floor
IMPACT_DV = 0.25  # m/s: a step's normal impulse / mass (beyond resting) that makes an audible impact
CLICK_GAIN = 0.5  # peak modal amplitude, reached at a velocity change of FULL_DV
FULL_DV = 2.0
NOISE_GAIN = 0.05  # sliding / rolling noise RMS at FULL_SLIDE speed
FULL_SLIDE = 1.0  # m/s
MIN_SLIDE = 0.05  # m/s: slower is resting (a settling object rocks)
FLOOR_TEXTURES = 6


@dataclass(frozen=True)
class PhysAVConfig:
    """Every knob of PhysAV: the generated dataset is a function of these values alone."""

    seed: int = field(default=0, metadata={"help": "random seed; same seed, same videos"})
    size: int = field(default=64, metadata={"help": "frame width and height in pixels"})
    fps: float = field(default=16.0, metadata={"help": "frames per second"})
    slow_motion: int = field(default=3, metadata={"help": "video seconds per simulated second: events of a "
                                                          "fraction of a second span frames a clip can see"})
    duration: float = field(default=4.0, metadata={"help": "seconds per video"})
    sample_rate: int = field(default=16000, metadata={"help": "audio sample rate (Hz), mono"})
    camera_near: float = field(default=0.25, metadata={"help": "the camera's least distance from what it looks at (m)"})
    camera_far: float = field(default=0.42, metadata={"help": "the camera's greatest distance (m): nearer shows an "
                                                            "object larger (0.25-0.42: 19-35 px of 64)"})
    num_pretrain: int = field(default=480, metadata={"help": "unlabeled pretraining videos"})
    train_per_class: int = field(default=10, metadata={"help": "labeled train videos per class"})
    test_per_class: int = field(default=20, metadata={"help": "labeled test videos per class"})

    def __post_init__(self) -> None:
        if self.size < 16 or self.fps <= 0 or self.sample_rate <= 0 or self.num_frames() < 2:
            raise ValueError(f"bad size/fps/sample_rate/duration in {self}")
        if self.slow_motion < 1 or PHYSICS_HZ % (self.fps * self.slow_motion):
            raise ValueError(f"fps x slow_motion must divide the physics rate {PHYSICS_HZ} Hz, "
                             f"got {self.fps} x {self.slow_motion}")
        if not 0 < self.camera_near <= self.camera_far:
            raise ValueError(f"the camera's distances must be 0 < camera_near <= camera_far, got {self}")
        if min(self.num_pretrain, self.train_per_class, self.test_per_class) < 0:
            raise ValueError(f"video counts must be >= 0, got {self}")

    def num_frames(self) -> int:
        """Frames of a video."""
        return round(self.duration * self.fps)

    def split_sizes(self) -> dict[str, int]:
        """Number of videos per split."""
        return split_sizes(self.num_pretrain, self.train_per_class, self.test_per_class, len(CLASSES))


@dataclass(frozen=True)
class VideoSpec(GeneratedVideo):
    """What one video of the dataset is, before rendering."""

    category: str
    material: str


def plan(config: PhysAVConfig) -> list[VideoSpec]:
    """All videos of the dataset: within each split, actions, categories and materials each as
    balanced as the split's size allows, each shuffled on its own (so material is independent of
    category and both of the action)."""
    rng = np.random.default_rng([config.seed, _PLAN_STREAM])
    specs: list[VideoSpec] = []
    for split, count in config.split_sizes().items():
        actions, categories, materials = (rng.permutation(np.resize(np.arange(len(names)), count))
                                          for names in (CLASSES, CATEGORIES, MATERIALS))
        for i in range(count):
            specs.append(VideoSpec(len(specs), split, f"{split}_{i:05d}", CLASSES[actions[i]],
                                   list(CATEGORIES)[categories[i]], list(MATERIALS)[materials[i]]))
    return specs


def video_rng(config: PhysAVConfig, index: int) -> np.random.Generator:
    """The generator that renders video `index` of the dataset."""
    return np.random.default_rng([config.seed, _VIDEO_STREAM, index])


@dataclass
class _Body:
    """A simulated object and what its sound needs."""

    uid: int
    material: Material
    mass: float
    size: float  # metres, cube root of its bounding-box volume
    impacts: list[tuple[float, float]] = field(default_factory=list)  # (time s, velocity change m/s)
    slide: list[float] = field(default_factory=list)  # per physics step: sliding/rolling speed in contact
    last_impulse: dict[int, float] = field(default_factory=dict)  # last step's normal impulse per partner
    loud: dict[int, tuple[float, int]] = field(default_factory=dict)  # per partner: last step above the
    # threshold (time) and the impact it belongs to (index into `impacts`)


def render_video(config: PhysAVConfig, action: str, category: str, material: str,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate and render one video: frames (uint8 [T, H, W, 3] RGB), audio (float32 [T / fps *
    sample_rate] in [-1, 1]) and an info dict (action, object, material, impacts = the main
    object's contact frame indices, impact_times = their times in seconds, all_impacts = the contact
    frames of every object, distractors included, visible = share of
    frames where the main object is in view)."""
    import pybullet as pb

    if action not in CLASSES or category not in CATEGORIES or material not in MATERIALS:
        raise ValueError(f"unknown action/category/material {action!r}/{category!r}/{material!r}")
    client = _client()
    pb.resetSimulation(physicsClientId=client)
    pb.setGravity(0, 0, -GRAVITY, physicsClientId=client)
    pb.setTimeStep(1 / PHYSICS_HZ, physicsClientId=client)
    _floor(rng, client)

    main = _add_object(rng, client, CATEGORIES[category], material, (0.0, 0.0))
    others = [_add_object(rng, client, DISTRACTORS[rng.integers(len(DISTRACTORS))], str(rng.choice(list(MATERIALS))),
                          _ring_point(rng, 0.13, 0.25)) for _ in range(int(rng.integers(1, 3)))]
    bodies = [main, *others]
    for _ in range(round(SETTLE_SECONDS * PHYSICS_HZ)):
        pb.stepSimulation(physicsClientId=client)
    onset = round(rng.uniform(0.2, 1.2) / config.slow_motion * PHYSICS_HZ)  # steps before the event, 0.2-1.2 s
    # of video (drop/stack: at 0)
    start = _stage(action, rng, client, main, others)

    view, projection, light = _camera(rng, start, (config.camera_near, config.camera_far))
    steps_per_frame = round(PHYSICS_HZ / (config.fps * config.slow_motion))
    num_frames = config.num_frames()
    frames = np.empty((num_frames, config.size, config.size, 3), np.uint8)
    visible = 0
    for step in range(num_frames * steps_per_frame):
        if step % steps_per_frame == 0:
            image = pb.getCameraImage(config.size, config.size, view, projection, renderer=pb.ER_TINY_RENDERER,
                                      physicsClientId=client, **light)
            frames[step // steps_per_frame] = np.reshape(image[2], (config.size, config.size, 4))[..., :3]
            visible += bool((np.reshape(image[4], -1) == main.uid).any())
        if step == onset:
            _kick(action, rng, client, main, others)
        pb.stepSimulation(physicsClientId=client)
        _listen(client, bodies, (step + 1) / PHYSICS_HZ)

    audio = _soundtrack(bodies, config, num_frames, rng)
    def frames_of(body: _Body) -> list[int]:
        return sorted({min(round(t * config.slow_motion * config.fps), num_frames - 1) for t, _ in body.impacts})

    info = {"action": action, "object": category, "material": material, "impacts": frames_of(main),
            "impact_times": [t * config.slow_motion for t, _ in main.impacts],  # simulated -> video time
            "all_impacts": sorted(set().union(*map(frames_of, bodies))), "visible": visible / num_frames}
    return frames, audio, info


@cache
def _client() -> int:
    """This process's headless pybullet server."""
    import pybullet as pb

    return pb.connect(pb.DIRECT)


@cache
def _texture_dir() -> Path:
    """The floor textures (greyscale PNGs, tinted per video): pybullet loads textures from files
    only, so they are written once per machine into a fixed temporary folder (atomically: workers race)."""
    from matplotlib.image import imsave

    folder = Path(tempfile.gettempdir()) / f"mmssl_physav_textures_v{GENERATOR_VERSION}"
    folder.mkdir(exist_ok=True)
    coords = np.arange(64) / 64
    x, y = np.meshgrid(coords, coords)
    noise = np.random.default_rng(0).uniform(size=(8, 8)).repeat(8, 0).repeat(8, 1)
    patterns = [np.ones_like(x), (np.floor(4 * x) + np.floor(4 * y)) % 2, (np.floor(8 * x) + np.floor(8 * y)) % 2,
                np.floor(6 * (x + y)) % 2, noise, 0.5 + 0.5 * np.sin(2 * np.pi * 3 * x)]
    for k, pattern in enumerate(patterns[:FLOOR_TEXTURES]):
        path = folder / f"floor{k}.png"
        if not path.exists():
            partial = folder / f".floor{k}.{os.getpid()}.png"
            imsave(partial, np.repeat(np.uint8(255 * (0.6 + 0.4 * pattern))[..., None], 3, -1))
            os.replace(partial, path)
    return folder


@cache
def _mesh_bounds(mesh: str) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (min, max) of a pybullet_data OBJ mesh, in its own coordinates."""
    vertices = np.array([line.split()[1:4] for line in _mesh_path(mesh).read_text().splitlines()
                         if line.startswith("v ")],
                        dtype=float)
    return vertices.min(0), vertices.max(0)


def _floor(rng: np.random.Generator, client: int) -> None:
    """The floor: pybullet's plane with a random texture of the pool, tinted."""
    import pybullet as pb

    floor = pb.loadURDF(str(_mesh_path("plane.urdf")), physicsClientId=client)
    texture = pb.loadTexture(str(_texture_dir() / f"floor{rng.integers(FLOOR_TEXTURES)}.png"), physicsClientId=client)
    pb.changeVisualShape(floor, -1, textureUniqueId=texture, rgbaColor=[*rng.uniform(0.3, 1.0, 3), 1],
                         physicsClientId=client)
    pb.changeDynamics(floor, -1, lateralFriction=FLOOR_FRICTION, restitution=0.5, physicsClientId=client)


def _add_object(rng: np.random.Generator, client: int, kind: Category, material: str,
                place: tuple[float, float]) -> _Body:
    """An object of shape `kind` and `material` resting (after the settling steps) at `place`: its
    bounding-box volume (OBJECT_SIZE x its scale x 0.7-1.4)^3, proportions varied, colour drawn from one
    pool for all, mass from the material's density."""
    import pybullet as pb

    stuff = MATERIALS[material]
    stretch = 1 + rng.uniform(-kind.aspect, kind.aspect, 3)
    size = OBJECT_SIZE * kind.scale * rng.uniform(*SCALE_RANGE)
    if kind.mesh:
        low, high = _mesh_bounds(kind.mesh)
        extent = (high - low) * stretch
        scale = stretch * size / np.cbrt(np.prod(extent))
        half = 0.5 * (high - low) * scale
        middle = 0.5 * (high + low) * scale  # meshes are not centred on their origin: shift the frame by
        centre = -np.array([middle[0], -middle[2], middle[1]])  # the middle turned as the mesh is (y up -> z up)
        upright = pb.getQuaternionFromEuler([np.pi / 2, 0, 0])  # OBJ's y up -> z up
        shape = {"shapeType": pb.GEOM_MESH, "fileName": str(_mesh_path(kind.mesh)), "meshScale": list(scale)}
        collision = pb.createCollisionShape(**shape, collisionFramePosition=list(centre),
                                            collisionFrameOrientation=upright, physicsClientId=client)
        visual = pb.createVisualShape(**shape, visualFramePosition=list(centre), visualFrameOrientation=upright,
                                      physicsClientId=client)
        height = half[1]  # the y half-extent becomes the z half-extent
    else:
        dims = size * stretch
        if kind.primitive == "box":
            shape = visual_shape = {"shapeType": pb.GEOM_BOX, "halfExtents": list(0.5 * dims)}
            height = 0.5 * dims[2]
        elif kind.primitive == "sphere":  # the radius of a ball of the box's volume
            height = 0.5 * size * np.cbrt(6 / np.pi)
            shape = visual_shape = {"shapeType": pb.GEOM_SPHERE, "radius": height}
        else:  # cylinder: the radius from x, the length from z
            height = 0.5 * dims[2]
            shape = {"shapeType": pb.GEOM_CYLINDER, "radius": 0.5 * dims[0], "height": dims[2]}
            visual_shape = {"shapeType": pb.GEOM_CYLINDER, "radius": 0.5 * dims[0], "length": dims[2]}
        collision = pb.createCollisionShape(**shape, physicsClientId=client)
        visual = pb.createVisualShape(**visual_shape, physicsClientId=client)
    mass = 0.5 * stuff.density * size ** 3
    yaw = pb.getQuaternionFromEuler([0, 0, rng.uniform(0, 2 * np.pi)])
    uid = pb.createMultiBody(mass, collision, visual, [place[0], place[1], height + 0.002], yaw,
                             physicsClientId=client)
    colour = rng.uniform(0.15, 1.0, 3)
    plain = pb.loadTexture(str(_texture_dir() / "floor0.png"), physicsClientId=client)  # flat white: it replaces
    # the texture a mesh brings (duck, torus), which would name the category
    pb.changeVisualShape(uid, -1, textureUniqueId=plain, rgbaColor=[*colour, 1], physicsClientId=client)
    pb.changeDynamics(uid, -1, restitution=stuff.restitution, lateralFriction=stuff.friction,
                      rollingFriction=0.0005, spinningFriction=0.002, physicsClientId=client)
    return _Body(uid, stuff, mass, size)


def _mesh_path(mesh: str) -> Path:
    """A file of pybullet_data."""
    import pybullet_data

    return Path(pybullet_data.getDataPath()) / mesh


def _ring_point(rng: np.random.Generator, low: float, high: float) -> tuple[float, float]:
    """A random point at distance low..high from the origin."""
    angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(low, high)
    return radius * np.cos(angle), radius * np.sin(angle)


def _position(client: int, body: _Body) -> np.ndarray:
    import pybullet as pb

    return np.array(pb.getBasePositionAndOrientation(body.uid, physicsClientId=client)[0])


def _stage(action: str, rng: np.random.Generator, client: int, main: _Body, others: list[_Body]) -> np.ndarray:
    """Set the scene up for `action` once the objects rest; returns where the camera looks."""
    import pybullet as pb

    here = _position(client, main)
    if action in ("drop", "stack"):  # released in the air at the first frame, above the floor or another object
        below = _position(client, others[0]) if action == "stack" else here
        lifted = [below[0] + rng.uniform(-0.02, 0.02), below[1] + rng.uniform(-0.02, 0.02),
                  below[2] + rng.uniform(0.1, 0.2)]
        tilt = pb.getQuaternionFromEuler(list(rng.uniform(-0.5, 0.5, 2)) + [rng.uniform(0, 2 * np.pi)])
        pb.resetBasePositionAndOrientation(main.uid, lifted, tilt, physicsClientId=client)
        return np.array([below[0], below[1], 0.05])
    return np.array([here[0], here[1], 0.05])


def _kick(action: str, rng: np.random.Generator, client: int, main: _Body, others: list[_Body]) -> None:
    """Start the event of `action` (drop and stack started at the first frame: nothing to do)."""
    import pybullet as pb

    def launch(body: _Body, velocity: list[float], spin: list[float] | None = None) -> None:
        pb.resetBaseVelocity(body.uid, velocity, spin or [0.0, 0.0, 0.0], physicsClientId=client)

    heading = rng.uniform(0, 2 * np.pi)
    ahead = [np.cos(heading), np.sin(heading)]
    if action == "throw":
        launch(main, [*(rng.uniform(-0.15, 0.15, 2)), rng.uniform(1.2, 1.8)], list(rng.uniform(-4, 4, 3)))
    elif action == "push":
        speed = rng.uniform(0.6, 1.1)
        launch(main, [speed * ahead[0], speed * ahead[1], 0.0])
    elif action == "spin":
        launch(main, [0.0, 0.0, 0.0], [0.0, 0.0, rng.choice([-1, 1]) * rng.uniform(15, 30)])
    elif action == "topple":  # a turn about a horizontal axis: tips over (or rolls a bit)
        rate = rng.uniform(6, 10)
        launch(main, [0.0, 0.0, 0.3], [-rate * ahead[1], rate * ahead[0], 0.0])
    elif action in ("collide", "hit"):  # the main object slides into another, or another into it
        mover, target = (main, others[0]) if action == "collide" else (others[0], main)
        gap = _position(client, target)[:2] - _position(client, mover)[:2]
        distance = np.linalg.norm(gap)
        direction = gap / distance
        # fast enough to arrive at 0.5-1 m/s, were it sliding all the way (pybullet multiplies frictions)
        speed = np.sqrt(2 * FLOOR_FRICTION * mover.material.friction * GRAVITY * distance + rng.uniform(0.5, 1.0) ** 2)
        launch(mover, [speed * direction[0], speed * direction[1], 0.05])


def _camera(rng: np.random.Generator, target: np.ndarray, distance: tuple[float, float]) -> tuple[list, list, dict]:
    """View and projection matrices looking at `target` from a random yaw, pitch and `distance` (a
    range, m), and a random light."""
    import pybullet as pb

    aim = target + np.array([*rng.uniform(-0.02, 0.02, 2), 0.0])
    view = pb.computeViewMatrixFromYawPitchRoll(list(aim), rng.uniform(*distance), rng.uniform(0, 360),
                                                rng.uniform(-45, -15), 0, 2)
    projection = pb.computeProjectionMatrixFOV(40, 1.0, 0.05, 10)
    light = {"lightDirection": [*rng.uniform(-1, 1, 2), rng.uniform(0.5, 1.5)],
             "lightColor": list(rng.uniform(0.8, 1.0, 3)), "lightAmbientCoeff": rng.uniform(0.4, 0.7),
             "lightDiffuseCoeff": rng.uniform(0.4, 0.7), "shadow": 0}
    return view, projection, light


def _listen(client: int, bodies: list[_Body], time: float) -> None:
    """Record the last step's contacts of every body. Per partner (the floor or another object), an
    impact is a jump of their normal impulse over the step before by more than IMPACT_DV x their
    reduced mass (a resting contact's steady impulse makes none; a bounce or a landing edge does),
    heard by both objects at the loudness of the jump; and a body's speed while it slides or rolls."""
    import pybullet as pb

    step = 1 / PHYSICS_HZ
    masses = {body.uid: body.mass for body in bodies}
    for body in bodies:
        contacts = pb.getContactPoints(bodyA=body.uid, physicsClientId=client)
        impulses: dict[int, float] = {}
        for contact in contacts:  # contact[2]: the partner's id, contact[9]: the normal force
            impulses[contact[2]] = impulses.get(contact[2], 0.0) + contact[9] * step
        for partner, impulse in impulses.items():
            other = masses.get(partner)  # None: the floor, of infinite mass
            reduced = body.mass if other is None else body.mass * other / (body.mass + other)
            dv = (impulse - body.last_impulse.get(partner, 0.0)) / reduced
            if dv > IMPACT_DV:
                last, index = body.loud.get(partner, (-1.0, len(body.impacts)))
                if time - last > 4 * step:  # a new contact: its click starts now
                    index = len(body.impacts)
                    body.impacts.append((time, dv))
                else:  # the same contact still building up: as loud as its largest jump
                    body.impacts[index] = (body.impacts[index][0], max(dv, body.impacts[index][1]))
                body.loud[partner] = (time, index)
        body.last_impulse = impulses
        linear, angular = pb.getBaseVelocity(body.uid, physicsClientId=client)
        speed = np.linalg.norm(linear) + 0.5 * body.size * np.linalg.norm(angular)
        body.slide.append(speed if contacts else 0.0)


def _soundtrack(bodies: list[_Body], config: PhysAVConfig, num_frames: int,
                rng: np.random.Generator) -> np.ndarray:
    """Mono audio of every body, in video time (simulated time x slow_motion): at each impact, its
    material's modes (damped sinusoids, random phase) starting at the impact's exact sample, amplitude
    following the velocity change; while it slides or rolls faster than MIN_SLIDE, noise in its
    material's band, loudness following the speed."""
    rate = config.sample_rate
    num_samples = round(num_frames / config.fps * rate)
    audio = np.zeros(num_samples)
    sample_times = np.arange(num_samples) / rate
    for body in bodies:
        for time, dv in body.impacts:
            start = round(time * config.slow_motion * rate)
            if start >= num_samples:
                continue
            t = sample_times[:num_samples - start]
            ring = sum(weight * np.exp(-t / decay) * np.sin(2 * np.pi * hz * t + rng.uniform(0, np.pi / 2))
                       for hz, weight, decay in body.material.modes)
            audio[start:] += CLICK_GAIN * min(dv / FULL_DV, 1.0) * ring
        speeds = np.asarray(body.slide)
        speeds[speeds < MIN_SLIDE] = 0.0  # a resting object's jitter is silent
        if speeds.any():
            step_times = np.arange(1, len(speeds) + 1) / PHYSICS_HZ * config.slow_motion
            loudness = NOISE_GAIN * np.clip(np.interp(sample_times, step_times, speeds) / FULL_SLIDE, 0, 1)
            audio += loudness * _band_noise(rng, num_samples, rate, body.material.noise_hz)
    return np.clip(audio, -1, 1).astype(np.float32)


def _band_noise(rng: np.random.Generator, count: int, rate: int, centre: float) -> np.ndarray:
    """Unit-RMS noise in a band around `centre` Hz (a Gaussian window, one octave wide)."""
    spectrum = np.fft.rfft(rng.standard_normal(count))
    hz = np.fft.rfftfreq(count, 1 / rate)
    spectrum *= np.exp(-0.5 * (np.log2(np.maximum(hz, 1.0) / centre) / 0.5) ** 2)
    noise = np.fft.irfft(spectrum, count)
    return noise / max(noise.std(), 1e-12)


def make_video(config: PhysAVConfig, spec: VideoSpec, out_dir: Path) -> ManifestRow:
    """Simulate, render, encode and probe one video of the dataset; returns its manifest row."""
    frames, audio, info = render_video(config, spec.action, spec.category, spec.material,
                                       video_rng(config, spec.index))
    path = out_dir / "videos" / spec.split / f"{spec.name}.mp4"
    write_media(path, frames, config.fps, audio, config.sample_rate)
    return ManifestRow.from_info(path, probe(path), label=spec.label, split=spec.split, action=spec.action,
                                 object=spec.category, material=spec.material,
                                 impacts=";".join(map(str, info["impacts"])))


def generate(out_dir: str | Path, config: PhysAVConfig | None = None, workers: int | None = None) -> Path:
    """Generate PhysAV into `out_dir` (videos/<split>/<name>.mp4, manifest.csv, physav.json) and
    return the manifest path. Does nothing when the folder already holds a complete dataset made
    with the same config. `workers` processes simulate and encode in parallel (default: all cores;
    1 runs in this process); the result does not depend on it."""
    return generate_dataset(out_dir, config or PhysAVConfig(), GENERATOR_VERSION, CONFIG_NAME, "PhysAV", plan,
                            make_video, workers)


def ensure_physav(out_dir: str | Path, config: PhysAVConfig | None = None, workers: int | None = None) -> Path:
    """The manifest of the PhysAV dataset in `out_dir`, generated on first use (`ensure_dataset`:
    without `config`, a complete PhysAV folder is accepted whatever its settings)."""
    return ensure_dataset(out_dir, config, PhysAVConfig, GENERATOR_VERSION, CONFIG_NAME, generate, workers)
