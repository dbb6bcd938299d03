{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "kaas.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: the release name, plus the chart name when different. */}}
{{- define "kaas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kaas.labels" -}}
app.kubernetes.io/name: {{ include "kaas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kaas.operatorSelector" -}}
app.kubernetes.io/name: {{ include "kaas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kaas.devicePluginSelector" -}}
app.kubernetes.io/name: {{ include "kaas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: device-plugin
{{- end -}}

{{- define "kaas.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* Secrets of the gateway <-> executor mutual TLS (both sources write tls.crt, tls.key, ca.crt). */}}
{{- define "kaas.executorTlsSecret" -}}
{{- printf "%s-executor-tls" (include "kaas.fullname" .) -}}
{{- end -}}
{{- define "kaas.gatewayTlsSecret" -}}
{{- printf "%s-gateway-tls" (include "kaas.fullname" .) -}}
{{- end -}}
{{- define "kaas.useCertManager" -}}
{{- if or (eq .Values.executorTls.source "cert-manager") (and (eq .Values.executorTls.source "auto") (.Capabilities.APIVersions.Has "cert-manager.io/v1")) -}}
true
{{- end -}}
{{- end -}}
