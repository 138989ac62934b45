"""The Helm chart (helm/jwksgate) and the sidecar example (examples/sidecar-receiver).

Every value combination is rendered by the real helm binary and every rendered object is checked
against the Kubernetes OpenAPI schemas by kubernetes-validate in strict mode (unknown fields are
errors), for the oldest Kubernetes the chart supports with native sidecars and the newest one
kubernetes-validate knows. The Prometheus Operator's objects (ServiceMonitor, PrometheusRule) have
no schema there, so their structure is asserted here. The tools come from
scripts/install.d/k8s-tools.sh; a missing tool fails these tests rather than skipping them, since
a skipped chart test would look like a passing one.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config as gateway_config
from gateway.config import parse_config
from tests.tls_support import TestCA

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "jwksgate"
EXAMPLE = ROOT / "examples" / "sidecar-receiver"
TOOLS = ROOT / ".venv-tools" / "bin"
INSTALL_HINT = "run scripts/install.d/k8s-tools.sh (scripts/test does)"

# The oldest Kubernetes with native sidecars (restartPolicy: Always on an init container) on by
# default, and the newest kubernetes-validate has schemas for.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
CRD_API_GROUP = "monitoring.coreos.com/"
REPLAY_STORE_ERROR = "config.replay.store must be redis"
# What .github/workflows/release.yml publishes (tests/test_workflows.py checks the other side).
PUBLISHED_IMAGE = "ghcr.io/jwksgate/jwksgate"

Manifest = dict[str, Any]

ISSUERS: list[dict[str, Any]] = [
    {
        "name": "orders",
        "issuer": "https://orders.example",
        "jwks_url": "https://orders.example/.well-known/jwks.json",
        "algorithms": ["RS256"],
    },
    {
        "name": "billing",
        "issuer": "https://billing.example",
        "jwks_url": "https://billing.example/jwks",
        "algorithms": ["ES256"],
        "audiences": ["https://hooks.example/billing"],
        "path_prefix": "/billing/",
        "replay_key": "token",
        "body_hash": {"claim": "request_body_sha256", "encoding": "hex", "over": "raw"},
        "forward_claims": {"sub": "X-Jwt-Sub"},
    },
]

STANDALONE: dict[str, Any] = {
    "config": {
        "upstream": {"url": "http://receiver.hooks.svc:3000"},
        "issuers": ISSUERS,
    },
}

PRODUCTION: dict[str, Any] = {
    "replicaCount": 3,
    "workers": 2,
    "config": {
        "replay": {
            "store": "redis",
            "redis_url": "redis://:${REDIS_PASSWORD}@redis-master:6379/0",
        },
    },
    "secretEnv": {
        "REDIS_PASSWORD": {"secretName": "redis", "key": "redis-password"},
        "ORDERS_TOKEN": {"secretName": "orders-webhook", "key": "token", "optional": True},
    },
    "autoscaling": {
        "enabled": True,
        "minReplicas": 3,
        "maxReplicas": 10,
        "targetMemoryUtilizationPercentage": 80,
    },
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "adminFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": [
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]},
        ],
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
}


def merged(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge, the way helm merges -f files: mappings merge, everything else replaces."""
    result = copy.deepcopy(dict(base))
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                result[key] = merged(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


def tool(name: str) -> str:
    path = TOOLS / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: {INSTALL_HINT}")
    return str(path)


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm with its own empty config and cache, never the user's repositories or plugins."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


class Helm:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.count = 0

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("helm"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            timeout=120,
        )

    def values_file(self, values: Mapping[str, Any]) -> str:
        self.count += 1
        path = self.workdir / f"values-{self.count}.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        return str(path)

    def template_args(self, chart: Path, values: Mapping[str, Any]) -> list[str]:
        return [
            "template",
            "rel",
            str(chart),
            "--namespace",
            "hooks",
            "--kube-version",
            KUBE_VERSIONS[0],
            "--values",
            self.values_file(values),
        ]

    def template(self, values: Mapping[str, Any], chart: Path = CHART) -> list[Manifest]:
        result = self.run(*self.template_args(chart, values))
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def template_error(self, values: Mapping[str, Any], chart: Path = CHART) -> str:
        result = self.run(*self.template_args(chart, values))
        assert result.returncode != 0, f"helm template accepted {values}:\n{result.stdout}"
        return result.stderr

    def lint(self, values: Mapping[str, Any], chart: Path = CHART) -> None:
        result = self.run("lint", "--strict", str(chart), "--values", self.values_file(values))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.fixture
def helm(helm_env: dict[str, str], tmp_path: Path) -> Helm:
    return Helm(helm_env, tmp_path)


@pytest.fixture(scope="module")
def example_chart(helm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with its file:// dependency resolved, in a copy: the work tree stays clean."""
    tree = tmp_path_factory.mktemp("charts")
    ignore = shutil.ignore_patterns("charts", "Chart.lock")
    shutil.copytree(CHART, tree / "helm" / "jwksgate", ignore=ignore)
    shutil.copytree(EXAMPLE, tree / "examples" / "sidecar-receiver", ignore=ignore)
    chart = tree / "examples" / "sidecar-receiver"
    result = Helm(helm_env, tree).run("dependency", "update", "--skip-refresh", str(chart))
    assert result.returncode == 0, result.stdout + result.stderr
    return chart


def validate(manifests: list[Manifest], tmp_path: Path) -> None:
    """kubernetes-validate --strict on every object it has a schema for; all must pass."""
    core = [m for m in manifests if not m["apiVersion"].startswith(CRD_API_GROUP)]
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(core))
    for version in KUBE_VERSIONS:
        result = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "-k", version, str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "WARN" not in output and "ERROR" not in output, output
        # One "passed" line per object: none was skipped for want of a schema.
        assert output.count(" passed for resource ") == len(core), output


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def gateway_container(manifests: list[Manifest]) -> dict[str, Any]:
    spec = pod_spec(manifests)
    containers = spec["containers"] + spec.get("initContainers", [])
    (container,) = [c for c in containers if c["name"] == "jwksgate"]
    return dict(container)


def config_map_named(manifests: list[Manifest], name: str) -> Manifest:
    (cm,) = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"] == name]
    return cm


def mounted_config(manifests: list[Manifest]) -> tuple[str, dict[str, Any]]:
    """The config.yaml the gateway container mounts: its text and its parsed content."""
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    container = gateway_container(manifests)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/jwksgate"]
    cm = config_map_named(manifests, volumes[mount["name"]]["configMap"]["name"])
    text: str = cm["data"]["config.yaml"]
    parsed = yaml.safe_load(text)
    assert isinstance(parsed, dict)
    return text, parsed


def checksum(manifests: list[Manifest]) -> str:
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    (key,) = [k for k in annotations if k.startswith("checksum/")]
    value: str = annotations[key]
    return value


# --- lint -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(STANDALONE, id="standalone"),
        pytest.param(merged(STANDALONE, PRODUCTION), id="production"),
        pytest.param(
            merged(STANDALONE, {"mode": "sidecar", "image": {"tag": "0.1.0"}}), id="sidecar-mode"
        ),
    ],
)
def test_chart_lints_strictly(helm: Helm, values: dict[str, Any]) -> None:
    helm.lint(values)


