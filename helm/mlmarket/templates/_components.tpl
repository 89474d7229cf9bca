{{/*
Objects every component has in the same shape: ServiceAccount, HorizontalPodAutoscaler and
PodDisruptionBudget. Called from the component folders as
(dict "ctx" $ "component" "app" "values" .Values.app).
*/}}

{{- define "mlmarket.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "mlmarket.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "mlmarket.labels" . | nindent 4 }}
  {{- with .values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# No mlmarket process calls the Kubernetes API.
automountServiceAccountToken: false
{{- end -}}

{{- define "mlmarket.hpa" -}}
{{- $autoscaling := .values.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "mlmarket.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "mlmarket.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mlmarket.componentName" . }}
  minReplicas: {{ $autoscaling.minReplicas }}
  maxReplicas: {{ $autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $autoscaling.targetCPUUtilizationPercentage }}
{{- end -}}

{{- define "mlmarket.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "mlmarket.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "mlmarket.labels" . | nindent 4 }}
spec:
  {{- if hasKey .values.pdb "minAvailable" }}
  minAvailable: {{ .values.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "mlmarket.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/*
httpGet startup, liveness and readiness probes: (dict "values" .Values.app "port" "http" "live" "/x" "ready" "/y").
Liveness asks only whether the process answers (a restart cures nothing else); readiness may wait
longer (probes.readinessFailureThreshold) before taking a pod out of its Service.
*/}}
{{- define "mlmarket.probes" -}}
{{- $probes := .values.probes -}}
startupProbe:
  httpGet:
    path: {{ .live }}
    port: {{ .port }}
  periodSeconds: 5
  timeoutSeconds: {{ $probes.timeoutSeconds }}
  failureThreshold: {{ $probes.startupFailureThreshold }}
livenessProbe:
  httpGet:
    path: {{ .live }}
    port: {{ .port }}
  periodSeconds: {{ $probes.periodSeconds }}
  timeoutSeconds: {{ $probes.timeoutSeconds }}
  failureThreshold: {{ $probes.failureThreshold }}
readinessProbe:
  httpGet:
    path: {{ .ready }}
    port: {{ .port }}
  periodSeconds: {{ $probes.periodSeconds }}
  timeoutSeconds: {{ $probes.timeoutSeconds }}
  failureThreshold: {{ $probes.readinessFailureThreshold | default $probes.failureThreshold }}
{{- end -}}

{{/* node placement of a component's pods */}}
{{- define "mlmarket.placement" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* DNS egress, shared by every NetworkPolicy that restricts egress */}}
{{- define "mlmarket.dnsEgress" -}}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{/*
egress of the pods that reach the database, the broker and S3 (API, worker): each port to its
peers when networkPolicy.egress.*To names them, else to any destination; the EKS Pod Identity
agent and the instance metadata service only when a value says so.
*/}}
{{- define "mlmarket.servicesEgress" -}}
{{- $egress := .Values.networkPolicy.egress -}}
{{- $rules := list
  (dict "to" $egress.databaseTo "ports" (list $egress.databasePort))
  (dict "to" $egress.brokerTo "ports" (list $egress.brokerPort))
  (dict "to" $egress.s3To "ports" $egress.s3Ports) -}}
{{- range $rules }}
{{- if .ports }}
- ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- if $egress.podIdentity }}
# EKS Pod Identity agent: S3 credentials for the pod's service account.
- to:
    - ipBlock:
        cidr: 169.254.170.23/32
    - ipBlock:
        cidr: fd00:ec2::23/128
  ports:
    - protocol: TCP
      port: 80
{{- end }}
{{- if $egress.instanceMetadata }}
# Instance metadata service (IMDS): the node's credentials and region.
- to:
    - ipBlock:
        cidr: 169.254.169.254/32
  ports:
    - protocol: TCP
      port: 80
{{- end }}
{{- with $egress.extraTo }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
egress of the workers to webhook receivers: networkPolicy.egress.webhookPorts on public addresses
only (the workers refuse private receivers themselves too), or on any address with
config.webhooks.allowPrivate (local use).
*/}}
{{- define "mlmarket.webhookEgress" -}}
{{- with .Values.networkPolicy.egress.webhookPorts }}
# Webhook receivers (signed deliveries of task events).
- ports:
    {{- range . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- if not $.Values.config.webhooks.allowPrivate }}
  to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          - 10.0.0.0/8
          - 100.64.0.0/10
          - 127.0.0.0/8
          - 169.254.0.0/16
          - 172.16.0.0/12
          - 192.168.0.0/16
    - ipBlock:
        cidr: ::/0
        except:
          - ::1/128
          - fc00::/7
          - fe80::/10
  {{- end }}
{{- end }}
{{- end -}}
