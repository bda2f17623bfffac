"""A Kubernetes API server on loopback for tests: kmock's ``KubernetesEmulator``, extended.

kmock (pinned in pyproject) gives the HTTP server, request parsing, discovery and a DSL for
injecting faults (``server["patch", kmock.resource(...)] << 500``). What kopf and kubectl need
beyond it (observed with kmock 0.8, kopf 1.45, kubectl 1.33) is filled in here, by replacing its
object store with one that follows the API server's semantics:

- ``metadata.resourceVersion``/``uid``/``creationTimestamp``/``generation`` (bumped on spec
  changes only), ``apiVersion``/``kind`` on stored objects, ``generateName``;
- create answers 201; a failed JSON-patch ``test`` answers 422; conflicts 409; no-op writes
  change nothing (no new resourceVersion, no event);
- PUT, JSON-patch, merge-patch (strategic merge is treated as merge); ``dryRun``;
- the status subresource is separate: writes to the object ignore ``.status``, writes to
  ``/status`` change only ``.status``;
- ``labelSelector`` (equality and set-based) and ``fieldSelector`` (name/namespace);
- watches replay from ``resourceVersion`` without racing the snapshot (one ordered event log),
  answer ``410 Gone`` when it is compacted, honour ``timeoutSeconds``, and stream
  ``application/json`` as kubectl expects;
- discovery of ``/api/v1`` with groupVersion ``v1``; ``/api/v1/namespaces`` is routed;
- CustomResourceDefinitions: applying one serves its resource (kind, scope, short names,
  subresources, printer columns); ``Table`` output for ``kubectl get``;
- finalizers and ownerReference garbage collection (background).

Not emulated: OpenAPI (use ``kubectl --validate=false``; CRD schemas are checked offline, see
crdschema.py), protobuf, admission, RBAC.

Run it as a process for manual work: ``python -m tests.support.apiserver --port 6443``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import jsonpatch
import kmock
from jsonpath_ng.ext import parse as jsonpath
from kmock._internal import parsing, rendering

Key = tuple[kmock.resource, str | None, str]
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")

# Core and built-in resources the tests and tools touch; CRDs add themselves when applied.
BUILTIN: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False, "shortnames": {"ns"}},
    "v1/events": {"kind": "Event", "namespaced": True, "shortnames": {"ev"}},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True, "shortnames": {"cm"}},
    "v1/serviceaccounts": {"kind": "ServiceAccount", "namespaced": True, "shortnames": {"sa"}},
    "v1/services": {"kind": "Service", "namespaced": True, "shortnames": {"svc"}},
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True, "shortnames": {"deploy"},
                            "subresources": {"status"}},
    "rbac.authorization.k8s.io/v1/clusterroles": {"kind": "ClusterRole", "namespaced": False},
    "rbac.authorization.k8s.io/v1/clusterrolebindings": {"kind": "ClusterRoleBinding", "namespaced": False},
    "rbac.authorization.k8s.io/v1/roles": {"kind": "Role", "namespaced": True},
    "rbac.authorization.k8s.io/v1/rolebindings": {"kind": "RoleBinding", "namespaced": True},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {"kind": "CustomResourceDefinition",
                                                          "namespaced": False, "shortnames": {"crd"},
                                                          "subresources": {"status"}},
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str) -> str:
    """Table cells of type date are ages, as the API server renders them."""
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((dt.datetime.now(dt.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _route_namespaces(original: Callable[[str], parsing.ParsedPath]) -> Callable[[str], parsing.ParsedPath]:
    """kmock's path parser reads ``/api/v1/namespaces[/NAME]`` as a namespace prefix and fails."""
    def parse_path(path: str) -> parsing.ParsedPath:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
            return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None)
        return original(path)
    return parse_path


def _route_put(original: Callable[..., Any]) -> Callable[..., Any]:
    """kmock guesses no action for PUT; it is an update of a named object (told apart by method)."""
    def guess_k8s(k8s: parsing.ParsedPath, method: Any, query: dict[str, str]) -> Any:
        if k8s.group is not None and k8s.name is not None and method == kmock.method.PUT:
            return kmock.action.UPDATE
        return original(k8s, method, query)
    return guess_k8s


