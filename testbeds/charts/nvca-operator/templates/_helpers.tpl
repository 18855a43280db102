{{- define "nvca.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/name: nvca-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "nvca.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "nvca.selector" -}}
app.kubernetes.io/name: nvca-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nvca.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}
