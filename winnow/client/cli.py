"""The `winnow` command: put a folder of images into Winnow, embed it, export tags, run the demo.

    winnow magic --input-dir photos/ --new-dataset-name "street scenes" [--mode full|thumbnails|meta]
                 [--custom-metadata metadata.json] [--embeddings embeddings.csv]
    winnow upload --input-dir photos/ --dataset-id ID
    winnow embed --input-dir photos/ --output embeddings.csv [--model builtin|efficientnet-lite0]
    winnow embeddings --dataset-id ID --file embeddings.csv|matrix.npy [--file-names names.txt]
                      [--labels labels.npy] [--name NAME] [--no-wait] [--resume UPLOAD_ID]
    winnow metadata --dataset-id ID --file metadata.json
    winnow export --dataset-id ID --tag NAME_OR_ID --format filenames [--output FILE]
    winnow sample --dataset-id ID --n-samples N [--strategy auto] [--embedding default] [--tag NAME]
    winnow views --dataset-id ID list|save|tag|delete [--name NAME] [--filter JSON] [--sort PATH] [--tag-name NAME]
    winnow distances --dataset-id ID [--embedding NAME]
    winnow similar --dataset-id ID (--sample ID | --tag NAME [--each] | --image FILE) [--k 20] [--save-tag NAME]
    winnow duplicates --dataset-id ID [--threshold T] [--save-tag NAME [--keep first|largest|sharpest]
                      [--tag-mode keepers|deduplicated|duplicates]]
    winnow demo [--port 8000] [--images 2000]

Token from --token or WINNOW_TOKEN, server from --server or WINNOW_SERVER. No Django here except
inside `winnow demo`, which starts the server.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from winnow.client import formats, pretrained
from winnow.client.api import DEFAULT_SERVER, UPLOAD_MODES, Client, WinnowError, progress_bar
from winnow.client.pretrained import MODELS

EXPORT_FORMATS = ("filenames", "csv", "json", "label-studio")
MODEL_HELP = "the embedder: builtin, or efficientnet-lite0 (pretrained; the default when winnow[model] is installed)"


class CommandError(Exception):
    """A problem with the command line or local files; printed as `error: ...`."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `winnow` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except (WinnowError, CommandError, formats.FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a local file or folder that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description="Winnow: data curation for image datasets.")
    sub = parser.add_subparsers(metavar="COMMAND")

    def connection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--token", default=None, help="API token (default: $WINNOW_TOKEN)")
        p.add_argument("--server", default=None, help=f"server URL (default: $WINNOW_SERVER or {DEFAULT_SERVER})")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    magic = sub.add_parser("magic", help="create a dataset, upload, embed, add metadata, print its URL")
    connection(magic)
    magic.add_argument("--input-dir", required=True, type=Path, help="folder of images (searched recursively)")
    target = magic.add_mutually_exclusive_group(required=True)
    target.add_argument("--new-dataset-name", help="create a dataset with this name")
    target.add_argument("--dataset-id", help="add to this existing dataset")
    magic.add_argument(
        "--mode",
        choices=UPLOAD_MODES,
        default=None,
        help="upload mode of a new dataset (default full); meta keeps pixels on this machine",
    )
    magic.add_argument("--custom-metadata", type=Path, help="Lightly-style custom metadata JSON")
    magic.add_argument(
        "--embeddings",
        type=Path,
        help="embeddings CSV (Lightly format), or a float32 .npy matrix with --embedding-file-names, "
        "instead of the built-in embedder",
    )
    magic.add_argument(
        "--embedding-file-names",
        type=Path,
        help="with a .npy --embeddings: the file name of each row, one a line (or a JSON list)",
    )
    magic.add_argument("--embedding-name", default="default", help="name of the embedding (default: default)")
    magic.add_argument("--model", choices=MODELS, default=None, help="with --mode meta: " + MODEL_HELP)
    magic.add_argument(
        "--wait", action="store_true", help="wait for the server's built-in embedding (full and thumbnails modes)"
    )
    magic.add_argument("--workers", type=int, default=4, help="parallel upload requests (default 4)")
    magic.set_defaults(handler=cmd_magic)

    upload = sub.add_parser("upload", help="upload a folder of images to a dataset (resumes)")
    connection(upload)
    upload.add_argument("--input-dir", required=True, type=Path)
    upload.add_argument("--dataset-id", required=True)
    upload.add_argument("--mode", choices=UPLOAD_MODES, default=None, help="check the dataset has this mode")
    upload.add_argument("--custom-metadata", type=Path, help="Lightly-style custom metadata JSON sent with the images")
    upload.add_argument("--overwrite", action="store_true", help="replace images whose file name is already there")
    upload.add_argument("--workers", type=int, default=4)
    upload.set_defaults(handler=cmd_upload)

    embed = sub.add_parser("embed", help="embed a folder with the built-in embedder into a Lightly CSV")
    embed.add_argument("--input-dir", required=True, type=Path)
    embed.add_argument("--output", required=True, type=Path, help="CSV file to write")
    embed.add_argument("--seed", type=int, default=0)
    embed.add_argument("--model", choices=MODELS, default=None, help=MODEL_HELP)
    embed.add_argument("--quiet", action="store_true")
    embed.set_defaults(handler=cmd_embed)

    emb = sub.add_parser("embeddings", help="upload embeddings (Lightly CSV, or a .npy matrix plus file names)")
    connection(emb)
    emb.add_argument("--dataset-id", required=True)
    emb.add_argument("--file", required=True, type=Path, help="embeddings CSV, or a float32 (n, d) .npy matrix")
    emb.add_argument("--file-names", type=Path, help="with a .npy: the file name of each row, one a line (or JSON)")
    emb.add_argument("--labels", type=Path, help="with a .npy, optional: an integer .npy of n labels")
    emb.add_argument("--name", default="default", help="name of the embedding (default: default)")
    emb.add_argument("--no-wait", action="store_true", help="return once sent; the server stores it in the background")
    emb.add_argument("--resume", metavar="UPLOAD_ID", help="continue an interrupted upload session")
    emb.set_defaults(handler=cmd_embeddings)

    metadata = sub.add_parser("metadata", help="upload Lightly-style custom metadata JSON to a dataset")
    connection(metadata)
    metadata.add_argument("--dataset-id", required=True)
    metadata.add_argument("--file", required=True, type=Path)
    metadata.set_defaults(handler=cmd_metadata)

    preds = sub.add_parser("predictions", help="upload a prediction task (Lightly's .lightly/predictions/<task>/)")
    connection(preds)
    preds.add_argument("--dataset-id", required=True)
    preds.add_argument("--task", required=True, help="the task's name")
    preds.add_argument("--schema", type=Path, help="the task's schema.json (default: schema.json in --input-dir)")
    preds.add_argument("--input-dir", required=True, type=Path, help="one JSON per image, as Lightly lays it out")
    preds.add_argument("--labels", action="store_true", help="the files are ground-truth labels, not predictions")
    preds.add_argument("--no-wait", action="store_true", help="return once sent; a worker stores it in the background")
    preds.set_defaults(handler=cmd_predictions)

    select = sub.add_parser("select", help="run a sampling run and save its top N as a tag")
    connection(select)
    select.add_argument("--dataset-id", required=True)
    select.add_argument("--name", required=True, help="name of the run and of the tag it makes")
    select.add_argument("--strategy", help="e.g. coreset, uncertainty, coral, balance (or --strategies)")
    select.add_argument(
        "--strategies", help='a JSON list, e.g. \'[{"strategy": "coral", "task": "clf", "weight": 0.7}]\''
    )
    select.add_argument("--task", help="prediction task for uncertainty, coral or balance")
    select.add_argument("--score", help="the task's score to use (default: its uncertainty score)")
    select.add_argument("--field", help="metadata field for weights, threshold or balance")
    select.add_argument("--weight", type=float, help="coral: weight of uncertainty against diversity (0-1)")
    select.add_argument("--target", help="balance: 'uniform' or a JSON mapping of category to share")
    select.add_argument("--embedding", help="embedding name or id (for coreset, coral, ...)")
    select.add_argument("--n-samples", type=int, required=True)
    select.add_argument("--input-tag", help="tag name or id: select only among its samples")
    select.add_argument("--preselected-tag", help="tag name or id: already selected (e.g. labeled) samples")
    select.add_argument("--seed", type=int, default=0)
    select.set_defaults(handler=cmd_select)

    export = sub.add_parser("export", help="download a tag's samples")
    connection(export)
    export.add_argument("--dataset-id", required=True)
    export.add_argument("--tag", required=True, help="tag name or id")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="filenames")
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    export.set_defaults(handler=cmd_export)

    sample = sub.add_parser("sample", help="run a sampler on the server (default auto); optionally tag its picks")
    connection(sample)
    sample.add_argument("--dataset-id", required=True)
    sample.add_argument("--n-samples", required=True, type=int, help="how many samples to pick")
    sample.add_argument(
        "--strategy",
        default="auto",
        help="auto (default: the recommended choice of what to label first), coreset, typicality, random, ...",
    )
    sample.add_argument("--embedding", default="default", help="embedding name or id (default: default)")
    sample.add_argument("--name", help="name of the run (default: STRATEGY-N)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--input-tag", help="only samples of this tag (name or id) are candidates")
    sample.add_argument("--preselected-tag", help="samples of this tag (name or id) count as already selected")
    sample.add_argument("--tag", help="save the run's N picks as a tag with this name")
    sample.add_argument("--no-wait", action="store_true", help="print the run id and return once queued")
    sample.set_defaults(handler=cmd_sample)

    views = sub.add_parser("views", help="saved views of a dataset: list, save, tag (to sample or export), delete")
    connection(views)
    views.add_argument("--dataset-id", required=True)
    views.add_argument("action", choices=["list", "save", "tag", "delete"])
    views.add_argument("--name", help="the view's name (save, tag, delete)")
    views.add_argument("--filter", help='save: a JSON filter {"tag", "file_name", "conditions": [...]}')
    views.add_argument("--sort", default="idx", help="save: idx, -idx, a metadata path or -path")
    views.add_argument("--color", default="", help='save: the map\'s colour, "field:<path>" or "tag:<id>"')
    views.add_argument("--tag-name", help="tag: the name of the tag made of the view's samples")
    views.set_defaults(handler=cmd_views)

    scale = sub.add_parser("distances", help="an embedding's distance percentiles (to choose min_distance)")
    connection(scale)
    scale.add_argument("--dataset-id", required=True)
    scale.add_argument("--embedding", default="default", help="embedding name or id (default: default)")
    scale.set_defaults(handler=cmd_distances)

    similar = sub.add_parser("similar", help="more like this: samples nearest to a sample, a tag or an image file")
    connection(similar)
    similar.add_argument("--dataset-id", required=True)
    query = similar.add_mutually_exclusive_group(required=True)
    query.add_argument("--sample", help="a sample id")
    query.add_argument("--tag", help="a tag name or id (its centroid; --each: its nearest member)")
    query.add_argument("--image", type=Path, help="an image file, embedded on the server like the dataset")
    similar.add_argument("--each", action="store_true", help="with --tag: distance to the nearest member")
    similar.add_argument("--k", type=int, default=20, help="how many results (default 20)")
    similar.add_argument("--embedding", default="default")
    similar.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    similar.add_argument("--input-tag", help="search only this tag's samples")
    similar.add_argument("--save-tag", metavar="NAME", help="save the results as a tag")
    similar.set_defaults(handler=cmd_similar)

    dup = sub.add_parser("duplicates", help="group exact and near-duplicate samples (on the server's worker)")
    connection(dup)
    dup.add_argument("--dataset-id", required=True)
    dup.add_argument(
        "--threshold", type=float, help="distance within which samples are duplicates (default: suggested)"
    )
    dup.add_argument("--embedding", default="default")
    dup.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    dup.add_argument("--input-tag", help="look only among this tag's samples")
    dup.add_argument("--show", type=int, default=10, help="groups to list (default 10)")
    dup.add_argument("--save-tag", metavar="NAME", help="save a tag from the groups (see --tag-mode)")
    dup.add_argument(
        "--keep", choices=("first", "largest", "sharpest"), default="first", help="which sample a group keeps"
    )
    dup.add_argument(
        "--tag-mode",
        choices=("keepers", "deduplicated", "duplicates"),
        default="deduplicated",
        help="the tag holds one per group, every sample but the extra copies (default), or the extra copies",
    )
    dup.set_defaults(handler=cmd_duplicates)

    demo = sub.add_parser("demo", help="start a local Winnow with a generated street-scene dataset")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--images", type=int, default=2000, help="number of generated images (default 2000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-serve", action="store_true", help="load the dataset, print the login, then stop")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _client(args, dataset_id: str | None = None) -> Client:
    client = Client(token=args.token, server=args.server, dataset_id=dataset_id)
    if not client.token:
        raise CommandError("no API token: pass --token or set WINNOW_TOKEN")
    return client


def _print_rejected(entry: dict) -> None:
    print(f"rejected {entry.get('file_name')}: {entry.get('reason')}", file=sys.stderr)


def _check_dir(path: Path) -> None:
    if not path.is_dir():
        raise CommandError(f"--input-dir {path} is not a folder")


def _load_metadata(path: Path | None) -> dict[str, dict] | None:
    if path is None:
        return None
    if not path.is_file():
        raise CommandError(f"--custom-metadata {path} does not exist")
    return formats.metadata_by_file_name(formats.load_custom_metadata(path))


def _print_summary(summary: dict) -> None:
    print(
        f"{summary['found']} images found: {summary['created']} uploaded, {summary['skipped']} already there, "
        f"{summary['replaced']} replaced, {len(summary['rejected'])} rejected"
    )


# --- commands ------------------------------------------------------------------------------------


def cmd_magic(args) -> int:
    _check_dir(args.input_dir)
    per_file = _load_metadata(args.custom_metadata)
    if args.embeddings is not None and not args.embeddings.is_file():
        raise CommandError(f"--embeddings {args.embeddings} does not exist")
    if args.embeddings is not None:
        _check_embedding_files(args.embeddings, args.embedding_file_names)
    client = _client(args, args.dataset_id)
    progress = not args.quiet

    if args.new_dataset_name:
        mode = args.mode or "full"
        client.create_dataset(args.new_dataset_name, upload_mode=mode)
        print(f"created dataset {args.new_dataset_name!r} ({mode}): {client.dataset_id}")
    else:
        mode = client.get_dataset()["upload_mode"]
        if args.mode and args.mode != mode:
            raise CommandError(f"dataset {args.dataset_id} has upload mode {mode!r}, not {args.mode!r}")

    # With a CSV of their own, the server's built-in embedder is not wanted.
    server_embeds = mode != "meta" and args.embeddings is None
    summary = client.upload_dataset(
        args.input_dir,
        metadata=per_file,
        workers=args.workers,
        progress=progress,
        on_rejected=_print_rejected,
        embed=server_embeds,
    )
    _print_summary(summary)
    present = client.existing_file_names()

    if per_file and summary["skipped"]:
        # Samples from an earlier run took no metadata in this one: send theirs now (replaces, so idempotent).
        entries = [(name, meta) for name, meta in per_file.items() if name in present]
        if entries:
            result = client.upload_custom_metadata(formats.format_custom_metadata(entries))
            print(f"custom metadata: {result['updated']} samples updated")
    if per_file:
        unknown = sorted(set(per_file) - present)
        if unknown:
            print(
                f"note: {len(unknown)} metadata entries name files that are not in the dataset (e.g. {unknown[0]!r})",
                file=sys.stderr,
            )

    if args.embeddings is not None:
        _upload_embedding_once(
            client, args.embeddings, args.embedding_name, summary, args.embedding_file_names, progress
        )
    elif mode == "meta":
        _embed_locally(client, args.input_dir, present, args.embedding_name, summary, progress, args.model)
    elif args.wait:
        embedding = client.wait_for_embedding("default")
        print(
            f"embedding {embedding['name']!r} ready ({embedding['dimension']} dimensions, "
            f"model {embedding.get('model') or 'uploaded'})"
        )
    else:
        print("the server computes the embedding 'default' from the images in the background")

    print(f"dataset: {client.dataset_url()}")
    return 1 if summary["rejected"] and not summary["created"] and not summary["skipped"] else 0


def _existing_embedding(client: Client, name: str) -> dict | None:
    return next((e for e in client.list_embeddings() if e["name"] == name), None)


def _check_embedding_files(path: Path, file_names: Path | None) -> None:
    if path.suffix.lower() == ".npy":
        if file_names is None:
            raise CommandError(f"{path} is a .npy matrix: pass the file names of its rows (one a line)")
        if not file_names.is_file():
            raise CommandError(f"{file_names} does not exist")
        formats.npy_matrix_shape(path)
    elif file_names is not None:
        raise CommandError("file names go with a .npy matrix; a CSV names its own rows")


def _upload_embedding_once(
    client: Client, path: Path, name: str, summary: dict, file_names: Path | None = None, progress: bool = True
) -> None:
    if _existing_embedding(client, name) is not None:
        print(f"embedding {name!r} already exists; pass --embedding-name to upload another")
        return
    embedding = client.upload_embeddings(path, name, file_names=file_names, progress=progress)
    print(f"uploaded embedding {embedding['name']!r} ({embedding['dimension']} dimensions)")


def _embed_locally(
    client: Client, input_dir: Path, present: set[str], name: str, summary: dict, progress: bool, model=None
) -> None:
    """meta mode: the pixels stay here, so the built-in embedder runs here and only vectors go up."""
    from winnow.client.embedder import embed_folder

    existing = _existing_embedding(client, name)
    if existing is not None and not summary["created"]:
        print(f"embedding {name!r} is up to date")
        return
    names = [n for n in formats.find_images(input_dir) if n in present]
    missing = len(present) - len(names)
    if missing:
        raise CommandError(
            f"{missing} samples of the dataset are not in {input_dir}; the embedding must cover every sample"
        )
    bar = _bar(2 * len(names), "embed", progress)
    try:
        kept, vectors = embed_folder(
            input_dir, names, progress=bar.update, on_error=_print_embed_error, model=_model(model)
        )
    finally:
        bar.close()
    if len(kept) != len(names):
        raise CommandError("some samples could not be read for embedding (see above)")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "embeddings.csv"
        formats.save_embeddings(csv_path, vectors, [0] * len(kept), kept)
        if existing is not None:
            # It does not cover the samples added now; the name is kept for the new one.
            client.delete_embedding(existing["id"])
            print(f"replacing embedding {name!r}: {summary['created']} new samples")
        embedding = client.upload_embeddings(csv_path, name)
    print(
        f"embedded {len(kept)} images locally with the {_model(model)} model; uploaded embedding "
        f"{embedding['name']!r} ({embedding['dimension']} dimensions)"
    )


def _model(requested: str | None) -> str:
    try:
        return pretrained.check_model(requested or pretrained.default_model())
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _print_embed_error(path: str, exc: Exception) -> None:
    print(f"cannot embed {path}: {exc}", file=sys.stderr)


def cmd_upload(args) -> int:
    _check_dir(args.input_dir)
    per_file = _load_metadata(args.custom_metadata)
    client = _client(args, args.dataset_id)
    summary = client.upload_dataset(
        args.input_dir,
        mode=args.mode,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.quiet,
        metadata=per_file,
        on_rejected=_print_rejected,
    )
    _print_summary(summary)
    return 1 if summary["rejected"] and not summary["created"] and not summary["skipped"] else 0


def cmd_embed(args) -> int:
    from winnow.client.embedder import embed_folder

    _check_dir(args.input_dir)
    names = formats.find_images(args.input_dir)
    if len(names) < 2:
        raise CommandError(f"{args.input_dir} holds {len(names)} images; the embedder needs at least 2")
    model = _model(args.model)
    bar = _bar(2 * len(names), "embed", not args.quiet)
    try:
        kept, vectors = embed_folder(
            args.input_dir, names, seed=args.seed, progress=bar.update, on_error=_print_embed_error, model=model
        )
    finally:
        bar.close()
    formats.save_embeddings(args.output, vectors, [0] * len(kept), kept)
    print(f"wrote {len(kept)} embeddings ({vectors.shape[1]} dimensions, model {model}) to {args.output}")
    return 0 if len(kept) == len(names) else 1


def cmd_embeddings(args) -> int:
    if not args.file.is_file():
        raise CommandError(f"--file {args.file} does not exist")
    _check_embedding_files(args.file, args.file_names)
    labels = None
    if args.labels is not None:
        labels = np.load(args.labels, allow_pickle=False)
    client = _client(args, args.dataset_id)
    result = client.upload_embeddings(
        args.file,
        args.name,
        file_names=args.file_names,
        labels=labels,
        progress=not args.quiet,
        wait=not args.no_wait,
        upload_id=args.resume,
    )
    if args.no_wait and "status" in result:
        print(
            f"upload {result['id']} is {result['status']}; the server stores embedding {args.name!r} in the background"
        )
    else:
        print(f"uploaded embedding {result['name']!r} ({result['dimension']} dimensions, id {result['id']})")
    return 0


def cmd_metadata(args) -> int:
    if not args.file.is_file():
        raise CommandError(f"--file {args.file} does not exist")
    client = _client(args, args.dataset_id)
    result = client.upload_custom_metadata(args.file)
    print(f"custom metadata: {result['updated']} samples updated")
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_predictions(args) -> int:
    input_dir = args.input_dir
    if (input_dir / args.task).is_dir() and not (input_dir / "schema.json").is_file():
        input_dir = input_dir / args.task  # the .lightly/predictions/ folder itself
    if not input_dir.is_dir():
        raise CommandError(f"--input-dir {args.input_dir} is not a folder")
    schema = args.schema or input_dir / "schema.json"
    if not schema.is_file():
        raise CommandError(f"--schema {schema} does not exist")
    client = _client(args, args.dataset_id)
    upload = client.upload_predictions(
        args.task, schema, input_dir, is_labels=args.labels or None, progress=not args.quiet, wait=not args.no_wait
    )
    if upload["status"] == "succeeded":
        result = upload["result"]
        print(f"prediction task {args.task!r}: {result['samples']} samples; scores: {', '.join(result['scores'])}")
    else:
        print(f"prediction upload {upload['id']} is {upload['status']}")
    return 0


def cmd_select(args) -> int:
    params: dict = {}
    if args.strategies:
        try:
            params["strategies"] = json.loads(args.strategies)
        except ValueError as exc:
            raise CommandError(f"--strategies is not valid JSON ({exc})") from None
    elif not args.strategy:
        raise CommandError("give --strategy or --strategies")
    for key in ("task", "score", "field", "weight"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.target is not None:
        try:
            params["target"] = args.target if args.target == "uniform" else json.loads(args.target)
        except ValueError as exc:
            raise CommandError(f"--target is 'uniform' or a JSON mapping ({exc})") from None
    client = _client(args, args.dataset_id)
    for key in ("input_tag", "preselected_tag"):
        if getattr(args, key):
            params[key] = client.get_tag(getattr(args, key))["id"]
    run = client.create_sampling_run(
        args.name, args.embedding, args.strategy, n_samples=args.n_samples, seed=args.seed, **params
    )
    client.wait_for_run(run["id"], progress=not args.quiet)
    tag = client.create_tag_from_run(args.name, run["id"], args.n_samples)
    print(f"tag {tag['name']!r}: {tag['count']} samples (run {run['id']})")
    return 0


def cmd_export(args) -> int:
    client = _client(args, args.dataset_id)
    text = client.export_tag(args.tag, args.format, raw=True)
    if args.output is None:
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_sample(args) -> int:
    if args.n_samples < 1:
        raise CommandError("--n-samples must be at least 1")
    if args.tag and args.no_wait:
        raise CommandError("--tag needs the run to finish: leave out --no-wait")
    client = _client(args, args.dataset_id)
    params = {"seed": args.seed}
    for key in ("input_tag", "preselected_tag"):
        if getattr(args, key):
            params[key] = client.get_tag(getattr(args, key))["id"]
    embedding = None if args.strategy == "random" else args.embedding
    name = args.name or f"{args.strategy}-{args.n_samples}"
    run = client.create_sampling_run(name, embedding, args.strategy, n_samples=args.n_samples, **params)
    print(f"sampling run {run['id']} ({args.strategy}) queued")
    if args.no_wait:
        return 0
    client.wait_for_run(run["id"], progress=not args.quiet)
    print(f"sampling run {run['id']} succeeded")
    if args.tag:
        tag = client.create_tag_from_run(args.tag, run["id"], args.n_samples)
        print(f"tag {tag['name']!r}: {tag['count']} samples")
    return 0


def cmd_views(args) -> int:
    client = _client(args, args.dataset_id)
    if args.action == "list":
        for view in client.list_views():
            print(f"{view['id']}  {view['name']}  sort={view['sort']}  filter={json.dumps(view['filter'])}")
        return 0
    if not args.name:
        raise CommandError(f"views {args.action} needs --name")
    if args.action == "save":
        try:
            filter_obj = json.loads(args.filter) if args.filter else {}
        except ValueError as exc:
            raise CommandError(f"--filter is not valid JSON: {exc}") from None
        view = client.save_view(args.name, filter=filter_obj, sort=args.sort, color=args.color)
        print(f"saved view {view['name']} ({view['id']})")
    elif args.action == "tag":
        if not args.tag_name:
            raise CommandError("views tag needs --tag-name")
        tag = client.tag_from_view(args.name, args.tag_name)
        print(f"tag {tag['name']} ({tag['id']}): {tag['count']} sample{'' if tag['count'] == 1 else 's'}")
    else:
        client.delete_view(args.name)
        print(f"deleted view {args.name}")
    return 0


def cmd_distances(args) -> int:
    client = _client(args, args.dataset_id)
    scale = client.embedding_distance_scale(args.embedding)
    if not scale["nearest_neighbour"]:
        print("too few samples to measure distances")
        return 0
    print(f"Euclidean distances from {scale['sampled']} of {scale['rows']} samples:")
    for key, label in (("nearest_neighbour", "nearest neighbour"), ("pairwise", "between two samples")):
        row = scale[key]
        print(f"  {label:<20} " + "  ".join(f"{p} {row[p]:.4g}" for p in ("p5", "p25", "p50", "p75", "p95")))
    return 0


def cmd_similar(args) -> int:
    if args.k < 1:
        raise CommandError("--k must be at least 1")
    if args.image is not None and not args.image.is_file():
        raise CommandError(f"no such file: {args.image}")
    client = _client(args, args.dataset_id)
    run = client.find_similar(
        args.sample,
        tag=args.tag,
        mode="each" if args.each else "centroid",
        image=args.image,
        k=args.k,
        embedding=args.embedding,
        metric=args.metric,
        input_tag=args.input_tag,
        progress=not args.quiet,
    )
    for row in client.similar_results(run["id"]):
        print(f"{row['rank']}\t{row['distance']:.6g}\t{row.get('file_name', '')}")
    if args.save_tag:
        tag = client.create_tag_from_similarity(args.save_tag, run["id"])
        print(f"saved tag {tag['name']} ({tag['count']} samples)", file=sys.stderr)
    return 0


def cmd_duplicates(args) -> int:
    if args.threshold is not None and args.threshold < 0:
        raise CommandError("--threshold must be at least 0")
    client = _client(args, args.dataset_id)
    run = client.find_duplicates(
        args.threshold, embedding=args.embedding, metric=args.metric, input_tag=args.input_tag, progress=not args.quiet
    )
    s = run["summary"]
    print(
        f"{s['groups']} groups ({s['exact_groups']} exact), {s['in_groups']} samples in them, {s['removable']} "
        f"extra copies; threshold {s['threshold']:.6g} (suggested {s['suggested_threshold']:.6g}) "
        f"over {s['searched']} samples"
    )
    for shown, group in enumerate(client.similar_results(run["id"])):
        if shown >= args.show:
            break
        names = ", ".join(m.get("file_name", str(m["idx"])) for m in group["members"])
        print(f"group {group['group'] + 1} ({group['size']}{', exact' if group['exact'] else ''}): {names}")
    if args.save_tag:
        tag = client.create_tag_from_similarity(args.save_tag, run["id"], keep=args.keep, mode=args.tag_mode)
        print(f"saved tag {tag['name']} ({tag['count']} samples)", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    # The only command that needs the server's code (and so Django): imported here, never at the top.
    try:
        has_server = importlib.util.find_spec("django") is not None
    except ImportError:
        has_server = False
    if not has_server:
        raise CommandError("winnow demo runs the server, which this installation lacks: pip install 'winnow[server]'")
    from winnow import demo

    if args.images < 2:
        raise CommandError("--images must be at least 2")
    return demo.run(host=args.host, port=args.port, images=args.images, seed=args.seed, serve=not args.no_serve)


def _bar(total: int, description: str, enabled: bool):
    return progress_bar(total, description, enabled)


if __name__ == "__main__":
    sys.exit(main())
