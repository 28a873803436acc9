"""The systemd unit example is complete and hardened."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "viber-exporter.service"


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_runs_the_exporter_with_reload_and_state_directory():
    service = unit()["Service"]
    assert service["ExecStart"].endswith("viber-exporter run --config /etc/viber-exporter/config.toml")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["StateDirectory"] == "viber-exporter"
    assert service["ConfigurationDirectory"] == "viber-exporter" and service["ConfigurationDirectoryMode"] == "0755"


@pytest.mark.parametrize(("key", "value"), [
    ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
    ("DynamicUser", "yes"), ("CapabilityBoundingSet", ""), ("UMask", "0077"), ("MemoryDenyWriteExecute", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
])
def test_unit_is_hardened(key, value):
    assert unit()["Service"][key] == value


def test_unit_leaves_proc_stat_visible_for_the_process_metrics():
    """ProcSubset=pid hides /proc/stat, and prometheus_client then drops every process_*
    metric (process_start_time_seconds among them)."""
    assert "ProcSubset" not in unit()["Service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    """Clean, with ExecStart pointing at a real script (the one of this venv)."""
    script = Path(sys.executable).parent / "viber-exporter"
    copy = tmp_path / "viber-exporter.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/viber-exporter", str(script)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def install_steps() -> list[str]:
    """The unit header's install -d / install -m lines for /etc/viber-exporter."""
    return [line.strip("# ").strip() for line in UNIT.read_text().splitlines()
            if line.startswith("#") and "/etc/viber-exporter" in line and line.strip("# ").startswith("install ")]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_the_documented_install_steps_let_an_unprivileged_service_user_read_its_config():
    """Run the header's steps under a temporary root, then read as an unprivileged uid
    (as DynamicUser= would): config.toml readable, the secrets file not."""
    tmp_path = Path(tempfile.mkdtemp(prefix="viber-exporter-deploy-"))  # not under pytest's 0700 dirs
    os.chmod(tmp_path, 0o755)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "config.toml").write_text('[providers.b]\nplugin = "bsg"\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "config.toml", 0o644)
    steps = install_steps()
    assert len(steps) == 3, steps
    for step in steps:
        command = step.replace("/etc/", f"{root}/etc/").replace(" config.toml ", f" {tmp_path / 'config.toml'} ")
        subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    os.chmod(root, 0o755)
    os.chmod(root / "etc", 0o755)

    def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command],
                              capture_output=True, text=True, check=False)

    try:
        assert as_nobody("cat", str(root / "etc" / "viber-exporter" / "config.toml")).returncode == 0
        assert as_nobody("ls", str(root / "etc" / "viber-exporter")).returncode == 0
        assert as_nobody("cat", str(root / "etc" / "viber-exporter" / "env")).returncode != 0, "secrets stay root's"
    finally:
        shutil.rmtree(tmp_path)


