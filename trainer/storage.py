"""fsspec access to the study's storage: one place that turns a dataset spec into storage options.

Credentials come from the environment (the RayJob mounts the study's ``credentialsSecret`` as
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; s3fs reads them itself); the endpoint comes from
``spec.dataset.endpoint`` or AWS_ENDPOINT_URL. Nothing else is configured here.
"""

from __future__ import annotations

import os

import fsspec

from radscale.cells import storage_options

__all__ = ["absolute", "exists", "filesystem", "read_text", "storage_options", "write_bytes"]


def absolute(uri: str) -> str:
    """Local URIs made absolute (``file://.demo/x`` -> ``file:///repo/.demo/x``), so that Ray workers,
    whose working directory may differ, resolve them the same way. Remote URIs are returned as they are."""
    if uri.startswith("file://"):
        return "file://" + os.path.abspath(uri.removeprefix("file://"))
    if "://" not in uri:
        return "file://" + os.path.abspath(uri)
    return uri


def filesystem(uri: str, endpoint: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for a URI or local path."""
    return fsspec.core.url_to_fs(uri, **storage_options(uri, endpoint))


def exists(uri: str, endpoint: str | None = None) -> bool:
    fs, path = filesystem(uri, endpoint)
    return fs.exists(path)


def read_text(uri: str, endpoint: str | None = None) -> str:
    fs, path = filesystem(uri, endpoint)
    with fs.open(path, "rt") as fh:
        return fh.read()


def write_bytes(uri: str, data: bytes, endpoint: str | None = None) -> None:
    fs, path = filesystem(uri, endpoint)
    parent = path.rsplit("/", 1)[0]
    if parent and not fs.exists(parent):
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(data)
