{{/* The name of the release's objects: the release name, as the real chart does. */}}
{{- define "cassandra.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cassandra.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "cassandra.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "cassandra.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "cassandra.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The first member, which the others use as their seed. */}}
{{- define "cassandra.seed" -}}
{{ include "cassandra.fullname" . }}-0.{{ include "cassandra.fullname" . }}-headless.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}