def test_ci_values_files_lint(helm: Helm) -> None:
    files = sorted((CHART / "ci").glob("*-values.yaml"))
    assert files, "helm/jwksgate/ci/ holds the value sets chart-testing lints"
    for path in files:
        helm.lint(yaml.safe_load(path.read_text()))


def test_example_chart_lints_strictly(helm: Helm, example_chart: Path) -> None:
    helm.lint({}, chart=example_chart)


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert str(chart["appVersion"]) == project["version"]


# --- standalone -------------------------------------------------------------------------------


def test_standalone_renders_valid_manifests(helm: Helm, tmp_path: Path) -> None:
    manifests = helm.template(STANDALONE)
    assert sorted(m["kind"] for m in manifests) == [
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    validate(manifests, tmp_path)


def test_pod_is_hardened_by_default(helm: Helm) -> None:
    manifests = helm.template(STANDALONE)
    spec = pod_spec(manifests)
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 10001
    assert pod_sc["fsGroup"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False

    container = gateway_container(manifests)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001

    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]

    # The read-only root filesystem leaves /tmp (an emptyDir) as the only writable path.
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/jwksgate"]["readOnly"] is True
    assert container["args"] == ["run", "--config", "/etc/jwksgate/config.yaml"]

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["image"] == f"{PUBLISHED_IMAGE}:{chart['appVersion']}"


def test_service_and_probes_use_the_configured_ports(helm: Helm) -> None:
    manifests = helm.template(STANDALONE)
    service = one(manifests, "Service")
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("http", 8080, "http"),
        ("admin", 9090, "admin"),
    }
    assert (
        service["spec"]["selector"]
        == one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    )

    container = gateway_container(manifests)
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {
        ("http", 8080),
        ("admin", 9090),
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9090"

    # Moving the listeners in config moves the container ports and the scrape annotation too.
    moved = helm.template(
        merged(STANDALONE, {"config": {"listen": "0.0.0.0:8443", "admin_listen": ":9102"}})
    )
    assert {p["containerPort"] for p in gateway_container(moved)["ports"]} == {8443, 9102}
    moved_annotations = one(moved, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert moved_annotations["prometheus.io/port"] == "9102"


@pytest.mark.parametrize(
    ("pre_stop", "grace", "margin"),
    [(5, 20, 10), (12, 45, 3), (0, 30, 5)],
)
def test_termination_grace_is_pre_stop_plus_drain_plus_margin(
    helm: Helm, pre_stop: int, grace: int, margin: int
) -> None:
    manifests = helm.template(
        merged(
            STANDALONE,
            {
                "config": {"shutdown_grace_seconds": grace},
                "lifecycle": {
                    "preStopSleepSeconds": pre_stop,
                    "terminationGraceMarginSeconds": margin,
                },
            },
        )
    )
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] == pre_stop + grace + margin
    container = gateway_container(manifests)
    if pre_stop:
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pre_stop)]
    else:
        assert "lifecycle" not in container
    assert mounted_config(manifests)[1]["shutdown_grace_seconds"] == grace


