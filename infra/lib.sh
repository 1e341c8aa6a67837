# Shared by the scripts of infra/ and loadtests/ (sourced, not run):
# installing Debian packages the same way everywhere.

# Debian starts a package's own service on install, on the port ours
# needs. Where no policy says otherwise, a policy-rc.d that refuses every
# start (Debian's own mechanism, exit 101) is in place for the install, so
# nothing is started that would then have to be found and killed.
apt_install() { # PACKAGE...
  local sudo="" policy=/usr/sbin/policy-rc.d ours=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# installed by infra/lib.sh for one apt-get run: no service starts\nexit 101\n' |
      $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    ours=1
  fi
  local status=0
  $sudo apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2 ||
    status=$?
  [ -z "$ours" ] || $sudo rm -f "$policy"
  return "$status"
}

# Installs PACKAGE unless COMMAND is already on the PATH.
install_command() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  printf 'installing %s (Debian package %s)\n' "$1" "$2" >&2
  apt_install "$2"
}

# The cargo features that turn on the test targets needing the dev stack's
# servers (`cargo test --workspace` alone runs the offline tier).
# shellcheck disable=SC2034
DEV_STACK_FEATURES=stores/dev-stack,shortener-api/dev-stack,shortener-worker/dev-stack,shortener-e2e/dev-stack
