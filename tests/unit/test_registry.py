"""The OCI registry client of `protect --pin-entrypoints`: reference rules, the Kubernetes
command/args rules, docker config credentials, and registry answers a real test registry
cannot give (crane's registry has no auth and no hostile modes; the happy pull path is proven
against it in tests/integration/test_pin_entrypoints.py).

The local server below is only a stand-in for those cases: token challenges, wrong
credentials, oversized or lying manifests.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudtaser.errors import ConfigError, RegistryError
from cloudtaser.target import registry as reg

# --- references -------------------------------------------------------------------------------

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "reference"),
    [
        ("busybox", "docker.io", "library/busybox", "latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36"),
        ("acme/app:2", "docker.io", "acme/app", "2"),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest"),
        ("index.docker.io/acme/app", "docker.io", "acme/app", "latest"),
        ("ghcr.io/org/team/app:1.2.3", "ghcr.io", "org/team/app", "1.2.3"),
        ("localhost/app", "localhost", "app", "latest"),
        ("127.0.0.1:5000/app:t", "127.0.0.1:5000", "app", "t"),
        (f"reg.corp:5000/app:t@{DIGEST}", "reg.corp:5000", "app", DIGEST),
        (f"app@{DIGEST}", "docker.io", "library/app", DIGEST),
    ],
)
def test_references_parse_like_docker(
    text: str, registry: str, repository: str, reference: str
) -> None:
    ref = reg.parse_reference(text)
    assert (ref.registry, ref.repository, ref.reference) == (registry, repository, reference)


def test_docker_hub_is_reached_at_its_api_host() -> None:
    assert reg.parse_reference("busybox").api_host == "registry-1.docker.io"
    assert reg.parse_reference("ghcr.io/a/b").api_host == "ghcr.io"


@pytest.mark.parametrize(
    "text",
    ["", " busybox", "busy box", "App", "reg.corp/App", "a@sha256:12", "a:-bad", "reg:99999/a",
     "a\nb", "a//b", "reg.corp:5000/"],
)  # fmt: skip
def test_bad_references_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        reg.parse_reference(text)


@pytest.mark.parametrize("text", ["linux", "linux/amd64/v1/x", "Linux/amd64", "linux/"])
def test_bad_platforms_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        reg.parse_platform(text)


# --- the command/args rules (pure) ----------------------------------------------------------------


def _lookup(entrypoint: list[str], cmd: list[str]) -> Callable[[str], reg.ImageConfig]:
    return lambda _image: reg.ImageConfig(tuple(entrypoint), tuple(cmd), DIGEST)


def _pin(container: dict[str, Any], entrypoint: list[str], cmd: list[str]) -> list[dict[str, Any]]:
    spec = {"containers": [{"name": "app", "image": "busybox", **container}]}
    return reg.pin_commands(spec, _lookup(entrypoint, cmd))


def test_no_command_no_args_pins_entrypoint_and_cmd() -> None:
    assert _pin({}, ["/app"], ["serve", "--port=80"]) == [
        {"name": "app", "command": ["/app"], "args": ["serve", "--port=80"]}
    ]


def test_own_args_replace_the_image_cmd_and_are_kept() -> None:
    assert _pin({"args": ["x"]}, ["/app"], ["serve"]) == [{"name": "app", "command": ["/app"]}]


def test_without_entrypoint_the_cmd_or_the_args_are_the_command() -> None:
    assert _pin({}, [], ["sh", "-c", "run"]) == [{"name": "app", "command": ["sh", "-c", "run"]}]
    assert _pin({"args": ["/bin/run", "1"]}, [], ["sh"]) == [
        {"name": "app", "command": ["/bin/run", "1"], "args": None}
    ]


def test_a_container_with_a_command_is_left_alone() -> None:
    assert _pin({"command": ["/mine"]}, ["/app"], ["x"]) == []


def test_an_image_that_runs_nothing_cannot_be_pinned() -> None:
    with pytest.raises(RegistryError, match="neither ENTRYPOINT nor CMD"):
        _pin({}, [], [])


def test_dollars_from_the_image_survive_kubernetes_expansion() -> None:
    pinned = _pin({}, ["/bin/sh", "-c"], ["echo $(HOME) $$ $X"])
    assert pinned[0]["args"] == ["echo $$(HOME) $$$$ $$X"]
    own = _pin({"args": ["$(HOME)"]}, ["/app"], [])
    assert "args" not in own[0]  # the container's own args are Kubernetes' already


def test_init_containers_are_not_pinned() -> None:
    spec = {
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [{"name": "app", "image": "busybox", "command": ["/x"]}],
    }
    assert reg.pin_commands(spec, _lookup(["/e"], [])) == []


# --- docker config ------------------------------------------------------------------------------


def _config(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_docker_config_credentials_in_every_form(tmp_path: Path) -> None:
    auth = base64.b64encode(b"robot:pa55word").decode()
    cfg = reg.load_docker_config(
        _config(
            tmp_path,
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": auth},
                    "reg.corp:5000": {"username": "u", "password": "p"},
                    "https://ghcr.io": {"identitytoken": "refresh-123"},
                },
                "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"},
            },
        )
    )
    hub = cfg.for_host("docker.io")
    assert hub is not None
    assert (hub.username, hub.password) == ("robot", "pa55word")
    corp = cfg.for_host("reg.corp:5000")
    assert corp is not None
    assert corp.username == "u"
    ghcr = cfg.for_host("ghcr.io")
    assert ghcr is not None
    assert ghcr.identity_token == "refresh-123"
    assert cfg.for_host("quay.io") is None
    assert "pa55word" not in repr(cfg) + repr(hub)
    assert "123.dkr.ecr.eu-west-1.amazonaws.com" in cfg.helpers


def test_a_missing_docker_config_means_anonymous(tmp_path: Path) -> None:
    assert reg.load_docker_config(tmp_path / "absent.json").for_host("docker.io") is None


def test_a_broken_docker_config_is_a_config_error_without_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not base64") as exc:
        reg.load_docker_config(_config(tmp_path, {"auths": {"r": {"auth": "s3cr3t!!"}}}))
    assert "s3cr3t" not in str(exc.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        reg.load_docker_config(bad)


# --- answers a real test registry cannot give ---------------------------------------------------

TOKEN = "tok-" + "x" * 40
PASSWORD = "registry-pa55-canary"


class _Registry:
    """Serves one repository ``app`` with scripted behaviour (127.0.0.1, plain HTTP)."""

    def __init__(self) -> None:
        self.mode = "bearer"
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, authorization)
        self.port = 0

    def add_image(self, entrypoint: list[str], cmd: list[str], platform: str = "") -> str:
        config = json.dumps({"config": {"Entrypoint": entrypoint, "Cmd": cmd}}).encode()
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.blobs[cdigest] = config
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": reg.MEDIA_OCI_MANIFEST,
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": cdigest, "size": len(config)}, "layers": []}
        ).encode()  # fmt: skip
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.manifests[digest] = (reg.MEDIA_OCI_MANIFEST, manifest)
        return digest

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                outer.requests.append(("GET", self.path, auth))
                if self.path.startswith("/token"):
                    good = "Basic " + base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
                    if auth != good:
                        self._send(401)
                        return
                    self._send(200, json.dumps({"token": TOKEN}).encode())
                    return
                if outer.mode == "evil-realm":
                    challenge = 'Bearer realm="http://tokens.example.invalid/t",service="x"'
                    self._send(401, WWW_Authenticate=challenge)
                    return
                if outer.mode == "bearer" and auth != f"Bearer {TOKEN}":
                    realm = f"http://127.0.0.1:{outer.port}/token"
                    challenge = f'Bearer realm="{realm}",service="test",scope="repository:app:pull"'
                    self._send(401, WWW_Authenticate=challenge)
                    return
                if outer.mode == "basic":
                    good = "Basic " + base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
                    if auth != good:
                        self._send(401, WWW_Authenticate='Basic realm="registry"')
                        return
                if outer.mode == "huge":
                    self._send(200, b"{" + b" " * (reg.MAX_MANIFEST_BYTES + 10) + b"}")
                    return
                if outer.mode == "notjson":
                    self._send(200, b"<html>login</html>", Content_Type="text/html")
                    return
                ref = self.path.rsplit("/", 1)[1]
                if "/manifests/" in self.path:
                    key = outer.manifests.get(ref) or outer.manifests.get(f"tag:{ref}")
                    if key is None:
                        self._send(404)
                        return
                    media, body = key
                    self._send(200, body, Content_Type=media)
                    return
                blob = outer.blobs.get(ref)
                if blob is None:
                    self._send(404)
                    return
                if outer.mode == "lying-blob":
                    blob = blob.replace(b"Entrypoint", b"Entrypoinx")
                self._send(200, blob)

        return Handler


@pytest.fixture
def registry() -> Iterator[_Registry]:
    state = _Registry()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _creds_file(tmp_path: Path, port: int, password: str = PASSWORD) -> reg.DockerConfig:
    auth = base64.b64encode(f"robot:{password}".encode()).decode()
    return reg.load_docker_config(
        _config(tmp_path, {"auths": {f"127.0.0.1:{port}": {"auth": auth}}})
    )


def test_bearer_challenge_gets_a_token_with_basic_credentials_and_retries(
    registry: _Registry, tmp_path: Path
) -> None:
    digest = registry.add_image(["/app"], ["serve"])
    registry.manifests["tag:v1"] = registry.manifests[digest]
    with reg.RegistryClient(docker_config=_creds_file(tmp_path, registry.port)) as client:
        found = client.image_config(f"127.0.0.1:{registry.port}/app:v1")
        assert (found.entrypoint, found.cmd) == (("/app",), ("serve",))
        client.image_config(f"127.0.0.1:{registry.port}/app:v1")  # cached: no new requests
    paths = [p for _m, p, _a in registry.requests]
    assert paths[0] == "/v2/app/manifests/v1"  # no /v2/ ping first
    assert paths[1].startswith("/token?")
    assert "scope=repository%3Aapp%3Apull" in paths[1]
    assert paths.count("/v2/app/manifests/v1") == 2
    assert len(paths) == 4  # challenge, token, manifest, config blob


def test_wrong_credentials_are_a_clear_error_without_the_password(
    registry: _Registry, tmp_path: Path
) -> None:
    registry.add_image(["/app"], [])
    config = _creds_file(tmp_path, registry.port, password="wrong-pa55-canary")
    with reg.RegistryClient(docker_config=config) as client, pytest.raises(RegistryError) as exc:
        client.image_config(f"127.0.0.1:{registry.port}/app:v1")
    assert "refused the credentials (401)" in str(exc.value)
    assert "pa55" not in str(exc.value)
    assert TOKEN not in str(exc.value)


def test_anonymous_access_refused_says_credentials_are_needed(registry: _Registry) -> None:
    registry.add_image(["/app"], [])
    with reg.RegistryClient() as client, pytest.raises(RegistryError, match="anonymous") as exc:
        client.image_config(f"127.0.0.1:{registry.port}/app:v1")
    assert "needs credentials" in str(exc.value)


def test_basic_challenge_is_answered_with_basic_credentials(
    registry: _Registry, tmp_path: Path
) -> None:
    registry.mode = "basic"
    digest = registry.add_image(["/bin/app"], ["-v"])
    with reg.RegistryClient(docker_config=_creds_file(tmp_path, registry.port)) as client:
        found = client.image_config(f"127.0.0.1:{registry.port}/app@{digest}")
    assert found.entrypoint == ("/bin/app",)
    assert found.manifest_digest == digest


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("huge", "larger than"),
        ("notjson", "not valid JSON"),
        ("lying-blob", "does not match its digest"),
    ],
)
def test_hostile_answers_are_refused(
    registry: _Registry, tmp_path: Path, mode: str, message: str
) -> None:
    digest = registry.add_image(["/app"], [])
    registry.manifests["tag:v1"] = registry.manifests[digest]
    registry.mode = mode
    with reg.RegistryClient() as client, pytest.raises(RegistryError, match=message):
        client.image_config(f"127.0.0.1:{registry.port}/app:v1")


def test_a_manifest_that_does_not_match_the_digest_asked_for_is_refused(
    registry: _Registry,
) -> None:
    registry.mode = "open"
    digest = registry.add_image(["/app"], [])
    other = "sha256:" + "b" * 64
    registry.manifests[other] = registry.manifests[digest]
    with reg.RegistryClient() as client, pytest.raises(RegistryError, match="does not match"):
        client.image_config(f"127.0.0.1:{registry.port}/app@{other}")


def test_not_found_says_what_to_check(registry: _Registry) -> None:
    registry.mode = "open"
    with reg.RegistryClient() as client, pytest.raises(RegistryError, match="not found"):
        client.image_config(f"127.0.0.1:{registry.port}/app:nope")


def test_an_unreachable_registry_is_one_line(registry: _Registry) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with (
        reg.RegistryClient(timeout=2) as client,
        pytest.raises(RegistryError, match="cannot reach"),
    ):
        client.image_config(f"127.0.0.1:{dead}/app:v1")


def test_a_remote_registry_is_never_spoken_to_in_plain_http() -> None:
    client = reg.RegistryClient()
    try:
        assert client._base(reg.parse_reference("reg.corp:5000/a")).startswith("https://")
        assert client._base(reg.parse_reference("localhost:5000/a")).startswith("http://")
    finally:
        client.close()


def test_protect_refuses_a_bad_platform_before_anything_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cloudtaser.cli import main

    argv = ["target", "protect", "--plan", "absent.yaml", "--vault-address", "https://v:8200",
            "--yes", "--pin-entrypoints", "--platform", "Linux"]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "not OS/ARCH" in err
    assert "Traceback" not in err


def test_a_plain_http_token_realm_elsewhere_is_refused_before_credentials_leave(
    registry: _Registry, tmp_path: Path
) -> None:
    registry.mode = "evil-realm"
    config = _creds_file(tmp_path, registry.port)
    with reg.RegistryClient(docker_config=config) as client, pytest.raises(RegistryError) as exc:
        client.image_config(f"127.0.0.1:{registry.port}/app:v1")
    assert "is not https; refused" in str(exc.value)
    assert PASSWORD not in str(exc.value)
    assert [p for _m, p, _a in registry.requests] == ["/v2/app/manifests/v1"]  # nothing else


def test_an_unparsable_image_in_the_pod_spec_is_a_clear_error() -> None:
    spec = {"containers": [{"name": "app", "image": "Bad Image!"}]}
    client = reg.RegistryClient()
    try:
        with pytest.raises(ConfigError, match="blanks"):
            reg.pin_commands(spec, client.image_config)
    finally:
        client.close()
