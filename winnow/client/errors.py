"""The error of a file not in its format, shared by the format modules (formats, embeddings_csv, predictions)."""

from __future__ import annotations


class FormatError(ValueError):
    """A file is not in the expected format; the message names the row, line or entry at fault."""
