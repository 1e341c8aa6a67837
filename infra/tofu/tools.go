//go:build tools

// Makes `go build github.com/opentofu/opentofu/cmd/tofu` resolve in this
// module.
package tools

import _ "github.com/opentofu/opentofu/cmd/tofu"
