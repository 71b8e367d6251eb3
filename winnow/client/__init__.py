"""Winnow's Python client, CLI and file-format helpers. Imports no Django: it runs on training machines."""

from winnow.client.api import Client, WinnowError
from winnow.client.formats import format_custom_metadata, load_embeddings, save_custom_metadata, save_embeddings

__all__ = [
    "Client",
    "WinnowError",
    "format_custom_metadata",
    "load_embeddings",
    "save_custom_metadata",
    "save_embeddings",
]
