"""The operator's adapters to the outside: the Kubernetes API and the results store.

The only module of the control plane that talks to the Kubernetes client or to object storage.
Everything else (the reconcile core, RayJob rendering) is pure and is handed what these read.
Tests substitute these adapters (mock our own adapter, never HTTP).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Protocol

from radscale.cells import RESULT_FILE, CellResult, join_uri
from radscale.operator import rayjob

log = logging.getLogger(__name__)


class Cluster(Protocol):
    def get_study(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_jobs(self, namespace: str, study: str) -> dict[str, dict[str, Any]]: ...
    def create_job(self, namespace: str, manifest: dict[str, Any]) -> None: ...
    def delete_job(self, namespace: str, name: str) -> None: ...
    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def secret(self, namespace: str, name: str) -> dict[str, str]: ...


class Store(Protocol):
    def shards_exist(self, shards_uri: str, options: dict[str, Any]) -> bool: ...
    def read_result(self, output_uri: str, cell: str, options: dict[str, Any]) -> CellResult | None: ...


class KubeCluster:
    """The kubernetes client, with 409-on-create and 404-on-delete treated as done."""

    def __init__(self, api_client: Any = None):
        from kubernetes import client

        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._exc = client.exceptions.ApiException

    def get_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        from radscale.operator import api

        try:
            return self._custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        except self._exc as exc:
            if exc.status == 404:
                return None
            raise

    def list_jobs(self, namespace: str, study: str) -> dict[str, dict[str, Any]]:
        out = self._custom.list_namespaced_custom_object(
            rayjob.GROUP, rayjob.VERSION, namespace, rayjob.PLURAL, label_selector=f"{rayjob.LABEL_STUDY}={study}")
        return {item["metadata"]["name"]: item for item in out.get("items", [])
                if item.get("metadata", {}).get("labels", {}).get(rayjob.LABEL_STUDY) == study}

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> None:
        try:
            self._custom.create_namespaced_custom_object(rayjob.GROUP, rayjob.VERSION, namespace, rayjob.PLURAL,
                                                         manifest)
        except self._exc as exc:
            if exc.status != 409:  # exists: an earlier pass (or operator process) created it
                raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(rayjob.GROUP, rayjob.VERSION, namespace, rayjob.PLURAL,
                                                         name, propagation_policy="Background")
        except self._exc as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        from radscale.operator import api

        self._custom.patch_namespaced_custom_object_status(api.GROUP, api.VERSION, namespace, api.PLURAL, name,
                                                           {"status": status})

    def secret(self, namespace: str, name: str) -> dict[str, str]:
        sec = self._core.read_namespaced_secret(name, namespace)
        return {k: base64.b64decode(v).decode() for k, v in (sec.data or {}).items()}


class FsspecStore:
    """Results and shard indexes through fsspec (s3fs for s3://)."""

    def shards_exist(self, shards_uri: str, options: dict[str, Any]) -> bool:
        import fsspec

        fs, path = fsspec.core.url_to_fs(join_uri(shards_uri, "index.json"), **options)
        return bool(fs.exists(path))

    def read_result(self, output_uri: str, cell: str, options: dict[str, Any]) -> CellResult | None:
        import fsspec

        uri = join_uri(output_uri, cell, RESULT_FILE)
        fs, path = fsspec.core.url_to_fs(uri, **options)
        if not fs.exists(path):
            return None
        with fs.open(path, "rt") as fh:
            try:
                return CellResult.model_validate(json.load(fh))
            except ValueError as exc:  # a half-written or foreign file: report, do not crash-loop
                log.warning("ignoring unreadable %s: %s", uri, exc)
                return None
