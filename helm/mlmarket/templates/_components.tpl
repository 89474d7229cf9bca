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
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "mlmarket.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* httpGet startup, liveness and readiness probes: (dict "values" .Values.app "port" "http" "live" "/x" "ready" "/y") */}}
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
  failureThreshold: {{ $probes.failureThreshold }}
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

{{/* egress of the pods that reach the database, the broker and S3 (API, worker) */}}
{{- define "mlmarket.servicesEgress" -}}
{{- $egress := .Values.networkPolicy.egress -}}
- ports:
    - protocol: TCP
      port: {{ $egress.databasePort }}
    - protocol: TCP
      port: {{ $egress.brokerPort }}
    {{- range $egress.s3Ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- with $egress.extraTo }}
{{ toYaml . }}
{{- end }}
{{- end -}}
