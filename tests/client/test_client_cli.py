"""The Python client and the `winnow` CLI end to end, against a live server on the test database.

As a new user would: a folder of JPEG and PNG photos plus a metadata JSON, one `winnow magic`
command, then the data is visible through the API.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from winnow.accounts.models import ApiToken
from winnow.client import (
    Client,
    WinnowError,
    format_custom_metadata,
    load_embeddings,
    save_custom_metadata,
    save_embeddings,
)

ROOT = Path(__file__).resolve().parents[2]
# The live server reads what the test wrote, from other threads: the data must be committed.
live = pytest.mark.django_db(transaction=True)


def _picture(i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    img = Image.new("RGB", (64 + 8 * i, 48), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(0, 40, 2))
        draw.ellipse([x, y, x + 20, y + 20], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


@pytest.fixture
def photos(tmp_path) -> tuple[Path, Path, list[str]]:
    """A folder of 8 JPEGs and PNGs (some in a subfolder), one corrupt JPEG, a text file, and metadata JSON."""
    folder = tmp_path / "photos"
    (folder / "city").mkdir(parents=True)
    names = []
    for i in range(8):
        name = f"city/img_{i}.png" if i % 3 == 0 else f"img_{i}.jpg"
        _picture(i).save(folder / name)
        names.append(name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "notes.txt").write_text("not an image")
    pairs = [
        (
            name,
            {"weather": {"scenario": ["sunny", "rainy"][i % 2], "temperature": 10.5 + i}, "number_of_pedestrians": i},
        )
        for i, name in enumerate(names)
    ]
    pairs.append(("broken.jpg", {"weather": {"scenario": "foggy", "temperature": 1.0}, "number_of_pedestrians": 0}))
    metadata = tmp_path / "metadata.json"
    save_custom_metadata(metadata, pairs)
    return folder, metadata, sorted(names)


@pytest.fixture
def token(owner) -> str:
    return ApiToken.issue(owner, "cli")[1]


@pytest.fixture
def client(live_server, token):
    with Client(token=token, server=live_server.url) as client:
        yield client


def winnow(live_server, token, *args: str) -> subprocess.CompletedProcess:
    """Run the `winnow` CLI in a process of its own, as a user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINNOW_")}
    env.update({"WINNOW_TOKEN": token, "WINNOW_SERVER": live_server.url})
    return subprocess.run(
        [sys.executable, "-m", "winnow.client.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@live
def test_magic_uploads_images_metadata_and_embeds(live_server, token, client, photos):
    folder, metadata, names = photos
    result = winnow(
        live_server,
        token,
        "magic",
        "--input-dir",
        str(folder),
        "--new-dataset-name",
        "holiday",
        "--custom-metadata",
        str(metadata),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    # The corrupt file is named with its reason; the rest landed.
    rejected = [line for line in result.stderr.splitlines() if line.startswith("rejected ")]
    assert len(rejected) == 1 and rejected[0].startswith("rejected broken.jpg: ")
    assert "8 uploaded" in result.stdout
    url_line = next(line for line in result.stdout.splitlines() if line.startswith("dataset: "))
    dataset_id = url_line.rsplit("/", 1)[1]
    assert url_line == f"dataset: {live_server.url}/datasets/{dataset_id}"
    assert "broken.jpg" in result.stderr  # its metadata entry names a file that is not in the dataset

    client.dataset_id = dataset_id
    dataset = client.get_dataset()
    assert dataset["name"] == "holiday" and dataset["upload_mode"] == "full" and dataset["sample_count"] == 8
    samples = {s["file_name"]: s for s in client.list_samples()}
    assert sorted(samples) == names
    assert samples["img_1.jpg"]["metadata"] == {
        "weather": {"scenario": "rainy", "temperature": 11.5},
        "number_of_pedestrians": 1,
    }
    assert samples["city/img_3.png"]["width"] == 88 and samples["city/img_3.png"]["height"] == 48
    assert samples["img_1.jpg"]["thumbnail_url"] and samples["img_1.jpg"]["image_url"]
    # The server's built-in embedder ran once the upload was complete.
    embedding = client.get_embedding("default")
    assert embedding["source"] == "builtin" and embedding["count"] == 8


@live
def test_magic_meta_mode_sends_no_pixels_and_embeds_locally(live_server, token, client, photos):
    folder, metadata, names = photos
    result = winnow(
        live_server,
        token,
        "magic",
        "--input-dir",
        str(folder),
        "--new-dataset-name",
        "private",
        "--mode",
        "meta",
        "--custom-metadata",
        str(metadata),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "rejected broken.jpg: not a readable image" in result.stderr
    dataset_id = result.stdout.strip().splitlines()[-1].rsplit("/", 1)[1]
    client.dataset_id = dataset_id
    samples = {s["file_name"]: s for s in client.list_samples()}
    assert sorted(samples) == names
    assert all(s["thumbnail_url"] is None and s["image_url"] is None for s in samples.values())
    assert samples["img_2.jpg"]["width"] == 80 and samples["img_2.jpg"]["metadata"]["number_of_pedestrians"] == 2
    embedding = client.get_embedding("default")
    assert embedding["source"] == "csv" and embedding["count"] == 8

    # Run again: nothing new, nothing re-sent, the embedding is kept.
    again = winnow(live_server, token, "magic", "--input-dir", str(folder), "--dataset-id", dataset_id, "--quiet")
    assert again.returncode == 0, again.stderr
    assert "0 uploaded, 8 already there" in again.stdout
    assert "up to date" in again.stdout
    assert client.get_embedding("default")["id"] == embedding["id"]


@live
def test_magic_with_embeddings_of_ones_own_skips_the_built_in_embedder(live_server, token, client, photos, tmp_path):
    folder, _metadata, names = photos
    own = tmp_path / "own.csv"
    save_embeddings(own, np.random.default_rng(0).normal(size=(8, 4)), list(range(8)), names)
    result = winnow(
        live_server,
        token,
        "magic",
        "--input-dir",
        str(folder),
        "--new-dataset-name",
        "own",
        "--mode",
        "thumbnails",
        "--embeddings",
        str(own),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    client.dataset_id = result.stdout.strip().splitlines()[-1].rsplit("/", 1)[1]
    assert [(e["name"], e["source"], e["dimension"]) for e in client.list_embeddings()] == [("default", "csv", 4)]

    again = winnow(
        live_server,
        token,
        "magic",
        "--input-dir",
        str(folder),
        "--dataset-id",
        client.dataset_id,
        "--embeddings",
        str(own),
        "--quiet",
    )
    assert again.returncode == 0, again.stderr
    assert "embedding 'default' already exists" in again.stdout
    assert len(client.list_embeddings()) == 1


@live
def test_upload_resumes_where_it_stopped(client, photos, tmp_path):
    folder, _metadata, names = photos
    client.create_dataset("resume", upload_mode="thumbnails")
    # An "interrupted" first upload: only part of the folder made it.
    partial = tmp_path / "partial"
    (partial / "city").mkdir(parents=True)
    for name in names[:3]:
        (partial / name).write_bytes((folder / name).read_bytes())
    first = client.upload_dataset(partial, progress=False)
    assert first["created"] == 3 and first["rejected"] == []

    second = client.upload_dataset(folder, progress=False, workers=3, batch_files=2)
    assert second["created"] == 5 and second["skipped"] == 3
    assert [r["file_name"] for r in second["rejected"]] == ["broken.jpg"]
    assert second["rejected"][0]["reason"]

    third = client.upload_dataset(folder, progress=False)
    assert third["created"] == 0 and third["skipped"] == 8
    assert sorted(client.existing_file_names()) == names
    assert client.get_dataset()["sample_count"] == 8


@live
def test_cli_upload_then_export_a_tag(live_server, token, client, photos, tmp_path):
    folder, _metadata, names = photos
    dataset_id = client.create_dataset("export me", upload_mode="full")
    result = winnow(live_server, token, "upload", "--input-dir", str(folder), "--dataset-id", dataset_id, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "rejected broken.jpg" in result.stderr

    client.create_tag_from_filenames("picked", names[:3])
    exported = winnow(
        live_server, token, "export", "--dataset-id", dataset_id, "--tag", "picked", "--format", "filenames"
    )
    assert exported.returncode == 0, exported.stderr
    assert sorted(exported.stdout.splitlines()) == sorted(names[:3])

    out = tmp_path / "picked.csv"
    exported = winnow(
        live_server,
        token,
        "export",
        "--dataset-id",
        dataset_id,
        "--tag",
        "picked",
        "--format",
        "csv",
        "--output",
        str(out),
    )
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(row["file_name"] for row in rows) == sorted(names[:3])

    assert sorted(client.export_tag("picked", "filenames")) == sorted(names[:3])
    assert sorted(s["file_name"] for s in client.export_tag("picked", "json")) == sorted(names[:3])
    tasks = client.export_tag("picked", "label-studio")
    assert len(tasks) == 3 and all(task["data"]["image"].startswith("http") for task in tasks)


@live
def test_tags_and_sampling_through_the_client(client, photos):
    folder, _metadata, names = photos
    client.create_dataset("sampling", upload_mode="full")
    client.upload_dataset(folder, progress=False)
    client.create_tag_from_filenames("first-four", names[:4])
    client.create_tag_from_filenames("last-six", names[2:])
    both = client.tag_arithmetic("middle", "intersection", "first-four", "last-six")
    assert both["count"] == 2
    assert sorted(client.export_tag("middle")) == sorted(names[2:4])
    assert sorted(s["file_name"] for s in client.list_samples(tag="middle")) == sorted(names[2:4])
    assert {t["name"] for t in client.list_tags()} >= {"first-four", "last-six", "middle"}

    run = client.create_sampling_run("coreset-5", "default", "coreset", n_samples=5)
    finished = client.wait_for_run(run["id"], progress=False, timeout=120)
    assert finished["status"] == "succeeded"
    scores = list(client.get_scores(run["id"]))
    assert [s["rank"] for s in scores] == list(range(1, len(scores) + 1)) and len(scores) == 8
    tag = client.create_tag_from_run("top-3", run["id"], 3)
    assert tag["count"] == 3
    assert sorted(client.export_tag("top-3")) == sorted(s["file_name"] for s in scores[:3])


@live
def test_cli_embed_and_metadata(live_server, token, client, photos, tmp_path):
    folder, _metadata, names = photos
    out = tmp_path / "embeddings.csv"
    result = winnow(live_server, token, "embed", "--input-dir", str(folder), "--output", str(out), "--quiet")
    assert result.returncode == 1  # the corrupt file could not be embedded: said, and the rest written
    assert "cannot embed" in result.stderr and "broken.jpg" in result.stderr
    vectors, labels, file_names = load_embeddings(out)
    assert file_names == names and vectors.shape[0] == 8 and labels == [0] * 8

    dataset_id = client.create_dataset("meta", upload_mode="meta")
    client.upload_dataset(folder, progress=False)
    assert client.upload_embeddings(out, "mine")["dimension"] == vectors.shape[1]

    doc = tmp_path / "more.json"
    save_custom_metadata(doc, [(name, {"camera": "front", "index": i}) for i, name in enumerate(names)])
    result = winnow(live_server, token, "metadata", "--dataset-id", dataset_id, "--file", str(doc))
    assert result.returncode == 0, result.stderr
    assert "8 samples updated" in result.stdout
    samples = {s["file_name"]: s["metadata"] for s in client.list_samples()}
    assert samples[names[5]] == {"camera": "front", "index": 5}

    # A metadata document naming a file that is not a sample: the server's message, and nothing changes.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(format_custom_metadata([("nope.jpg", {"camera": "rear"})])))
    result = winnow(live_server, token, "metadata", "--dataset-id", dataset_id, "--file", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "nope.jpg" in result.stderr
    assert {s["file_name"]: s["metadata"] for s in client.list_samples()} == samples


@live
def test_errors_carry_the_servers_message(live_server, token, client, outsider, photos):
    folder, _metadata, _names = photos
    with pytest.raises(WinnowError) as caught:
        client.get_dataset("0" * 24)
    assert caught.value.status == 404 and "No dataset" in str(caught.value)

    with pytest.raises(WinnowError) as caught:
        client.create_dataset("", upload_mode="full")
    assert caught.value.status == 400 and "name" in str(caught.value)

    result = winnow(live_server, "wnw_" + "x" * 40, "upload", "--input-dir", str(folder), "--dataset-id", "0" * 24)
    assert result.returncode == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr

    # Another user's dataset does not exist for this token.
    with Client(token=ApiToken.issue(outsider, "x")[1], server=live_server.url) as other:
        theirs = other.create_dataset("theirs", upload_mode="meta")
    result = winnow(live_server, token, "upload", "--input-dir", str(folder), "--dataset-id", theirs, "--quiet")
    assert result.returncode == 1 and "error: No dataset with that id." in result.stderr

    result = winnow(live_server, token, "magic", "--input-dir", str(folder / "missing"), "--new-dataset-name", "x")
    assert result.returncode == 1 and "is not a folder" in result.stderr

    unreachable = Client(token=token, server="http://127.0.0.1:9", retries=0)
    with pytest.raises(WinnowError, match="cannot reach"):
        unreachable.list_datasets()


def test_a_local_file_that_cannot_be_written_is_an_error_line_not_a_traceback(photos, tmp_path, capsys):
    from winnow.client.cli import main

    folder, _metadata, _names = photos
    out = tmp_path / "no such folder" / "embeddings.csv"
    assert main(["embed", "--input-dir", str(folder), "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: No such file or directory: {out}" in err


# --- the demo ----------------------------------------------------------------------------------------


def test_demo_generator_is_reproducible_with_lightly_shaped_metadata(tmp_path):
    from winnow.demo import SCENARIOS, generate

    pairs = generate(tmp_path / "a", 60, seed=3)
    again = generate(tmp_path / "b", 60, seed=3)
    assert [name for name, _ in pairs] == [name for name, _ in again]
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n, _ in pairs[:10])
    assert len({name for name, _ in pairs}) == 60
    for name, meta in pairs:
        assert meta["weather"]["scenario"] in SCENARIOS
        assert isinstance(meta["weather"]["temperature"], float)
        assert isinstance(meta["number_of_pedestrians"], int) and meta["number_of_pedestrians"] >= 0
        assert meta["camera"] in name and meta["time_of_day"] in ("day", "dusk", "dawn", "night")
    with Image.open(tmp_path / "a" / pairs[0][0]) as img:
        assert img.format == "JPEG" and img.size == (320, 240)
    # Bursts: consecutive frames of one sequence.
    assert max(meta["frame"] for _, meta in pairs) >= 1


def test_demo_runs_on_the_embedded_default_and_reuses_its_dataset(tmp_path):
    """`winnow demo` on SQLite with in-process tasks: the one smoke test of the embedded default."""
    import socket
    import sqlite3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "WINNOW_REQUIRE_SERVICES")
        and not k.startswith("AWS_")
    }
    env["WINNOW_VAR_DIR"] = str(tmp_path / "var")
    command = [sys.executable, "-m", "winnow.client.cli", "demo", "--images", "40", "--port", str(port), "--no-serve"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "uploaded 40 images" in first.stdout
    assert "login:    demo / " in first.stdout and "token:    wnw_" in first.stdout
    assert "groups of near-identical frames" in first.stdout  # a duplicate run over the bursts, on SQLite too

    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "reusing dataset" in second.stdout and "uploaded 0 images (40 already there)" in second.stdout

    with sqlite3.connect(tmp_path / "var" / "winnow.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM curation_dataset").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM curation_sample").fetchone()[0] == 40
        assert db.execute("SELECT name FROM curation_embedding").fetchall() == [("default",)]
        paths = {row[0] for row in db.execute("SELECT path FROM curation_metadatafield")}
        assert {"weather.scenario", "weather.temperature", "number_of_pedestrians"} <= paths


@live
def test_cli_sample_runs_auto_by_default_and_tags_its_picks(live_server, token, client, photos):
    folder, _metadata, _names = photos
    dataset_id = client.create_dataset("cli-sample", upload_mode="full")
    client.upload_dataset(folder, progress=False)
    result = winnow(
        live_server, token, "sample", "--dataset-id", dataset_id, "--n-samples", "3", "--tag", "label-first", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert "(auto) queued" in result.stdout and "tag 'label-first': 3 samples" in result.stdout
    run = next(
        r for r in client._json("GET", f"datasets/{dataset_id}/sampling-runs")["results"] if r["name"] == "auto-3"
    )
    assert run["strategy"] == "auto" and run["status"] == "succeeded"
    top3 = [s["file_name"] for s in client.get_scores(run["id"])][:3]
    assert sorted(client.export_tag("label-first")) == sorted(top3)

    # The client's default strategy is auto too.
    again = client.create_sampling_run("auto-again", "default", n_samples=3)
    assert again["strategy"] == "auto"

    bad = winnow(live_server, token, "sample", "--dataset-id", dataset_id, "--n-samples", "0")
    assert bad.returncode == 1 and "--n-samples" in bad.stderr
    too_many = winnow(live_server, token, "sample", "--dataset-id", dataset_id, "--n-samples", "99", "--quiet")
    assert too_many.returncode == 1 and "n_samples" in too_many.stderr
