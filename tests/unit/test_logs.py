"""The operator's logging: the chart's logLevel sets the levels, credentials-bearing loggers stay at
WARNING even in debug, and pydantic's errors never carry what a file held into a log (issue 15 b, g, i)."""

from __future__ import annotations

import io
import logging

import pydantic
import pytest

from radscale.cells import CellResult
from radscale.operator import logs

PATIENT = "Jane Q Patient MRN 0042"
FAKE_KEY = "AKIAFAKEKEY1234567890"


@pytest.fixture
def kopf_like_root():
    """A root logger as ``kopf run`` leaves it (one stream handler, INFO), restored afterwards."""
    root = logging.getLogger()
    saved = root.level, root.handlers[:], {n: logging.getLogger(n).level for n in logs.QUIET}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s [%(levelname)s] %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield stream
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(("value", "level"), [("debug", logging.DEBUG), ("info", logging.INFO),
                                              ("WARNING", logging.WARNING), ("error", logging.ERROR)])
def test_the_environment_sets_the_operators_and_kopfs_level(kopf_like_root, value, level):
    assert logs.configure({"RADSCALE_LOG_LEVEL": value}) == level
    assert logging.getLogger().level == level
    for name in ("kopf", "kopf.objects", "radscale.operator.kube"):  # they log through the root's level
        assert logging.getLogger(name).getEffectiveLevel() == level
    for name in logs.QUIET:
        assert logging.getLogger(name).getEffectiveLevel() == max(level, logging.WARNING)


def test_unset_leaves_kopfs_command_line_level_and_a_bad_value_names_the_choices(kopf_like_root):
    logging.getLogger().setLevel(logging.DEBUG)  # kopf run --verbose
    assert logs.configure({}) == logging.DEBUG
    with pytest.raises(ValueError, match="RADSCALE_LOG_LEVEL='verbose': must be one of debug, info, warning, error"):
        logs.configure({"RADSCALE_LOG_LEVEL": "verbose"})


def test_in_debug_botocore_and_friends_stay_at_warning_and_their_key_headers_are_not_emitted(kopf_like_root):
    logs.configure({"RADSCALE_LOG_LEVEL": "debug"})
    headers = {"Authorization": f"AWS4-HMAC-SHA256 Credential={FAKE_KEY}/20261202/us-east-1/s3/aws4_request"}
    for name in ("botocore.endpoint", "botocore.auth", "boto3.resources", "s3fs", "aiobotocore.endpoint",
                 "urllib3.connectionpool"):
        logging.getLogger(name).debug("Sending http request: %s", headers)
        logging.getLogger(name).info("Making request with headers %s", headers)
    logging.getLogger("radscale.operator.kube").debug("ours still shows")
    logging.getLogger("botocore.credentials").warning("a warning still shows")
    text = kopf_like_root.getvalue()
    assert FAKE_KEY not in text
    assert "ours still shows" in text and "a warning still shows" in text


def test_the_same_holds_when_kopf_itself_runs_with_debug(kopf_like_root):
    logging.getLogger().setLevel(logging.DEBUG)  # kopf run --debug, no RADSCALE_LOG_LEVEL
    logs.configure({})
    logging.getLogger("botocore.endpoint").debug("Sending http request: Credential=%s", FAKE_KEY)
    assert FAKE_KEY not in kopf_like_root.getvalue()


def _validation_error() -> pydantic.ValidationError:
    try:
        CellResult.model_validate({"study": "s", "cell": "c", "size": PATIENT, "evaluate": {PATIENT: {"metric": 1}},
                                   PATIENT: PATIENT})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def test_describe_names_fields_and_types_never_values_or_keys():
    exc = _validation_error()
    assert PATIENT in str(exc), "pydantic's own text quotes its input: the reason for all this"
    text = logs.describe(exc)
    assert PATIENT not in text and "0042" not in text
    assert "size (int_parsing)" in text and "evaluate.<key>.metrics (missing)" in text
    assert "<key> (extra_forbidden)" in text and text.startswith("4 validation error(s) for CellResult")


def test_a_traceback_or_message_quoting_a_validation_error_is_redacted(kopf_like_root):
    logs.configure({})
    exc = _validation_error()
    try:
        try:
            raise exc
        except pydantic.ValidationError as inner:
            raise RuntimeError(f"reading x failed ({inner})") from inner
    except RuntimeError as outer:
        # as kopf logs a failed handler: str(e) in the message, the traceback as exc_info
        logging.getLogger("kopf.objects").exception(f"Handler failed with an exception: {outer}")
        logging.getLogger("radscale").warning("bad file: %s", exc)
        assert PATIENT not in logs.safe_str(outer) and "size (int_parsing)" in logs.safe_str(outer)
    text = kopf_like_root.getvalue()
    assert PATIENT not in text and "0042" not in text
    assert "Traceback" in text and "size (int_parsing)" in text and "RuntimeError" in text


def test_the_cli_does_not_print_what_a_status_file_held(tmp_path, capsys, monkeypatch):
    from radscale.operator import cli, local

    def broken(*a, **k):
        try:
            CellResult.model_validate({"study": PATIENT})
        except pydantic.ValidationError as exc:
            raise local.RunError(f"{tmp_path}/status.json is not a study status ({exc}); move it away") from exc

    monkeypatch.setattr(local, "run", broken)
    monkeypatch.setattr("radscale.operator.display.make", lambda: type("V", (), {"stop": lambda self: None})())
    assert cli.main(["run", str(tmp_path / "study.yaml")]) == 2
    err = capsys.readouterr().err
    assert "status.json is not a study status" in err and "cell (missing)" in err
    assert PATIENT not in err
