{{/*
The standard helpers of `helm create`, over the chart's own context.
*/}}

{{/* Expand the name of the chart. */}}
{{- define "jwksgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "jwksgate.fullname" -}}
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

{{/* Create chart name and version as used by the chart label. */}}
{{- define "jwksgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels */}}
{{- define "jwksgate.labels" -}}
helm.sh/chart: {{ include "jwksgate.chart" . }}
{{ include "jwksgate.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels */}}
{{- define "jwksgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jwksgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Create the name of the service account to use */}}
{{- define "jwksgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jwksgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Everything below takes a context dict, so that it works both for this chart's own Deployment and
from the chart of another pod (sidecar mode), where `.Values` is that chart's:
  root:     the top-level context ($)
  values:   jwksgate's values (.Values here; .Values.jwksgate in a parent chart)
  sidecar:  true when the container joins another chart's pod
  replicas: (optional) how many pods run this container, for the replay-store check
*/}}

{{/* Context for this chart's own templates. */}}
{{- define "jwksgate.ctx" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) $replicas) }}
{{- $replicas = int .Values.autoscaling.maxReplicas }}
{{- end }}
{{- toJson (dict "sidecar" (eq .Values.mode "sidecar") "replicas" $replicas) }}
{{- end }}

{{/*
Name of the gateway's ConfigMap. Standalone: the release's fullname. Sidecar: derived from the
release and jwksgate's own values only (never from the chart that includes it), so that this
chart, rendered as a dependency, and the parent's pod agree on it.
*/}}
{{- define "jwksgate.configMapName" -}}
{{- if .sidecar }}
{{- if .values.fullnameOverride }}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "jwksgate" .values.nameOverride }}
{{- if contains $name .root.Release.Name }}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- else }}
{{- include "jwksgate.fullname" .root }}
{{- end }}
{{- end }}

{{/* The port of a "host:port" listen address. */}}
{{- define "jwksgate.portOf" -}}
{{- $port := regexFind ":[0-9]+$" (toString .) | trimPrefix ":" }}
{{- if not $port }}
{{- fail (printf "jwksgate: %q has no :port at its end" (toString .)) }}
{{- end }}
{{- $port }}
{{- end }}

{{- define "jwksgate.httpPort" -}}
{{- include "jwksgate.portOf" .values.config.listen }}
{{- end }}

{{- define "jwksgate.adminPort" -}}
{{- include "jwksgate.portOf" .values.config.admin_listen }}
{{- end }}

{{/*
Checks what the values schema cannot: fails the render with every problem, one per line.
*/}}
{{- define "jwksgate.validate" -}}
{{- $v := .values }}
{{- $errors := list }}
{{- $upstream := $v.config.upstream | default dict }}
{{- if not (get $upstream "url") }}
{{- $errors = append $errors "config.upstream.url is required: the backend every verified push is forwarded to (standalone: its Service URL; sidecar: http://127.0.0.1:PORT)" }}
{{- end }}
{{- if not $v.config.issuers }}
{{- $errors = append $errors "config.issuers needs at least one issuer (name, jwks_url and, usually, issuer): without one every push is rejected" }}
{{- end }}
{{- if hasKey $v.config "workers" }}
{{- $errors = append $errors "config.workers: set the top-level value `workers` instead (the chart writes it into config.yaml)" }}
{{- end }}
{{- $replay := $v.config.replay | default dict }}
{{- $store := get $replay "store" | default "memory" }}
{{- $replicas := int (get . "replicas" | default 1) }}
{{- $workers := int $v.workers }}
{{- if and (ne $store "redis") (or (gt $replicas 1) (gt $workers 1)) }}
{{- $errors = append $errors (printf "config.replay.store must be redis when more than one process verifies tokens (replicas or autoscaling.maxReplicas: %d, workers: %d): the %s replay store is per process, so a token replayed to another replica or worker would be accepted twice" $replicas $workers $store) }}
{{- end }}
{{- if and (eq $store "redis") (not (get $replay "redis_url")) }}
{{- $errors = append $errors "config.replay.redis_url is required with config.replay.store: redis (e.g. redis://:${REDIS_PASSWORD}@redis:6379/0)" }}
{{- end }}
{{- if and .sidecar (not (or $v.image.tag $v.image.digest)) }}
{{- $errors = append $errors "image.tag (or image.digest) is required in sidecar mode: the including chart's appVersion is not jwksgate's" }}
{{- end }}
{{- $errors = concat $errors (include "jwksgate.fileMountErrors" . | fromJson).errors }}
{{- if $errors }}
{{- fail (printf "\n  jwksgate: invalid values:\n  - %s" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}

{{/* config.yaml: the `config` values plus `workers`. */}}
{{- define "jwksgate.configYaml" -}}
{{- $config := deepCopy .values.config }}
{{- $_ := set $config "workers" (int .values.workers) }}
{{- range $m := (include "jwksgate.fileMounts" . | fromJson).mounts }}
{{- include "jwksgate.pointConfigAt" (dict "config" $config "mount" $m) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Pods roll when their config changes (a ConfigMap update alone does not restart them). */}}
{{- define "jwksgate.configChecksum" -}}
{{- include "jwksgate.configYaml" . | sha256sum }}
{{- end }}

{{/* preStop sleep, then the drain, then a margin for the process to exit. */}}
{{- define "jwksgate.terminationGracePeriodSeconds" -}}
{{- $l := .values.lifecycle }}
{{- add (int $l.preStopSleepSeconds) (int .values.config.shutdown_grace_seconds) (int $l.terminationGraceMarginSeconds) }}
{{- end }}

{{/* Pod annotations: the config checksum and, if enabled, Prometheus' scrape annotations. */}}
{{- define "jwksgate.podAnnotations" -}}
checksum/{{ if .sidecar }}jwksgate-{{ end }}config: {{ include "jwksgate.configChecksum" . }}
{{- if .values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ include "jwksgate.adminPort" . | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
In sidecar mode .root.Chart is the parent chart, whose appVersion is not jwksgate's: the tag (or
digest) must be given (checked in jwksgate.validate).
*/}}
{{- define "jwksgate.image" -}}
{{- $image := .values.image }}
{{- $tag := $image.tag | default (ternary "" .root.Chart.AppVersion .sidecar) | toString }}
{{- if and $image.digest $tag }}
{{- printf "%s:%s@%s" $image.repository $tag $image.digest }}
{{- else if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/* The gateway container, as one list item. */}}
{{- define "jwksgate.container" -}}
{{- $v := .values }}
{{- $prefix := ternary "jwksgate-" "" (.sidecar | default false) -}}
- name: jwksgate
  {{- if get . "native" }}
  # a native sidecar: started before, and stopped after, the pod's app containers
  restartPolicy: Always
  {{- end }}
  image: {{ include "jwksgate.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["run", "--config", "/etc/jwksgate/config.yaml"]
  ports:
    - name: {{ $prefix }}http
      containerPort: {{ include "jwksgate.httpPort" . }}
      protocol: TCP
    - name: {{ $prefix }}admin
      containerPort: {{ include "jwksgate.adminPort" . }}
      protocol: TCP
  {{- if or $v.secretEnv $v.extraEnv }}
  env:
    {{- range $name, $ref := $v.secretEnv }}
    - name: {{ $name }}
      valueFrom:
        secretKeyRef:
          name: {{ $ref.secretName }}
          key: {{ $ref.key }}
          {{- if hasKey $ref "optional" }}
          optional: {{ $ref.optional }}
          {{- end }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with $v.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    httpGet:
      path: /livez
      port: {{ $prefix }}admin
    {{- toYaml $v.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /livez
      port: {{ $prefix }}admin
    {{- toYaml $v.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $prefix }}admin
    {{- toYaml $v.probes.readiness | nindent 4 }}
  {{- if gt (int $v.lifecycle.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", "{{ int $v.lifecycle.preStopSleepSeconds }}"]
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: jwksgate-config
      mountPath: /etc/jwksgate
      readOnly: true
    - name: jwksgate-tmp
      mountPath: /tmp
    {{- range $m := (include "jwksgate.fileMounts" . | fromJson).mounts }}
    - name: {{ $m.volume.name }}
      mountPath: {{ $m.mountPath }}
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The gateway's volumes, as list items. */}}
{{- define "jwksgate.volumes" -}}
- name: jwksgate-config
  configMap:
    name: {{ include "jwksgate.configMapName" . }}
- name: jwksgate-tmp
  emptyDir:
    {{- with .values.tmpVolume.sizeLimit }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
{{- range $m := (include "jwksgate.fileMounts" . | fromJson).mounts }}
- name: {{ $m.volume.name }}
  {{- toYaml (omit $m.volume "name") | nindent 2 }}
{{- end }}
{{- with .values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Named templates for the chart of another pod (mode: sidecar). Call them with
  (dict "root" $ "values" .Values.jwksgate "replicas" .Values.replicaCount)
("replicas" may be left out; it only feeds the replay-store check). See examples/sidecar-receiver.

jwksgate.nativeSidecar: an `initContainers` item with restartPolicy: Always (Kubernetes >= 1.29):
  starts, and passes its startup probe, before the app containers; stops after them.
jwksgate.sidecarContainer: a classic `containers` item, for older clusters.
jwksgate.sidecarVolumes: the `volumes` items both need.
jwksgate.sidecarPodAnnotations: the pod-template annotations (config checksum, scrape).
jwksgate.sidecarTerminationGracePeriodSeconds: the pod's terminationGracePeriodSeconds.
*/}}
{{- define "jwksgate.sidecarContainer" -}}
{{- $ctx := dict "root" .root "values" .values "sidecar" true "replicas" (get . "replicas" | default 1) "native" (get . "native" | default false) }}
{{- include "jwksgate.validate" $ctx }}
{{- include "jwksgate.container" $ctx }}
{{- end }}

{{- define "jwksgate.nativeSidecar" -}}
{{- include "jwksgate.sidecarContainer" (merge (dict "native" true) .) }}
{{- end }}

{{- define "jwksgate.sidecarVolumes" -}}
{{- include "jwksgate.volumes" (dict "root" .root "values" .values "sidecar" true) }}
{{- end }}

{{- define "jwksgate.sidecarPodAnnotations" -}}
{{- include "jwksgate.podAnnotations" (dict "root" .root "values" .values "sidecar" true) }}
{{- end }}

{{- define "jwksgate.sidecarTerminationGracePeriodSeconds" -}}
{{- include "jwksgate.terminationGracePeriodSeconds" . }}
{{- end }}
