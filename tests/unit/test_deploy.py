"""deploy/ agrees with the CLI it runs and with itself: flags, discovered names, ports, secrets
(no Docker; the Kubernetes objects as each overlay renders them, `kubectl kustomize`)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from edgecascade.edge.cli import app
from tests.kustomize import K8S, OVERLAYS, find, rendered

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GATEWAY_DOCKERFILE = DEPLOY / "gateway.Dockerfile"
EDGE_DOCKERFILE = DEPLOY / "edge.Dockerfile"
TRITON_DOCKERFILE = DEPLOY / "triton.Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
TRITON_K8S = K8S / "base" / "triton.yaml"
GATEWAY_K8S = K8S / "base" / "gateway.yaml"
SCRIPT = "edgecascade"  # [project.scripts] in pyproject.toml
# The gateway follows the Triton pods through the SRV records of their headless Service, by
# its full name (no resolv.conf search list).
NAMESPACE_VAR = "POD_NAMESPACE"
CLUSTER_DOMAIN = "svc.cluster.local"

Manifest = dict[str, Any]
Command = Any  # a click command (newer typer versions vendor click)


# --- Dockerfiles --------------------------------------------------------------------------


def dockerfile_instructions(path: Path, instruction: str) -> list[str]:
    """The arguments of each `instruction` line of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    prefix = f"{instruction} "
    return [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]


def exec_form(path: Path, instruction: str) -> list[str]:
    """The JSON (exec) form of a Dockerfile's single ENTRYPOINT or CMD."""
    lines = dockerfile_instructions(path, instruction)
    assert len(lines) == 1, f"{path.name}: {len(lines)} {instruction} lines, expected one"
    args = json.loads(lines[0])  # the shell form is not JSON: it fails here
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), lines[0]
    return args


def entrypoint(path: Path) -> tuple[list[str], list[str]]:
    """The `edgecascade` subcommand a Dockerfile's ENTRYPOINT runs, and the options it gives."""
    args = exec_form(path, "ENTRYPOINT")
    assert args[0] == SCRIPT, f"{path.name}: ENTRYPOINT runs {args[0]}, not {SCRIPT}"
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    return args[1:first_option], args[first_option:]


def build_tag(path: Path) -> str:
    """The image name its header comment builds (`docker build -f ... -t NAME .`)."""
    pattern = rf"docker build -f deploy/{re.escape(path.name)} -t (\S+) \."
    found = re.search(pattern, path.read_text())
    assert found, f"{path.name}: no `docker build -f deploy/{path.name} -t NAME .` in its header"
    return found.group(1)


# --- YAML ---------------------------------------------------------------------------------


def manifests(path: Path) -> list[Manifest]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def container(workload: Manifest) -> Manifest:
    """The single container of a Deployment's or StatefulSet's pod template."""
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def container_ports(workload: Manifest) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload)["ports"]}


def compose_service(name: str) -> Manifest:
    (doc,) = manifests(COMPOSE)
    return doc["services"][name]


def gateway_args(overlay: str) -> list[str]:
    """What an overlay passes to the gateway image: its args, after the ENTRYPOINT."""
    gateway = container(find(rendered(overlay), "Deployment", "edgecascade-gateway"))
    assert "command" not in gateway, "a command would replace the image's ENTRYPOINT"
    return gateway["args"]


# --- the CLI ------------------------------------------------------------------------------


def cli_command(path: Sequence[str]) -> Command:
    """The click command behind `edgecascade <path...>`, from the real typer app."""
    command = typer.main.get_command(app)
    for name in path:
        assert hasattr(command, "commands"), f"{command.name} has no subcommands"
        assert name in command.commands, f"`{SCRIPT} {' '.join(path)}`: no command {name!r}"
        command = command.commands[name]
    return command


def options(command: Command) -> set[str]:
    """Every option spelling the command accepts (--flag, --no-flag, -f)."""
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


