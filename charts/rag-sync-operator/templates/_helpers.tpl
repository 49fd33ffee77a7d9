{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "rag-sync-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name when it already contains the chart name,
else "<release>-<chart>"; at most 63 characters.
*/}}
{{- define "rag-sync-operator.fullname" -}}
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

{{/*
Name of the cluster-scoped RBAC objects: they are shared by every namespace, so the name carries
the release namespace as well as the release name and two installs never collide.
*/}}
{{- define "rag-sync-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "rag-sync-operator.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "rag-sync-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "rag-sync-operator.labels" -}}
helm.sh/chart: {{ include "rag-sync-operator.chart" . }}
{{ include "rag-sync-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: rag-sync
{{- end }}

{{/*
Labels the Deployment, Service, PDB and NetworkPolicy select the operator pods by.
*/}}
{{- define "rag-sync-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rag-sync-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rag-sync-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rag-sync-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rag-sync-operator.leaseName" -}}
{{- default (include "rag-sync-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "rag-sync-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}
