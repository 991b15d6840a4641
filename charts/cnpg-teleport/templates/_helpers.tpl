{{/* fullname: the release's name, or release-chart. */}}
{{- define "cnpg-teleport.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cnpg-teleport.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cnpg-teleport.labels" -}}
{{ include "cnpg-teleport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cnpg-teleport.serviceAccountName" -}}
{{- default (include "cnpg-teleport.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/*
namespacedRules: what the controller does inside a watched namespace; the
same rules as config/rbac/role.yaml without its one cluster-scoped rule (the
kube-system Namespace). See that file for why each is needed.
*/}}
{{- define "cnpg-teleport.namespacedRules" -}}
- apiGroups: [postgresql.cnpg.io]
  resources: [clusters]
  verbs: [get, list, watch, patch]
- apiGroups: [postgresql.cnpg.io]
  resources: [poolers]
  verbs: [get, list, watch, patch]
- apiGroups: [postgresql.cnpg.io]
  resources: [databaseroles]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [postgresql.cnpg.io]
  resources: [databases]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [cert-manager.io]
  resources: [certificates]
  verbs: [get, create, update, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* kubeSystemRule: read the kube-system Namespace (the default cluster identity). */}}
{{- define "cnpg-teleport.kubeSystemRule" -}}
- apiGroups: [""]
  resources: [namespaces]
  resourceNames: [kube-system]
  verbs: [get]
{{- end -}}

{{- define "cnpg-teleport.subject" -}}
- kind: ServiceAccount
  name: {{ include "cnpg-teleport.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