def test_default_pre_stop_is_five_seconds(helm: Helm) -> None:
    container = gateway_container(helm.template(STANDALONE))
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_config_yaml_is_rendered_from_values(helm: Helm) -> None:
    _, config = mounted_config(helm.template(STANDALONE))
    assert config["issuers"] == ISSUERS
    assert config["upstream"] == {"url": "http://receiver.hooks.svc:3000", "timeout_seconds": 30}
    assert config["listen"] == "0.0.0.0:8080"
    assert config["admin_listen"] == "0.0.0.0:9090"
    assert config["shutdown_grace_seconds"] == 20
    assert config["workers"] == 1
    assert config["replay"]["store"] == "memory"
    assert config["limits"]["max_body_bytes"] == 1048576
    assert config["forward"] == {
        "header_prefix": "X-Jwt-",
        "claims_header": "X-Jwt-Claims",
        "keep_token": False,
    }


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(STANDALONE, id="standalone"),
        pytest.param(merged(STANDALONE, PRODUCTION), id="production"),
    ],
)
def test_rendered_config_is_accepted_by_the_gateway(
    helm: Helm, monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]
) -> None:
    """The values mirror the config file: what the chart mounts, the gateway must load."""
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    _, raw = mounted_config(helm.template(values))
    config = parse_config(raw)
    assert [i.name for i in config.issuers] == [i["name"] for i in ISSUERS]
    assert config.workers == values.get("workers", 1)
    assert config.replay.store == raw["replay"]["store"]


def test_checksum_is_the_hash_of_the_mounted_config(helm: Helm) -> None:
    manifests = helm.template(STANDALONE)
    text, _ = mounted_config(manifests)
    assert checksum(manifests) == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()


def test_checksum_changes_with_the_config_and_only_with_it(helm: Helm) -> None:
    base = checksum(helm.template(STANDALONE))
    rotated_jwks = [dict(ISSUERS[0], jwks_url="https://orders.example/v2/jwks.json"), ISSUERS[1]]
    changed_config: list[dict[str, Any]] = [
        {"config": {"issuers": rotated_jwks}},
        {"config": {"upstream": {"url": "http://other.hooks.svc:3000"}}},
        {"config": {"limits": {"max_inflight": 64}}},
    ]
    for override in changed_config:
        assert checksum(helm.template(merged(STANDALONE, override))) != base, override
    unchanged_config: list[dict[str, Any]] = [
        {"resources": {"requests": {"cpu": "250m"}}},
        {"podAnnotations": {"team": "hooks"}},
        {"lifecycle": {"preStopSleepSeconds": 9}},
    ]
    for override in unchanged_config:
        assert checksum(helm.template(merged(STANDALONE, override))) == base, override


def test_secrets_come_from_secret_key_refs(helm: Helm) -> None:
    manifests = helm.template(merged(STANDALONE, PRODUCTION))
    env = {e["name"]: e for e in gateway_container(manifests)["env"]}
    assert env["REDIS_PASSWORD"] == {
        "name": "REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "redis", "key": "redis-password"}},
    }
    assert env["ORDERS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "orders-webhook",
        "key": "token",
        "optional": True,
    }
    # The secret itself never lands in the ConfigMap: the config refers to the variable.
    _, config = mounted_config(manifests)
    assert config["replay"]["redis_url"] == "redis://:${REDIS_PASSWORD}@redis-master:6379/0"
    assert not by_kind(manifests, "Secret")


def test_defaults_alone_refuse_to_render(helm: Helm) -> None:
    error = helm.template_error({})
    assert "config.upstream.url is required" in error
    assert "config.issuers needs at least one issuer" in error


# --- the replay store -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        pytest.param({"replicaCount": 3}, id="replicas"),
        pytest.param({"workers": 2}, id="workers"),
        pytest.param(
            {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}}, id="hpa"
        ),
    ],
)
def test_more_than_one_process_with_the_memory_store_fails(
    helm: Helm, override: dict[str, Any]
) -> None:
    error = helm.template_error(merged(STANDALONE, override))
    assert REPLAY_STORE_ERROR in error
    assert "accepted twice" in error


