"""The emulator's own contract: each gap of kmock 0.8 listed in the operator issue, closed."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client, config, watch

from tests.cluster.conftest import RAYJOB_CRD
from tests.support.apiserver import CRDS, Running, label_matcher

NS = "default"


@pytest.fixture
def api(tmp_path) -> Iterator[tuple[Running, client.ApiClient]]:
    running = Running().start()
    running.call(running.server.create, (CRDS, None, "rayjobs.ray.io"), RAYJOB_CRD)
    api_client = config.new_client_from_config(str(running.kubeconfig(tmp_path / "kc.json")))
    yield running, api_client
    api_client.close()
    running.stop()


def raw(running: Running, method: str, path: str, body: object = None, ctype: str = "application/json"):
    """A plain HTTP request (status, decoded body): what a client without helpers sees."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(running.url + path, data=data, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def job(name: str, **labels: str) -> dict:
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name, "labels": labels},
            "spec": {"entrypoint": "python -c 1"}, "status": {"jobStatus": "SUCCEEDED"}}


def test_create_fills_metadata_answers_201_and_409(api) -> None:
    _running, c = api
    custom = client.CustomObjectsApi(c)
    _, code, _ = custom.create_namespaced_custom_object_with_http_info("ray.io", "v1", NS, "rayjobs", job("a"))
    assert code == 201
    obj = custom.get_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "a")
    meta = obj["metadata"]
    assert obj["apiVersion"] == "ray.io/v1" and obj["kind"] == "RayJob" and meta["namespace"] == NS
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert "status" not in obj, "status is ignored on create when the status subresource is on"
    with pytest.raises(client.exceptions.ApiException) as exc:
        custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job("a"))
    assert exc.value.status == 409


def test_generate_name_and_dry_run(api) -> None:
    running, c = api
    core = client.CoreV1Api(c)
    ev = {"metadata": {"generateName": "study."}, "involvedObject": {"name": "x"}, "reason": "R", "message": "m"}
    names = {core.create_namespaced_event(NS, ev).metadata.name for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("study.") for n in names)
    custom = client.CustomObjectsApi(c)
    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job("dry"), dry_run="All")
    assert running.server.get("ray.io/v1/rayjobs", NS, "dry") is None


def test_json_patch_test_failure_is_422_and_merge_patch_is_rfc7386(api) -> None:
    running, c = api
    custom = client.CustomObjectsApi(c)
    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job("a", team="x"))
    rv = running.server.get("ray.io/v1/rayjobs", NS, "a")["metadata"]["resourceVersion"]
    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
             {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]
    path = f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/a"
    assert raw(running, "PATCH", path, stale, "application/json-patch+json")[0] == 422
    fresh = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, stale[1]]
    assert raw(running, "PATCH", path, fresh, "application/json-patch+json")[0] == 200
    custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "a",
                                          {"metadata": {"labels": {"team": None, "tier": "gpu"}}})
    obj = running.server.get("ray.io/v1/rayjobs", NS, "a")
    assert obj["metadata"]["finalizers"] == ["f"] and obj["metadata"]["labels"] == {"tier": "gpu"}


def test_put_generation_status_subresource_and_noop_writes(api) -> None:
    _running, c = api
    custom = client.CustomObjectsApi(c)
    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job("a"))
    obj = custom.get_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "a")
    obj["spec"]["entrypoint"] = "python -c 2"
    obj["status"] = {"jobStatus": "FAILED"}
    new = custom.replace_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "a", obj)  # PUT
    assert new["metadata"]["generation"] == 2 and "status" not in new, "PUT ignores .status"
    with pytest.raises(client.exceptions.ApiException) as exc:  # a stale resourceVersion conflicts
        custom.replace_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "a", obj)
    assert exc.value.status == 409
    st = custom.patch_namespaced_custom_object_status("ray.io", "v1", NS, "rayjobs", "a",
                                                      {"status": {"jobStatus": "RUNNING"}, "spec": {"x": 1}})
    assert st["status"] == {"jobStatus": "RUNNING"} and "x" not in st["spec"] and st["metadata"]["generation"] == 2
    again = custom.patch_namespaced_custom_object_status("ray.io", "v1", NS, "rayjobs", "a",
                                                         {"status": {"jobStatus": "RUNNING"}})
    assert again["metadata"]["resourceVersion"] == st["metadata"]["resourceVersion"], "a no-op write"


