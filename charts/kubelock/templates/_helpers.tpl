{{/* The chart's name. */}}
{{- define "kubelock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names start with this: the release name when it contains the chart's name, else `<release>-<name>`. */}}
{{- define "kubelock.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kubelock.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's ServiceAccount, Deployment and roles. */}}
{{- define "kubelock.operatorName" -}}
{{- printf "%s-operator" (include "kubelock.fullname" .) -}}
{{- end -}}

{{/* Labels Helm charts put on every object. */}}
{{- define "kubelock.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The operator's pods: the Deployment's selector and the metrics Service's. */}}
{{- define "kubelock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubelock.name" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The namespaces the operator watches in namespaced mode, as a JSON list (none listed: the release namespace; values.schema.json refuses a name listed twice). */}}
{{- define "kubelock.watchedNamespaces" -}}
{{- toJson (.Values.namespaced.namespaces | default (list .Release.Namespace)) -}}
{{- end -}}

{{/* The operator's rules: its ClusterRole's (dict "clusterWide" true), or in namespaced mode its Role's in each watched namespace. */}}
{{- define "kubelock.operatorRules" -}}
# Locks and claims: listed and watched into caches (reads come from there); finalizers and the
# kubelock.io/pod-uid annotation written by merge patch.
- apiGroups: [kubelock.io]
  resources: [distributedlocks, lockclaims]
  verbs: [list, watch, patch]
# Claims: read live (not from the cache) before a hold is released as an orphan; created for pods
# annotated kubelock.io/lock.
- apiGroups: [kubelock.io]
  resources: [lockclaims]
  verbs: [get, create]
# Statuses: merge patches only.
- apiGroups: [kubelock.io]
  resources: [distributedlocks/status, lockclaims/status]
  verbs: [patch]
# Pods: cached (holders' state); patch removes the kubelock.io/lock scheduling gate.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
{{- if .clusterWide }}
# The kube-system namespace's UID names this cluster's holds in a shared backend (when clusterName is not set).
- apiGroups: [""]
  resources: [namespaces]
  resourceNames: [kube-system]
  verbs: [get]
{{- end }}
# Events on locks, claims and pods (created, never updated).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Leases: the built-in kubernetes backend (slot and waiter Leases in the lock's namespace: listed,
# watched, read, created, replaced, renewed by merge patch, deleted on release; counter Leases of
# earlier versions: read, deleted) and leader election (read, created, replaced).
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch, delete]
{{- end -}}

{{/* What workloads that run the kubelock CLI need. */}}
{{- define "kubelock.claimerRules" -}}
- apiGroups: [kubelock.io]
  resources: [lockclaims]
  # patch: `kubelock renew` (heartbeat) and `kubelock release` (release annotation).
  verbs: [create, get, list, watch, delete, patch]
- apiGroups: [kubelock.io]
  resources: [distributedlocks]
  verbs: [get]
{{- end -}}