def test_redis_store_needs_a_url(helm: Helm) -> None:
    error = helm.template_error(merged(STANDALONE, {"config": {"replay": {"store": "redis"}}}))
    assert "config.replay.redis_url is required" in error


def test_one_replica_with_the_memory_store_renders(helm: Helm) -> None:
    manifests = helm.template(merged(STANDALONE, {"replicaCount": 1, "workers": 1}))
    assert one(manifests, "Deployment")["spec"]["replicas"] == 1


# --- schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mode": "daemonset"}, "mode"),
        ({"config": {"upstream_url": "http://x"}}, "upstream_url"),
        ({"config": {"issuers": [dict(ISSUERS[0], name="Orders")]}}, "config.issuers.0.name"),
        ({"config": {"issuers": [dict(ISSUERS[0], algorithms=["none"])]}}, "algorithms"),
        ({"config": {"replay": {"store": "sqlite"}}}, "config.replay.store"),
        ({"config": {"listen": "0.0.0.0"}}, "config.listen"),
        ({"workers": 0}, "workers"),
        ({"secretEnv": {"REDIS_PASSWORD": {"secretName": "redis"}}}, "key"),
        ({"tls": {"secret": "gw-tls"}}, "Additional property secret"),
        ({"upstreamCA": {"secretname": "ca"}}, "Additional property secretname"),
        ({"upstreamCA": {"secretName": "a", "configMapName": "b"}}, "upstreamCA"),
        ({"redisCA": {"key": "ca.crt"}}, "redisCA"),
        ({"upstreamClientCert": {"name": "client"}}, "Additional property name"),
        ({"issuerFiles": {"orders": {"token": {"secretName": "t"}}}}, "Additional property token"),
        ({"issuerFiles": {"orders": {"tokens": {"keys": ["t"]}}}}, "secretName is required"),
        ({"issuerFiles": {"orders": {"jwksCa": {}}}}, "issuerFiles.orders.jwksCa"),
        ({"extraVolumes": [{"secret": {"secretName": "x"}}]}, "name is required"),
        ({"extraVolumeMounts": [{"name": "x"}]}, "mountPath is required"),
        ({"envFrom": {"secretRef": {"name": "x"}}}, "envFrom"),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, override: dict[str, Any], message: str) -> None:
    error = helm.template_error(merged(STANDALONE, override))
    assert "schema" in error
    assert message in error


