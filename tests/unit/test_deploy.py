"""deploy/ agrees with the CLI it runs and with itself: flags, upstream names, ports (no Docker)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from edgecascade.edge.cli import app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GATEWAY_DOCKERFILE = DEPLOY / "gateway.Dockerfile"
EDGE_DOCKERFILE = DEPLOY / "edge.Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
TRITON_K8S = DEPLOY / "k8s" / "triton.yaml"
GATEWAY_K8S = DEPLOY / "k8s" / "gateway.yaml"
SCRIPT = "edgecascade"  # [project.scripts] in pyproject.toml
# The gateway reaches each Triton pod by its full name: HAProxy re-resolves server names at
# run time without the resolv.conf search list, so a short name stops resolving (DNS NX).
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


def find(docs: Sequence[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one manifest of `kind` (named `name` when given)."""
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} manifests, expected one"
    return found[0]


def container(workload: Manifest) -> Manifest:
    """The single container of a Deployment's or StatefulSet's pod template."""
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def container_ports(workload: Manifest) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload)["ports"]}


def compose_service(name: str) -> Manifest:
    (doc,) = manifests(COMPOSE)
    return doc["services"][name]


def gateway_args() -> list[str]:
    """What k8s/gateway.yaml passes to the gateway image: its args, after the ENTRYPOINT."""
    gateway = container(find(manifests(GATEWAY_K8S), "Deployment"))
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


def triton() -> tuple[Manifest, Manifest]:
    """The Triton StatefulSet and the Service that names its pods."""
    docs = manifests(TRITON_K8S)
    statefulset = find(docs, "StatefulSet")
    return statefulset, find(docs, "Service", statefulset["spec"]["serviceName"])


def triton_pods(namespace: str) -> list[str]:
    """host:port of each Triton replica's gRPC endpoint, by its per-pod DNS name."""
    statefulset, service = triton()
    name, domain = statefulset["metadata"]["name"], service["metadata"]["name"]
    port = container_ports(statefulset)["grpc"]  # headless: clients reach the pod's own port
    return [
        f"{name}-{i}.{domain}.{namespace}.{CLUSTER_DOMAIN}:{port}"
        for i in range(statefulset["spec"]["replicas"])
    ]


# --- tests --------------------------------------------------------------------------------

INVOCATIONS: dict[str, tuple[Path, tuple[str, ...], Callable[[], list[str]]]] = {
    # where: (the image's Dockerfile, the subcommand, the arguments that follow its ENTRYPOINT)
    "gateway.Dockerfile CMD": (
        GATEWAY_DOCKERFILE,
        ("router", "serve"),
        lambda: exec_form(GATEWAY_DOCKERFILE, "CMD"),
    ),
    "k8s/gateway.yaml args": (GATEWAY_DOCKERFILE, ("router", "serve"), gateway_args),
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


def test_compose_edge_is_built_from_edge_dockerfile() -> None:
    build = compose_service("edge")["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == EDGE_DOCKERFILE


def test_gateway_upstreams_are_the_triton_pods() -> None:
    gateway = container(find(manifests(GATEWAY_K8S), "Deployment"))
    assert values(gateway_args(), "--upstream") == triton_pods(f"$({NAMESPACE_VAR})")
    namespace = {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {"name": NAMESPACE_VAR, "valueFrom": namespace} in gateway.get("env", [])
    # The image's own default: the same pods in namespace default.
    assert values(exec_form(GATEWAY_DOCKERFILE, "CMD"), "--upstream") == triton_pods("default")


def test_triton_service_is_headless_over_the_statefulset_pods() -> None:
    statefulset, service = triton()
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


def test_gateway_service_and_container_ports_match_the_command() -> None:
    docs = manifests(GATEWAY_K8S)
    deployment = find(docs, "Deployment")
    service = find(docs, "Service", "edgecascade-gateway")
    ports = container_ports(deployment)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert_service_targets(service, deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    probe = container(deployment)["readinessProbe"]["tcpSocket"]["port"]
    assert probe in ("grpc", ports["grpc"])
    _, args = entrypoint(GATEWAY_DOCKERFILE)
    assert values(args, "--port") == [str(ports["grpc"])]
    assert values(args, "--metrics-port") == [str(ports["metrics"])]
    exposed = " ".join(dockerfile_instructions(GATEWAY_DOCKERFILE, "EXPOSE")).split()
    assert sorted(map(int, exposed)) == sorted(ports.values())
    image = container(deployment)["image"].rsplit("/", 1)[-1].split(":")[0]
    assert image == build_tag(GATEWAY_DOCKERFILE)


def test_gateway_image_installs_haproxy() -> None:
    runs = [r.split() for r in dockerfile_instructions(GATEWAY_DOCKERFILE, "RUN")]
    assert any("apt-get" in r and "install" in r and "haproxy" in r for r in runs), runs
