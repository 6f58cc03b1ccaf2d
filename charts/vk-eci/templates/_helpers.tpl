{{- define "vk-eci.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vk-eci.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "vk-eci.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vk-eci.secretName" -}}
{{- default (printf "%s-accesskey" (include "vk-eci.fullname" .)) .Values.eci.existingSecret -}}
{{- end -}}

{{- /* Replicas: one in simulator mode with the built-in simulator (each replica would run its
own, so a failover would find none of the pods' instances); as configured otherwise. */ -}}
{{- define "vk-eci.replicas" -}}
{{- if and .Values.simulator (not .Values.eci.endpoint) -}}
1
{{- else -}}
{{- .Values.replicaCount -}}
{{- end -}}
{{- end -}}

{{- define "vk-eci.electionLease" -}}
{{- printf "vk-eci-%s" .Values.nodeName -}}
{{- end -}}

{{- /* The Secret holding the kubelet API's CA (generatedCA, certManager) or serving
certificate (existingSecret). */ -}}
{{- define "vk-eci.kubeletTLSSecret" -}}
{{- if eq .Values.kubelet.tls.mode "existingSecret" -}}
{{- required "kubelet.tls.existingSecret is required with kubelet.tls.mode existingSecret" .Values.kubelet.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-kubelet-ca" (include "vk-eci.fullname" .) -}}
{{- end -}}
{{- end -}}
