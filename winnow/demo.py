"""`winnow demo`: a local Winnow with a generated street-scene dataset, in one command.

The images are drawn with Pillow from a seed, so every run makes the same dataset: streets with
sky, buildings, road, cars and pedestrians under six weather scenarios at realistic, imbalanced
rates (snow and fog are rare), recorded in sequences whose consecutive frames are near-duplicates
(a car waiting at a light records dozens). Each image has custom metadata in the shape of Lightly's
autonomous-driving example: `weather.scenario`, `weather.temperature`, `number_of_pedestrians`,
plus `number_of_cars`, `time_of_day`, `camera`, `sequence` and `frame`.

`run()` uses the embedded default (SQLite and files under var/, tasks in-process), migrates, creates
the user `demo` and a token, starts `runserver`, and loads the dataset through the real API with the
Python client. Running it again reuses the dataset. Only `run()` imports Django.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageDraw, ImageFilter

from winnow.waiting import NotAnswering, wait_for_http

WIDTH, HEIGHT = 320, 240
DATASET_NAME = "Street scenes (demo)"
# scenario -> share of sequences. Rare scenarios are what a curation tool has to find.
SCENARIOS = {"sunny": 0.44, "cloudy": 0.25, "rainy": 0.13, "night": 0.10, "foggy": 0.05, "snowy": 0.03}
TEMPERATURE = {
    "sunny": (16, 33),
    "cloudy": (6, 22),
    "rainy": (4, 18),
    "night": (2, 20),
    "foggy": (0, 12),
    "snowy": (-12, 1),
}
CAMERAS = {"front": 0.6, "front-left": 0.2, "front-right": 0.2}
CAR_COLOURS = [
    (200, 30, 30),
    (30, 60, 170),
    (230, 230, 230),
    (25, 25, 25),
    (120, 120, 130),
    (200, 170, 40),
    (30, 120, 60),
    (150, 40, 120),
]
FIELDS = [
    ("weather.scenario", "categorical_string", "Weather"),
    ("weather.temperature", "float", "Temperature (°C)"),
    ("number_of_pedestrians", "int", "Pedestrians"),
    ("number_of_cars", "int", "Cars"),
    ("time_of_day", "categorical_string", "Time of day"),
    ("camera", "categorical_string", "Camera"),
]


@dataclass
class Scene:
    scenario: str
    time_of_day: str
    camera: str
    temperature: float
    horizon: int
    buildings: list  # (x0, x1, height, colour, window colour)
    cars: list  # (x, lane depth 0..1, colour, dx per frame)
    pedestrians: list  # (x, depth 0..1, colour, dx per frame)
    seed: int


# --- the dataset ---------------------------------------------------------------------------------


def generate(out_dir: str | os.PathLike, n_images: int = 2000, seed: int = 0) -> list[tuple[str, dict]]:
    """Write `n_images` JPEGs under `out_dir` (camera/seqNNNN_fNNN.jpg); return (file name, metadata) pairs.

    Deterministic for a seed. Images already on disk are not drawn again.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, dict]] = []
    sequence = 0
    while len(pairs) < n_images:
        scene = _scene(rng)
        # Most sequences are short; a few are long bursts (a car waiting at a light).
        length = int(rng.integers(20, 45)) if rng.random() < 0.08 else int(rng.geometric(0.3))
        length = min(length, n_images - len(pairs))
        for frame in range(length):
            name = f"{scene.camera}/seq{sequence:04d}_f{frame:03d}.jpg"
            counts = _counts(scene, frame)
            metadata = {
                "weather": {"scenario": scene.scenario, "temperature": round(scene.temperature + 0.05 * frame, 1)},
                "number_of_pedestrians": counts[1],
                "number_of_cars": counts[0],
                "time_of_day": scene.time_of_day,
                "camera": scene.camera,
                "sequence": f"seq{sequence:04d}",
                "frame": frame,
            }
            path = out / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                draw_frame(scene, frame).save(path, "JPEG", quality=85)
            pairs.append((name, metadata))
        sequence += 1
    return pairs


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _scene(rng: np.random.Generator) -> Scene:
    scenario = _choice(rng, SCENARIOS)
    if scenario == "night":
        time_of_day = "night"
    else:
        time_of_day = _choice(rng, {"day": 0.8, "dusk": 0.12, "dawn": 0.08})
    low, high = TEMPERATURE[scenario]
    horizon = int(rng.integers(95, 125))
    buildings = []
    x = -10
    while x < WIDTH:
        width = int(rng.integers(30, 80))
        grey = int(rng.integers(80, 200))
        tint = rng.integers(-25, 25, size=3)
        colour = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
        buildings.append((x, x + width, int(rng.integers(35, horizon - 5)), colour, bool(rng.random() < 0.5)))
        x += width + int(rng.integers(0, 12))
    busy = rng.random()
    n_cars = int(rng.poisson(2.5 if busy > 0.3 else 0.6))
    n_people = int(rng.poisson(3.0 if busy > 0.6 else 0.4))
    if scenario in ("snowy", "rainy", "night"):
        n_people = int(n_people * 0.5)
    cars = [
        (
            float(rng.uniform(-40, WIDTH)),
            float(rng.uniform(0.05, 1.0)),
            CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))],
            float(rng.uniform(-6, 6)),
        )
        for _ in range(n_cars)
    ]
    people = [
        (
            float(rng.uniform(0, WIDTH)),
            float(rng.uniform(0.1, 1.0)),
            tuple(int(c) for c in rng.integers(20, 230, size=3)),
            float(rng.uniform(-2, 2)),
        )
        for _ in range(n_people)
    ]
    return Scene(
        scenario,
        time_of_day,
        _choice(rng, CAMERAS),
        float(rng.uniform(low, high)),
        horizon,
        buildings,
        cars,
        people,
        int(rng.integers(2**31)),
    )


