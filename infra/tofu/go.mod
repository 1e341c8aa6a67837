// Builds OpenTofu (MPL-2.0) for infra/terraform-check, which installs it
// with `go build` from this module at the version pinned here.
//
// A plain `go install github.com/opentofu/opentofu/cmd/tofu@...` is refused,
// because OpenTofu's go.mod has a replace directive; this module copies it.
// go.sum is taken from the OpenTofu module itself at build time.
module shortener.local/tofu

go 1.24.13

replace github.com/hashicorp/hcl/v2 v2.20.1 => github.com/opentofu/hcl/v2 v2.20.2-0.20251021132045-587d123c2828

require github.com/opentofu/opentofu v1.10.10
