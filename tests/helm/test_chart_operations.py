"""What the chart does on a real cluster, beyond rendering valid objects: the web UI keeps its
Streamlit sessions and its sign-in cookies, every component that uses S3 gets its cloud identity
and can reach it, the API keeps serving through a broker restart and a node drain, and OpenShift
assigns the uids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

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


# --- web UI: the key that signs the sign-in cookie -----------------------------------------------

COOKIE_KEY = "MLMARKET_UI_COOKIE_SECRET"
SECRET_KEY_FIELDS = ("MLMARKET_SECRET_KEY", "MLMARKET_DATABASE_URL", "MLMARKET_BROKER_URL")
AFFINITY = "webui.service.sessionAffinity=ClientIP"


def secret_values(docs: list[Manifest], name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in named(docs, "Secret", name)["data"].items()}


def environment(docs: list[Manifest], container: Manifest) -> dict[str, str]:
    """What a container's environment holds from the chart's own Secrets and ConfigMap ('?' for a key of
    a Secret the operator made, whose value is not known here)."""
    env: dict[str, str] = {}
    rendered = {d["metadata"]["name"] for d in by_kind(docs, "Secret")}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        elif source["secretRef"]["name"] in rendered:
            env.update(secret_values(docs, source["secretRef"]["name"]))
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env[item["name"]] = str(item.get("value", ""))
        elif ref["name"] in rendered:
            env[item["name"]] = secret_values(docs, ref["name"])[ref["key"]]
        else:
            env[item["name"]] = "?"
    return env


def cookie_secret_refs(container: Manifest) -> list[Manifest]:
    return [
        item["valueFrom"]["secretKeyRef"]
        for item in container.get("env", [])
        if item["name"] == COOKIE_KEY and "secretKeyRef" in item.get("valueFrom", {})
    ]


def test_the_ui_cookie_secret_reaches_the_web_ui_and_no_other_pod(
    manifests: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = manifests(PRODUCTION)
    configured = yaml.safe_load(PRODUCTION.read_text())["secrets"]["uiCookieSecret"]
    webui = container_of(docs, "webui")
    env = environment(docs, webui)
    assert env[COOKIE_KEY] == configured
    # One key by secretKeyRef, never the mlmarket Secret whole: the UI never holds the API's secret key.
    assert not [s for s in webui.get("envFrom", []) if "secretRef" in s]
    assert not set(SECRET_KEY_FIELDS) & set(env)
    # The UI signs its cookie with that key, so a cookie outlives the pod that signed it.
    from web_ui.utils import browser_session

    monkeypatch.setenv(COOKIE_KEY, env[COOKIE_KEY])
    cookie = browser_session.sign("a-token")
    body, _, mac = cookie.rpartition(".")
    assert mac == hmac.new(configured.encode(), body.encode(), hashlib.sha256).hexdigest()
    assert browser_session.verify(cookie) == "a-token"
    # The API, the workers, the migrations and the helm test pod neither get it nor can read its Secret.
    others = [(w, spec) for w, spec in pod_specs(docs) if w != f"Deployment/{FULLNAME}-webui"]
    assert len(others) >= 4
    for workload, spec in others:
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            assert COOKIE_KEY not in environment(docs, container), workload
            assert configured not in yaml.safe_dump(container), workload
            refs = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
            assert f"{FULLNAME}-webui" not in refs, workload
    assert COOKIE_KEY not in secret_values(docs, FULLNAME)


def test_without_a_cookie_secret_the_single_web_ui_pod_signs_with_its_own_key(manifests: Load) -> None:
    for values in (MINIMAL, PRODUCTION):
        docs = manifests(values, sets=("secrets.uiCookieSecret=",))
        assert not cookie_secret_refs(container_of(docs, "webui"))
        assert f"{FULLNAME}-webui" not in {d["metadata"]["name"] for d in by_kind(docs, "Secret")}


def test_the_ui_cookie_secret_can_come_from_an_existing_secret(manifests: Load) -> None:
    docs = manifests(OPENSHIFT)  # two UI replicas reading the operator's Secret
    assert cookie_secret_refs(container_of(docs, "webui")) == [{"name": "mlmarket-secrets", "key": COOKIE_KEY}]
    assert not by_kind(docs, "Secret")


def test_changing_the_ui_cookie_secret_rolls_the_web_ui_and_leaves_the_api_running(manifests: Load) -> None:
    def pod_annotations(docs: list[Manifest], component: str) -> dict[str, str]:
        deployment = named(docs, "Deployment", f"{FULLNAME}-{component}")
        return dict(deployment["spec"]["template"]["metadata"].get("annotations") or {})

    before = manifests(PRODUCTION)
    after = manifests(PRODUCTION, sets=("secrets.uiCookieSecret=" + "b" * 40,))
    assert pod_annotations(before, "webui") != pod_annotations(after, "webui")
    for component in ("app", "worker"):
        assert pod_annotations(before, component) == pod_annotations(after, component)


@pytest.mark.parametrize(
    ("values", "sets"),
    [
        (MINIMAL, ("webui.replicaCount=2", AFFINITY)),
        (MINIMAL, ("webui.autoscaling.enabled=true", AFFINITY)),
        (PRODUCTION, ("webui.replicaCount=3", AFFINITY, "secrets.uiCookieSecret=")),
    ],
    ids=["replicas", "autoscaling", "production-replicas"],
)
def test_more_web_ui_replicas_without_a_shared_cookie_secret_fail_the_render(
    render: Callable[..., str], manifests: Load, values: Path, sets: tuple[str, ...]
) -> None:
    with pytest.raises(RenderError, match=r"more than one web UI replica needs a shared cookie secret") as failure:
        render(values, sets=sets)
    assert "secrets.uiCookieSecret" in str(failure.value)
    assert "secrets.existingSecretHasUiCookieSecret=true" in str(failure.value)
    # With the key the same values install, every replica reading the same Secret.
    fixed = (
        ("secrets.existingSecretHasUiCookieSecret=true",)
        if values == MINIMAL
        else (f"secrets.uiCookieSecret={'c' * 40}",)
    )
    docs = manifests(values, sets=(*sets, *fixed))
    assert len(cookie_secret_refs(container_of(docs, "webui"))) == 1


@pytest.mark.parametrize(
    ("values", "sets", "message"),
    [
        (
            MINIMAL,
            ("secrets.uiCookieSecret=" + "a" * 40,),
            r"secrets\.uiCookieSecret is ignored with secrets\.existingSecret: put the key MLMARKET_UI_COOKIE_SECRET",
        ),
        (
            PRODUCTION,
            ("secrets.existingSecretHasUiCookieSecret=true",),
            r"secrets\.existingSecretHasUiCookieSecret is true but secrets\.existingSecret is empty",
        ),
        (PRODUCTION, ("secrets.uiCookieSecret=short",), r"secrets\.uiCookieSecret must be at least 32 characters"),
        (
            MINIMAL,
            ("webui.extraEnv[0].name=MLMARKET_UI_COOKIE_SECRET", "webui.extraEnv[0].value=plain"),
            r"webui\.extraEnv\.MLMARKET_UI_COOKIE_SECRET would put a secret in the Deployment",
        ),
        (
            MINIMAL,
            ("config.extraEnv.MLMARKET_UI_COOKIE_SECRET=plain",),
            r"config\.extraEnv\.MLMARKET_UI_COOKIE_SECRET would put a secret in a ConfigMap",
        ),
    ],
    ids=["value-beside-existing-secret", "flag-alone", "weak", "plain-extra-env", "config-map"],
)
def test_a_ui_cookie_secret_the_web_ui_would_not_get_safely_fails_the_render(
    render: Callable[..., str], values: Path, sets: tuple[str, ...], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render(values, sets=sets)


def test_a_ui_cookie_secret_from_a_secret_of_ones_own_is_accepted(manifests: Load) -> None:
    own = (
        "webui.extraEnv[0].name=MLMARKET_UI_COOKIE_SECRET",
        "webui.extraEnv[0].valueFrom.secretKeyRef.name=ui-cookie",
        "webui.extraEnv[0].valueFrom.secretKeyRef.key=secret",
    )
    docs = manifests(MINIMAL, sets=(*own, "webui.replicaCount=2", AFFINITY))
    assert cookie_secret_refs(container_of(docs, "webui")) == [{"name": "ui-cookie", "key": "secret"}]


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
