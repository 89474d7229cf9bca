"""What `helm template` renders for the ci/ values: the guarantees an operator relies on.

Every pod runs as its own service account with no token, restricted, bounded and probed; the
autoscalers, RBAC, migration hook and secrets are exactly what values.yaml and the chart README
promise; impossible or unsafe values fail the render with a message that says what to fix.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.conftest import (
    CHART,
    CI_VALUES,
    ROOT,
    Manifest,
    RenderError,
    by_kind,
    named,
    pod_specs,
)

MINIMAL = CHART / "ci" / "minimal-values.yaml"
PRODUCTION = CHART / "ci" / "production-values.yaml"
KEDA = CHART / "ci" / "keda-values.yaml"
EXISTING_SECRET = "mlmarket-secrets"  # secrets.existingSecret of the minimal and KEDA values
FULLNAME = "mlmarket"  # release "mlmarket" contains the chart name, so it is the prefix alone
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())

# component -> (port name, liveness path, readiness path)
PROBES = {
    "app": ("http", "/api/health/live", "/api/health/ready"),
    "worker": ("metrics", "/health/live", "/health/ready"),
    "webui": ("http", "/_stcore/health", "/_stcore/health"),
}

Load = Callable[..., list[Manifest]]


def component_of(doc: Manifest) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def containers(spec: Manifest) -> list[Manifest]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def annotations(doc: Manifest) -> dict[str, str]:
    return dict(doc["metadata"].get("annotations") or {})


@pytest.fixture(params=CI_VALUES, ids=lambda p: p.name)
def ci_docs(request: pytest.FixtureRequest, manifests: Load) -> list[Manifest]:
    return manifests(request.param)


# --- every pod ---------------------------------------------------------------------------------


def test_every_pod_runs_as_its_own_service_account_without_a_token(ci_docs: list[Manifest]) -> None:
    accounts = {doc["metadata"]["name"]: doc for doc in by_kind(ci_docs, "ServiceAccount")}
    used: dict[str, str] = {}
    for workload, spec in pod_specs(ci_docs):
        name = spec.get("serviceAccountName")
        assert name, f"{workload} has no serviceAccountName"
        assert name in accounts, f"{workload} uses {name}, which the chart does not create"
        assert name not in used, f"{workload} shares service account {name} with {used.get(name)}"
        used[name] = workload
        assert spec.get("automountServiceAccountToken") is False, workload
        assert accounts[name].get("automountServiceAccountToken") is False, name
    assert len(used) >= 4  # app, worker, migrations, helm test (+ web UI when enabled)


def test_every_pod_meets_the_restricted_pod_security_standard(ci_docs: list[Manifest]) -> None:
    for workload, spec in pod_specs(ci_docs):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, workload
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), f"{workload}: {flag}"
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}, (workload, volume)
        for container in containers(spec):
            where = f"{workload}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["runAsNonRoot"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not context.get("privileged"), where
            # A read-only root filesystem still needs a writable /tmp (Python, DVC, Streamlit).
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]  # noqa: S108 - a mount path
            assert tmp, f"{where} has no writable /tmp"
            volume = next(v for v in spec["volumes"] if v["name"] == tmp[0]["name"])
            assert "emptyDir" in volume, where


def test_every_container_has_cpu_and_memory_requests_and_limits(ci_docs: list[Manifest]) -> None:
    for workload, spec in pod_specs(ci_docs):
        for container in containers(spec):
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) >= {"cpu", "memory"}, f"{workload}/{container['name']} {bound}"


def test_every_deployment_has_startup_liveness_and_readiness_probes(ci_docs: list[Manifest]) -> None:
    deployments = by_kind(ci_docs, "Deployment")
    assert {component_of(d) for d in deployments} >= {"app", "worker"}
    for deployment in deployments:
        port_name, live, ready = PROBES[component_of(deployment)]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        declared = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port_name in declared
        for probe, path in (("startupProbe", live), ("livenessProbe", live), ("readinessProbe", ready)):
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == (path, port_name), f"{deployment['metadata']['name']} {probe}"


def test_images_are_tagged_and_never_latest(ci_docs: list[Manifest]) -> None:
    for workload, spec in pod_specs(ci_docs):
        for container in containers(spec):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{workload}: {image}"


def test_production_images_come_from_the_configured_registry_and_tag(manifests: Load) -> None:
    images = {c["image"] for _, spec in pod_specs(manifests(PRODUCTION)) for c in containers(spec)}
    assert images == {
        "registry.example.com/mlmarket/mlmarket-app:0.1.0",
        "registry.example.com/mlmarket/mlmarket-worker:0.1.0",
        "registry.example.com/mlmarket/mlmarket-webui:0.1.0",
    }


# --- configuration the processes read -----------------------------------------------------------


def env_of(docs: list[Manifest], container: Manifest) -> dict[str, str]:
    """The environment a container starts with: its ConfigMap and Secret, then its env.

    An existing Secret is made by the operator, so its keys are not known here.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source and source["secretRef"]["name"] != EXISTING_SECRET:
            data = named(docs, "Secret", source["secretRef"]["name"])["data"]
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