def test_schema_knows_exactly_the_config_keys_the_gateway_accepts() -> None:
    """values.schema.json rejects unknown config keys at `helm install` time, so it must list the
    same keys as the gateway's loader (one dataclass field per key), section by section."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    issuer = config["properties"]["issuers"]["items"]
    sections: dict[str, tuple[dict[str, Any], type]] = {
        "config": (config, gateway_config.Config),
        "config.tls": (config["properties"]["tls"], gateway_config.TlsConfig),
        "config.upstream": (config["properties"]["upstream"], gateway_config.UpstreamConfig),
        "config.limits": (config["properties"]["limits"], gateway_config.LimitsConfig),
        "config.replay": (config["properties"]["replay"], gateway_config.ReplayConfig),
        "config.forward": (config["properties"]["forward"], gateway_config.ForwardConfig),
        "config.issuers[]": (issuer, gateway_config.IssuerConfig),
        "config.issuers[].jwks": (issuer["properties"]["jwks"], gateway_config.JwksConfig),
        "config.issuers[].body_hash": (
            issuer["properties"]["body_hash"],
            gateway_config.BodyHashConfig,
        ),
    }
    for path, (section, cls) in sections.items():
        assert section["additionalProperties"] is False, path
        schema_keys = set(section["properties"])
        gateway_keys = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("derived")}
        assert schema_keys == gateway_keys, (
            f"{path}: only in values.schema.json: {sorted(schema_keys - gateway_keys)}, "
            f"only in gateway/config.py: {sorted(gateway_keys - schema_keys)}"
        )


def test_workers_is_set_at_the_top_level_only(helm: Helm) -> None:
    error = helm.template_error(merged(STANDALONE, {"config": {"workers": 2}}))
    assert "set the top-level value `workers` instead" in error


# --- everything on ----------------------------------------------------------------------------


def test_production_values_render_valid_manifests(helm: Helm, tmp_path: Path) -> None:
    manifests = helm.template(merged(STANDALONE, PRODUCTION))
    assert sorted(m["kind"] for m in manifests) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    validate(manifests, tmp_path)

    deployment = one(manifests, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    # The HPA owns the replica count; a `replicas` field would fight it on every upgrade.
    assert "replicas" not in deployment["spec"]
    _, config = mounted_config(manifests)
    assert config["workers"] == 2
    assert config["replay"]["store"] == "redis"

    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets["memory"]["averageUtilization"] == 80

    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["minAvailable"] == 1

    policy = one(manifests, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress = {rule["ports"][0]["port"]: rule for rule in policy["ingress"]}
    assert "from" not in ingress["http"], "webhooks may come from anywhere by default"
    assert ingress["admin"]["from"] == PRODUCTION["networkPolicy"]["adminFrom"]
    dns_ports = {(p["port"], p["protocol"]) for p in policy["egress"][0]["ports"]}
    assert dns_ports == {(53, "UDP"), (53, "TCP")}


def test_service_monitor_scrapes_the_admin_port(helm: Helm) -> None:
    manifests = helm.template(merged(STANDALONE, PRODUCTION))
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    selected = spec["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": ["hooks"]}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "admin"
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"[0-9]+[smh]", endpoint["interval"])
    assert re.fullmatch(r"[0-9]+[smh]", endpoint["scrapeTimeout"])


def test_prometheus_rule_embeds_the_rules_file_verbatim(helm: Helm) -> None:
    rule = one(helm.template(merged(STANDALONE, PRODUCTION)), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules_file = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    # Equal, not just similar: the alert templates ({{ $labels.x }}) must survive helm untouched.
    assert rule["spec"] == rules_file
    groups = rule["spec"]["groups"]
    assert groups
    for group in groups:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert item["expr"] and ("alert" in item or "record" in item)


def test_grafana_dashboard_config_map(helm: Helm) -> None:
    manifests = helm.template(merged(STANDALONE, PRODUCTION))
    (dashboard,) = [
        m for m in by_kind(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    (content,) = dashboard["data"].values()
    expected = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert json.loads(content) == expected


def test_optional_objects_are_off_by_default(helm: Helm) -> None:
    kinds = {m["kind"] for m in helm.template(STANDALONE)}
    assert not kinds & {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    }


# --- sidecar ----------------------------------------------------------------------------------


def test_sidecar_mode_renders_only_the_config_map(helm: Helm) -> None:
    manifests = helm.template(merged(STANDALONE, {"mode": "sidecar", "image": {"tag": "0.1.0"}}))
    assert [m["kind"] for m in manifests] == ["ConfigMap"]


def test_sidecar_mode_needs_an_image_tag(helm: Helm) -> None:
    error = helm.template_error(merged(STANDALONE, {"mode": "sidecar"}))
    assert "image.tag (or image.digest) is required in sidecar mode" in error


@pytest.mark.parametrize("style", ["native", "classic"])
def test_sidecar_example_renders_valid_manifests(
    helm: Helm, example_chart: Path, tmp_path: Path, style: str
) -> None:
    manifests = helm.template({"sidecar": style}, chart=example_chart)
    assert sorted(m["kind"] for m in manifests) == ["ConfigMap", "Deployment", "Service"]
    validate(manifests, tmp_path)

    spec = pod_spec(manifests)
    gateway = gateway_container(manifests)
    if style == "native":
        (init,) = spec["initContainers"]
        assert init["name"] == "jwksgate"
        assert init["restartPolicy"] == "Always"
        assert [c["name"] for c in spec["containers"]] == ["receiver"]
    else:
        assert "initContainers" not in spec
        assert [c["name"] for c in spec["containers"]] == ["receiver", "jwksgate"]
        assert "restartPolicy" not in gateway

    # The sidecar is hardened by its own securityContext: the pod's belongs to the other chart.
    sc = gateway["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    # The receiver is reached through jwksgate only: it listens on loopback, the Service targets
    # jwksgate's port, and the mounted config forwards to the loopback address.
    _, config = mounted_config(manifests)
    assert config["upstream"]["url"] == "http://127.0.0.1:3000"
    assert [i.name for i in parse_config(config).issuers] == ["orders"]
    http_port = next(p for p in gateway["ports"] if p["name"] == "jwksgate-http")
    (service_port,) = one(manifests, "Service")["spec"]["ports"]
    assert service_port["targetPort"] == http_port["containerPort"] == 8080

    # The parent's pod and the dependency's ConfigMap agree on the name and on the checksum.
    text, _ = mounted_config(manifests)
    assert checksum(manifests) == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    assert spec["terminationGracePeriodSeconds"] == 5 + 20 + 10
    volumes = {v["name"] for v in spec["volumes"]}
    assert {m["name"] for m in gateway["volumeMounts"]} <= volumes


def test_sidecar_example_with_replicas_needs_redis(helm: Helm, example_chart: Path) -> None:
    error = helm.template_error({"replicaCount": 2}, chart=example_chart)
    assert REPLAY_STORE_ERROR in error
    manifests = helm.template(
        {
            "replicaCount": 2,
            "jwksgate": {
                "config": {"replay": {"store": "redis", "redis_url": "redis://redis:6379/0"}}
            },
        },
        chart=example_chart,
    )
    assert one(manifests, "Deployment")["spec"]["replicas"] == 2


# --- files from Secrets and ConfigMaps --------------------------------------------------------

# A config key that names a file, as a path into the config: "issuers" is followed by the
# issuer's name, list indexes are ints.
KeyPath = tuple[str | int, ...]
# Where the gateway container finds a file: ("secret" | "configMap", object name, key).
Source = tuple[str, str, str]

CI_FILES = {p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*.yaml"))}

# For each ci/ values file: every config key that names a file, and the Secret or ConfigMap key
# that must be mounted at that path. Exactly these: a file key the config names but nobody
# mounts is a pod that fails at start.
MOUNTED_FILES: dict[str, dict[KeyPath, Source]] = {
    "standalone": {},
    "tls": {
        ("tls", "cert_file"): ("secret", "jwksgate-tls", "tls.crt"),
        ("tls", "key_file"): ("secret", "jwksgate-tls", "tls.key"),
    },
    "ca-bundles": {
        ("upstream", "ca_file"): ("secret", "backend-ca", "ca.crt"),
        ("replay", "redis_ca_file"): ("secret", "redis-tls", "ca.crt"),
        ("issuers", "orders", "jwks", "ca_file"): ("configMap", "corp-root-ca", "ca-bundle.pem"),
    },
    "upstream-mtls": {
        ("upstream", "client_cert_file"): ("secret", "jwksgate-client", "tls.crt"),
        ("upstream", "client_key_file"): ("secret", "jwksgate-client", "tls.key"),
        ("upstream", "ca_file"): ("configMap", "backend-ca", "ca.crt"),
    },
    "static-token": {
        ("issuers", "agents", "static_token", "token_files", 0): (
            "secret",
            "agents-notification-token",
            "current",
        ),
        ("issuers", "agents", "static_token", "token_files", 1): (
            "secret",
            "agents-notification-token",
            "next",
        ),
    },
    "standard-webhooks": {
        ("issuers", "billing", "standard_webhooks", "secret_files", 0): (
            "secret",
            "billing-webhook-secret",
            "secret",
        ),
    },
    "extra-mounts": {
        ("issuers", "partners", "static_token", "token_files", 0): (
            "secret",
            "partner-a-token",
            "token",
        ),
        ("issuers", "partners", "static_token", "token_files", 1): (
            "secret",
            "partner-b-token",
            "token",
        ),
    },
}

FORMS = ("standalone", "native", "classic")


def config_file_paths(config: Mapping[str, Any]) -> dict[KeyPath, str]:
    """Every file the gateway's config names, by the key that names it."""
    found: dict[KeyPath, str] = {}

    def scalar(keypath: KeyPath, section: Any, key: str) -> None:
        if isinstance(section, Mapping) and isinstance(section.get(key), str):
            found[(*keypath, key)] = section[key]

    def listed(keypath: KeyPath, section: Any, key: str) -> None:
        if isinstance(section, Mapping):
            for i, path in enumerate(section.get(key) or []):
                found[(*keypath, key, i)] = path

    scalar(("tls",), config.get("tls"), "cert_file")
    scalar(("tls",), config.get("tls"), "key_file")
    for key in ("ca_file", "client_cert_file", "client_key_file"):
        scalar(("upstream",), config.get("upstream"), key)
    scalar(("replay",), config.get("replay"), "redis_ca_file")
    for issuer in config.get("issuers") or []:
        at: KeyPath = ("issuers", issuer["name"])
        scalar((*at, "jwks"), issuer.get("jwks"), "ca_file")
        listed((*at, "static_token"), issuer.get("static_token"), "token_files")
        listed((*at, "standard_webhooks"), issuer.get("standard_webhooks"), "secret_files")
    return found