if not getattr(parsing, "_radscale_patched", False):  # the parser is module state in kmock
    parsing.parse_path = _route_namespaces(parsing.parse_path)
    parsing.guess_k8s = _route_put(parsing.guess_k8s)
    parsing._radscale_patched = True


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={"kind": reason})


# --- selectors ----------------------------------------------------------------------------------

def _split_selector(text: str) -> list[str]:
    """Split on commas outside parentheses: ``a in (x,y),b=c``."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [s.strip() for s in [*out, cur] if s.strip()]


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_selector(selector or ""):
        if " notin " in term or " in " in term:
            neg = " notin " in term
            key, values = term.split(" notin " if neg else " in ", 1)
            allowed = {v.strip() for v in values.strip().strip("()").split(",")}
            key = key.strip()
            tests.append(lambda lb, k=key, a=allowed, n=neg: (lb.get(k) not in a) if n else (lb.get(k) in a))
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda lb, k=absent: k not in lb)
        else:
            tests.append(lambda lb, k=term: k in lb)
    return lambda labels: all(t(labels) for t in tests)


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for term in _split_selector(selector or ""):
        neg = "!=" in term
        path, value = (s.strip() for s in term.replace("==", "=").split("!=" if neg else "=", 1))
        if path not in ("metadata.name", "metadata.namespace"):
            raise _error(400, "BadRequest", f"field label not supported: {path}")
        field = path.split(".", 1)[1]
        tests.append(lambda o, f=field, v=value, n=neg: (o["metadata"].get(f) == v) != n)
    return lambda obj: all(t(obj) for t in tests)


# --- patches ------------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (the API server also applies strategic-merge patches of CRs so)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _body_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What ``generation`` tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """The emulator with API-server semantics; see the module docstring for what it adds."""

    history: int = 100_000
    """Watch events kept for replay; older resourceVersions get 410 Gone, as after etcd compaction."""
    keep_requests: bool = False
    """kmock records every request for assertions, and matches each new request against all of
    them: O(n) per request. Off by default (``writes``/``created`` count what tests assert on)."""

    store: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    writes: Counter = attrs.field(factory=Counter, init=False)  # (verb, plural) -> count of effective writes
    created: list[tuple[str, str, str]] = attrs.field(factory=list, init=False)  # (plural, ns, name), ever
    created_at: dict[tuple[str, str, str], float] = attrs.field(factory=dict, init=False)  # monotonic time
    first_write: dict[tuple[str, str, str, str], float] = attrs.field(factory=dict, init=False)
    """(verb, plural, ns, name) -> monotonic time of the first effective write of that kind."""
    printer_columns: dict[kmock.resource, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _log: list[tuple[int, kmock.resource, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in BUILTIN.items():
            self.resources[key] = kmock.ResourceInfo(verbs=VERBS, **info)

    # --- dispatch -------------------------------------------------------------------------------

    async def __call__(self, raw_request: Any) -> Any:
        try:
            return await super().__call__(raw_request)
        finally:
            if not self.keep_requests:
                self._requests.clear()

    async def _handle(self, request: rendering.Request) -> Any:
        # Skip the parent's store (it mutates before dispatch and lacks the semantics above); user
        # reactions in the DSL still come first, then the fallbacks served by the methods below.
        return await kmock.RawHandler._handle(self, request)

    def _info(self, resource: kmock.resource | None) -> kmock.ResourceInfo:
        if resource is None or resource not in self.resources:
            raise _error(404, "NotFound", f"the server could not find the requested resource {resource}")
        return self.resources[resource]

    def _api_version(self, resource: kmock.resource) -> str:
        return f"{resource.group}/{resource.version}" if resource.group else resource.version

    def _key(self, request: rendering.Request, name: str | None = None) -> Key:
        info = self._info(request.resource)
        ns = request.namespace if info.namespaced else None
        if info.namespaced and not ns:
            raise _error(400, "BadRequest", "a namespaced resource needs a namespace in the URL")
        return (request.resource, ns, name or request.name)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _emit(self, resource: kmock.resource, kind: str, obj: dict[str, Any]) -> None:
        async with self._condition():
            self._log.append((self._rv, resource, {"type": kind, "object": copy.deepcopy(obj)}))
            if len(self._log) > 2 * self.history:
                del self._log[: len(self._log) - self.history]
            self._condition().notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    # --- discovery ------------------------------------------------------------------------------

    async def _serve_version(self, request: rendering.Request) -> Any:
        doc = await super()._serve_version(request)
        if request.resource is not None and request.resource.group == "":
            doc["groupVersion"] = request.resource.version  # kmock says "/v1"
        for res in doc["resources"]:
            res["namespaced"] = bool(res["namespaced"])
            if "/" in res["name"]:  # kmock repeats short names on subresources: kubectl warns
                res.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return doc

    async def _serve_server_version(self, request: rendering.Request) -> Any:
        return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-emulator", "platform": "linux/amd64"}

    # --- reads ----------------------------------------------------------------------------------

    def _matches(self, request: rendering.Request) -> Callable[[Key, dict[str, Any]], bool]:
        labels = label_matcher(request.params.get("labelSelector"))
        fields = field_matcher(request.params.get("fieldSelector"))

        def match(key: Key, obj: dict[str, Any]) -> bool:
            res, ns, name = key
            return (res == request.resource and (request.namespace is None or ns == request.namespace)
                    and (request.name is None or name == request.name)
                    and labels(obj["metadata"].get("labels") or {}) and fields(obj))
        return match

    async def _serve_fetch(self, request: rendering.Request) -> Any:
        obj = self.store.get(self._key(request))
        if obj is None:
            raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
        return self._maybe_table(request, [obj], single=True)

    async def _serve_list(self, request: rendering.Request) -> Any:
        info = self._info(request.resource)
        match = self._matches(request)
        items = [obj for key, obj in self.store.items() if match(key, obj)]
        table = self._maybe_table(request, items)
        if table is not None and table is not items:
            return table
        return {"apiVersion": self._api_version(request.resource), "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    def _maybe_table(self, request: rendering.Request, items: list[dict[str, Any]], single: bool = False) -> Any:
        if "as=Table" not in request.headers.get("Accept", ""):
            return items[0] if single else items
        columns = self.printer_columns.get(request.resource, [])
        defs = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}]
        defs += [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                  "description": c.get("description", ""), "priority": c.get("priority", 0)} for c in columns]
        if not columns:
            defs.append({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0})
            columns = [{"jsonPath": ".metadata.creationTimestamp", "type": "date"}]
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for col in columns:
                found = jsonpath("$" + col["jsonPath"]).find(obj)
                value = found[0].value if found else None
                cells.append(_age(value) if col.get("type") == "date" and value else value)
            rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata",
                                                    "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(self._rv)}, "columnDefinitions": defs, "rows": rows}

    async def _serve_watch(self, request: rendering.Request) -> Any:
        self._info(request.resource)
        headers = {"Content-Type": "application/json"}
        return rendering.Response(status=200, headers=headers, payload=self._watch(request))

    async def _watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        yield b""  # send the headers now: clients wait for them before they consider the watch open
        match = self._matches(request)
        since = request.params.get("resourceVersion", "")
        timeout = float(request.params["timeoutSeconds"]) if request.params.get("timeoutSeconds") else None
        async with self._condition():
            if since in ("", "0"):  # a snapshot first, then everything after it: one atomic step
                last = self._rv
                snapshot = [{"type": "ADDED", "object": copy.deepcopy(o)}
                            for k, o in self.store.items() if match(k, o)]
            else:
                last = int(since)
                snapshot = []
                if self._log and last < self._log[0][0] - 1:
                    snapshot = None
        if snapshot is None:
            yield {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                               "code": 410, "reason": "Expired",
                                               "message": f"too old resource version: {last}"}}
            return
        for event in snapshot:
            yield event
        try:
            async with asyncio.timeout(timeout):
                while True:
                    async with self._condition():
                        await self._condition().wait_for(lambda seen=last: self._log and self._log[-1][0] > seen)
                        start = self._log[0][0]
                        batch = self._log[max(0, last + 1 - start):]
                    for rv, res, event in batch:
                        last = rv
                        obj = event["object"]
                        ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
                        if match((res, ns, name), obj):
                            yield event
        except TimeoutError:
            return

    # --- writes ---------------------------------------------------------------------------------

    async def _serve_create(self, request: rendering.Request) -> Any:
        body = request.data
        if not isinstance(body, dict):
            raise _error(400, "BadRequest", "the request body is not a JSON object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise _error(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        key = self._key(request, meta["name"])
        if request.namespace and meta.get("namespace", request.namespace) != request.namespace:
            raise _error(400, "BadRequest", "the namespace of the object does not match the URL")
        obj = await self.create(key, body, dry_run="dryRun" in request.params)
        return rendering.Response(status=201, payload=obj)

    async def create(self, key: Key, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Create an object as the API server would (also used by test controllers)."""
        if key in self.store:
            raise _error(409, "AlreadyExists", f'{key[0].plural} "{key[2]}" already exists')
        info = self._info(key[0])
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = self._api_version(key[0]), info.kind
        meta = obj["metadata"]
        meta.update(name=key[2], uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if key[1]:
            meta["namespace"] = key[1]
        if "status" in info.subresources:
            obj.pop("status", None)  # ignored on create, as for any resource with a status subresource
        if dry_run:
            return obj
        self._bump(obj)
        self.store[key] = obj
        self.writes["create", key[0].plural] += 1
        self.created.append((key[0].plural, key[1] or "", key[2]))
        self.created_at[self.created[-1]] = time.monotonic()
        if key[0] == CRDS:
            self._serve_crd(obj)
        await self._emit(key[0], "ADDED", obj)
        return obj

    async def _serve_update(self, request: rendering.Request) -> Any:
        key = self._key(request)
        if key not in self.store:
            raise _error(404, "NotFound", f'{key[0].plural} "{key[2]}" not found')
        old = self.store[key]
        ctype = request.headers.get("Content-Type", "").split(";")[0]
        if request.method == kmock.method.PUT:
            new = copy.deepcopy(request.data)
            sent_rv = (new.get("metadata") or {}).get("resourceVersion")
        elif ctype == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(old, request.data)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise _error(422, "Invalid", f"the server rejected our request due to an error in our request: {exc}") \
                    from exc
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _error(422, "Invalid", str(exc)) from exc
            sent_rv = None
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            new = merge_patch(old, request.data)
            sent_rv = ((request.data or {}).get("metadata") or {}).get("resourceVersion")
        else:
            raise _error(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict", f'Operation cannot be fulfilled on {key[0].plural} "{key[2]}": '
                                          "the object has been modified; please apply your changes to the latest "
                                          "version and try again")
        return await self.update(key, new, subresource=request.subresource, dry_run="dryRun" in request.params)

    async def update(self, key: Key, new: dict[str, Any], subresource: str | None = None,
                     dry_run: bool = False) -> dict[str, Any]:
        """Replace an object (or its status) as the API server would (also used by test controllers)."""
        old = self.store[key]
        info = self._info(key[0])
        if subresource == "status":
            obj = copy.deepcopy(old)
            if "status" in new:
                obj["status"] = copy.deepcopy(new["status"])
            else:
                obj.pop("status", None)
        else:
            obj = copy.deepcopy(new)
            meta = obj.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            if "status" in info.subresources:  # the status subresource owns .status
                obj.pop("status", None)
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
            if _body_fields(obj) != _body_fields(old):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        obj["apiVersion"], obj["kind"] = old["apiVersion"], old["kind"]
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if obj == old or dry_run:
            return obj  # a no-op write: no new resourceVersion, no event
        self._bump(obj)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            await self._remove(key, obj)
            return obj
        self.store[key] = obj
        verb = "status" if subresource == "status" else "update"
        self.writes[verb, key[0].plural] += 1
        self.first_write.setdefault((verb, key[0].plural, key[1] or "", key[2]), time.monotonic())
        if key[0] == CRDS:
            self._serve_crd(obj)
        await self._emit(key[0], "MODIFIED", obj)
        return obj

    async def _serve_delete(self, request: rendering.Request) -> Any:
        key = self._key(request)
        if key not in self.store:
            raise _error(404, "NotFound", f'{key[0].plural} "{key[2]}" not found')
        if "dryRun" in request.params:
            return self.store[key]
        body = request.data if isinstance(request.data, dict) else {}
        orphan = (request.params.get("propagationPolicy") or body.get("propagationPolicy")) == "Orphan"
        return await self.delete(key, orphan=orphan)

    async def delete(self, key: Key, orphan: bool = False) -> dict[str, Any]:
        obj = copy.deepcopy(self.store[key])
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                self._bump(obj)
                self.store[key] = obj
                await self._emit(key[0], "MODIFIED", obj)
            return obj
        self._bump(obj)
        await self._remove(key, obj, orphan=orphan)
        return obj

    async def _remove(self, key: Key, obj: dict[str, Any], orphan: bool = False) -> None:
        self.store.pop(key, None)
        self.writes["delete", key[0].plural] += 1
        await self._emit(key[0], "DELETED", obj)
        if key[0] == CRDS:
            self._unserve_crd(obj)
        if not orphan:  # background cascade: the garbage collector deletes the dependents
            uid = obj["metadata"]["uid"]
            for child_key, child in list(self.store.items()):
                owned = any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences", []))
                if owned and child_key in self.store:
                    await self.delete(child_key)

    # --- CRDs -----------------------------------------------------------------------------------

    def _crd_versions(self, crd: dict[str, Any]) -> Iterable[tuple[kmock.resource, dict[str, Any]]]:
        spec = crd["spec"]
        for version in spec.get("versions", []):
            if version.get("served", True):
                yield kmock.resource(spec["group"], version["name"], spec["names"]["plural"]), version

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for res, version in self._crd_versions(crd):
            self.resources[res] = kmock.ResourceInfo(
                kind=names["kind"], singular=names.get("singular", names["kind"].lower()),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced", verbs=VERBS,
                shortnames=set(names.get("shortNames", [])), categories=set(names.get("categories", [])),
                subresources=set(version.get("subresources", {})))
            self.printer_columns[res] = version.get("additionalPrinterColumns", [])

    def _unserve_crd(self, crd: dict[str, Any]) -> None:
        for res, _ in self._crd_versions(crd):
            self.resources.pop(res, None)
            self.printer_columns.pop(res, None)
            for key in [k for k in self.store if k[0] == res]:
                del self.store[key]

    # --- helpers for tests ----------------------------------------------------------------------

    def objects(self, resource: str | kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        return [copy.deepcopy(o) for (r, ns, _), o in self.store.items()
                if r == res and (namespace is None or ns == namespace)]

    def get(self, resource: str | kmock.resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        obj = self.store.get((res, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None


class Running:
    """An ApiServer serving on loopback from a background thread, with its own event loop.

    ``call(coro_fn, *args)`` runs a coroutine on the server's loop and returns its result, so tests
    and test controllers change objects the way the server itself does (resourceVersions, events).
    """

    def __init__(self, server: ApiServer | None = None, port: int = 0):
        self.server = server if server is not None else ApiServer()  # a View with no requests is falsy
        self._port = port
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._main, name="apiserver", daemon=True)
        self._error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.server, kmock.Server(self.server, port=self._port or None) as srv:
            self.url = f"http://127.0.0.1:{srv.port}"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> Running:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("the API server did not start") from self._error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30, **kwargs: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self.loop).result(timeout)

    def spawn(self, coro: Any) -> Any:
        """Start a coroutine (a test controller) on the server's loop; returns its future."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def kubeconfig(self, path: Any) -> Any:
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                          "namespace": "default"}}],
        }
        path.write_text(json.dumps(doc))
        return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    args = parser.parse_args()
    running = Running(port=args.port).start()
    if args.kubeconfig:
        import pathlib

        running.kubeconfig(pathlib.Path(args.kubeconfig))
    print(f"serving the Kubernetes API emulator on {running.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        running.stop()


if __name__ == "__main__":
    main()
