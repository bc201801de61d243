"""The OpenBao half of the test bed works: real dev server, isolation, audit, restart."""

from __future__ import annotations

import pytest

from cloudtaser.config import VaultTarget
from cloudtaser.source.openbao import OpenBaoClient
from tests.testenv.openbao import CLI_AGENT, BaoCommandError, BaoServer, user_agent
from tests.testenv.process import pid_alive

pytestmark = pytest.mark.integration


def test_openbao_dev_server_is_unsealed_and_reports_its_version(openbao: BaoServer) -> None:
    health = openbao.api("GET", "sys/health", token="").json()
    assert health["sealed"] is False
    assert health["initialized"] is True
    assert health["version"].startswith("2.")
    assert openbao.address.startswith("http://127.0.0.1:")


def test_root_token_is_random_and_required(openbao: BaoServer) -> None:
    assert openbao.token not in {"root", ""}
    assert openbao.api("GET", "sys/mounts", token="").status_code in {401, 403}
    assert openbao.api("GET", "sys/mounts").status_code == 200


def test_kv_mount_is_a_fresh_kv_v2_mount(openbao: BaoServer, kv_mount: str) -> None:
    mounts = openbao.api("GET", "sys/mounts").json()["data"]
    assert mounts[f"{kv_mount}/"]["type"] == "kv"
    assert mounts[f"{kv_mount}/"]["options"]["version"] == "2"
    listing = openbao.api("LIST", f"{kv_mount}/metadata/")
    assert listing.status_code == 404  # nothing in it yet


def test_bao_cli_writes_what_the_api_reads(openbao: BaoServer, kv_mount: str) -> None:
    openbao.bao("kv", "put", f"{kv_mount}/payments/db", "user=app", "password=pw-123")
    body = openbao.api("GET", f"{kv_mount}/data/payments/db").json()
    assert body["data"]["data"] == {"user": "app", "password": "pw-123"}


def test_bao_cli_failure_message_holds_no_secret_value(openbao: BaoServer) -> None:
    with pytest.raises(BaoCommandError) as info:
        openbao.bao("kv", "put", "no-such-mount/x", "password=never-show-me")
    assert "never-show-me" not in str(info.value)
    assert openbao.token not in str(info.value)
    assert info.value.result.returncode != 0


def test_audit_device_records_operation_and_path_of_each_request(
    openbao: BaoServer, kv_mount: str
) -> None:
    openbao.api_ok("POST", f"{kv_mount}/data/app/one", {"data": {"k": "v"}})
    mark = openbao.audit_mark()
    openbao.api("GET", f"{kv_mount}/subkeys/app/one")
    openbao.bao("kv", "metadata", "get", f"{kv_mount}/app/one")
    ops = openbao.request_ops_since(mark)
    assert ("read", f"{kv_mount}/subkeys/app/one") in ops
    assert ("read", f"{kv_mount}/metadata/app/one") in ops
    assert ("create", f"{kv_mount}/data/app/one") not in ops  # written before the mark
    assert openbao.writes_since(mark) == []
    raw = openbao.audit_path.read_text()
    assert openbao.token not in raw  # tokens are HMAC'd in the audit log


def test_audit_filter_by_client_keeps_cloudtasers_requests_and_only_those(
    openbao: BaoServer, kv_mount: str
) -> None:
    # The filter "no request from cloudtaser" assertions rely on: it must see our requests
    # (else those assertions could never fail) and drop the fixture's and the bao CLI's.
    mark = openbao.audit_mark()
    OpenBaoClient(VaultTarget(address=openbao.address, token=openbao.token)).auth_mounts()
    openbao.api("GET", f"{kv_mount}/subkeys/app/none")
    openbao.bao("kv", "metadata", "get", f"{kv_mount}/app/none", check=False)
    ours = openbao.request_ops_since(mark, client=CLI_AGENT)
    assert ours == [("read", "sys/auth")]
    everything = openbao.requests_since(mark)
    assert len(everything) >= 3
    assert {user_agent(e).startswith(CLI_AGENT) for e in everything} == {True, False}


def test_restart_keeps_address_and_token_but_loses_dev_data(
    openbao: BaoServer, kv_mount: str
) -> None:
    address, token, old_pid = openbao.address, openbao.token, openbao.pid
    openbao.api_ok("POST", f"{kv_mount}/data/x", {"data": {"k": "v"}})
    mark = openbao.audit_mark()
    openbao.restart()
    assert (openbao.address, openbao.token) == (address, token)
    assert old_pid is not None
    assert not pid_alive(old_pid)
    assert openbao.api("GET", "sys/health").status_code == 200
    assert f"{kv_mount}/" not in openbao.api("GET", "sys/mounts").json()["data"]
    openbao.api("GET", "sys/mounts")
    assert ("read", "sys/mounts") in openbao.request_ops_since(mark)


def test_stop_then_start_serves_again_on_the_same_address(openbao: BaoServer) -> None:
    openbao.stop()
    assert not openbao.running
    with pytest.raises(Exception):  # noqa: B017 - connection refused, any flavour
        openbao.api("GET", "sys/health", timeout=2)
    openbao.start()
    assert openbao.api("GET", "sys/health").status_code == 200


def test_log_holds_no_root_token(openbao: BaoServer) -> None:
    log = openbao.log_path.read_text()
    assert "Root Token: <redacted>" in log
    assert openbao.token not in log
    assert openbao.token not in openbao.log_tail(200)
    assert openbao.token not in repr(openbao)