def _counts(scene: Scene, frame: int) -> tuple[int, int]:
    """Cars and pedestrians inside the picture in this frame."""
    cars = sum(1 for x, _d, _c, dx in scene.cars if -30 < x + dx * frame < WIDTH)
    people = sum(1 for x, _d, _c, dx in scene.pedestrians if 0 <= x + dx * frame < WIDTH)
    return cars, people


def _sky(scene: Scene) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    top, bottom = {
        "sunny": ((70, 140, 225), (170, 210, 245)),
        "cloudy": ((140, 150, 165), (190, 195, 200)),
        "rainy": ((85, 90, 100), (130, 135, 140)),
        "foggy": ((200, 203, 205), (215, 217, 218)),
        "snowy": ((175, 180, 190), (215, 218, 222)),
        "night": ((8, 10, 30), (30, 35, 60)),
    }[scene.scenario]
    if scene.time_of_day in ("dusk", "dawn"):
        top = tuple(int(c * 0.7) for c in top)
        bottom = (min(255, bottom[0] + 60), max(0, bottom[1] - 10), max(0, bottom[2] - 60))
    return top, bottom


def draw_frame(scene: Scene, frame: int) -> Image.Image:
    """One frame of a scene; consecutive frames differ by a few pixels of motion and noise."""
    rng = np.random.default_rng(scene.seed + frame)
    night = scene.scenario == "night"
    img = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(img)
    top, bottom = _sky(scene)
    for y in range(scene.horizon):
        t = y / max(1, scene.horizon - 1)
        draw.line([(0, y), (WIDTH, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    if scene.scenario == "sunny" and scene.time_of_day == "day":
        draw.ellipse([250, 15, 280, 45], fill=(255, 245, 200))
    if scene.scenario == "cloudy":
        for i in range(4):
            cx = (40 + 80 * i + 3 * frame) % (WIDTH + 60) - 30
            draw.ellipse([cx, 15 + 7 * (i % 2), cx + 70, 40 + 7 * (i % 2)], fill=(215, 218, 222))

    shift = {"front": 0, "front-left": -25, "front-right": 25}[scene.camera]
    for x0, x1, height, colour, lit in scene.buildings:
        x0, x1 = x0 + shift, x1 + shift
        y0 = scene.horizon - height
        shade = tuple(int(c * (0.35 if night else 1.0)) for c in colour)
        draw.rectangle([x0, y0, x1, scene.horizon], fill=shade)
        window = (255, 220, 120) if night and lit else tuple(int(c * 0.6) for c in shade)
        for wy in range(y0 + 5, scene.horizon - 8, 11):
            for wx in range(x0 + 4, x1 - 6, 10):
                draw.rectangle([wx, wy, wx + 4, wy + 5], fill=window)

    road = (70, 70, 75) if not night else (30, 30, 35)
    if scene.scenario == "rainy":
        road = (55, 58, 65)
    vanish = WIDTH // 2 + shift
    draw.rectangle([0, scene.horizon, WIDTH, HEIGHT], fill=(110, 105, 100) if not night else (40, 40, 40))
    draw.polygon(
        [(vanish - 8, scene.horizon), (vanish + 8, scene.horizon), (WIDTH + 80, HEIGHT), (-80, HEIGHT)], fill=road
    )
    if scene.scenario == "snowy":
        snow = (235, 238, 242)
        draw.polygon([(0, scene.horizon), (vanish - 10, scene.horizon), (-60, HEIGHT), (0, HEIGHT)], fill=snow)
        draw.polygon(
            [(WIDTH, scene.horizon), (vanish + 10, scene.horizon), (WIDTH + 60, HEIGHT), (WIDTH, HEIGHT)], fill=snow
        )
    dash_offset = (frame * 9) % 30
    for k in range(10):
        t0 = ((k * 30 + dash_offset) % 300) / 300
        t1 = min(1.0, t0 + 0.05)
        y0 = scene.horizon + (HEIGHT - scene.horizon) * t0**2
        y1 = scene.horizon + (HEIGHT - scene.horizon) * t1**2
        draw.line([(vanish, y0), (vanish, y1)], fill=(230, 230, 200), width=max(1, int(4 * t1)))

    # Far objects first, so near ones cover them.
    objects = [("car", *c) for c in scene.cars] + [("person", *p) for p in scene.pedestrians]
    for kind, x, depth, colour, dx in sorted(objects, key=lambda o: o[2]):
        y = scene.horizon + (HEIGHT - scene.horizon) * (0.15 + 0.85 * depth)
        scale = 0.3 + 1.1 * depth
        x = x + dx * frame + shift * depth
        if kind == "car":
            _car(draw, x, y, scale, colour, night)
        else:
            _person(draw, x, y, scale, tuple(int(c * 0.45) for c in colour) if night else colour)

    if scene.scenario == "rainy":
        for _ in range(220):
            x, y = rng.integers(0, WIDTH), rng.integers(0, HEIGHT)
            draw.line([(x, y), (x - 2, y + 9)], fill=(175, 180, 195), width=1)
    if scene.scenario == "snowy":
        for _ in range(260):
            x, y = rng.integers(0, WIDTH), rng.integers(0, HEIGHT)
            r = int(rng.integers(1, 3))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(250, 250, 252))
    if scene.scenario == "foggy":
        img = Image.blend(img, Image.new("RGB", img.size, (212, 214, 216)), 0.55).filter(ImageFilter.GaussianBlur(1.5))
    noise = rng.normal(0, 4, size=(HEIGHT, WIDTH, 1))
    pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _car(draw: ImageDraw.ImageDraw, x: float, y: float, scale: float, colour, night: bool) -> None:
    w, h = 46 * scale, 18 * scale
    body = tuple(int(c * 0.5) for c in colour) if night else colour
    draw.rounded_rectangle([x, y - h, x + w, y], radius=max(1, int(4 * scale)), fill=body)
    draw.rectangle([x + 0.2 * w, y - 1.6 * h, x + 0.8 * w, y - h], fill=body)
    glass = (20, 25, 35) if night else (150, 190, 210)
    draw.rectangle([x + 0.26 * w, y - 1.5 * h, x + 0.74 * w, y - 1.05 * h], fill=glass)
    r = 5 * scale
    for cx in (x + 0.22 * w, x + 0.78 * w):
        draw.ellipse([cx - r, y - r, cx + r, y + r], fill=(15, 15, 15))
    if night:
        for cx in (x + 0.08 * w, x + 0.92 * w):
            draw.ellipse([cx - 2.5 * scale, y - 0.6 * h, cx + 2.5 * scale, y - 0.3 * h], fill=(255, 250, 210))


def _person(draw: ImageDraw.ImageDraw, x: float, y: float, scale: float, colour) -> None:
    h = 34 * scale
    head = 3.5 * scale
    draw.ellipse([x - head, y - h, x + head, y - h + 2 * head], fill=(225, 190, 160))
    draw.rectangle([x - 3.5 * scale, y - h + 2 * head, x + 3.5 * scale, y - 0.45 * h], fill=colour)
    draw.line([(x, y - 0.45 * h), (x - 3 * scale, y)], fill=(40, 40, 60), width=max(1, int(2 * scale)))
    draw.line([(x, y - 0.45 * h), (x + 3 * scale, y)], fill=(40, 40, 60), width=max(1, int(2 * scale)))


# --- the server ----------------------------------------------------------------------------------


def run(host: str = "127.0.0.1", port: int = 8000, images: int = 2000, seed: int = 0, serve: bool = True) -> int:
    """Migrate, create the demo user and token, start the server, load the dataset, serve until Ctrl-C."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "winnow.settings")
    # runserver serves static files only with DEBUG on; the demo is a local, single-user install.
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("WINNOW_SITE_URL", f"http://{host}:{port}")
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    base_dir = Path(settings.BASE_DIR)
    demo_dir = Path(settings.VAR_DIR) / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    database = settings.DATABASES["default"]
    print(f"database: {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}")
    call_command("migrate", interactive=False, verbosity=0)
    password, token = _demo_user(demo_dir)

    server_url = f"http://{host}:{port}"
    server = _start_server(base_dir, host, port, demo_dir / "server.log")
    try:
        _load(server_url, token, demo_dir, images, seed)
        print()
        print(f"  Winnow is running at {server_url}/")
        print(f"  login:    demo / {password}")
        print(f"  token:    {token}")
        print(f"  API docs: {server_url}/api/docs/")
        print(f"  server log: {demo_dir / 'server.log'}")
        if not serve:
            return 0
        print("  press Ctrl-C to stop")
        while server.poll() is None:
            time.sleep(0.5)
        print(f"the server stopped (exit {server.returncode}); see {demo_dir / 'server.log'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


def _demo_user(demo_dir: Path) -> tuple[str, str]:
    """The `demo` user (password kept in var/demo/password, made once) and a fresh token."""
    from django.contrib.auth import get_user_model

    from winnow.accounts.models import ApiToken

    password_file = demo_dir / "password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(9))
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    user_model = get_user_model()
    user, _created = user_model.objects.get_or_create(username="demo")
    if not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
    # A token's secret is never stored, so each run issues a new one and retires the previous ones.
    for old in ApiToken.objects.active().filter(user=user, name="demo"):
        old.revoke()
    _token, key = ApiToken.issue(user, "demo")
    return password, key


def _start_server(base_dir: Path, host: str, port: int, log_path: Path) -> subprocess.Popen:
    url = f"http://{host}:{port}/api/v1/health"
    try:
        requests.get(url, timeout=1)
    except requests.ConnectionError:
        pass
    else:
        raise SystemExit(f"error: something already answers on {host}:{port}; stop it or pass --port")
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, str(base_dir / "manage.py"), "runserver", f"{host}:{port}", "--noreload"],
        cwd=base_dir,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(url, proc, timeout=60, statuses=range(200, 400))  # requests' `ok`
    except NotAnswering as exc:
        if exc.exited:
            raise SystemExit(f"error: the server exited at start; see {log_path}") from None
        proc.terminate()
        raise SystemExit(f"error: the server did not answer on {host}:{port} within 60 s; see {log_path}") from None
    return proc


def _load(server_url: str, token: str, demo_dir: Path, images: int, seed: int) -> None:
    """Generate (once) and upload the dataset through the API, embed it, configure its fields."""
    from winnow.client import Client, format_custom_metadata, save_custom_metadata
    from winnow.client.formats import save_embeddings

    image_dir = demo_dir / f"images-{images}-{seed}"
    print(f"generating {images} street scenes in {image_dir} ...")
    pairs = generate(image_dir, images, seed)
    metadata = format_custom_metadata(pairs)
    save_custom_metadata(demo_dir / f"metadata-{images}-{seed}.json", metadata)

    client = Client(token=token, server=server_url, retries=5)
    existing = next((d for d in client.list_datasets() if d["name"] == DATASET_NAME), None)
    if existing:
        client.dataset_id = existing["id"]
        print(f"reusing dataset {DATASET_NAME!r} ({existing['sample_count']} samples)")
    else:
        client.create_dataset(DATASET_NAME, upload_mode="full")
    # Two workers: SQLite takes one writer at a time.
    summary = client.upload_dataset(image_dir, metadata=metadata, workers=2)
    print(f"uploaded {summary['created']} images ({summary['skipped']} already there)")
    for entry in summary["rejected"]:
        print(f"rejected {entry['file_name']}: {entry['reason']}", file=sys.stderr)

    if not any(e["name"] == "default" for e in client.list_embeddings()):
        # The server embeds after an upload that adds images; an earlier interrupted run may have added them all.
        from winnow.client.embedder import embed_folder

        print("embedding the images ...")
        names, vectors = embed_folder(image_dir, sorted(client.existing_file_names()), seed=seed)
        csv_path = demo_dir / "embeddings.csv"
        save_embeddings(csv_path, vectors, [0] * len(names), names)
        client.upload_embeddings(csv_path, "default")

    configured = {field["path"] for field in client.list_fields()}
    for path, field_type, display in FIELDS:
        if path not in configured:
            client.configure_field(path, field_type, display_name=display)
    # The street scenes hold bursts of near-identical frames: the Duplicates page shows them grouped.
    if not client.list_similarity_runs("duplicates"):
        found = client.find_duplicates(progress=False)["summary"]
        print(f"duplicates: {found['groups']} groups of near-identical frames ({found['removable']} extra copies)")
    (demo_dir / "dataset.json").write_text(json.dumps({"id": client.dataset_id, "url": client.dataset_url()}))
    print(f"dataset: {client.dataset_url()}")
