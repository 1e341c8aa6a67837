//go:build tools

// Package tools names the binary this module builds.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
