{{/*
The objects of `cloudtaser target install --print`, one template each. Their source of truth
is cloudtaser/target/install/manifests.py: tests/integration/test_helm_chart.py renders this
chart with the real `helm template` over a matrix of settings and compares every object with
`target install --print`.
The name is the contract's (runtime/internal/contract): it cannot be changed.
*/}}
{{- define "cloudtaser.name" -}}cloudtaser-injector{{- end -}}

{{- define "cloudtaser.labels" -}}
app.kubernetes.io/name: cloudtaser-injector
app.kubernetes.io/part-of: cloudtaser
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "cloudtaser.selector" -}}
app.kubernetes.io/name: cloudtaser-injector
{{- end -}}

{{/* The webhook URL's host (brackets removed) and port; "" without webhookUrl. */}}
{{- define "cloudtaser.urlHost" -}}
{{- if .Values.webhookUrl -}}{{ (urlParse .Values.webhookUrl).hostname }}{{- end -}}
{{- end -}}

{{- define "cloudtaser.ipv4" -}}
{{- $h := include "cloudtaser.urlHost" . -}}
{{- if and (regexMatch "^[0-9.]+$" $h) (regexMatch "[0-9]" $h) -}}true{{- end -}}
{{- end -}}

{{- define "cloudtaser.port" -}}
{{- if .Values.webhookUrl -}}
{{- regexFind "[0-9]+$" (urlParse .Values.webhookUrl).host -}}
{{- else -}}8443{{- end -}}
{{- end -}}

{{/* The `inject` --listen address (manifests._listen). */}}
{{- define "cloudtaser.listen" -}}
{{- $port := include "cloudtaser.port" . -}}
{{- $h := include "cloudtaser.urlHost" . -}}
{{- if not .Values.webhookUrl -}}:{{ $port }}
{{- else if contains ":" $h -}}[{{ $h }}]:{{ $port }}
{{- else if include "cloudtaser.ipv4" . -}}{{ $h }}:{{ $port }}
{{- else -}}:{{ $port }}
{{- end -}}
{{- end -}}

{{/* The cluster defaults as the compact JSON of the injector-defaults annotation. */}}
{{- define "cloudtaser.defaultsJson" -}}
{{- $d := dict -}}
{{- with .Values.defaults -}}
{{- if .vaultAddress }}{{ $_ := set $d "address" .vaultAddress }}{{ end -}}
{{- if .authMethod }}{{ $_ := set $d "authMethod" .authMethod }}{{ end -}}
{{- if .authMount }}{{ $_ := set $d "authMount" .authMount }}{{ end -}}
{{- if .vaultNamespace }}{{ $_ := set $d "namespace" .vaultNamespace }}{{ end -}}
{{- end -}}
{{- if $d }}{{ toJson $d }}{{ end -}}
{{- end -}}

{{- define "cloudtaser.probe" -}}
{{- $root := index . 0 -}}
httpGet:
  path: {{ index . 1 }}
  port: {{ include "cloudtaser.port" $root }}
  scheme: HTTPS
  {{- if include "cloudtaser.ipv4" $root }}
  host: {{ include "cloudtaser.urlHost" $root | quote }}
  {{- end }}
periodSeconds: {{ index . 2 }}
timeoutSeconds: 2
failureThreshold: {{ index . 3 }}
{{- end -}}