@pytest.mark.parametrize("component", ["app", "worker"])
def test_mlmarket_accepts_the_rendered_production_configuration(
    manifests: Load, monkeypatch: pytest.MonkeyPatch, component: str
) -> None:
    """The pods would start: mlmarket's own Settings accept what the chart hands them."""
    from app.core.config import Environment, Settings

    docs = manifests(PRODUCTION)
    deployment = named(docs, "Deployment", f"{FULLNAME}-{component}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(docs, container)
    for key in [k for k in os.environ if k.startswith("MLMARKET_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.env is Environment.production
    assert settings.broker_url and settings.database_url
    assert settings.worker_in_api is False
    assert settings.s3_bucket == "mlmarket-models"
    assert settings.worker_prefetch == 8
    # Behind the ingress controller: its pods' X-Forwarded-For is believed, /metrics needs the token, no docs.
    assert settings.forwarded_allow_ips == "10.244.0.0/16"
    assert settings.metrics_token == "ci-placeholder-metrics-token"
    assert settings.docs_on is False
    assert settings.hsts is True
    assert settings.webhook_allow_private is False
    # The data dir (DVC workspace and cache) is a writable emptyDir mount.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert str(settings.data_dir) in mounts
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[str(settings.data_dir)]]
    if component == "worker":
        assert container["ports"][0]["containerPort"] == settings.worker_health_port
    else:
        assert container["ports"][0]["containerPort"] == settings.port


def settings_of(docs: list[Manifest], component: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """mlmarket's Settings as a component's container would build them (an existing Secret's keys stubbed)."""
    from app.core.config import Settings

    (container,) = named(docs, "Deployment", f"{FULLNAME}-{component}")["spec"]["template"]["spec"]["containers"]
    for key in [k for k in os.environ if k.startswith("MLMARKET_")]:
        monkeypatch.delenv(key)
    env = {
        "MLMARKET_SECRET_KEY": "x" * 40,
        "MLMARKET_DATABASE_URL": "postgresql://mlmarket:PASSWORD@postgresql:5432/mlmarket",
        **env_of(docs, container),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_by_default_no_proxy_is_trusted_docs_are_off_and_webhooks_reach_public_https_only(
    manifests: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = manifests(MINIMAL)
    for component in ("app", "worker"):
        settings = settings_of(docs, component, monkeypatch)
        assert settings.forwarded_allow_ips == ""
        assert settings.docs_on is False  # production, the chart's default environment
        assert settings.metrics_token is None
        assert settings.webhook_allow_private is False
        assert settings.readiness_grace_seconds == DEFAULTS["config"]["readinessGraceSeconds"]
        assert settings.webhook_max_attempts == DEFAULTS["config"]["webhooks"]["maxAttempts"]
        assert settings.webhook_retry_base_seconds == DEFAULTS["config"]["webhooks"]["retryBaseSeconds"]
        assert settings.webhook_retry_max_seconds == DEFAULTS["config"]["webhooks"]["retryMaxSeconds"]
        assert settings.webhook_timeout_seconds == DEFAULTS["config"]["webhooks"]["timeoutSeconds"]
        assert settings.webhook_concurrency == DEFAULTS["config"]["webhooks"]["concurrency"]


def test_configuration_values_reach_the_api_and_the_workers(manifests: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = manifests(
        MINIMAL,
        sets=(
            r"config.forwardedAllowIps=10.0.0.0/8\,192.168.1.7",
            "config.docsEnabled=true",
            "config.readinessGraceSeconds=90",
            "config.webhooks.allowPrivate=true",
            "config.webhooks.maxAttempts=3",
            "config.webhooks.retryBaseSeconds=3",
        ),
    )
    for component in ("app", "worker"):
        settings = settings_of(docs, component, monkeypatch)
        assert settings.forwarded_allow_ips == "10.0.0.0/8,192.168.1.7"
        assert settings.docs_on is True
        assert settings.readiness_grace_seconds == 90
        assert settings.webhook_allow_private is True
        assert settings.webhook_max_attempts == 3
        assert settings.webhook_retry_base_seconds == 3
    assert settings_of(manifests(MINIMAL, sets=("config.env=development",)), "app", monkeypatch).docs_on is True
    assert (
        settings_of(
            manifests(MINIMAL, sets=("config.env=development", "config.docsEnabled=false")), "app", monkeypatch
        ).docs_on
        is False
    )


def test_a_setting_that_has_its_own_value_is_refused_in_extra_env(render: Callable[..., str]) -> None:
    with pytest.raises(RenderError, match=r"config\.extraEnv\.MLMARKET_HSTS is set by the value config\.hsts"):
        render(MINIMAL, sets=("config.extraEnv.MLMARKET_HSTS=true",))
    with pytest.raises(RenderError, match=r"config\.extraEnv\.MLMARKET_METRICS_TOKEN would put a secret"):
        render(MINIMAL, sets=("config.extraEnv.MLMARKET_METRICS_TOKEN=abc",))


def test_trusting_every_proxy_needs_a_network_that_only_the_proxies_reach(
    render: Callable[..., str], manifests: Load
) -> None:
    with pytest.raises(RenderError, match=r"config\.forwardedAllowIps=\* believes X-Forwarded-For from every client"):
        render(MINIMAL, sets=("config.forwardedAllowIps=*",))
    docs = manifests(PRODUCTION, sets=("config.forwardedAllowIps=*",))  # allowExternal=false: the ingress only
    assert named(docs, "ConfigMap", FULLNAME)["data"]["MLMARKET_FORWARDED_ALLOW_IPS"] == "*"


def test_the_schema_refuses_a_trusted_proxy_list_that_is_not_addresses(render: Callable[..., str]) -> None:
    with pytest.raises(RenderError, match="forwardedAllowIps"):
        render(MINIMAL, sets=("config.forwardedAllowIps=ingress-nginx",))


def test_web_ui_calls_the_api_service_and_reads_no_secret(manifests: Load) -> None:
    docs = manifests(MINIMAL)
    (container,) = named(docs, "Deployment", f"{FULLNAME}-webui")["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in container
    env = {item["name"]: item["value"] for item in container["env"]}
    service = named(docs, "Service", f"{FULLNAME}-app")
    assert env["MLMARKET_API_URL"] == f"http://{FULLNAME}-app:{service['spec']['ports'][0]['port']}"


def test_secrets_never_land_in_a_config_map(render: Callable[..., str]) -> None:
    with pytest.raises(RenderError, match=r"config\.extraEnv\.MLMARKET_DATABASE_URL would put a secret"):
        render(MINIMAL, sets=("config.extraEnv.MLMARKET_DATABASE_URL=postgresql://u:p@h/d",))


# --- autoscaling --------------------------------------------------------------------------------


def test_default_autoscaling_bounds_are_the_documented_ones() -> None:
    bounds = {
        component: (
            DEFAULTS[component]["autoscaling"]["minReplicas"],
            DEFAULTS[component]["autoscaling"]["maxReplicas"],
            DEFAULTS[component]["autoscaling"]["targetCPUUtilizationPercentage"],
        )
        for component in ("app", "worker", "webui")
    }
    assert bounds == {"app": (2, 10, 50), "worker": (1, 10, 50), "webui": (1, 3, 75)}
    # The web UI's HPA is off by default: more than one Streamlit pod needs session affinity.
    assert [DEFAULTS[c]["autoscaling"]["enabled"] for c in ("app", "worker", "webui")] == [True, True, False]


@pytest.mark.parametrize(
    "sets",
    [
        (),
        (
            "app.autoscaling.maxReplicas=7",
            "worker.autoscaling.minReplicas=2",
            "webui.autoscaling.enabled=true",
            "webui.autoscaling.targetCPUUtilizationPercentage=60",
            "webui.service.sessionAffinity=ClientIP",
            "secrets.existingSecretHasUiCookieSecret=true",
        ),
    ],
    ids=["defaults", "overridden"],
)
def test_hpa_bounds_equal_values(manifests: Load, sets: tuple[str, ...]) -> None:
    docs = manifests(MINIMAL, sets=sets)
    values = json.loads(json.dumps(DEFAULTS))
    for pair in sets:
        path, value = pair.split("=")
        node = values
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = {"true": True, "false": False}.get(value, int(value) if value.isdigit() else value)
    hpas = {component_of(h): h for h in by_kind(docs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {c for c in ("app", "worker", "webui") if values[c]["autoscaling"]["enabled"]}
    for component, hpa in hpas.items():
        wanted = values[component]["autoscaling"]
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{FULLNAME}-{component}",
        }
        assert (spec["minReplicas"], spec["maxReplicas"]) == (wanted["minReplicas"], wanted["maxReplicas"])
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"] == {
            "type": "Utilization",
            "averageUtilization": wanted["targetCPUUtilizationPercentage"],
        }
        # The HPA owns the replica count: the Deployment does not fight it on every upgrade.
        assert "replicas" not in named(docs, "Deployment", f"{FULLNAME}-{component}")["spec"]


def test_replicas_are_fixed_when_autoscaling_is_off(manifests: Load) -> None:
    docs = manifests(MINIMAL, sets=("app.autoscaling.enabled=false", "app.replicaCount=3"))
    assert named(docs, "Deployment", f"{FULLNAME}-app")["spec"]["replicas"] == 3
    assert {component_of(h) for h in by_kind(docs, "HorizontalPodAutoscaler")} == {"worker"}


def test_keda_scales_workers_on_every_task_queue_counting_unacknowledged_messages(manifests: Load) -> None:
    """A training job, or a task a worker holds unacknowledged, keeps its worker."""
    from app.queue.base import PREDICT_QUEUE, TRAIN_QUEUE

    docs = manifests(KEDA)
    assert {component_of(h) for h in by_kind(docs, "HorizontalPodAutoscaler")} == {"app"}
    assert "replicas" not in named(docs, "Deployment", f"{FULLNAME}-worker")["spec"]
    scaled = named(docs, "ScaledObject", f"{FULLNAME}-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == f"{FULLNAME}-worker"
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 20)
    triggers = {t["metadata"]["queueName"]: t for t in scaled["triggers"]}
    assert set(triggers) == {PREDICT_QUEUE, TRAIN_QUEUE}
    for queue, value in ((PREDICT_QUEUE, "10"), (TRAIN_QUEUE, "1")):
        trigger = triggers[queue]
        assert trigger["type"] == "rabbitmq"
        # The management API (http) counts ready and unacknowledged messages; amqp counts ready ones only.
        assert trigger["metadata"] == {"protocol": "http", "queueName": queue, "mode": "QueueLength", "value": value}
        auth = named(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "host", "name": "mlmarket-secrets", "key": "MLMARKET_BROKER_MANAGEMENT_URL"}
        ]
    # Scaling down is slow and one pod at a time, so a short lull does not stop busy workers.
    scale_down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 60
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def test_keda_defaults_keep_a_worker_and_watch_every_queue_a_worker_consumes() -> None:
    from app.queue.base import PREDICT_QUEUE, TRAIN_QUEUE

    keda = DEFAULTS["keda"]
    assert keda["minReplicaCount"] >= 1
    assert {q["name"] for q in keda["queues"]} == {PREDICT_QUEUE, TRAIN_QUEUE}


def test_keda_needs_the_management_api_url(render: Callable[..., str], manifests: Load) -> None:
    sets = ("keda.enabled=true", "worker.autoscaling.enabled=false")
    with pytest.raises(RenderError, match=r"keda\.enabled needs RabbitMQ's management API URL"):
        render(PRODUCTION, sets=sets)
    docs = manifests(PRODUCTION, sets=(*sets, "secrets.brokerManagementUrl=http://mlmarket:PASSWORD@rabbitmq:15672/"))
    secret = named(docs, "Secret", FULLNAME)
    url = base64.b64decode(secret["data"]["MLMARKET_BROKER_MANAGEMENT_URL"]).decode()
    assert url.startswith("http://") and url.endswith(":15672/")
    auth = named(docs, "TriggerAuthentication", f"{FULLNAME}-worker-rabbitmq")
    assert auth["spec"]["secretTargetRef"][0]["name"] == FULLNAME
    own = manifests(PRODUCTION, sets=(*sets, "keda.hostSecret.name=rabbitmq-management", "keda.hostSecret.key=url"))
    auth = named(own, "TriggerAuthentication", f"{FULLNAME}-worker-rabbitmq")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": "rabbitmq-management", "key": "url"}]


def test_keda_and_the_worker_hpa_together_fail_the_render(render: Callable[..., str]) -> None:
    both = r"keda\.enabled and worker\.autoscaling\.enabled would both scale the workers"
    with pytest.raises(RenderError, match=both):
        render(KEDA, sets=("worker.autoscaling.enabled=true",))


def test_every_deployment_has_a_disruption_budget(ci_docs: list[Manifest]) -> None:
    budgets = {component_of(p): p for p in by_kind(ci_docs, "PodDisruptionBudget")}
    for deployment in by_kind(ci_docs, "Deployment"):
        component = component_of(deployment)
        budget = budgets[component]
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
        if component == "app":
            # One API pod keeps serving while a node drains: at least 2 replicas, 1 always available.
            assert budget["spec"] == {**budget["spec"], "minAvailable": 1}
            assert "maxUnavailable" not in budget["spec"]
            fewest = (
                deployment["spec"].get("replicas")
                or named(ci_docs, "HorizontalPodAutoscaler", deployment["metadata"]["name"])["spec"]["minReplicas"]
            )
            assert fewest >= 2
        else:
            assert budget["spec"]["maxUnavailable"] == 1


# --- RBAC ---------------------------------------------------------------------------------------


def documented_rbac_rules() -> list[tuple[str, str, str]]:
    """(resource, verb, object) rows of the RBAC table in the chart README."""
    readme = (CHART / "README.md").read_text()
    table = readme.split("<!-- rbac-rules -->")[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return [tuple(cell.strip().strip("`") for cell in row.strip("|").split("|"))[:3] for row in rows]  # type: ignore[misc]


@pytest.mark.parametrize("values", [MINIMAL, PRODUCTION], ids=lambda p: p.name)
def test_rbac_grants_exactly_the_documented_rules(manifests: Load, values: Path) -> None:
    docs = manifests(values, sets=("rbac.create=true",))
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    (role,) = by_kind(docs, "Role")
    secret = "mlmarket-secrets" if values == MINIMAL else FULLNAME
    granted = []
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                for name in rule["resourceNames"]:
                    granted.append((resource, verb, name))
    documented = [
        (resource, verb, obj.replace("<fullname>", FULLNAME).replace("<secret>", secret))
        for resource, verb, obj in documented_rbac_rules()
    ]
    assert sorted(granted) == sorted(documented)
    assert granted == [("configmaps", "get", FULLNAME), ("secrets", "get", secret)]
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert sorted(s["name"] for s in binding["subjects"]) == [f"{FULLNAME}-app", f"{FULLNAME}-worker"]


def test_no_rbac_object_is_rendered_unless_asked_for(ci_docs: list[Manifest]) -> None:
    """Nothing calls the Kubernetes API, so by default no Role grants anyone the release's Secret."""
    assert DEFAULTS["rbac"]["create"] is False
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert not by_kind(ci_docs, kind)


# --- migrations and secrets ---------------------------------------------------------------------


def hooks(docs: list[Manifest], event: str) -> list[Manifest]:
    return [d for d in docs if event in annotations(d).get("helm.sh/hook", "").split(",")]


@pytest.mark.parametrize("values", [MINIMAL, PRODUCTION], ids=lambda p: p.name)
def test_migrations_run_in_a_pre_install_and_pre_upgrade_hook(manifests: Load, values: Path) -> None:
    docs = manifests(values)
    pre_install, pre_upgrade = hooks(docs, "pre-install"), hooks(docs, "pre-upgrade")
    assert pre_install == pre_upgrade
    (job,) = by_kind(pre_install, "Job")
    notes = annotations(job)
    assert notes["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    (container,) = spec["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"].rsplit("/", 1)[-1].startswith("mlmarket-app:")
    # Hooks run before the release's objects exist: all the Job reads comes with it, created first.
    weight = int(notes["helm.sh/hook-weight"])
    earlier = {
        (d["kind"], d["metadata"]["name"]) for d in pre_install if int(annotations(d)["helm.sh/hook-weight"]) < weight
    }
    assert ("ServiceAccount", spec["serviceAccountName"]) in earlier
    for source in container["envFrom"]:
        kind, ref = (
            ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        )
        if kind == "Secret" and values == MINIMAL:
            assert ref["name"] == "mlmarket-secrets"  # made by the operator before the install
        else:
            assert (kind, ref["name"]) in earlier
    env = env_of(docs, container)
    assert env["MLMARKET_ENV"] == "production"
    if values == PRODUCTION:
        assert env["MLMARKET_DATABASE_URL"].startswith("postgresql://")


def test_migrations_can_be_switched_off(manifests: Load) -> None:
    assert not hooks(manifests(MINIMAL, sets=("migrations.enabled=false",)), "pre-install")


def test_the_secret_key_is_the_same_on_every_render(helm: Callable[..., Any], manifests: Load) -> None:
    """A GitOps sync renders the chart again each time: the key that signs tokens must not change."""
    first = helm("template", "mlmarket", str(CHART), "--namespace", "mlmarket", "-f", str(PRODUCTION))
    second = helm("template", "mlmarket", str(CHART), "--namespace", "mlmarket", "-f", str(PRODUCTION))
    assert first.returncode == 0 and first.stdout == second.stdout
    docs = manifests(PRODUCTION)
    keys = {
        doc["metadata"]["name"]: base64.b64decode(doc["data"]["MLMARKET_SECRET_KEY"]).decode()
        for doc in by_kind(docs, "Secret")
        if doc["metadata"]["name"] != f"{FULLNAME}-webui"
    }
    assert set(keys) == {FULLNAME, f"{FULLNAME}-migrate"}
    # The web UI's Secret holds its cookie key alone, never the API's secret key.
    assert set(named(docs, "Secret", f"{FULLNAME}-webui")["data"]) == {"MLMARKET_UI_COOKIE_SECRET"}
    assert set(keys.values()) == {yaml.safe_load(PRODUCTION.read_text())["secrets"]["secretKey"]}
    # No template asks the cluster (lookup) or the dice (rand*) for a value.
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            text = template.read_text()
            assert "lookup " not in text and "randAlpha" not in text, template.name


def test_a_missing_secret_key_fails_the_render_and_names_both_ways_out(render: Callable[..., str]) -> None:
    with pytest.raises(RenderError) as failure:
        render(PRODUCTION, sets=("secrets.secretKey=",))
    text = str(failure.value)
    assert "secrets.secretKey is empty" in text
    assert "secrets.existingSecret" in text
    assert "never generates one" in text


def test_an_existing_secret_is_used_and_no_secret_is_rendered(manifests: Load) -> None:
    docs = manifests(MINIMAL)
    assert not by_kind(docs, "Secret")
    for workload, spec in pod_specs(docs):
        for container in containers(spec):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] == "mlmarket-secrets", workload


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("secrets.databaseUrl=",),
            "secrets.databaseUrl is empty: set it to postgresql://USER:PASSWORD@HOST:5432/DATABASE",
        ),
        (("secrets.brokerUrl=",), "secrets.brokerUrl is empty: set it to amqp://USER:PASSWORD@HOST:5672/"),
        (("secrets.secretKey=too-short",), "secrets.secretKey must be at least 32 characters in production"),
        (("secrets.s3AccessKeyId=AKIA",), "secrets.s3AccessKeyId is set but secrets.s3SecretAccessKey is empty"),
        (("config.s3.bucket=",), "config.s3.bucket is empty"),
        (("ingress.hostname=",), "ingress.enabled is true but ingress.hostname is empty"),
    ],
    ids=["database", "broker", "weak-key", "half-s3-key", "bucket", "ingress-host"],
)
def test_production_values_missing_a_required_setting_fail_with_a_clear_message(
    render: Callable[..., str], sets: tuple[str, ...], message: str
) -> None:
    with pytest.raises(RenderError) as failure:
        render(PRODUCTION, sets=sets)
    text = str(failure.value)
    assert "mlmarket: these values cannot be installed" in text
    assert message in text
    if "secrets." in message and "secretKey" not in message and "s3" not in message:
        assert "secrets.existingSecret" in text  # the other way out is named


def test_the_schema_refuses_unknown_and_malformed_values(render: Callable[..., str]) -> None:
    with pytest.raises(RenderError, match="Additional property replicas is not allowed"):
        render(MINIMAL, sets=("app.replicas=3",))
    with pytest.raises(RenderError, match="brokerUrl"):
        render(MINIMAL, sets=("secrets.brokerUrl=redis://broker:6379",))


def test_the_chart_contains_no_password() -> None:
    """Credentials in URLs appear only as PASSWORD placeholders (ci/ holds obvious fakes)."""
    credentials = re.compile(r"\b[a-z]+://[^/\s:@]+:([^@\s]+)@")
    for path in CHART.rglob("*"):
        if path.is_file() and "ci" not in path.relative_to(CHART).parts:
            for password in credentials.findall(path.read_text()):
                assert password == "PASSWORD", f"{path.relative_to(ROOT)} holds a password"
    assert not any(DEFAULTS["secrets"].values())


# --- network, monitoring, tests -----------------------------------------------------------------


def selects(policy: Manifest, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def test_every_deployment_is_covered_by_a_network_policy_with_dns(ci_docs: list[Manifest]) -> None:
    policies = by_kind(ci_docs, "NetworkPolicy")
    for deployment in by_kind(ci_docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (policy,) = [p for p in policies if selects(p, labels)]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        egress_ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
        assert 53 in egress_ports


def test_restricted_network_lets_only_the_ui_tests_and_listed_peers_reach_the_api(manifests: Load) -> None:
    docs = manifests(PRODUCTION)
    policy = named(docs, "NetworkPolicy", f"{FULLNAME}-app")
    (rule,) = policy["spec"]["ingress"]
    peers = rule["from"]
    components = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers if "podSelector" in p}
    namespaces = {
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers if "namespaceSelector" in p
    }
    assert components == {"webui", "test"}
    assert namespaces == {"ingress-nginx", "monitoring"}
    worker = named(docs, "NetworkPolicy", f"{FULLNAME}-worker")
    (worker_rule,) = worker["spec"]["ingress"]
    assert worker_rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    ui_egress = named(docs, "NetworkPolicy", f"{FULLNAME}-webui")["spec"]["egress"]
    assert {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "mlmarket",
                "app.kubernetes.io/instance": "mlmarket",
                "app.kubernetes.io/component": "app",
            }
        }
    } in ui_egress[1]["to"]


def test_ingress_sends_api_paths_to_the_api_and_the_rest_to_the_ui(manifests: Load) -> None:
    ingress = named(manifests(PRODUCTION), "Ingress", FULLNAME)["spec"]
    assert ingress["tls"] == [{"hosts": ["mlmarket.example.com"], "secretName": "mlmarket-tls"}]
    (rule,) = ingress["rules"]
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert routes == {
        "/api": f"{FULLNAME}-app",
        "/v2": f"{FULLNAME}-app",
        "/docs": f"{FULLNAME}-app",
        "/openapi.json": f"{FULLNAME}-app",
        "/": f"{FULLNAME}-webui",
    }


def test_service_monitors_scrape_ports_their_services_expose(manifests: Load) -> None:
    docs = manifests(PRODUCTION)
    monitors = by_kind(docs, "ServiceMonitor")
    assert {component_of(m) for m in monitors} == {"app", "worker"}
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (service,) = [
            s
            for s in by_kind(docs, "Service")
            if s["metadata"]["labels"] == {**s["metadata"]["labels"], **monitor["spec"]["selector"]["matchLabels"]}
        ]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def api_monitor_authorization(docs: list[Manifest]) -> Manifest | None:
    (endpoint,) = named(docs, "ServiceMonitor", f"{FULLNAME}-app")["spec"]["endpoints"]
    authorization: Manifest | None = endpoint.get("authorization")
    return authorization


def test_the_api_service_monitor_sends_the_metrics_token_the_api_requires(manifests: Load) -> None:
    docs = manifests(PRODUCTION)
    authorization = api_monitor_authorization(docs)
    assert authorization is not None and authorization["type"] == "Bearer"
    secret = named(docs, "Secret", authorization["credentials"]["name"])
    sent = base64.b64decode(secret["data"][authorization["credentials"]["key"]]).decode()
    (container,) = named(docs, "Deployment", f"{FULLNAME}-app")["spec"]["template"]["spec"]["containers"]
    assert env_of(docs, container)["MLMARKET_METRICS_TOKEN"] == sent == "ci-placeholder-metrics-token"
    # The worker's /metrics (port 9100, health and metrics only) asks for no token.
    (worker_endpoint,) = named(docs, "ServiceMonitor", f"{FULLNAME}-worker")["spec"]["endpoints"]
    assert "authorization" not in worker_endpoint and "bearerTokenSecret" not in worker_endpoint


def test_the_metrics_token_can_come_from_an_existing_secret(manifests: Load) -> None:
    monitor = ("metrics.serviceMonitor.enabled=true",)
    assert api_monitor_authorization(manifests(MINIMAL, sets=monitor)) is None  # no token: nothing to send
    docs = manifests(MINIMAL, sets=(*monitor, "secrets.existingSecretHasMetricsToken=true"))
    authorization = api_monitor_authorization(docs)
    assert authorization is not None
    assert authorization["credentials"] == {"name": EXISTING_SECRET, "key": "MLMARKET_METRICS_TOKEN"}
    (container,) = named(docs, "Deployment", f"{FULLNAME}-app")["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": EXISTING_SECRET}} in container["envFrom"]  # the API reads the same key


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("secrets.metricsToken=abc",), r"secrets\.metricsToken is ignored with secrets\.existingSecret"),
        (
            ("secrets.existingSecret=", "secrets.existingSecretHasMetricsToken=true"),
            r"secrets\.existingSecretHasMetricsToken is true but secrets\.existingSecret is empty",
        ),
    ],
    ids=["token-beside-existing-secret", "existing-secret-flag-alone"],
)
def test_a_metrics_token_the_pods_would_not_get_fails_the_render(
    render: Callable[..., str], sets: tuple[str, ...], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render(MINIMAL, sets=sets)


def test_grafana_dashboard_queries_metrics_mlmarket_exports(manifests: Load) -> None:
    (dashboard_map,) = [
        c for c in by_kind(manifests(MINIMAL), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_map["data"]["mlmarket.json"])
    source = "".join(p.read_text() for folder in ("app", "ml_worker") for p in (ROOT / folder).rglob("*.py"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    metrics = {m for e in exprs for m in re.findall(r"\b(mlmarket_[a-z_]+?)(?:_bucket|_total)?\b", e)}
    assert metrics
    for metric in metrics:
        assert f'"{metric}' in source, f"the dashboard queries {metric}, which mlmarket does not export"


def test_helm_test_pod_checks_the_api_is_ready(manifests: Load) -> None:
    docs = manifests(MINIMAL)
    (pod,) = [d for d in hooks(docs, "test") if d["kind"] == "Pod"]
    (container,) = pod["spec"]["containers"]
    app_port = named(docs, "Service", f"{FULLNAME}-app")["spec"]["ports"][0]["port"]
    assert f"http://{FULLNAME}-app:{app_port}/api/health/ready" in container["args"]
    assert f"http://{FULLNAME}-webui:8501/_stcore/health" in container["args"]


# --- documentation of the values ----------------------------------------------------------------


def leaves(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node and prefix not in LEAF_MAPS:
        return set().union(*(leaves(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()))
    return {prefix}


# maps documented as a whole (their keys are free-form)
LEAF_MAPS = {
    "app.resources",
    "worker.resources",
    "webui.resources",
    "migrations.resources",
    "metrics.grafanaDashboard.labels",
}


def test_every_value_is_documented_with_a_param_line() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+) \S", text, flags=re.MULTILINE))
    assert leaves(DEFAULTS) == documented


def test_the_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    for key in leaves(DEFAULTS):
        assert f"`{key}`" in readme, f"{key} is missing from the chart README's parameter tables"


def test_production_ships_the_alert_rules_the_repository_checks_with_promtool(manifests: Load) -> None:
    (rule,) = by_kind(manifests(PRODUCTION), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    shipped = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "helm/mlmarket/files/prometheus-rules.yaml").read_text()
    )
    assert rule["spec"] == shipped["spec"]
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {
        "MlmarketLedgerMismatch",
        "MlmarketDeadLetterQueueGrowing",
        "MlmarketNoWorkerHeartbeat",
        "MlmarketHighErrorRate",
    } <= alerts
    assert by_kind(manifests(MINIMAL), "PrometheusRule") == []
