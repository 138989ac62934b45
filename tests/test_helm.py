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
    assert container["image"] == f"jwksgate:{chart['appVersion']}"


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