def set_config_path(config: dict[str, Any], keypath: KeyPath, value: str) -> None:
    node: Any = config
    parts = list(keypath)
    if parts[0] == "issuers":
        (node,) = [i for i in config["issuers"] if i["name"] == parts[1]]
        parts = parts[2:]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def volume_items(volume: Mapping[str, Any]) -> list[tuple[Source, str]]:
    """(source, file path inside the volume) for every key a Secret, ConfigMap or projected
    volume lists explicitly."""
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if "secret" in volume:
        sources.append(("secret", {**volume["secret"], "name": volume["secret"]["secretName"]}))
    if "configMap" in volume:
        sources.append(("configMap", volume["configMap"]))
    for projected in volume.get("projected", {}).get("sources", []):
        for kind in ("secret", "configMap"):
            if kind in projected:
                sources.append((kind, projected[kind]))
    return [
        ((kind, source["name"], item["key"]), item["path"])
        for kind, source in sources
        for item in source.get("items", [])
    ]


def mounted_source(manifests: list[Manifest], path: str) -> Source:
    """The Secret or ConfigMap key the gateway container reads at `path`, asserting that exactly
    one mount covers it, read-only and without subPath (which would freeze a rotated Secret)."""
    container = gateway_container(manifests)
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    covering = [
        m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert len(covering) == 1, f"{path}: mounted by {covering}"
    (mount,) = covering
    assert mount.get("readOnly") is True, mount
    assert "subPath" not in mount, mount
    relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    items = [
        source
        for source, item_path in volume_items(volumes[mount["name"]])
        if item_path == relative
    ]
    assert len(items) == 1, f"{path}: volume {volumes[mount['name']]} has no item {relative}"
    return items[0]


def render_form(
    helm: Helm, example_chart: Path, values: Mapping[str, Any], form: str
) -> list[Manifest]:
    """The values in the chart's own Deployment, or in the example receiver's pod as a native or
    classic sidecar (the same values under `jwksgate:`, mode sidecar)."""
    if form == "standalone":
        return helm.template(values)
    sidecar_values = merged(values, {"mode": "sidecar", "image": {"tag": "0.1.0"}})
    return helm.template({"sidecar": form, "jwksgate": sidecar_values}, chart=example_chart)


def test_every_ci_values_file_has_its_mount_expectations() -> None:
    assert set(CI_FILES) == set(MOUNTED_FILES)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", sorted(MOUNTED_FILES))
def test_the_pod_mounts_every_file_the_config_names(
    helm: Helm, example_chart: Path, case: str, form: str
) -> None:
    values = yaml.safe_load(CI_FILES[case].read_text())
    manifests = render_form(helm, example_chart, values, form)
    _, config = mounted_config(manifests)
    files = config_file_paths(config)
    assert set(files) == set(MOUNTED_FILES[case]), files
    for keypath, path in files.items():
        assert path.startswith("/"), (keypath, path)
        assert mounted_source(manifests, path) == MOUNTED_FILES[case][keypath], keypath
    # Every Secret/ConfigMap volume the chart adds is mounted: none dangles unused.
    names = {m["name"] for m in gateway_container(manifests)["volumeMounts"]}
    chart_volumes = {
        v["name"] for v in pod_spec(manifests)["volumes"] if v["name"].startswith("jwksgate-")
    }
    assert chart_volumes <= names


@pytest.mark.parametrize("form", FORMS)
def test_every_ci_values_file_renders_valid_manifests(
    helm: Helm, example_chart: Path, tmp_path: Path, form: str
) -> None:
    for case, path in CI_FILES.items():
        helm.lint(yaml.safe_load(path.read_text()))
        manifests = render_form(helm, example_chart, yaml.safe_load(path.read_text()), form)
        (tmp_path / case).mkdir()
        validate(manifests, tmp_path / case)


def pod_files(tmp_path: Path, files: Mapping[KeyPath, str]) -> dict[KeyPath, Path]:
    """What the mounted Secrets hold, written under tmp_path at the paths the pod would see:
    certificates and their keys in pairs, CA bundles, tokens and whsec_ secrets."""
    ca = TestCA()
    issued = {"tls": ca.server_cert(), "upstream": ca.client_cert()}
    local: dict[KeyPath, Path] = {}
    for keypath, path in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        key = [k for k in keypath if isinstance(k, str)][-1]
        if key in ("cert_file", "client_cert_file"):
            target.write_bytes(issued[str(keypath[0])].cert_pem())
        elif key in ("key_file", "client_key_file"):
            target.write_bytes(issued[str(keypath[0])].key_pem())
        elif key in ("ca_file", "redis_ca_file"):
            target.write_bytes(ca.cert_pem())
        elif key == "token_files":
            target.write_text(f"notification-token-{keypath[-1]}-0123456789\n")
        else:
            assert key == "secret_files", keypath
            target.write_text("whsec_" + base64.b64encode(os.urandom(32)).decode() + "\n")
        local[keypath] = target
    return local


@pytest.mark.parametrize("case", sorted(MOUNTED_FILES))
def test_gateway_loads_the_rendered_config_with_the_mounted_files(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """The gateway checks at start that every named file is there and loads (PEM pairs, CA
    bundles, tokens): with the files where the pod has them, the rendered config must load and
    read them, so a key set in the wrong place or a wrong file name fails here."""
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    monkeypatch.setenv("UPSTREAM_URL", "http://receiver.hooks.svc:3000")
    _, config = mounted_config(helm.template(yaml.safe_load(CI_FILES[case].read_text())))
    local = pod_files(tmp_path, config_file_paths(config))
    for keypath, path in local.items():
        set_config_path(config, keypath, str(path))
    loaded = parse_config(config)
    assert sorted(loaded.secret_files) == sorted(
        str(p) for k, p in local.items() if k[-2] in ("token_files", "secret_files")
    )
    if case == "tls":
        assert loaded.tls is not None
        assert loaded.tls.cert_file == str(local[("tls", "cert_file")])
    if case == "upstream-mtls":
        assert loaded.upstream.client_key_file == str(local[("upstream", "client_key_file")])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {
                "tls": {"secretName": "gw-tls"},
                "config": {"tls": {"cert_file": "/a", "key_file": "/b"}},
            },
            "tls.secretName sets config.tls itself",
        ),
        (
            {"upstreamCA": {"configMapName": "ca"}, "config": {"upstream": {"ca_file": "/ca"}}},
            "upstreamCA sets config.upstream.ca_file itself",
        ),
        (
            {
                "upstreamClientCert": {"secretName": "client"},
                "config": {"upstream": {"client_cert_file": "/c", "client_key_file": "/k"}},
            },
            "upstreamClientCert.secretName sets config.upstream.client_cert_file",
        ),
        (
            {"redisCA": {"secretName": "redis-tls"}, "config": {"replay": {"redis_ca_file": "/r"}}},
            "redisCA sets config.replay.redis_ca_file itself",
        ),
        (
            {
                "issuerFiles": {"orders": {"jwksCa": {"configMapName": "ca"}}},
                "config": {"issuers": [dict(ISSUERS[0], jwks={"ca_file": "/ca"}), ISSUERS[1]]},
            },
            "issuerFiles.orders.jwksCa sets the issuer's jwks.ca_file itself",
        ),
        (
            {"issuerFiles": {"ordrs": {"tokens": {"secretName": "t"}}}},
            'issuerFiles.ordrs: no issuer named "ordrs" in config.issuers (known: billing, orders)',
        ),
    ],
)
def test_a_file_value_and_its_config_key_are_not_both_set(
    helm: Helm, override: dict[str, Any], message: str
) -> None:
    error = helm.template_error(merged(STANDALONE, override))
    assert message in error


