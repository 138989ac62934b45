{{/*
Files the gateway reads from existing Secrets and ConfigMaps: the TLS certificate, CA bundles, the
upstream client certificate, static tokens and Standard Webhooks secrets.

One list (jwksgate.fileMounts) drives all three places that must agree: the pod's volumes, the
container's read-only mounts, and the config keys in config.yaml that name the mounted files.
Each value mounts only the keys it names (`items`), never through subPath, so that the kubelet's
updates of a rotated Secret reach the files and the gateway's file watcher reloads them.

Everything is mounted under /run/jwksgate, not under /etc/jwksgate: that directory is the
ConfigMap volume of config.yaml, and a mount point inside another volume would be created in
the kubelet's copy of the ConfigMap.

These helpers take the same context dict as the rest (root, values, sidecar).
*/}}

{{- define "jwksgate.fileRoot" -}}/run/jwksgate{{- end }}

{{/*
An issuer's name as part of a volume name (a DNS label of at most 63 characters). Issuer names
allow `_` and longer names than fit; those get a short hash instead, which is stable.
*/}}
{{- define "jwksgate.issuerSlug" -}}
{{- if and (regexMatch "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$" .) (le (len .) 40) }}
{{- . }}
{{- else }}
{{- printf "i%s" (sha256sum . | trunc 10) }}
{{- end }}
{{- end }}

{{/*
One mount, as JSON: the volume (name + secret/configMap source of the listed keys), the mount
path, what it is for (target, issuer), and the path of each key's file, in the order of `keys`.
Takes: name, dir, ref ({secretName} or {configMapName}), keys, target, issuer (optional).
*/}}
{{- define "jwksgate.fileMount" -}}
{{- $dir := .dir }}
{{- $items := list }}
{{- $paths := list }}
{{- range .keys }}
{{- $items = append $items (dict "key" . "path" .) }}
{{- $paths = append $paths (printf "%s/%s" $dir .) }}
{{- end }}
{{- $volume := dict "name" .name }}
{{- if .ref.secretName }}
{{- $_ := set $volume "secret" (dict "secretName" .ref.secretName "items" $items) }}
{{- else }}
{{- $_ := set $volume "configMap" (dict "name" .ref.configMapName "items" $items) }}
{{- end }}
{{- toJson (dict "volume" $volume "mountPath" $dir "target" .target "issuer" (.issuer | default "") "paths" $paths) }}
{{- end }}

{{/* Every file mount the values ask for, as {"mounts": [...]} (see jwksgate.fileMount). */}}
{{- define "jwksgate.fileMounts" -}}
{{- $v := .values }}
{{- $root := include "jwksgate.fileRoot" . }}
{{- $mounts := list }}
{{- with ($v.tls | default dict).secretName }}
{{- $mounts = append $mounts (include "jwksgate.fileMount" (dict "name" "jwksgate-tls" "dir" (printf "%s/tls" $root) "ref" (dict "secretName" .) "keys" (list "tls.crt" "tls.key") "target" "tls") | fromJson) }}
{{- end }}
{{- with $v.upstreamCA }}
{{- $mounts = append $mounts (include "jwksgate.fileMount" (dict "name" "jwksgate-upstream-ca" "dir" (printf "%s/upstream-ca" $root) "ref" . "keys" (list (.key | default "ca.crt")) "target" "upstreamCA") | fromJson) }}
{{- end }}
{{- with ($v.upstreamClientCert | default dict).secretName }}
{{- $mounts = append $mounts (include "jwksgate.fileMount" (dict "name" "jwksgate-upstream-client" "dir" (printf "%s/upstream-client" $root) "ref" (dict "secretName" .) "keys" (list "tls.crt" "tls.key") "target" "upstreamClientCert") | fromJson) }}
{{- end }}
{{- with $v.redisCA }}
{{- $mounts = append $mounts (include "jwksgate.fileMount" (dict "name" "jwksgate-redis-ca" "dir" (printf "%s/redis-ca" $root) "ref" . "keys" (list (.key | default "ca.crt")) "target" "redisCA") | fromJson) }}
{{- end }}
{{- range $issuer, $files := $v.issuerFiles | default dict }}
{{- $slug := include "jwksgate.issuerSlug" $issuer }}
{{- $dir := printf "%s/issuers/%s" $root $issuer }}
{{- with $files.jwksCa }}
{{- $mounts = append $mounts (include "jwksgate.fileMount" (dict "name" (printf "jwksgate-%s-jwks-ca" $slug) "dir" (printf "%s/jwks-ca" $dir) "ref" . "keys" (list (.key | default "ca.crt")) "target" "jwksCA" "issuer" $issuer) | fromJson) }}
{{- end }}
{{- with $files.tokens }}
{{- $mounts = append $mounts (include "jwksgate.fileMount" (dict "name" (printf "jwksgate-%s-tokens" $slug) "dir" (printf "%s/tokens" $dir) "ref" . "keys" (.keys | default (list "token")) "target" "tokenFiles" "issuer" $issuer) | fromJson) }}
{{- end }}
{{- with $files.webhookSecrets }}
{{- $mounts = append $mounts (include "jwksgate.fileMount" (dict "name" (printf "jwksgate-%s-whsec" $slug) "dir" (printf "%s/webhook-secrets" $dir) "ref" . "keys" (.keys | default (list "secret")) "target" "secretFiles" "issuer" $issuer) | fromJson) }}
{{- end }}
{{- end }}
{{- toJson (dict "mounts" $mounts) }}
{{- end }}

