"""The files under deploy/ agree with the code they describe.

A dashboard or an alert that names a metric the server does not export
shows nothing and says nothing, so every ``voicetrio_*`` name in the
Grafana dashboard, the Prometheus rules and docs/deploy.md is checked
against what ``/metrics`` really writes; the Kubernetes manifest's settings
are read by the real configuration loader, and its stop budget is checked
against the drain it has to cover.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with ctranslate2; no stubs locked

from voicetrio.config import from_env
from voicetrio.prom import PromObserver, Readings
from voicetrio.session.connection import CLOSE_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\bvoicetrio_[a-z0-9_]+\b")


def exported_samples() -> set[str]:
    """Every sample name /metrics writes, each labelled family touched once."""
    observer = PromObserver(worker=0)
    observer.watch(lambda: Readings(1, 0, 0, 4, 0.25, True, 0.0, 0.0))
    observer.event_code("BAD_MESSAGE")
    observer.decode("final", 0.1, 1.0)
    observer.turn("done")
    observer.reply_latency(0.1, 0.2)
    observer.dropped_partial()
    observer.rejected.labels(reason="busy").inc()
    observer.sessions_total.inc()
    names = set()
    for line in observer.exposition().decode().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "voicetrio.json").read_text())
    return data


def rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "voicetrio-rules.yml").read_text())
    return data


def test_the_dashboard_names_only_exported_metrics() -> None:
    exported = exported_samples()
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    named = {m for e in exprs for m in METRIC.findall(e)}
    assert named - exported == set(), f"not exported: {sorted(named - exported)}"
    # ... and shows each family the server exports.
    families = {re.sub(r"_(bucket|sum|count|created|total)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in named}
    assert families - shown == set(), f"not on the dashboard: {sorted(families - shown)}"


def test_the_dashboard_is_importable_grafana_json() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            # Bound to the datasource picked at import, not to one server's uid.
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all(t["refId"] and t["expr"] for t in panel["targets"])


def test_the_alert_rules_name_only_exported_metrics_and_their_own_records() -> None:
    exported = exported_samples()
    groups = rules()["groups"]
    entries = [r for g in groups for r in g["rules"]]
    records = {r["record"] for r in entries if "record" in r}
    for entry in entries:
        named = set(METRIC.findall(entry["expr"]))
        assert named <= exported, f"{entry}: not exported: {named - exported}"
        for record in re.findall(r"\bvoicetrio:[a-z0-9_:]+", entry["expr"]):
            assert record in records, record
    assert {r["alert"] for r in entries if "alert" in r} >= {"VoicetrioWorkerRestarting", "VoicetrioDown"}


def test_prometheus_scrapes_metrics_and_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for name in config["rule_files"]:
        assert (DEPLOY / "prometheus" / name).is_file()
    jobs = config["scrape_configs"]
    assert {j["job_name"] for j in jobs} == {"voicetrio", "voicetrio-kubernetes"}
    assert all(j["metrics_path"] == "/metrics" for j in jobs)


def manifests() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / "voicetrio.yaml").read_text())
    return {d["kind"]: d for d in docs}


def test_the_deployment_probes_ports_and_settings() -> None:
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # The real loader takes the manifest's settings (secrets aside).
    config = from_env(env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.port, "agent": config.agent_port}
    assert config.host == "0.0.0.0" and config.workers == int(container["resources"]["limits"]["cpu"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # /health is 503 while draining: a liveness probe on it would kill the drain.
    assert container["livenessProbe"]["httpGet"]["path"] != "/health"
    # The metrics directory lives under TMPDIR, which is a volume.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["TMPDIR"] in mounts


def test_the_pod_is_given_longer_than_its_drain() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = from_env(env)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    drain_s = pre_stop_s + config.drain_delay_s + config.shutdown_grace_s + CLOSE_TIMEOUT_S
    assert config.drain_delay_s > 0 and pre_stop_s > 0
    assert pod["terminationGracePeriodSeconds"] > drain_s


def test_the_service_selects_the_pods_and_their_ports() -> None:
    objects = manifests()
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= pod_labels.items()
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    named = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= named


@pytest.mark.parametrize("doc", ["docs/deploy.md"])
def test_the_docs_name_only_exported_metrics(doc: str) -> None:
    named = set(METRIC.findall((ROOT / doc).read_text()))
    assert named, "no metric named"
    exported = exported_samples()
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    assert named - exported - families == set()
