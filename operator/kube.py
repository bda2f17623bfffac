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
from radscale.operator import logs, rayjob

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
    def write(self, uri: str, data: bytes, options: dict[str, Any]) -> None: ...


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


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Storage errors that a later pass may not see: OSError (s3fs's FileExpired when the object
    was rewritten during the read, connection resets, timeouts, throttling) and botocore's own."""
    kinds: list[type[BaseException]] = [OSError]
    try:
        from botocore import exceptions as boto
    except ImportError:  # no S3 support installed: nothing of botocore's can be raised
        pass
    else:
        kinds.append(boto.BotoCoreError)
    return tuple(kinds)


class FsspecStore:
    """Results and shard indexes through fsspec (s3fs for s3://).

    A result that cannot be read yet (being rewritten, storage unreachable) or that does not parse
    (half-written, foreign) counts as not there: the next pass reads it again. Either is logged at
    WARNING once per file (until it reads again; DEBUG meanwhile), naming the file and the error's type and fields,
    never what the file holds (results may carry patient data).
    """

    def __init__(self) -> None:
        self._reported: set[str] = set()  # URIs whose problem was logged at WARNING, until they read

    def shards_exist(self, shards_uri: str, options: dict[str, Any]) -> bool:
        import fsspec

        fs, path = fsspec.core.url_to_fs(join_uri(shards_uri, "index.json"), **options)
        return bool(fs.exists(path))

    def _report(self, uri: str, what: str, exc: BaseException) -> None:
        level = logging.DEBUG if uri in self._reported else logging.WARNING  # once per file until it reads
        self._reported.add(uri)
        log.log(level, "%s %s (%s); reading it again on the next pass", what, uri, logs.describe(exc))

    def read_result(self, output_uri: str, cell: str, options: dict[str, Any]) -> CellResult | None:
        import fsspec

        uri = join_uri(output_uri, cell, RESULT_FILE)
        try:
            fs, path = fsspec.core.url_to_fs(uri, **options)
            if not fs.exists(path):
                return None
            data = fs.cat_file(path)  # one GET: the object as it was, not parts of two versions
        except FileNotFoundError:  # deleted between exists and the read
            return None
        except _transient_errors() as exc:
            self._report(uri, "could not read", exc)
            return None
        try:
            result = CellResult.model_validate(json.loads(data))
        except ValueError as exc:  # a half-written or foreign file: report, do not crash-loop
            self._report(uri, "ignoring unreadable", exc)
            return None
        self._reported.discard(uri)
        return result

    def write(self, uri: str, data: bytes, options: dict[str, Any]) -> None:
        """A study artifact (results JSON, PNG) into its output; the folder is made if needed."""
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri, **options)
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)
