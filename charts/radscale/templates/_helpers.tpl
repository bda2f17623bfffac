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

{{/* Exactly what the operator does; no wildcards. Secrets are separate: see radscale.secretRules. */}}
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
{{- end -}}

{{/* Read only, for result/artifact access with a study's credentialsSecret; granted per namespace
     unless rbac.clusterWideSecrets opts in to every namespace. */}}
{{- define "radscale.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end -}}

{{/* Cluster-scoped, whatever the namespaces watched: kopf lists and watches CRDs to follow the
     resources it serves (without it, it warns and never notices CRD changes). */}}
{{- define "radscale.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}
