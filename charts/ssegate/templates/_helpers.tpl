{{- define "ssegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ssegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "ssegate.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "ssegate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ssegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ssegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ssegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ssegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ssegate.serviceAccountName" -}}
{{- default (include "ssegate.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- /*
One NetworkPolicy egress rule, after "- ": to the peers in .to (none: any
address) on the TCP ports in .ports (none: any port); both empty admit all.
*/ -}}
{{- define "ssegate.egressRule" -}}
{{- $rule := dict }}
{{- with .to }}
{{- $_ := set $rule "to" . }}
{{- end }}
{{- with .ports }}
{{- $ports := list }}
{{- range . }}
{{- $ports = append $ports (dict "port" (int .) "protocol" "TCP") }}
{{- end }}
{{- $_ := set $rule "ports" $ports }}
{{- end }}
{{- toYaml $rule | indent 6 | trim }}
{{- end }}
