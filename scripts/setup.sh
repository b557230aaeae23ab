# Sourced by scripts/demo and scripts/test: install what quotawatch needs on a fresh Debian/Ubuntu
# machine (apt packages for the sandbox servers and checkers, a virtualenv with the package).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QW_VENV:-$REPO/.venv}"
# libldap2-dev, libsasl2-dev: python-ldap (the ldap extra) builds from source; slapd, ldap-utils:
# the sandbox directory of the LDAP account-source tests; pipx: the install test runs README's
# `pipx install .`
APT_PACKAGES=(dovecot-imapd dovecot-pop3d dovecot-core prometheus imapfilter openssl systemd python3-venv
              libldap2-dev libsasl2-dev slapd ldap-utils pipx)

_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_system_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}" >&2
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # policy-rc.d keeps the packaged system Dovecot and slapd from starting; the sandbox runs its own
        _as_root sh -c 'test -e /usr/sbin/policy-rc.d || { printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; touch /tmp/.qw-policy-rc; }'
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        _as_root sh -c 'test -e /tmp/.qw-policy-rc && rm -f /usr/sbin/policy-rc.d /tmp/.qw-policy-rc || true'
    fi
}

install_python_env() {
    local python="${PYTHON:-python3}"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "setup: creating virtualenv $VENV" >&2
        "$python" -m venv "$VENV"
    fi
    local log="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$REPO[dev]" > "$log" 2>&1; then
        cat "$log" >&2
        echo "setup: pip install failed (log: $log)" >&2
        return 1
    fi
}

setup_all() {
    install_system_packages
    install_python_env
}
