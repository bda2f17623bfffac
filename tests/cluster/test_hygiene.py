"""What the real operator process writes to its log, the status and Events (issue 15 b, g, i):
never what a result file or a spec held, never the S3 access key id, at the level the chart sets."""

from __future__ import annotations

import base64
import json
import shlex
import time
from pathlib import Path

from radscale.cells import CellResult, CellSpec
from tests.cluster.conftest import Cluster, small_study, wait_for
from tests.support.operator_process import OperatorProcess

# The MRN alone is checked too (a truncated quote would keep it), in letters no timestamp, uid or
# resourceVersion can contain by chance.
MRN = "QXJW7K"
PATIENT = f"Jane Q Patient MRN {MRN}"


def _everything(cluster: Cluster, operator: OperatorProcess) -> dict[str, str]:
    """Every place a value could surface: the operator's log, each study (spec aside) and each Event."""
    studies = [{k: v for k, v in s.items() if k != "spec"}
               for s in cluster.server.objects("radscale.io/v1alpha1/scalingstudies")]
    return {"log": operator.log.read_text(errors="replace"), "studies": json.dumps(studies),
            "events": json.dumps(cluster.server.objects("v1/events"))}


def _held_evaluation(cluster: Cluster, size: int) -> CellSpec | None:
    for job in cluster.rayjobs():
        if job["metadata"]["name"].endswith("-ev") and job.get("status", {}).get("jobStatus") == "RUNNING":
            cell = CellSpec.from_arg(shlex.split(job["spec"]["entrypoint"])[-1])
            if cell.size == size:
                return cell
    return None


def test_a_malformed_result_naming_a_patient_reaches_no_log_status_or_event(cluster: Cluster, operator,
                                                                             tmp_path) -> None:
    held = {"on": True}
    cluster.kuberay.behaviour.hold = lambda cell: held["on"] and cell.stage == "evaluate" and cell.size == 100
    cluster.apply(small_study(tmp_path))
    cell = wait_for(lambda: _held_evaluation(cluster, 100), what="a held evaluation", on_timeout=operator.tail)
    path = Path(cell.result_uri.removeprefix("file://"))
    good = path.read_text()
    assert CellResult.model_validate_json(good).pretrain is not None
    planted = path.with_suffix(".tmp")
    planted.write_text(json.dumps({"study": cell.study, "cell": cell.cell, "size": PATIENT,
                                   "evaluate": {PATIENT: {"metric": PATIENT}}, "patient": {"name": PATIENT}}))
    planted.rename(path)  # whole, as an object store replaces an object

    def warned() -> list[str]:
        return [line for line in operator.log.read_text(errors="replace").splitlines()
                if "ignoring unreadable" in line and cell.cell in line]

    wait_for(warned, what="the operator to read the planted file", on_timeout=operator.tail)
    reads = lambda: float(next(line.split()[-1] for line in operator.metrics().splitlines()  # noqa: E731
                               if line.startswith("radscale_reconcile_seconds_count")))
    first = reads()
    wait_for(lambda: reads() >= first + 3, what="three more passes over the planted file")  # resync: 1 s
    lines = warned()
    assert sum("WARNING" in line for line in lines) == 1, "one WARNING for the file, not one per pass:\n" + \
        "\n".join(lines)
    assert "size (int_parsing)" in lines[0]
    path.write_text(good)  # the real trainer would now write its evaluation
    held["on"] = False
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    for where, text in _everything(cluster, operator).items():
        at = max(text.find(PATIENT), text.find(MRN))
        assert at < 0, f"the planted patient id reached the {where}: ...{text[max(0, at - 300):at + 100]}..."


def test_a_bad_spec_naming_a_patient_reaches_no_log_or_event(cluster: Cluster, operator, tmp_path) -> None:
    doc = small_study(tmp_path, name="bad")
    doc["spec"]["encoders"][0]["model"] = PATIENT  # not a timm name: the operator's validation refuses it
    cluster.apply(doc)
    ready = wait_for(lambda: (c := cluster.condition("bad", "Ready")) and c["status"] == "False" and c,
                     what="InvalidSpec", on_timeout=operator.tail)
    assert ready["reason"] == "InvalidSpec" and "spec.encoders[0].model" in ready["message"]
    time.sleep(3)  # several resync ticks over the bad spec
    found = _everything(cluster, operator)
    assert operator.alive
    assert PATIENT not in found["log"], "the bad spec's value reached the operator's log"
    # Events are exported to log stores as often as logs are: the InvalidSpec Event names the field only
    assert PATIENT not in found["events"], "the InvalidSpec Event quotes the spec's value"
    # the condition names the field and what to do, not the value (`radscale validate` shows it on the
    # user's own terminal)
    assert PATIENT not in json.dumps(cluster.status("bad")), "the condition quotes the spec's value"


def test_debug_logs_never_carry_the_s3_access_key_id(cluster: Cluster, tmp_path, s3_endpoint) -> None:
    import s3fs

    key_id = "AKIARADSCALEHYGIENE7"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="x", secret="y").mkdir("hygiene")
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cxr-s3", "namespace": "default"},
                   "data": {k: base64.b64encode(v.encode()).decode()
                            for k, v in {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "s3cr3t"}.items()}})
    cluster.kuberay.behaviour.options = {"endpoint_url": s3_endpoint, "key": "trainer", "secret": "pod-env"}
    doc = small_study(tmp_path, sizes=(100,), output="s3://hygiene/grid")
    doc["spec"]["dataset"].update(endpoint=s3_endpoint, credentialsSecret="cxr-s3")
    # the chart's logLevel: debug, as the Deployment passes it
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log",
                         env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "RADSCALE_LOG_LEVEL": "debug"})
    with op:
        cluster.apply(doc)
        cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    log = op.log.read_text(errors="replace")
    assert "[DEBUG" in log, "logLevel debug reached kopf and the operator"
    assert key_id not in log
    assert "s3cr3t" not in log