{{/*
Sets the config key a mount is for to its mounted path(s), in place. Takes: config (a deep copy
of the config values), mount (one item of jwksgate.fileMounts). token_files and secret_files are
lists: the mounted files are added to those the config already names (say, from extraVolumes).
*/}}
{{- define "jwksgate.pointConfigAt" -}}
{{- $c := .config }}
{{- $m := .mount }}
{{- if eq $m.target "tls" }}
{{- $_ := set $c "tls" (dict "cert_file" (index $m.paths 0) "key_file" (index $m.paths 1)) }}
{{- else if eq $m.target "upstreamCA" }}
{{- $section := get $c "upstream" | default dict }}
{{- $_ := set $section "ca_file" (index $m.paths 0) }}
{{- $_ = set $c "upstream" $section }}
{{- else if eq $m.target "upstreamClientCert" }}
{{- $section := get $c "upstream" | default dict }}
{{- $_ := set $section "client_cert_file" (index $m.paths 0) }}
{{- $_ = set $section "client_key_file" (index $m.paths 1) }}
{{- $_ = set $c "upstream" $section }}
{{- else if eq $m.target "redisCA" }}
{{- $section := get $c "replay" | default dict }}
{{- $_ := set $section "redis_ca_file" (index $m.paths 0) }}
{{- $_ = set $c "replay" $section }}
{{- else }}
{{- range $issuer := get $c "issuers" | default list }}
{{- if eq (toString $issuer.name) $m.issuer }}
{{- if eq $m.target "jwksCA" }}
{{- $section := get $issuer "jwks" | default dict }}
{{- $_ := set $section "ca_file" (index $m.paths 0) }}
{{- $_ = set $issuer "jwks" $section }}
{{- else if eq $m.target "tokenFiles" }}
{{- $section := get $issuer "static_token" | default dict }}
{{- $_ := set $section "token_files" (concat (get $section "token_files" | default list) $m.paths) }}
{{- $_ = set $issuer "static_token" $section }}
{{- else if eq $m.target "secretFiles" }}
{{- /* A provider issuer (type github, stripe, ...) keeps its secrets in the section of its type. */}}
{{- $key := "standard_webhooks" }}
{{- if has (toString $issuer.type) (list "github" "stripe" "slack" "shopify" "gitlab") }}
{{- $key = toString $issuer.type }}
{{- end }}
{{- $section := get $issuer $key | default dict }}
{{- $_ := set $section "secret_files" (concat (get $section "secret_files" | default list) $m.paths) }}
{{- $_ = set $issuer $key $section }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
What the schema cannot see: a file value and the config key it sets both given (which one would
win is a guess, so neither does), and issuerFiles for an issuer that does not exist. As
{"errors": [...]} for jwksgate.validate.
*/}}
{{- define "jwksgate.fileMountErrors" -}}
{{- $v := .values }}
{{- $c := $v.config | default dict }}
{{- $errors := list }}
{{- $upstream := get $c "upstream" | default dict }}
{{- $replay := get $c "replay" | default dict }}
{{- if and ($v.tls | default dict).secretName (get $c "tls") }}
{{- $errors = append $errors "tls.secretName sets config.tls itself (to the Secret's tls.crt and tls.key, mounted read-only): leave config.tls unset" }}
{{- end }}
{{- if and $v.upstreamCA (get $upstream "ca_file") }}
{{- $errors = append $errors "upstreamCA sets config.upstream.ca_file itself (to the mounted bundle): leave config.upstream.ca_file unset" }}
{{- end }}
{{- if and ($v.upstreamClientCert | default dict).secretName (or (get $upstream "client_cert_file") (get $upstream "client_key_file")) }}
{{- $errors = append $errors "upstreamClientCert.secretName sets config.upstream.client_cert_file and client_key_file itself (to the Secret's tls.crt and tls.key): leave them unset" }}
{{- end }}
{{- if and $v.redisCA (get $replay "redis_ca_file") }}
{{- $errors = append $errors "redisCA sets config.replay.redis_ca_file itself (to the mounted bundle): leave config.replay.redis_ca_file unset" }}
{{- end }}
{{- $issuers := dict }}
{{- range $issuer := get $c "issuers" | default list }}
{{- $_ := set $issuers (toString $issuer.name) $issuer }}
{{- end }}
{{- range $name, $files := $v.issuerFiles | default dict }}
{{- $issuer := get $issuers $name }}
{{- if not $issuer }}
{{- $errors = append $errors (printf "issuerFiles.%s: no issuer named %q in config.issuers (known: %s)" $name $name (keys $issuers | sortAlpha | join ", ")) }}
{{- else if and $files.jwksCa (get (get $issuer "jwks" | default dict) "ca_file") }}
{{- $errors = append $errors (printf "issuerFiles.%s.jwksCa sets the issuer's jwks.ca_file itself (to the mounted bundle): leave jwks.ca_file unset" $name) }}
{{- end }}
{{- end }}
{{- toJson (dict "errors" $errors) }}
{{- end }}
