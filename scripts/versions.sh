# shellcheck shell=bash
# shellcheck disable=SC2034 # used by the scripts that source this
# The pinned versions of what scripts/control-plane.sh builds and scripts/node.sh
# runs, each overridable from the environment, and where the binaries are cached
# (one file per name and version).
K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
# The chart linter tests/packaging.rs runs on the rendered chart.
KUBE_SCORE_VERSION=${KUBE_SCORE_VERSION:-v1.20.0}
# The node (SSEGATE_CP_NODE=1): a container runtime, pod network plugins, cluster DNS,
# and the CRI client its stop removes pods with.
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.10.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
BIN=${SSEGATE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/ssegate/bin}