def test_issuer_files_keep_what_the_config_lists(helm: Helm) -> None:
    """token_files/secret_files named in the config (from extraVolumes, say) stay, the mounted
    files come after them; an issuer name that is no DNS label still gets a valid volume name."""
    issuers = [
        {
            "name": "a2a_agents",
            "type": "static_token",
            "path_prefix": "/a2a",
            "static_token": {"token_files": ["/var/run/own/token"]},
        }
    ]
    values = merged(
        STANDALONE,
        {
            "config": {"issuers": issuers},
            "issuerFiles": {"a2a_agents": {"tokens": {"secretName": "agents"}}},
        },
    )
    manifests = helm.template(values)
    _, config = mounted_config(manifests)
    assert config["issuers"][0]["static_token"]["token_files"] == [
        "/var/run/own/token",
        "/run/jwksgate/issuers/a2a_agents/tokens/token",
    ]
    path = config["issuers"][0]["static_token"]["token_files"][1]
    assert mounted_source(manifests, path) == ("secret", "agents", "token")
    for volume in pod_spec(manifests)["volumes"]:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", volume["name"]), volume


@pytest.mark.parametrize("form", FORMS)
def test_extra_env_env_from_and_mounts_reach_the_container(
    helm: Helm, example_chart: Path, form: str
) -> None:
    values = yaml.safe_load(CI_FILES["extra-mounts"].read_text())
    manifests = render_form(helm, example_chart, values, form)
    container = gateway_container(manifests)
    env = {e["name"]: e for e in container["env"]}
    assert env["JWKSGATE_EVENT_LOOP"] == {"name": "JWKSGATE_EVENT_LOOP", "value": "auto"}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["envFrom"] == [{"secretRef": {"name": "jwksgate-env"}}]
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    assert volumes["jwksgate-partner-tokens"] == values["extraVolumes"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["jwksgate-partner-tokens"] == values["extraVolumeMounts"][0]


def test_file_values_leave_the_default_pod_alone(helm: Helm) -> None:
    """Unset, the new values add nothing: the config and volumes are what they were."""
    manifests = helm.template(STANDALONE)
    assert {v["name"] for v in pod_spec(manifests)["volumes"]} == {
        "jwksgate-config",
        "jwksgate-tmp",
    }
    container = gateway_container(manifests)
    assert "envFrom" not in container and "env" not in container
    _, config = mounted_config(manifests)
    assert config_file_paths(config) == {}