def flags(args: Sequence[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("-")]


def values(args: Sequence[str], flag: str) -> list[str]:
    """The values given to `flag` (`--flag VALUE` or `--flag=VALUE`), in order."""
    found = [b for a, b in zip(args, args[1:]) if a == flag]
    return found + [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]


# --- the Triton StatefulSet ---------------------------------------------------------------


def triton(overlay: str) -> tuple[Manifest, Manifest]:
    """The Triton StatefulSet and the Service that names its pods."""
    docs = rendered(overlay)
    statefulset = find(docs, "StatefulSet")
    return statefulset, find(docs, "Service", statefulset["spec"]["serviceName"])


def triton_srv_name(overlay: str, namespace: str) -> str:
    """The SRV name of the Triton pods' gRPC port: _<port name>._tcp.<service>.<namespace>..."""
    statefulset, service = triton(overlay)
    (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc.get("protocol", "TCP") == "TCP"
    # headless: the SRV records carry the pods' own port
    assert grpc["port"] == container_ports(statefulset)["grpc"]
    return f"_grpc._tcp.{service['metadata']['name']}.{namespace}.{CLUSTER_DOMAIN}"


# --- tests --------------------------------------------------------------------------------

INVOCATIONS: dict[str, tuple[Path, tuple[str, ...], Callable[[], list[str]]]] = {
    # where: (the image's Dockerfile, the subcommand, the arguments that follow its ENTRYPOINT)
    "gateway.Dockerfile CMD": (
        GATEWAY_DOCKERFILE,
        ("router", "serve"),
        lambda: exec_form(GATEWAY_DOCKERFILE, "CMD"),
    ),
    **{
        f"k8s {overlay} gateway args": (
            GATEWAY_DOCKERFILE,
            ("router", "serve"),
            functools.partial(gateway_args, overlay),
        )
        for overlay in OVERLAYS
    },
    "edge.Dockerfile CMD": (
        EDGE_DOCKERFILE,
        ("edge", "serve"),
        lambda: exec_form(EDGE_DOCKERFILE, "CMD"),
    ),
    "compose.yaml edge command": (
        EDGE_DOCKERFILE,
        ("edge", "serve"),
        lambda: compose_service("edge")["command"],
    ),
}


@pytest.mark.parametrize("where", INVOCATIONS)
def test_every_flag_is_an_option_of_the_command_the_image_runs(where: str) -> None:
    dockerfile, subcommand, extra = INVOCATIONS[where]
    path, entry_args = entrypoint(dockerfile)
    assert path == list(subcommand), f"{dockerfile.name} runs `{SCRIPT} {' '.join(path)}`"
    command = cli_command(subcommand)
    args = entry_args + extra()
    unknown = sorted(set(flags(args)) - options(command))
    assert not unknown, f"{where}: {unknown} are not options of `{SCRIPT} {' '.join(path)}`"
    try:  # and the command parses the whole line: values' types, required options
        command.make_context(path[-1], list(args))
    except Exception as e:  # click's UsageError
        message = e.format_message() if hasattr(e, "format_message") else e
        pytest.fail(f"{where}: `{SCRIPT} {' '.join(path)}` rejects {args}: {message}")


@pytest.mark.parametrize(
    ("service", "dockerfile"), [("edge", EDGE_DOCKERFILE), ("triton", TRITON_DOCKERFILE)]
)
def test_compose_services_are_built_from_their_dockerfiles(service: str, dockerfile: Path) -> None:
    build = compose_service(service)["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == dockerfile


def test_triton_runs_the_image_that_has_edgecascade_for_the_family_models() -> None:
    """The family model (python backend) imports edgecascade: NVIDIA's image alone has none."""
    (base,) = dockerfile_instructions(TRITON_DOCKERFILE, "FROM")
    name, _, tag = base.rpartition(":")
    assert name == "nvcr.io/nvidia/tritonserver" and tag >= "24.12", "Python 3.11+ from 24.12"
    runs = " ".join(dockerfile_instructions(TRITON_DOCKERFILE, "RUN"))
    assert "pip install" in runs and "import edgecascade.cloud.triton.family" in runs
    for overlay in OVERLAYS:
        image = container(triton(overlay)[0])["image"].rsplit("/", 1)[-1].split(":")[0]
        assert image == build_tag(TRITON_DOCKERFILE), overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_discovers_the_triton_pods(overlay: str) -> None:
    gateway = container(find(rendered(overlay), "Deployment", "edgecascade-gateway"))
    srv = triton_srv_name(overlay, f"$({NAMESPACE_VAR})")
    assert values(gateway_args(overlay), "--discover") == [srv]
    assert values(gateway_args(overlay), "--upstream") == []  # no fixed list to go stale
    namespace = {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {"name": NAMESPACE_VAR, "valueFrom": namespace} in gateway.get("env", [])
    # The image's own default: the same pods in namespace default.
    cmd = exec_form(GATEWAY_DOCKERFILE, "CMD")
    assert values(cmd, "--discover") == [triton_srv_name(overlay, "default")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_service_is_headless_over_the_statefulset_pods(overlay: str) -> None:
    statefulset, service = triton(overlay)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"].get("clusterIP") == "None", "per-pod DNS names need a headless Service"
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # Loading a model, a Triton is not ready but serves what it has: the gateway decides.
    assert service["spec"].get("publishNotReadyAddresses") is True
    assert_service_targets(service, statefulset)
    ports = container_ports(statefulset)
    for port in service["spec"]["ports"]:  # headless: no port translation
        assert port["port"] == ports[port["name"]], port


def assert_service_targets(service: Manifest, workload: Manifest) -> None:
    """Each Service port targets a container port (by name or number) of the workload."""
    ports = container_ports(workload)
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in ports or target in ports.values(), f"{port}: no such container port"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_service_and_container_ports_match_the_command(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = find(docs, "Deployment", "edgecascade-gateway")
    service = find(docs, "Service", "edgecascade-gateway")
    ports = container_ports(deployment)
    # Edges and Prometheus reach gRPC, REST and metrics; only the kubelet asks the health port.
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": ports["grpc"],
        "http": ports["http"],
        "metrics": ports["metrics"],
    }
    assert_service_targets(service, deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    gateway = container(deployment)
    # Ready while a Triton is: gRPC health on the plaintext health port, not a TCP check.
    assert gateway["readinessProbe"]["grpc"]["port"] == ports["health"]
    for probe in ("startupProbe", "livenessProbe"):
        assert gateway[probe]["tcpSocket"]["port"] in ("grpc", ports["grpc"])
    _, args = entrypoint(GATEWAY_DOCKERFILE)
    assert values(args, "--port") == [str(ports["grpc"])]
    assert values(args, "--health-port") == [str(ports["health"])]
    assert values(args, "--metrics-port") == [str(ports["metrics"])]
    assert values(gateway["args"], "--http-port") == [str(ports["http"])]
    exposed = " ".join(dockerfile_instructions(GATEWAY_DOCKERFILE, "EXPOSE")).split()
    assert sorted(map(int, exposed)) == sorted(ports.values())
    image = gateway["image"].rsplit("/", 1)[-1].split(":")[0]
    assert image == build_tag(GATEWAY_DOCKERFILE)


def test_gateway_image_installs_haproxy() -> None:
    runs = [r.split() for r in dockerfile_instructions(GATEWAY_DOCKERFILE, "RUN")]
    assert any("apt-get" in r and "install" in r and "haproxy" in r for r in runs), runs


# --- secrets and users --------------------------------------------------------------------

DOCKERFILES = (EDGE_DOCKERFILE, GATEWAY_DOCKERFILE, TRITON_DOCKERFILE)
# What must never be copied into an image: private keys, signing keys, caller files, the
# folders they live in, or the whole build context (`COPY . .`).
SECRET_PATHS = re.compile(r"\.key\b|\.ed25519|callers|secrets|\bkeys\b|\bcerts\b|^\./?$")
SECRET_FLAGS = (
    "--tls-cert",
    "--tls-key",
    "--tls-ca",
    "--callers",
    "--triton-ca",
    "--triton-cert",
    "--triton-key",
    "--triton-admin-key-file",
)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_user_that_is_not_root(dockerfile: Path) -> None:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    users = [i for i, line in enumerate(lines) if line.startswith("USER ")]
    assert users, f"{dockerfile.name} has no USER: it would run as root"
    user = lines[users[-1]].split()[1].split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile.name} runs as {user}"
    last_run = max(i for i, line in enumerate(lines) if line.startswith("RUN "))
    assert users[-1] > last_run, f"{dockerfile.name}: USER before a RUN; the image ends as root"
    useradd = " ".join(dockerfile_instructions(dockerfile, "RUN"))
    assert f"--uid {user}" in useradd or user in useradd.split(), f"{user} is never created"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_key_or_caller_file_is_copied_into_an_image(dockerfile: Path) -> None:
    for line in dockerfile_instructions(dockerfile, "COPY") + dockerfile_instructions(
        dockerfile, "ADD"
    ):
        sources = [a for a in line.split()[:-1] if not a.startswith("--")]
        for source in sources:
            assert not SECRET_PATHS.search(source), f"{dockerfile.name} copies {source}"
    for line in dockerfile_instructions(dockerfile, "ENV") + dockerfile_instructions(
        dockerfile, "ARG"
    ):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|_KEY\b", line), f"{dockerfile.name}: {line}"
    # ... and the build context leaves them out, whatever a later COPY names.
    ignored = Path(f"{dockerfile}.dockerignore").read_text().split()
    for pattern in ("**/*.key", "**/*.ed25519", "artifacts/keys", "deploy/secrets"):
        assert pattern in ignored, f"{dockerfile.name}.dockerignore lets {pattern} in"


def secret_mounts(workload: Manifest) -> dict[str, str]:
    """mountPath -> Secret name, for each Secret volume the workload's container mounts."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    mounts = container(workload).get("volumeMounts", [])
    found = {}
    for mount in mounts:
        secret = volumes[mount["name"]].get("secret")
        if secret:
            assert mount.get("readOnly") is True, f"{mount['name']} is mounted writable"
            found[mount["mountPath"]] = secret["secretName"]
    return found


def created_secrets(path: Path) -> set[str]:
    """The Secrets the header comment of a manifest says how to create."""
    return set(re.findall(r"kubectl create secret generic (\S+)", path.read_text()))


WORKLOADS = {"Deployment": GATEWAY_K8S, "StatefulSet": TRITON_K8S}  # kind: its base file


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("kind", WORKLOADS)
def test_k8s_workloads_run_as_non_root_with_secrets_mounted(overlay: str, kind: str) -> None:
    path = WORKLOADS[kind]
    workload = find(rendered(overlay), kind)
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]  # reads
    assert container(workload)["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = secret_mounts(workload)
    assert set(mounts.values()) | referenced_secrets(workload) <= created_secrets(path)
    for arg in container(workload)["args"]:
        value = arg.split("=", 1)[-1]
        if value.startswith("/etc/edgecascade/"):  # every certificate, key, caller file
            assert any(value.startswith(m + "/") for m in mounts), f"{arg}: not from a Secret"


def referenced_secrets(workload: Manifest) -> set[str]:
    env = container(workload).get("env", [])
    refs = [e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})]
    return {ref["name"] for ref in refs}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_gets_every_security_setting_from_a_secret(overlay: str) -> None:
    args = gateway_args(overlay)
    given = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}
    assert set(SECRET_FLAGS) <= set(given), set(SECRET_FLAGS) - set(given)
    assert "--require-client-cert" in args
    mounts = secret_mounts(find(rendered(overlay), "Deployment"))
    for flag in SECRET_FLAGS:
        assert any(given[flag].startswith(m + "/") for m in mounts), flag


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_restricts_model_control_with_a_key_from_a_secret(overlay: str) -> None:
    statefulset, _ = triton(overlay)
    args = container(statefulset)["args"]
    assert "--grpc-use-ssl-mutual=true" in args
    (restricted,) = [a for a in args if a.startswith("--grpc-restricted-protocol=")]
    protocols, key = restricted.split("=", 1)[1].split(":", 1)
    assert {"model-repository", "shared-memory"} <= set(protocols.split(","))
    assert key == "edgecascade-admin-key=$(TRITON_ADMIN_KEY)"  # expanded from the env
    assert "TRITON_ADMIN_KEY" in {
        e["name"] for e in container(statefulset)["env"] if "secretKeyRef" in e["valueFrom"]
    }


def test_compose_services_read_their_secrets_from_compose_secrets() -> None:
    (doc,) = manifests(COMPOSE)
    defined = doc["secrets"]
    for name, spec in defined.items():
        assert spec["file"].startswith("./secrets/"), f"secret {name}: {spec['file']}"
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored  # the files themselves are never committed
    for service_name, service in doc["services"].items():
        text = json.dumps(service)
        used = set(re.findall(r"/run/secrets/(\w+)", text))
        assert used <= set(service.get("secrets", [])), f"{service_name}: {used}"
        assert set(service.get("secrets", [])) <= set(defined)
    assert compose_service("triton")["user"] not in ("root", "0")


def test_compose_edge_environment_names_settings_of_the_agent() -> None:
    settings = pytest.importorskip("edgecascade.edge.serving.settings")
    fields = set(settings.EdgeSettings.model_fields)
    for variable in compose_service("edge")["environment"]:
        assert variable.startswith("EDGECASCADE_")
        assert variable.removeprefix("EDGECASCADE_").lower() in fields, variable
