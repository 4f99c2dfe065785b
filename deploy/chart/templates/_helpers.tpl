{{- define "prbot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "prbot.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "prbot.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "prbot.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "prbot.fullname" .) -}}
{{- end -}}

{{- define "prbot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "prbot.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "prbot.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Whether the queue is Redis (a URL, a Secret holding one, or the bundled Redis). */}}
{{- define "prbot.redisQueue" -}}
{{- if or .Values.queue.url .Values.queue.existingSecret .Values.redis.enabled -}}true{{- end -}}
{{- end -}}

{{/* The pod security context: user 65534, nothing privileged. */}}
{{- define "prbot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65534
runAsGroup: 65534
fsGroup: 65534
{{- end -}}

{{/* The container security context the render jail needs (README: "The render jail needs user
namespaces"): no privilege escalation, no capability; only the seccomp and AppArmor profiles are
opened so that bubblewrap can make an unprivileged user namespace. */}}
{{- define "prbot.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65534
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  {{- toYaml .Values.jail.seccompProfile | nindent 2 }}
appArmorProfile:
  {{- toYaml .Values.jail.appArmorProfile | nindent 2 }}
{{- end -}}

{{/* The environment both the web and the workers read (see prbot/service/settings.py). */}}
{{- define "prbot.env" -}}
- name: GITHUB_APP_ID
  value: {{ .Values.github.appId | quote }}
{{- with .Values.github.apiUrl }}
- name: GITHUB_API_URL
  value: {{ . | quote }}
{{- end }}
- name: GITHUB_PRIVATE_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "prbot.secretName" . }}, key: {{ .Values.secrets.keys.privateKey }}}
- name: GITHUB_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef: {name: {{ include "prbot.secretName" . }}, key: {{ .Values.secrets.keys.webhookSecret }}}
- name: PRBOT_REGISTRY_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "prbot.secretName" . }}, key: {{ .Values.secrets.keys.registryToken }}, optional: true}
- name: PRBOT_DATA_DIR
  value: /data
- name: HOME
  value: /tmp
{{- if .Values.queue.existingSecret }}
- name: PRBOT_QUEUE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.queue.existingSecret }}, key: {{ .Values.queue.key }}}
{{- else if .Values.queue.url }}
- name: PRBOT_QUEUE_URL
  value: {{ .Values.queue.url | quote }}
{{- else if .Values.redis.enabled }}
- name: PRBOT_QUEUE_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "prbot.fullname" .) | quote }}
{{- end }}
{{- if .Values.clusters.existingSecret }}
- name: PRBOT_CLUSTERS
  value: {{ printf "/etc/prbot/clusters/%s" .Values.clusters.file | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "prbot.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- if .Values.clusters.existingSecret }}
- name: clusters
  mountPath: /etc/prbot/clusters
  readOnly: true
{{- end }}
{{- end -}}

{{/* The web's data directory is the volume (it holds the SQLite queue when there is no Redis);
a worker's holds only repository mirrors, rebuilt on demand: an emptyDir per pod. */}}
{{- define "prbot.volumes" -}}
{{- $root := .root -}}
{{- with $root -}}
- name: data
{{- if eq $.role "worker" }}
  emptyDir:
    sizeLimit: {{ .Values.worker.dataSizeLimit }}
{{- else if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" (include "prbot.fullname" .)) }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- if .Values.clusters.existingSecret }}
- name: clusters
  secret:
    secretName: {{ .Values.clusters.existingSecret }}
{{- end }}
{{- end -}}
{{- end -}}
