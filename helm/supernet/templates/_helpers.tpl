{{/* Names and labels. */}}
{{- define "supernet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "supernet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one role: (dict "root" $ "role" "front"). */}}
{{- define "supernet.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "supernet.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "supernet.secretName" -}}
{{ include "supernet.fullname" . }}
{{- end -}}

{{/* The environment every supernet container shares: the Redis URL (with the password
     from the Secret), logging and tracing. */}}
{{- define "supernet.env" -}}
{{- if .Values.redis.deploy }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "supernet.secretName" . }}
      key: redis-password
- name: SUPERNET_REDIS
  value: redis://:$(REDIS_PASSWORD)@{{ include "supernet.fullname" . }}-redis:6379/0
{{- else }}
- name: SUPERNET_REDIS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret | default (include "supernet.secretName" .) }}
      key: {{ if .Values.redis.external.existingSecret }}{{ .Values.redis.external.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}
- name: SUPERNET_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level settings every supernet pod shares. */}}
{{- define "supernet.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* Scheduling of one role: pass the role's values. */}}
{{- define "supernet.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The model id clients name: the file's name without `.gguf` and a quantization suffix
     (as `supernet worker` derives it). */}}
{{- define "supernet.modelId" -}}
{{- regexReplaceAll "(?i)\\.(Q|IQ|F16|F32|BF16)[A-Z0-9_]*$" (trimSuffix ".gguf" .Values.model.file) "" -}}
{{- end -}}
