{{/* Labels every object of the release carries. */}}
{{- define "jupyter-mig.labels" -}}
app.kubernetes.io/name: jupyter-mig
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The container image reference. */}}
{{- define "jupyter-mig.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The agent's service-account user name, as the API server reports it in admission. */}}
{{- define "jupyter-mig.agentUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ .Release.Name }}-agent
{{- end }}
