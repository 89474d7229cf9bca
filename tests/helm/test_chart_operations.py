"""What the chart does on a real cluster, beyond rendering valid objects: the web UI keeps its
Streamlit sessions, every component that uses S3 gets its cloud identity and can reach it, the API
keeps serving through a broker restart and a node drain, and OpenShift assigns the uids.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from tests.helm.conftest import CHART, Manifest, RenderError, by_kind, named, pod_specs

MINIMAL = CHART / "ci" / "minimal-values.yaml"
PRODUCTION = CHART / "ci" / "production-values.yaml"
OPENSHIFT = CHART / "ci" / "openshift-values.yaml"
FULLNAME = "mlmarket"
README = (CHART / "README.md").read_text()
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
POD_IDENTITY = "169.254.170.23/32"
INSTANCE_METADATA = "169.254.169.254/32"

Load = Callable[..., list[Manifest]]


def container_of(docs: list[Manifest], component: str) -> Manifest:
    (container,) = named(docs, "Deployment", f"{FULLNAME}-{component}")["spec"]["template"]["spec"]["containers"]
    return container


def egress_rules(docs: list[Manifest], component: str) -> list[Manifest]:
    return list(named(docs, "NetworkPolicy", f"{FULLNAME}-{component}")["spec"]["egress"])


def cidrs(rules: list[Manifest]) -> set[str]:
    return {peer["ipBlock"]["cidr"] for rule in rules for peer in rule.get("to", []) if "ipBlock" in peer}


# --- web UI: one Streamlit session lives in one pod --------------------------------------------


def test_the_web_ui_runs_one_replica_without_an_autoscaler_by_default(manifests: Load) -> None:
    docs = manifests(MINIMAL)
    assert named(docs, "Deployment", f"{FULLNAME}-webui")["spec"]["replicas"] == 1
    assert "webui" not in {
        h["metadata"]["labels"]["app.kubernetes.io/component"] for h in by_kind(docs, "HorizontalPodAutoscaler")
    }
    assert named(docs, "Service", f"{FULLNAME}-webui")["spec"]["sessionAffinity"] == "None"


@pytest.mark.parametrize(
    "sets",
    [("webui.replicaCount=2",), ("webui.autoscaling.enabled=true",)],
    ids=["replicas", "autoscaling"],
)
def test_more_web_ui_replicas_without_session_affinity_fail_the_render(
    render: Callable[..., str], sets: tuple[str, ...]
) -> None:
    with pytest.raises(
        RenderError, match=r"more than one web UI replica needs session affinity.*sessionAffinity=ClientIP"
    ):
        render(MINIMAL, sets=sets)


def test_more_web_ui_replicas_keep_each_browser_on_its_pod(manifests: Load) -> None:
    docs = manifests(OPENSHIFT)
    assert named(docs, "Deployment", f"{FULLNAME}-webui")["spec"]["replicas"] == 2
    service = named(docs, "Service", f"{FULLNAME}-webui")["spec"]
    assert service["sessionAffinity"] == "ClientIP"
    assert service["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= 3600
    # Behind an ingress controller the Service's affinity is bypassed: the README gives the cookie settings.
    assert "nginx.ingress.kubernetes.io/affinity: cookie" in README
    assert "webui.service.sessionAffinity=ClientIP" in README


# --- S3 identity and reach ------------------------------------------------------------------------


def uses_the_store(docs: list[Manifest], container: Manifest) -> bool:
    for source in container.get("envFrom", []):
        if (
            "configMapRef" in source
            and "MLMARKET_S3_BUCKET" in named(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
        ):
            return True
    return False


def test_every_long_running_component_that_uses_s3_has_the_cloud_identity(manifests: Load) -> None:
    """The API checks and reads the bucket too (readiness, uploads, artifacts), not only the worker."""
    docs = manifests(PRODUCTION)
    accounts = {a["metadata"]["name"]: a for a in by_kind(docs, "ServiceAccount")}
    users = []
    for deployment in by_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        if any(uses_the_store(docs, c) for c in spec["containers"]):
            users.append(deployment["metadata"]["name"])
            notes = accounts[spec["serviceAccountName"]]["metadata"].get("annotations") or {}
            assert notes.get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"), deployment["metadata"][
                "name"
            ]
    assert sorted(users) == [f"{FULLNAME}-app", f"{FULLNAME}-worker"]
    webui = accounts[f"{FULLNAME}-webui"]["metadata"]
    assert not webui.get("annotations")  # the UI holds no cloud identity


def test_pod_identity_and_instance_metadata_are_unreachable_unless_a_value_says_so(manifests: Load) -> None:
    for values in (MINIMAL, PRODUCTION):
        docs = manifests(values)
        for component in ("app", "worker", "webui"):
            assert not cidrs(egress_rules(docs, component)) & {POD_IDENTITY, INSTANCE_METADATA}, (
                values.name,
                component,
            )
    docs = manifests(PRODUCTION, sets=("networkPolicy.egress.podIdentity=true",))
    for component in ("app", "worker"):
        rules = [r for r in egress_rules(docs, component) if POD_IDENTITY in cidrs([r])]
        assert rules and rules[0]["ports"] == [{"protocol": "TCP", "port": 80}]
        assert INSTANCE_METADATA not in cidrs(egress_rules(docs, component))
    assert not cidrs(egress_rules(docs, "webui"))
    docs = manifests(PRODUCTION, sets=("networkPolicy.egress.instanceMetadata=true",))
    for component in ("app", "worker"):
        assert INSTANCE_METADATA in cidrs(egress_rules(docs, component))
        assert POD_IDENTITY not in cidrs(egress_rules(docs, component))


def rule_for_port(rules: list[Manifest], port: int) -> Manifest:
    (rule,) = [r for r in rules if {"protocol": "TCP", "port": port} in r.get("ports", [])]
    return rule


def test_egress_can_be_narrowed_to_the_services_namespaces_and_pods(manifests: Load) -> None:
    docs = manifests(PRODUCTION)
    for component in ("app", "worker"):
        rules = egress_rules(docs, component)
        database, broker = rule_for_port(rules, 5432), rule_for_port(rules, 5672)
        assert database["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}}}]
        assert broker["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "messaging"}}}]
        assert "to" not in rule_for_port(rules, 9000)  # S3's ports (9000, 443): AWS S3 has no pod to select
    minio = rule_for_port(egress_rules(manifests(OPENSHIFT), "worker"), 9000)
    (peer,) = minio["to"]
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "minio"}}
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "mlmarket-storage"}}
    # Left empty, a port stays open to any destination, as before.
    assert "to" not in rule_for_port(egress_rules(manifests(MINIMAL), "app"), 5432)


def webhook_rules(docs: list[Manifest], component: str) -> list[Manifest]:
    """Egress rules that are not the DNS, database, broker or S3 ones."""
    egress = DEFAULTS["networkPolicy"]["egress"]
    known = {53, egress["databasePort"], egress["brokerPort"], *egress["s3Ports"]}
    return [
        rule
        for rule in egress_rules(docs, component)
        if not {p["port"] for p in rule.get("ports", [])} <= known
        or any("except" in to.get("ipBlock", {}) for to in rule.get("to", []))
    ]


def test_workers_may_send_webhooks_to_public_https_addresses_only(manifests: Load) -> None:
    docs = manifests(PRODUCTION)
    (rule,) = webhook_rules(docs, "worker")
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
    blocks = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"]["except"]) for peer in rule["to"]}
    assert set(blocks) == {"0.0.0.0/0", "::/0"}
    # The cluster's own networks, loopback, and the metadata services are left out.
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16"} <= blocks["0.0.0.0/0"]
    assert {"fc00::/7", "fe80::/10", "::1/128"} <= blocks["::/0"]
    assert not webhook_rules(docs, "app")  # in the chart only the workers deliver webhooks
    # Local use: private receivers over any port listed; or no webhook rule at all.
    (open_rule,) = webhook_rules(
        manifests(
            PRODUCTION, sets=("config.webhooks.allowPrivate=true", "networkPolicy.egress.webhookPorts={443,8080}")
        ),
        "worker",
    )
    assert "to" not in open_rule and {p["port"] for p in open_rule["ports"]} == {443, 8080}
    assert not webhook_rules(manifests(PRODUCTION, sets=("networkPolicy.egress.webhookPorts=null",)), "worker")


# --- the API through a broker restart and a node drain -------------------------------------------


def test_liveness_asks_only_for_the_process_and_readiness_waits_longer(manifests: Load) -> None:
    container = container_of(manifests(PRODUCTION), "app")
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["httpGet"]["path"] == "/api/health/live"  # a broker outage never restarts the API
    assert ready["httpGet"]["path"] == "/api/health/ready"
    assert ready["failureThreshold"] > live["failureThreshold"]
    # A broker restart of up to a minute leaves the pods in their Service.
    assert ready["periodSeconds"] * ready["failureThreshold"] >= 60


def test_the_api_rides_out_a_broker_restart_for_its_grace_period_and_then_the_probes(manifests: Load) -> None:
    """Readiness stays 200 for config.readinessGraceSeconds, then the probe needs its failures in a row."""
    from app.core.config import Settings

    docs = manifests(PRODUCTION, sets=("config.readinessGraceSeconds=120",))
    assert named(docs, "ConfigMap", FULLNAME)["data"]["MLMARKET_READINESS_GRACE_SECONDS"] == "120"
    ready = container_of(manifests(PRODUCTION), "app")["readinessProbe"]
    grace = DEFAULTS["config"]["readinessGraceSeconds"]
    assert grace == Settings.model_fields["readiness_grace_seconds"].default
    assert grace + ready["periodSeconds"] * ready["failureThreshold"] >= 120  # two minutes in Service at least


def test_the_charts_webhook_defaults_are_mlmarkets_own() -> None:
    from app.core.config import Settings

    fields = Settings.model_fields
    chart = DEFAULTS["config"]["webhooks"]
    assert chart == {
        "allowPrivate": fields["webhook_allow_private"].default,
        "timeoutSeconds": fields["webhook_timeout_seconds"].default,
        "maxAttempts": fields["webhook_max_attempts"].default,
        "retryBaseSeconds": fields["webhook_retry_base_seconds"].default,
        "retryMaxSeconds": fields["webhook_retry_max_seconds"].default,
        "concurrency": fields["webhook_concurrency"].default,
    }
    assert chart["allowPrivate"] is False
    assert DEFAULTS["config"]["forwardedAllowIps"] == "" and DEFAULTS["config"]["docsEnabled"] is None


def test_a_stopping_api_pod_drains_before_it_exits(manifests: Load) -> None:
    docs = manifests(PRODUCTION)
    container = container_of(docs, "app")
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = named(docs, "Deployment", f"{FULLNAME}-app")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(command[1]) > 0 and int(command[1]) + 20 <= grace  # time left to finish the requests in flight
    off = container_of(manifests(PRODUCTION, sets=("app.preStopSleepSeconds=0",)), "app")
    assert "lifecycle" not in off


def test_a_pre_stop_sleep_as_long_as_the_grace_period_fails_the_render(render: Callable[..., str]) -> None:
    with pytest.raises(
        RenderError, match=r"app\.preStopSleepSeconds must be shorter than app\.terminationGracePeriodSeconds"
    ):
        render(MINIMAL, sets=("app.preStopSleepSeconds=30", "app.terminationGracePeriodSeconds=30"))


@pytest.mark.parametrize(
    ("sets", "limit"),
    [
        (("app.autoscaling.enabled=false", "app.replicaCount=1"), "app.replicaCount"),
        (("app.autoscaling.minReplicas=1",), "app.autoscaling.minReplicas"),
    ],
    ids=["fixed", "autoscaled"],
)
def test_a_disruption_budget_that_could_never_let_a_node_drain_fails_the_render(
    render: Callable[..., str], sets: tuple[str, ...], limit: str
) -> None:
    with pytest.raises(
        RenderError, match=rf"app\.pdb\.minAvailable \(1\) must be below the API's replicas \(1, {limit}\)"
    ):
        render(MINIMAL, sets=sets)


def test_the_api_runs_two_replicas_by_default_and_one_may_be_drained(manifests: Load) -> None:
    assert DEFAULTS["app"]["replicaCount"] >= 2 and DEFAULTS["app"]["autoscaling"]["minReplicas"] >= 2
    docs = manifests(MINIMAL, sets=("app.autoscaling.enabled=false",))
    assert named(docs, "Deployment", f"{FULLNAME}-app")["spec"]["replicas"] == 2
    assert named(docs, "PodDisruptionBudget", f"{FULLNAME}-app")["spec"]["minAvailable"] == 1


# --- OpenShift ------------------------------------------------------------------------------------

IDS = ("runAsUser", "runAsGroup", "fsGroup")


def security_contexts(docs: list[Manifest]) -> list[tuple[str, Manifest]]:
    found = []
    for workload, spec in pod_specs(docs):
        found.append((workload, spec["securityContext"]))
        found += [(f"{workload}/{c['name']}", c["securityContext"]) for c in spec["containers"]]
    return found


def test_openshift_assigns_the_uids_and_everything_else_stays_restricted(manifests: Load) -> None:
    contexts = security_contexts(manifests(OPENSHIFT))
    assert len(contexts) >= 8
    for where, context in contexts:
        assert not set(context) & set(IDS), where
        assert context["runAsNonRoot"] is True, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
    # Elsewhere the pods run as the images' user.
    for where, context in security_contexts(manifests(MINIMAL)):
        assert context["runAsUser"] == 10001, where
    assert DEFAULTS["openshift"] is False