def test_selectors_and_namespaces_route(api) -> None:
    running, c = api
    custom = client.CustomObjectsApi(c)
    for name, labels in [("a", {"study": "s1", "stage": "pt"}), ("b", {"study": "s1", "stage": "ev"}),
                         ("c", {"study": "s2"})]:
        custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job(name, **labels))
    pick = lambda **kw: sorted(i["metadata"]["name"] for i in custom.list_namespaced_custom_object(  # noqa: E731
        "ray.io", "v1", NS, "rayjobs", **kw)["items"])
    assert pick(label_selector="study=s1") == ["a", "b"]
    assert pick(label_selector="study=s1,stage!=pt") == ["b"]
    assert pick(label_selector="stage in (pt, ev)") == ["a", "b"]
    assert pick(label_selector="!stage") == ["c"]
    assert pick(field_selector="metadata.name=c") == ["c"]
    assert label_matcher("a notin (x,y),b")({"a": "z", "b": "1"})
    core = client.CoreV1Api(c)
    core.create_namespace({"metadata": {"name": "ml"}})
    assert [n.metadata.name for n in core.list_namespace().items] == ["ml"]
    assert core.read_namespace("ml").metadata.name == "ml"
    assert json.loads(raw(running, "GET", "/api/v1")[1])["groupVersion"] == "v1"


def test_watch_replays_from_resource_version_and_expires_compacted_ones(api) -> None:
    running, c = api
    custom = client.CustomObjectsApi(c)
    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job("a"))
    listed = custom.list_namespaced_custom_object("ray.io", "v1", NS, "rayjobs")
    rv = listed["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "a", {"metadata": {"labels": {"x": "1"}}})
    custom.delete_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "a")
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in watch.Watch().stream(
        custom.list_namespaced_custom_object, "ray.io", "v1", NS, "rayjobs", resource_version=rv,
        timeout_seconds=1)]
    assert events == [("MODIFIED", "a"), ("DELETED", "a")], "exactly what happened after the listed version"

    running.server.history = 2  # compact: the listed version falls out of the event log
    for i in range(6):
        custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job(f"n{i}"))
    status, text = raw(running, "GET", f"/apis/ray.io/v1/namespaces/{NS}/rayjobs?watch=true&resourceVersion={rv}"
                                       "&timeoutSeconds=1")
    first = json.loads(text.splitlines()[0])
    assert status == 200 and first["type"] == "ERROR" and first["object"]["code"] == 410


def test_finalizers_and_owner_garbage_collection(api) -> None:
    running, c = api
    custom = client.CustomObjectsApi(c)
    parent = custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job("parent"))
    child = job("child")
    child["metadata"]["ownerReferences"] = [{"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "parent",
                                             "uid": parent["metadata"]["uid"]}]
    custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", child)
    custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "parent",
                                          {"metadata": {"finalizers": ["keep"]}})
    custom.delete_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "parent")
    held = running.server.get("ray.io/v1/rayjobs", NS, "parent")
    assert held["metadata"]["deletionTimestamp"], "a finalizer holds the object"
    custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", "parent",
                                          {"metadata": {"finalizers": None}})
    assert running.server.get("ray.io/v1/rayjobs", NS, "parent") is None
    assert running.server.get("ray.io/v1/rayjobs", NS, "child") is None, "dependents are collected"


def test_concurrent_watchers_see_every_event_in_order(api) -> None:
    _running, c = api
    custom = client.CustomObjectsApi(c)
    seen: list[list[str]] = [[], []]

    def follow(out: list[str]) -> None:
        for e in watch.Watch().stream(custom.list_namespaced_custom_object, "ray.io", "v1", NS, "rayjobs",
                                      timeout_seconds=2):
            out.append(e["object"]["metadata"]["name"])

    threads = [threading.Thread(target=follow, args=(s,)) for s in seen]
    for t in threads:
        t.start()
    for i in range(20):
        custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayjobs", job(f"j{i:02d}"))
    for t in threads:
        t.join()
    assert seen[0] == seen[1] == [f"j{i:02d}" for i in range(20)]
