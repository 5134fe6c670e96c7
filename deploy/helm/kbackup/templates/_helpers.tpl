{{/* Names and labels. */}}
{{- define "kbackup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kbackup.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kbackup.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kbackup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "kbackup.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (archiver, snapshot, restore). */}}
{{- define "kbackup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kbackup.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kbackup.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kbackup.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image tag: image.tag, else the chart's appVersion. */}}
{{- define "kbackup.tag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: use a kbackup version, not latest" -}}
{{- end -}}
{{- $tag -}}
{{- end -}}

{{- define "kbackup.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "kbackup.tag" .) -}}
{{- end -}}

{{/* Required settings, checked where they are used. */}}
{{- define "kbackup.brokers" -}}
{{- if not .Values.kafka.brokers -}}
{{- fail "kafka.brokers: give the seed brokers (host:port list)" -}}
{{- end -}}
{{- join "," .Values.kafka.brokers -}}
{{- end -}}

{{- define "kbackup.store" -}}
{{- if not .Values.store.url -}}
{{- fail "store.url: give the archive (s3://bucket/prefix)" -}}
{{- end -}}
{{- .Values.store.url -}}
{{- end -}}

{{/*
The environment every kbackup container shares: store, S3, Kafka security,
logging (brokers are added by each workload). Every flag reads KBACKUP_<FLAG>;
secrets come from Secret references only.
*/}}
{{- define "kbackup.env" -}}
- name: KBACKUP_STORE
  value: {{ include "kbackup.store" . | quote }}
{{- with .Values.store.s3 }}
{{- if .region }}
- name: KBACKUP_S3_REGION
  value: {{ .region | quote }}
{{- end }}
{{- if .endpoint }}
- name: KBACKUP_S3_ENDPOINT
  value: {{ .endpoint | quote }}
{{- end }}
{{- if .pathStyle }}
- name: KBACKUP_S3_PATH_STYLE
  value: "true"
{{- end }}
{{- if .sse }}
- name: KBACKUP_S3_SSE
  value: {{ .sse | quote }}
{{- end }}
{{- if .sseKMSKeyID }}
- name: KBACKUP_S3_SSE_KMS_KEY_ID
  value: {{ .sseKMSKeyID | quote }}
{{- end }}
{{- if .credentialsSecret.name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .credentialsSecret.name | quote }}
      key: {{ .credentialsSecret.accessKeyIDKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .credentialsSecret.name | quote }}
      key: {{ .credentialsSecret.secretAccessKeyKey | quote }}
{{- end }}
{{- end }}
{{- with .Values.kafka }}
{{- if .clientID }}
- name: KBACKUP_CLIENT_ID
  value: {{ .clientID | quote }}
{{- end }}
{{- if .tls.enabled }}
- name: KBACKUP_TLS
  value: "true"
{{- end }}
{{- if .tls.serverName }}
- name: KBACKUP_TLS_SERVER_NAME
  value: {{ .tls.serverName | quote }}
{{- end }}
{{- if .tls.caSecret.name }}
- name: KBACKUP_TLS_CA
  value: /etc/kbackup/tls-ca/{{ .tls.caSecret.key }}
{{- end }}
{{- if .tls.clientCertSecret.name }}
- name: KBACKUP_TLS_CERT
  value: /etc/kbackup/tls-client/{{ .tls.clientCertSecret.certKey }}
- name: KBACKUP_TLS_KEY
  value: /etc/kbackup/tls-client/{{ .tls.clientCertSecret.keyKey }}
{{- end }}
{{- if .sasl.mechanism }}
- name: KBACKUP_SASL_MECHANISM
  value: {{ .sasl.mechanism | quote }}
{{- end }}
{{- if .sasl.username }}
- name: KBACKUP_SASL_USERNAME
  value: {{ .sasl.username | quote }}
{{- end }}
{{- if .sasl.passwordSecret.name }}
- name: KBACKUP_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .sasl.passwordSecret.name | quote }}
      key: {{ .sasl.passwordSecret.key | quote }}
{{- end }}
{{- if .sasl.awsRegion }}
- name: KBACKUP_AWS_REGION
  value: {{ .sasl.awsRegion | quote }}
{{- end }}
{{- end }}
- name: KBACKUP_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: KBACKUP_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes for the TLS Secrets and a writable /tmp (the root file system is read-only). */}}
{{- define "kbackup.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.tls.caSecret.name }}
- name: tls-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret.name | quote }}
    items:
      - key: {{ .Values.kafka.tls.caSecret.key | quote }}
        path: {{ .Values.kafka.tls.caSecret.key | quote }}
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret.name }}
- name: tls-client
  secret:
    secretName: {{ .Values.kafka.tls.clientCertSecret.name | quote }}
    items:
      - key: {{ .Values.kafka.tls.clientCertSecret.certKey | quote }}
        path: {{ .Values.kafka.tls.clientCertSecret.certKey | quote }}
      - key: {{ .Values.kafka.tls.clientCertSecret.keyKey | quote }}
        path: {{ .Values.kafka.tls.clientCertSecret.keyKey | quote }}
{{- end }}
{{- end -}}

{{- define "kbackup.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.caSecret.name }}
- name: tls-ca
  mountPath: /etc/kbackup/tls-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret.name }}
- name: tls-client
  mountPath: /etc/kbackup/tls-client
  readOnly: true
{{- end }}
{{- end -}}
