//go:build tools

// Package tools records the control-plane commands this module builds, so that `go mod tidy`
// keeps their dependencies in go.mod and go.sum. hack/control-plane.sh builds them with
// `go build`; nothing imports this package.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
