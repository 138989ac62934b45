"""The container image recipe: Dockerfile, .dockerignore and scripts/build-image.

No image is built here (there is no container engine on our machines or CI, and the build needs
a registry); instead hadolint lints the Dockerfile for real, the properties Kubernetes relies on
are read off the parsed instructions, and scripts/build-image runs against a stand-in buildah
that records its arguments. hadolint comes from scripts/install.d/k8s-tools.sh; without it the
lint test fails rather than skips.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_IMAGE = ROOT / "scripts" / "build-image"
HADOLINT = ROOT / ".venv-tools" / "bin" / "hadolint"

BUILD_TOOLS = ("gcc", "g++", "build-essential", "python3-dev", "libffi-dev", "make", "cargo")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions, with comments dropped and continuation lines joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        assert result, f"{instruction} before the first FROM"
        result[-1].append(instruction)
    return result


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of(stage, "ENV"):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            env[name] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> list[list[Instruction]]:
    return stages(parse(DOCKERFILE.read_text()))


@pytest.fixture(scope="module")
def final(dockerfile: list[list[Instruction]]) -> list[Instruction]:
    return dockerfile[-1]


def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not (HADOLINT.is_file() and os.access(HADOLINT, os.X_OK)):
        pytest.fail(
            f"{HADOLINT} is missing: run scripts/install.d/k8s-tools.sh (scripts/test does)"
        )
    # Our own config, so that no .hadolint.yaml lying around can ignore rules; every severity
    # down to style fails, and no inline `# hadolint ignore=` pragma is honoured.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")
    return subprocess.run(
        [
            str(HADOLINT),
            "--config",
            str(config),
            "--no-color",
            "--disable-ignore-pragma",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above is only worth something if this binary does find problems."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install -y gcc\nUSER root\n")
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3002"):
        assert rule in result.stdout, result.stdout


def test_multi_stage_with_a_builder(dockerfile: list[list[Instruction]]) -> None:
    assert len(dockerfile) >= 2
    builder = dockerfile[0][0].args.split()
    assert [word.lower() for word in builder[-2:]] == ["as", "builder"], builder
    copies = args_of(dockerfile[-1], "COPY")
    assert any(c.startswith("--from=builder ") for c in copies), copies
    # Only what the builder made reaches the final image, never the build context.
    assert all(c.startswith("--from=") for c in copies), copies


def test_base_images_are_tagged_and_shared(dockerfile: list[list[Instruction]]) -> None:
    """Same base in both stages: the virtualenv's interpreter path must exist in the final one.
    Each is name:tag@sha256:digest: the tag says which image it is, the digest pins it."""
    images = [stage[0].args.split()[0] for stage in dockerfile]
    for image in images:
        named, at, digest = image.partition("@")
        assert at and re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{image}: pin by digest"
        name, _, tag = named.rpartition(":")
        assert name and tag and tag != "latest", image
        assert "slim" in tag, f"{image}: the final image should be a slim one"
    assert len(set(images)) == 1, images


def test_final_stage_runs_as_numeric_non_root(final: list[Instruction]) -> None:
    users = args_of(final, "USER")
    assert users, "the final stage must set USER"
    user = users[-1]
    assert re.fullmatch(r"[0-9]+:[0-9]+", user), f"USER {user}: numeric uid:gid, for runAsNonRoot"
    uid, gid = (int(part) for part in user.split(":"))
    assert uid == 10001 and gid == 10001
    # Nothing runs as root after the switch.
    after = final[[i.keyword for i in final].index("USER") :]
    assert not [i for i in after if i.keyword == "RUN"], after


def test_final_stage_has_no_build_tools(final: list[Instruction]) -> None:
    assert not args_of(final, "RUN"), "the final stage installs nothing"
    text = " ".join(f"{i.keyword} {i.args}" for i in final)
    for word in BUILD_TOOLS:
        assert not re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text), word


def test_python_never_writes_at_run_time(final: list[Instruction]) -> None:
    env = env_of(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # No passwd entry for UID 10001: whatever looks at $HOME must find the writable /tmp.
    assert env["HOME"] == "/tmp"


def test_entrypoint_command_signal_and_ports(final: list[Instruction]) -> None:
    assert [json.loads(a) for a in args_of(final, "ENTRYPOINT")] == [["jwksgate"]]
    assert [json.loads(a) for a in args_of(final, "CMD")] == [
        ["run", "--config", "/etc/jwksgate/config.yaml"]
    ]
    assert args_of(final, "STOPSIGNAL") == ["SIGTERM"]
    exposed = {port for args in args_of(final, "EXPOSE") for port in args.split()}
    assert exposed == {"8080", "9090"}


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern decides; `!` re-includes."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch(p, body) for p in prefixes) or fnmatch(path, body.replace("**/", "*")):
            excluded = not negate
    return excluded


def test_dockerignore_lets_in_exactly_what_the_build_copies(
    dockerfile: list[list[Instruction]],
) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Allow-list: everything is excluded first.
    assert patterns[0] == "*"
    for stage in dockerfile:
        for copy in args_of(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _dest = copy.split()
            for source in sources:
                assert not dockerignore_excludes(source.rstrip("/"), patterns), source
    for secret_or_bulk in (".git", ".venv", ".venv-tools", "tests", "helm", "config/local.yaml"):
        assert dockerignore_excludes(secret_or_bulk, patterns), secret_or_bulk
    assert dockerignore_excludes("gateway/__pycache__/app.cpython-311.pyc", patterns)


@pytest.fixture
def fake_buildah(tmp_path: Path) -> tuple[Path, Path]:
    """A buildah stand-in that records its working directory and arguments, one per line."""
    record = tmp_path / "buildah-args"
    script = tmp_path / "buildah"
    script.write_text(f'#!/usr/bin/env bash\n{{ pwd; printf "%s\\n" "$@"; }} > "{record}"\n')
    script.chmod(0o755)
    return script, record


def build_image(buildah: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JWKSGATE_IMAGE"}
    env["BUILDAH"] = str(buildah)
    return subprocess.run(
        [str(BUILD_IMAGE), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=False,
        timeout=60,
    )


def test_build_image_runs_buildah_build_with_the_default_tag(
    fake_buildah: tuple[Path, Path],
) -> None:
    buildah, record = fake_buildah
    result = build_image(buildah)
    assert result.returncode == 0, result.stderr
    cwd, *argv = record.read_text().splitlines()
    assert Path(cwd) == ROOT
    assert argv[0] in {"build", "bud"}
    assert argv[argv.index("--file") + 1] == "Dockerfile"
    assert argv[argv.index("--tag") + 1] == "jwksgate:dev"
    assert argv[-1] == "."


def test_build_image_takes_a_tag_and_passes_extra_arguments(
    fake_buildah: tuple[Path, Path],
) -> None:
    buildah, record = fake_buildah
    result = build_image(buildah, "registry.example/jwksgate:1.2.3", "--platform", "linux/arm64")
    assert result.returncode == 0, result.stderr
    _, *argv = record.read_text().splitlines()
    assert argv[argv.index("--tag") + 1] == "registry.example/jwksgate:1.2.3"
    assert argv[argv.index("--platform") + 1] == "linux/arm64"
    assert argv[-1] == "."


def test_build_image_without_buildah_says_what_is_missing(tmp_path: Path) -> None:
    result = build_image(tmp_path / "no-such-buildah")
    assert result.returncode == 127
    assert "not found" in result.stderr and "buildah" in result.stderr
