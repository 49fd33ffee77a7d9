{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "rag-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name when it already contains the chart name,
else "<release>-<chart>"; at most 63 characters.
*/}}
{{- define "rag-node.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rag-node.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "rag-node.labels" -}}
helm.sh/chart: {{ include "rag-node.chart" . }}
{{ include "rag-node.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: rag-node
app.kubernetes.io/part-of: rag-sync
{{- end }}

{{/*
Labels the StatefulSet and the Service select the pods by; a SyncPeer selects them by these
too (app.kubernetes.io/name: rag-node, app.kubernetes.io/instance: <release>).
*/}}
{{- define "rag-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rag-node.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rag-node.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The sync token Secret: token.existingSecret, or the one this chart generates.
*/}}
{{- define "rag-node.tokenSecretName" -}}
{{- if .Values.token.existingSecret }}
{{- .Values.token.existingSecret }}
{{- else }}
{{- printf "%s-sync-token" .Release.Name | trunc 253 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The admin token Secret: adminToken.existingSecret, or the one this chart generates.
*/}}
{{- define "rag-node.adminTokenSecretName" -}}
{{- if .Values.adminToken.existingSecret }}
{{- .Values.adminToken.existingSecret }}
{{- else }}
{{- printf "%s-admin-token" .Release.Name | trunc 253 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The TLS Secret (tls.crt, tls.key, ca.crt): tls.existingSecret, or "<release>-tls" that
cert-manager or this chart writes.
*/}}
{{- define "rag-node.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" .Release.Name | trunc 253 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The DNS names a node certificate holds: every pod behind the headless Service, the Service.
*/}}
{{- define "rag-node.dnsNames" -}}
{{- $fn := include "rag-node.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list (printf "*.%s.%s.svc" $fn $ns) (printf "*.%s.%s.svc.cluster.local" $fn $ns) (printf "%s.%s.svc" $fn $ns) }}
{{- concat $names .Values.tls.extraDnsNames | toJson }}
{{- end }}

{{/*
One generated token Secret (kept across upgrades): the context is (dict "root" $ "name" N "key" K).
*/}}
{{- define "rag-node.tokenSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- $token := dig "data" .key "" ($existing | default dict) }}
{{- if not $token }}
{{- $token = randAlphaNum 32 | b64enc }}
{{- end }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "rag-node.labels" .root | nindent 4 }}
type: Opaque
data:
  {{ .key }}: {{ $token | quote }}
{{- end }}
