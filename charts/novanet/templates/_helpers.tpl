{{/* Chart-wide names and the agent's config file. */}}

{{- define "novanet.labels" -}}
app.kubernetes.io/name: novanet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "novanet.selectorLabels" -}}
app.kubernetes.io/name: novanet
{{- end -}}

{{- define "novanet.image" -}}
{{ printf "%s:%s" .repository .tag }}
{{- end -}}

{{- define "novanet.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default "novanet" }}
{{- end -}}

{{/*
The NovaNet config file. Start from `config` (verbatim: it wins), then fill every config key the
chart exposes at the top level that `config` does not set; for maps (policy, egress, ...) one
level down, key by key. hasKey rather than merge: sprig's merge treats false as unset, so
`--set config.egress.masqueradeEnabled=false` would lose to the top-level default.
*/}}
{{- define "novanet.config" -}}
{{- $v := .Values -}}
{{- $cfg := deepCopy ($v.config | default dict) -}}
{{- range $key := list "clusterCIDR" "serviceCIDR" "routingMode" "tunnelProtocol" "datapath" "mtu" "kubeProxyReplacement" "logLevel" "policy" "egress" "ipam" "bpf" "routing" "sockets" "pluginSettings" -}}
{{- $val := index $v $key -}}
{{- if not (kindIs "invalid" $val) -}}
{{- if not (hasKey $cfg $key) -}}
{{- $_ := set $cfg $key (deepCopy $val) -}}
{{- else if and (kindIs "map" $val) (kindIs "map" (index $cfg $key)) -}}
{{- $sub := index $cfg $key -}}
{{- range $k, $x := $val -}}
{{- if not (hasKey $sub $k) -}}{{- $_ := set $sub $k (deepCopy $x) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not (hasKey $cfg "metrics") -}}
{{- $_ := set $cfg "metrics" (dict "address" (printf "0.0.0.0:%v" $v.metrics.agentPort)) -}}
{{- end -}}
{{- if not (hasKey $cfg "stateSource") -}}
{{- $_ := set $cfg "stateSource" (dict "type" "kubernetes") -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
