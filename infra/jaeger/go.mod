// Builds Jaeger v2 (the all-in-one binary: OTLP receiver, in-memory storage,
// query API on 16686) for the dev stack: infra/dev-stack installs it with
// `go build` from this module, at the version pinned here.
//
// A plain `go install github.com/jaegertracing/jaeger/cmd/jaeger@...` is
// refused, because Jaeger's go.mod has a replace directive; this module
// copies it. go.sum is taken from the Jaeger module itself at build time.
module shortener.local/jaeger

go 1.24.6

replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0

require github.com/jaegertracing/jaeger v1.76.0
