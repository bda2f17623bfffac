{{- define "radscale.name" -}}radscale{{- end -}}

{{- define "radscale.fullname" -}}
{{- /* the usual convention: a release already named after the chart is not prefixed twice */ -}}
{{- if contains "radscale" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name "radscale" | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "radscale.labels" -}}
app.kubernetes.io/name: radscale
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "radscale.selectorLabels" -}}
app.kubernetes.io/name: radscale
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "radscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "radscale.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* Exactly what the operator does; no wildcards. Secrets: read only, for result/artifact access. */}}
{{- define "radscale.rules" -}}
- apiGroups: ["radscale.io"]
  resources: ["scalingstudies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["radscale.io"]
  resources: ["scalingstudies/status"]
  verbs: ["get", "patch"]
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end -}}
