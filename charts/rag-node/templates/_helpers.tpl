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
