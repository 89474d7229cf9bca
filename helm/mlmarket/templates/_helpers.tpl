{{/*
Shared names, labels, images, security contexts and checks of the mlmarket chart.
Component templates pass a dict: (dict "ctx" $ "component" "app").
*/}}

{{- define "mlmarket.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-mlmarket, or the release name alone when it already contains the chart name. */}}
{{- define "mlmarket.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "mlmarket.componentName" -}}
{{- printf "%s-%s" (include "mlmarket.fullname" .ctx | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "mlmarket.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; with .component, also app.kubernetes.io/component. */}}
{{- define "mlmarket.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ include "mlmarket.chart" $ctx }}
{{ include "mlmarket.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: mlmarket
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mlmarket.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlmarket.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* image reference: (dict "ctx" $ "repository" "mlmarket-app") */}}
{{- define "mlmarket.image" -}}
{{- $image := .ctx.Values.image -}}
{{- $tag := default .ctx.Chart.AppVersion $image.tag -}}
{{- if $image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $image.registry) .repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "mlmarket.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Security contexts that meet the "restricted" Pod Security Standard. They are not values on
purpose: the images run as uid 10001 and need nothing more. With `openshift: true` the uid, gid
and fsGroup are left out, for the platform to assign (OpenShift's restricted-v2 SCC refuses a
uid outside the namespace's range); everything else stays.
*/}}
{{- define "mlmarket.podSecurityContext" -}}
runAsNonRoot: true
{{- if not .Values.openshift }}
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mlmarket.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
{{- if not .Values.openshift }}
runAsUser: 10001
runAsGroup: 10001
{{- end }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Name of the Secret the pods read: existingSecret or the chart's own. */}}
{{- define "mlmarket.secretName" -}}
{{- default (include "mlmarket.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "mlmarket.configMapName" -}}
{{- include "mlmarket.fullname" . -}}
{{- end -}}

{{- define "mlmarket.apiUrl" -}}
{{- default (printf "http://%s:%d" (include "mlmarket.componentName" (dict "ctx" . "component" "app")) (int .Values.app.service.port)) .Values.webui.apiUrl -}}
{{- end -}}

{{/* data of the chart's own Secret (used by the Secret and by the migration hook's copy) */}}
{{- define "mlmarket.secretData" -}}
MLMARKET_SECRET_KEY: {{ .Values.secrets.secretKey | b64enc | quote }}
MLMARKET_DATABASE_URL: {{ .Values.secrets.databaseUrl | b64enc | quote }}
MLMARKET_BROKER_URL: {{ .Values.secrets.brokerUrl | b64enc | quote }}
{{- with .Values.secrets.s3AccessKeyId }}
MLMARKET_S3_ACCESS_KEY_ID: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.s3SecretAccessKey }}
MLMARKET_S3_SECRET_ACCESS_KEY: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.brokerManagementUrl }}
MLMARKET_BROKER_MANAGEMENT_URL: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.metricsToken }}
MLMARKET_METRICS_TOKEN: {{ . | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* "true" when the API's /metrics needs MLMARKET_METRICS_TOKEN from the mlmarket Secret, else empty */}}
{{- define "mlmarket.metricsToken" -}}
{{- if .Values.secrets.existingSecret -}}
{{- if .Values.secrets.existingSecretHasMetricsToken }}true{{ end -}}
{{- else if .Values.secrets.metricsToken -}}
true
{{- end -}}
{{- end -}}

{{/*
Name of the Secret holding the web UI's MLMARKET_UI_COOKIE_SECRET, else empty (the UI then signs
its cookie with Streamlit's per-process secret). The chart's own copy lives in a Secret of its own,
<fullname>-webui, so that the API and the workers, which read the whole mlmarket Secret, never get it.
*/}}
{{- define "mlmarket.uiCookieSecretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- if .Values.secrets.existingSecretHasUiCookieSecret }}{{ .Values.secrets.existingSecret }}{{ end -}}
{{- else if .Values.secrets.uiCookieSecret -}}
{{- include "mlmarket.componentName" (dict "ctx" . "component" "webui") -}}
{{- end -}}
{{- end -}}

{{/* "true" when webui.extraEnv sets MLMARKET_UI_COOKIE_SECRET itself, else empty */}}
{{- define "mlmarket.uiCookieSecretInExtraEnv" -}}
{{- range .Values.webui.extraEnv -}}
{{- if eq (toString .name) "MLMARKET_UI_COOKIE_SECRET" }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the API serves /docs, /redoc and /openapi.json (MLMARKET_DOCS_ENABLED, else off in production) */}}
{{- define "mlmarket.docsOn" -}}
{{- if kindIs "bool" .Values.config.docsEnabled -}}
{{- if .Values.config.docsEnabled }}true{{ end -}}
{{- else if ne .Values.config.env "production" -}}
true
{{- end -}}
{{- end -}}

{{/* data of the ConfigMap (used by the ConfigMap and by the migration hook's copy) */}}
{{- define "mlmarket.configData" -}}
MLMARKET_ENV: {{ .Values.config.env | quote }}
MLMARKET_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
MLMARKET_HOST: "0.0.0.0"
MLMARKET_PORT: {{ .Values.app.port | quote }}
MLMARKET_GRPC_PORT: {{ .Values.app.grpcPort | quote }}
MLMARKET_DATA_DIR: "/var/lib/mlmarket"
MLMARKET_RUN_WORKER_IN_API: "false"
MLMARKET_WORKER_HEALTH_PORT: {{ .Values.worker.healthPort | quote }}
{{- with .Values.config.s3.endpointUrl }}
MLMARKET_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
MLMARKET_S3_BUCKET: {{ .Values.config.s3.bucket | quote }}
MLMARKET_S3_PREFIX: {{ .Values.config.s3.prefix | quote }}
MLMARKET_S3_REGION: {{ .Values.config.s3.region | quote }}
MLMARKET_FORWARDED_ALLOW_IPS: {{ .Values.config.forwardedAllowIps | quote }}
{{- if kindIs "bool" .Values.config.docsEnabled }}
MLMARKET_DOCS_ENABLED: {{ .Values.config.docsEnabled | quote }}
{{- end }}
MLMARKET_HSTS: {{ .Values.config.hsts | quote }}
MLMARKET_READINESS_GRACE_SECONDS: {{ .Values.config.readinessGraceSeconds | quote }}
{{- with .Values.config.webhooks }}
MLMARKET_WEBHOOK_ALLOW_PRIVATE: {{ .allowPrivate | quote }}
MLMARKET_WEBHOOK_TIMEOUT_SECONDS: {{ .timeoutSeconds | quote }}
MLMARKET_WEBHOOK_MAX_ATTEMPTS: {{ .maxAttempts | quote }}
MLMARKET_WEBHOOK_RETRY_BASE_SECONDS: {{ .retryBaseSeconds | quote }}
MLMARKET_WEBHOOK_RETRY_MAX_SECONDS: {{ .retryMaxSeconds | quote }}
MLMARKET_WEBHOOK_CONCURRENCY: {{ .concurrency | quote }}
{{- end }}
{{- range $key, $value := .Values.config.extraEnv }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* checksums that roll the pods when their configuration changes */}}
{{- define "mlmarket.configChecksums" -}}
checksum/config: {{ include "mlmarket.configData" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include "mlmarket.secretData" . | sha256sum }}
{{- end }}
{{- end -}}

{{/* The writable directories of a read-only root filesystem. */}}
{{- define "mlmarket.writableVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/mlmarket
{{- end -}}

{{- define "mlmarket.writableVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: data
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- end -}}

{{/* Values the schema cannot judge alone. Fails the render with a message that says what to set. */}}
{{- define "mlmarket.validateValues" -}}
{{- $errors := list -}}
{{- $secrets := .Values.secrets -}}
{{- if not $secrets.existingSecret -}}
{{- $hint := "or name a Secret you manage in secrets.existingSecret (keys MLMARKET_SECRET_KEY, MLMARKET_DATABASE_URL, MLMARKET_BROKER_URL)" -}}
{{- if not $secrets.databaseUrl -}}
{{- $errors = append $errors (printf "secrets.databaseUrl is empty: set it to postgresql://USER:PASSWORD@HOST:5432/DATABASE %s" $hint) -}}
{{- end -}}
{{- if not $secrets.brokerUrl -}}
{{- $errors = append $errors (printf "secrets.brokerUrl is empty: set it to amqp://USER:PASSWORD@HOST:5672/ %s" $hint) -}}
{{- end -}}
{{- if not $secrets.secretKey -}}
{{- $errors = append $errors (printf "secrets.secretKey is empty: set it to a random value of at least 32 characters (e.g. `openssl rand -hex 32`) %s; the chart never generates one, so that every render (helm upgrade, a GitOps sync) keeps the same key and nobody is signed out" $hint) -}}
{{- else if and (eq .Values.config.env "production") (lt (len $secrets.secretKey) 32) -}}
{{- $errors = append $errors "secrets.secretKey must be at least 32 characters in production" -}}
{{- end -}}
{{- if and $secrets.s3AccessKeyId (not $secrets.s3SecretAccessKey) -}}
{{- $errors = append $errors "secrets.s3AccessKeyId is set but secrets.s3SecretAccessKey is empty: set both, or neither to use the AWS credential chain" -}}
{{- end -}}
{{- if $secrets.existingSecretHasMetricsToken -}}
{{- $errors = append $errors "secrets.existingSecretHasMetricsToken is true but secrets.existingSecret is empty: set secrets.metricsToken instead" -}}
{{- end -}}
{{- if $secrets.existingSecretHasUiCookieSecret -}}
{{- $errors = append $errors "secrets.existingSecretHasUiCookieSecret is true but secrets.existingSecret is empty: set secrets.uiCookieSecret instead" -}}
{{- end -}}
{{- if and $secrets.uiCookieSecret (eq .Values.config.env "production") (lt (len $secrets.uiCookieSecret) 32) -}}
{{- $errors = append $errors "secrets.uiCookieSecret must be at least 32 characters in production (e.g. `openssl rand -hex 32`)" -}}
{{- end -}}
{{- else -}}
{{- if $secrets.metricsToken -}}
{{- $errors = append $errors "secrets.metricsToken is ignored with secrets.existingSecret: put the key MLMARKET_METRICS_TOKEN in that Secret and set secrets.existingSecretHasMetricsToken=true" -}}
{{- end -}}
{{- if $secrets.uiCookieSecret -}}
{{- $errors = append $errors "secrets.uiCookieSecret is ignored with secrets.existingSecret: put the key MLMARKET_UI_COOKIE_SECRET in that Secret and set secrets.existingSecretHasUiCookieSecret=true" -}}
{{- end -}}
{{- end -}}
{{- if not .Values.config.s3.bucket -}}
{{- $errors = append $errors "config.s3.bucket is empty: the API and the workers share model artifacts through this S3 bucket (it must exist)" -}}
{{- end -}}
{{- range $key, $_ := .Values.config.extraEnv -}}
{{- if has $key (list "MLMARKET_SECRET_KEY" "MLMARKET_DATABASE_URL" "MLMARKET_BROKER_URL" "MLMARKET_S3_ACCESS_KEY_ID" "MLMARKET_S3_SECRET_ACCESS_KEY" "MLMARKET_METRICS_TOKEN" "MLMARKET_UI_COOKIE_SECRET") -}}
{{- $errors = append $errors (printf "config.extraEnv.%s would put a secret in a ConfigMap: use secrets.* or secrets.existingSecret" $key) -}}
{{- end -}}
{{- end -}}
{{- $fromValues := dict "MLMARKET_ENV" "config.env" "MLMARKET_LOG_LEVEL" "config.logLevel" "MLMARKET_FORWARDED_ALLOW_IPS" "config.forwardedAllowIps" "MLMARKET_DOCS_ENABLED" "config.docsEnabled" "MLMARKET_HSTS" "config.hsts" "MLMARKET_READINESS_GRACE_SECONDS" "config.readinessGraceSeconds" "MLMARKET_WEBHOOK_ALLOW_PRIVATE" "config.webhooks.allowPrivate" "MLMARKET_WEBHOOK_TIMEOUT_SECONDS" "config.webhooks.timeoutSeconds" "MLMARKET_WEBHOOK_MAX_ATTEMPTS" "config.webhooks.maxAttempts" "MLMARKET_WEBHOOK_RETRY_BASE_SECONDS" "config.webhooks.retryBaseSeconds" "MLMARKET_WEBHOOK_RETRY_MAX_SECONDS" "config.webhooks.retryMaxSeconds" "MLMARKET_WEBHOOK_CONCURRENCY" "config.webhooks.concurrency" -}}
{{- range $key, $_ := .Values.config.extraEnv -}}
{{- if hasKey $fromValues $key -}}
{{- $errors = append $errors (printf "config.extraEnv.%s is set by the value %s: set that instead" $key (get $fromValues $key)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (trim .Values.config.forwardedAllowIps) "*") (or (not .Values.networkPolicy.enabled) .Values.networkPolicy.allowExternal) -}}
{{- $errors = append $errors "config.forwardedAllowIps=* believes X-Forwarded-For from every client that reaches the API, so anyone could choose the address their sign-ins are throttled under: name the ingress controller's addresses (e.g. the pod network), or set networkPolicy.allowExternal=false so that only the listed peers reach the API" -}}
{{- end -}}
{{- if and .Values.keda.enabled .Values.worker.autoscaling.enabled -}}
{{- $errors = append $errors "keda.enabled and worker.autoscaling.enabled would both scale the workers: set worker.autoscaling.enabled=false when KEDA scales them" -}}
{{- end -}}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) -}}
{{- $errors = append $errors "keda.minReplicaCount is larger than keda.maxReplicaCount" -}}
{{- end -}}
{{- if and .Values.keda.enabled (not .Values.keda.hostSecret.name) (not $secrets.existingSecret) (not $secrets.brokerManagementUrl) -}}
{{- $errors = append $errors "keda.enabled needs RabbitMQ's management API URL: set secrets.brokerManagementUrl (http://USER:PASSWORD@HOST:15672/), or keda.hostSecret.name and keda.hostSecret.key naming a Secret that holds it" -}}
{{- end -}}
{{- $app := .Values.app -}}
{{- if $app.pdb.enabled -}}
{{- $fewest := ternary $app.autoscaling.minReplicas $app.replicaCount $app.autoscaling.enabled | int -}}
{{- if ge (int $app.pdb.minAvailable) $fewest -}}
{{- $errors = append $errors (printf "app.pdb.minAvailable (%d) must be below the API's replicas (%d, %s): otherwise the disruption budget never lets a node drain" (int $app.pdb.minAvailable) $fewest (ternary "app.autoscaling.minReplicas" "app.replicaCount" $app.autoscaling.enabled)) -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int $app.preStopSleepSeconds) 0) (ge (int $app.preStopSleepSeconds) (int $app.terminationGracePeriodSeconds)) -}}
{{- $errors = append $errors "app.preStopSleepSeconds must be shorter than app.terminationGracePeriodSeconds: the pod needs time left to finish its requests" -}}
{{- end -}}
{{- $webui := .Values.webui -}}
{{- if and $webui.enabled (or $webui.autoscaling.enabled (gt (int $webui.replicaCount) 1)) (ne $webui.service.sessionAffinity "ClientIP") -}}
{{- $errors = append $errors "more than one web UI replica needs session affinity (a Streamlit session and its uploads live in one pod): set webui.service.sessionAffinity=ClientIP and cookie affinity on the Ingress (see the chart README), or keep webui.replicaCount=1 with webui.autoscaling.enabled=false" -}}
{{- end -}}
{{- $uiCookieSecret := include "mlmarket.uiCookieSecretName" . -}}
{{- $uiCookieSecretInExtraEnv := include "mlmarket.uiCookieSecretInExtraEnv" . -}}
{{- if $webui.enabled -}}
{{- range $webui.extraEnv -}}
{{- if and (eq (toString .name) "MLMARKET_UI_COOKIE_SECRET") (hasKey . "value") -}}
{{- $errors = append $errors "webui.extraEnv.MLMARKET_UI_COOKIE_SECRET would put a secret in the Deployment: set secrets.uiCookieSecret, or secrets.existingSecretHasUiCookieSecret=true with the key in secrets.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if and $uiCookieSecret $uiCookieSecretInExtraEnv -}}
{{- $errors = append $errors "webui.extraEnv sets MLMARKET_UI_COOKIE_SECRET, which the chart already gives the web UI from its Secret: remove one of the two" -}}
{{- end -}}
{{- if and (or $webui.autoscaling.enabled (gt (int $webui.replicaCount) 1)) (not $uiCookieSecret) (not $uiCookieSecretInExtraEnv) -}}
{{- $errors = append $errors "more than one web UI replica needs a shared cookie secret (each pod would otherwise sign its sign-in cookie with its own key, and a browser that reaches another pod is signed out): set secrets.uiCookieSecret (e.g. `openssl rand -hex 32`), or put the key MLMARKET_UI_COOKIE_SECRET in secrets.existingSecret and set secrets.existingSecretHasUiCookieSecret=true" -}}
{{- end -}}
{{- end -}}
{{- range $component := list "app" "worker" "webui" -}}
{{- $autoscaling := (index $.Values $component).autoscaling -}}
{{- if and $autoscaling.enabled (gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) -}}
{{- $errors = append $errors (printf "%s.autoscaling.minReplicas is larger than %s.autoscaling.maxReplicas" $component $component) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hostname) -}}
{{- $errors = append $errors "ingress.enabled is true but ingress.hostname is empty" -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nmlmarket: these values cannot be installed:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