def test_compose_example_mounts_files_that_exist_and_wires_the_services():
    """compose.yaml cannot be run here (no Docker engine): check what can be checked.
    Every file it mounts is in the repository, Prometheus loads the shipped rules under
    the name its config gives and scrapes the exporter service as job viber-exporter
    (what the rules select by default), and Grafana's data source has the uid the
    dashboard and alert rules use."""
    import yaml

    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"exporter", "prometheus", "grafana"}
    assert services["exporter"]["build"] == "." and "9839:9839" in services["exporter"]["ports"]
    assert (root / "Containerfile").exists() or (root / "Dockerfile").exists()
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("./"):
                assert (root / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in compose["volumes"], f"{name}: named volume {source} is declared"
            assert target.startswith("/"), target
    prometheus = yaml.safe_load((root / "deploy/compose/prometheus.yml").read_text())
    mounted = {Path(m.split(":")[1]).name for m in services["prometheus"]["volumes"]}
    assert set(prometheus["rule_files"]) <= mounted
    [job] = prometheus["scrape_configs"]
    assert job["job_name"] == "viber-exporter" and job["static_configs"][0]["targets"] == ["exporter:9839"]
    datasource = yaml.safe_load((root / "deploy/compose/grafana-datasource.yaml").read_text())["datasources"][0]
    assert datasource["uid"] == "prometheus" and datasource["url"] == "http://prometheus:9090"


def test_the_containerfile_follows_the_documented_contract():
    """The contract of SPEC §9 and the README: the base is a build argument defaulting to
    the official Python slim image, state under /data, run as non-root, port 9839, a
    health check on /-/ready, `run` by default with the config in /etc/viber-exporter.
    (tests/test_container.py builds and runs it.)"""
    root = Path(__file__).resolve().parent.parent
    lines = [line.strip() for line in (root / "Containerfile").read_text().splitlines()]
    assert "ARG BASE=python:3.12-slim" in lines and lines.count("FROM ${BASE}") == 1
    assert any(line.startswith("FROM ${BASE} AS build") for line in lines), "multi-stage"
    assert 'VOLUME ["/data"]' in lines and "EXPOSE 9839" in lines and "USER 10001:10001" in lines
    assert 'ENTRYPOINT ["viber-exporter"]' in lines and 'CMD ["run"]' in lines
    text = "\n".join(lines)
    assert "VIBER_EXPORTER_CONFIG=/etc/viber-exporter/config.toml" in text and "/-/ready" in text


KUBERNETES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def rendered(variant: str) -> list[dict]:
    """`kubectl kustomize` of one variant (Debian's kubernetes-client or any kubectl)."""
    import yaml

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("VIBER_EXPORTER_REQUIRE_E2E") == "1":
            pytest.fail("kubectl is required (VIBER_EXPORTER_REQUIRE_E2E=1): apt-get install kubernetes-client")
        pytest.skip("kubectl not installed")
    result = subprocess.run([kubectl, "kustomize", str(KUBERNETES / variant)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize(("variant", "workload"), [("sqlite", "StatefulSet"), ("postgresql", "Deployment")])
def test_kubernetes_manifests_render_and_validate(variant, workload):
    import kubernetes_validate

    resources = rendered(variant)
    kinds = {r["kind"]: r for r in resources}
    assert set(kinds) == {"ConfigMap", "Service", "ServiceMonitor", "PrometheusRule", workload}
    for resource in resources:
        if resource["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # custom resources: checked below against the operator's documented fields
        kubernetes_validate.validate(resource, "1.30.0", strict=True)
    pod = kinds[workload]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    config_map = kinds["ConfigMap"]["metadata"]["name"]
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == config_map, "the workload mounts the generated ConfigMap"
    assert container["args"] == ["run"] and container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001 and pod["spec"]["securityContext"]["runAsNonRoot"]
    service = kinds["Service"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port = service["spec"]["ports"][0]
    assert port["targetPort"] == container["ports"][0]["name"] and port["port"] == 9839
    if workload == "StatefulSet":
        assert kinds[workload]["spec"]["replicas"] == 1, "one exporter per SQLite file"
        assert any(m["mountPath"] == "/data" for m in container["volumeMounts"])
    else:
        assert kinds[workload]["spec"]["replicas"] >= 2
        assert "state_url" in kinds["ConfigMap"]["data"]["config.toml"]

    # ServiceMonitor (monitoring.coreos.com/v1): selector.matchLabels selects the
    # Service, endpoints[].port names one of its ports.
    monitor = kinds["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
    assert service["metadata"]["name"] == "viber-exporter", "the job label the shipped rules select"


def test_the_prometheus_rule_holds_exactly_the_shipped_rules():
    import yaml

    resource = yaml.safe_load((KUBERNETES / "base" / "prometheusrule.yaml").read_text())
    shipped = yaml.safe_load((Path(__file__).resolve().parent.parent / "grafana/prometheus/viber-exporter.rules.yml").read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert set(resource["spec"]) == {"groups"} and resource["spec"]["groups"] == shipped["groups"]
    for group in resource["spec"]["groups"]:  # the operator's RuleGroup fields
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}
        for rule in group["rules"]:
            assert set(rule) <= {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def test_a_container_build_leaves_the_working_copy_s_clutter_out():
    """The Containerfile copies its whole context: .dockerignore (read by docker, podman
    and buildah) keeps out what a working copy holds besides the sources, and nothing a
    build needs."""
    root = Path(__file__).resolve().parent.parent
    ignored = {line.strip() for line in (root / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "test-artifacts", "*.db"} <= ignored
    needed = {"exporter", "plugins", "pyproject.toml", "README.md", "config.toml", "LICENSE", "wheels"}
    assert not ignored & needed
