{{/*
Names.
*/}}
{{- define "dftg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dftg.fullname" -}}
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

{{- define "dftg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels. Call with (dict "ctx" $ "component" "coordinator").
*/}}
{{- define "dftg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dftg.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dftg.labels" -}}
helm.sh/chart: {{ include "dftg.chart" .ctx }}
{{ include "dftg.selectorLabels" . }}
app.kubernetes.io/part-of: dftg
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of objects that belong to no single component. */}}
{{- define "dftg.baseLabels" -}}
helm.sh/chart: {{ include "dftg.chart" . }}
app.kubernetes.io/name: {{ include "dftg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: dftg
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "dftg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dftg.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dftg.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "dftg.configMapName" -}}
{{- printf "%s-config" (include "dftg.fullname" .) }}
{{- end }}

{{/* Name of a worker Deployment: call with (dict "ctx" $ "role" "inference"). */}}
{{- define "dftg.workerName" -}}
{{- printf "%s-%s" (include "dftg.fullname" .ctx) .role | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Which autoscaler manages the worker Deployments: "keda", "hpa" or "none".
*/}}
{{- define "dftg.autoscaler" -}}
{{- if .Values.autoscaling.keda.enabled }}keda{{- else if .Values.autoscaling.hpa.enabled }}hpa{{- else }}none{{- end }}
{{- end }}

{{/*
Environment shared by the coordinator and the workers: the ConfigMap (non-secret settings)
and the credentials from existing Secrets.
*/}}
{{- define "dftg.envFrom" -}}
- configMapRef:
    name: {{ include "dftg.configMapName" . }}
{{- end }}

{{- define "dftg.secretEnv" -}}
{{- $s := .Values.secrets }}
{{- if $s.amqp.name }}
{{- if $s.amqp.urlKey }}
- name: DFTG_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.amqp.name }}
      key: {{ $s.amqp.urlKey }}
{{- else }}
- name: DFTG_AMQP_USER
  valueFrom:
    secretKeyRef:
      name: {{ $s.amqp.name }}
      key: {{ $s.amqp.userKey }}
- name: DFTG_AMQP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.amqp.name }}
      key: {{ $s.amqp.passwordKey }}
{{- end }}
{{- end }}
{{- if $s.s3.name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s.s3.name }}
      key: {{ $s.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s.s3.name }}
      key: {{ $s.s3.secretAccessKeyKey }}
{{- end }}
{{- if $s.modelApiKey.name }}
- name: DFTG_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s.modelApiKey.name }}
      key: {{ $s.modelApiKey.key }}
{{- end }}
{{- end }}

{{/* The /tmp emptyDir every dftg pod mounts (read-only root filesystem). */}}
{{- define "dftg.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "dftg.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
The operator's vocabularies (DFTG_VOCAB_DIR), when a ConfigMap of them is configured.
*/}}
{{- define "dftg.vocabMount" -}}
{{- if .Values.config.vocabulariesConfigMap }}
- name: vocabularies
  mountPath: /etc/dftg/vocab
  readOnly: true
{{- end }}
{{- end }}

{{- define "dftg.vocabVolume" -}}
{{- if .Values.config.vocabulariesConfigMap }}
- name: vocabularies
  configMap:
    name: {{ .Values.config.vocabulariesConfigMap }}
{{- end }}
{{- end }}

{{/*
Changing the ConfigMap rolls the pods (env vars are read at start).
*/}}
{{- define "dftg.configChecksum" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}
