#!/bin/sh
# Install or uninstall tagstat as a system service; `make install` and
# `make uninstall` run this (docs/ADMIN.md). Usage: install.sh install|uninstall
#
# The package goes into its own virtual environment under $PREFIX
# (/opt/tagstat), so its dependencies never mix with Debian's Python packages
# and uninstalling is removing one directory. The units, sysusers.d entry and
# udev rule go under $LIBDIR (/usr/local/lib, where systemd and udev look for
# locally installed files; a distribution package would use /usr/lib). With
# $DESTDIR set everything lands below it and nothing on the running system is
# touched (no sysusers, no udev or systemd reload): that is for packagers and
# the tests. An existing tagstat.toml is never overwritten.
set -eu

PYTHON=${PYTHON:-python3}
PREFIX=${PREFIX:-/opt/tagstat}
BINDIR=${BINDIR:-/usr/local/bin}
LIBDIR=${LIBDIR:-/usr/local/lib}
SYSCONFDIR=${SYSCONFDIR:-/etc}
STATEDIR=${STATEDIR:-/var/lib/tagstat}
DESTDIR=${DESTDIR:-}
PIP_ARGS=${PIP_ARGS:-}  # e.g. "--no-index --find-links DIR" to install offline
PURGE=${PURGE:-0}

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$DESTDIR
UNIT=$ROOT$LIBDIR/systemd/system/tagstatd.service
SYSUSERS=$ROOT$LIBDIR/sysusers.d/tagstat.conf
RULES=$ROOT$LIBDIR/udev/rules.d/60-tagstat.rules
CONF=$ROOT$SYSCONFDIR/tagstat/tagstat.toml
DOCS="ADMIN.md CONFIG.md DATA.md"

# True when installing onto this very system with systemd running it.
live() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

install_package() {
    "$PYTHON" -m venv "$ROOT$PREFIX"
    # shellcheck disable=SC2086
    "$ROOT$PREFIX/bin/python" -m pip install -q --no-compile --disable-pip-version-check \
        $PIP_ARGS "$SRC"
    if [ -n "$DESTDIR" ]; then  # the venv was made at $ROOT$PREFIX: point it at $PREFIX
        grep -lI "$ROOT$PREFIX" "$ROOT$PREFIX"/bin/* | while read -r f; do
            sed -i "s|$ROOT$PREFIX|$PREFIX|g" "$f"
        done
    fi
    # Byte-code now, with the final paths: under ProtectSystem=strict Python cannot write it.
    "$ROOT$PREFIX/bin/python" -m compileall -q ${DESTDIR:+-s "$DESTDIR" -p /} \
        "$ROOT$PREFIX/lib" >/dev/null
    mkdir -p "$ROOT$BINDIR"
    ln -sfn "$PREFIX/bin/tagstat" "$ROOT$BINDIR/tagstat"
    ln -sfn "$PREFIX/bin/tagstatd" "$ROOT$BINDIR/tagstatd"
    for doc in $DOCS; do
        install -D -m 0644 "$SRC/docs/$doc" "$ROOT$PREFIX/share/doc/tagstat/$doc"
    done
}

install_system_files() {
    mkdir -p "$(dirname "$UNIT")"
    sed "s|/opt/tagstat|$PREFIX|g" "$SRC/systemd/tagstatd.service" > "$UNIT"
    chmod 0644 "$UNIT"
    install -D -m 0644 "$SRC/systemd/tagstat.sysusers" "$SYSUSERS"
    install -D -m 0644 "$SRC/systemd/60-tagstat.rules" "$RULES"
    mkdir -p "$CONF.d"
    if [ -e "$CONF" ]; then
        echo "keeping the existing $CONF"
    else
        "$ROOT$PREFIX/bin/python" -c \
            'from tagstat.config import DEFAULT_CONFIG_TEXT; print(DEFAULT_CONFIG_TEXT, end="")' \
            > "$CONF"
        chmod 0644 "$CONF"
    fi
}

activate() {
    live || return 0
    systemd-sysusers "$SYSUSERS"
    if command -v udevadm >/dev/null; then
        udevadm control --reload-rules
        udevadm trigger --subsystem-match=usb --attr-match=idVendor=151f
    fi
    systemctl daemon-reload
    echo "installed; start it with: systemctl enable --now tagstatd"
}

do_install() {
    install_package
    install_system_files
    activate
}

do_uninstall() {
    if live; then systemctl disable --now tagstatd 2>/dev/null || true; fi
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ROOT$SYSCONFDIR/tagstat" "$ROOT$STATEDIR"
    elif [ -e "$CONF" ] && [ -x "$ROOT$PREFIX/bin/python" ] && "$ROOT$PREFIX/bin/python" -c \
        'import sys; from tagstat.config import DEFAULT_CONFIG_TEXT as T; sys.exit(open(sys.argv[1]).read() != T)' \
        "$CONF"; then
        rm -f "$CONF"  # still the default: nothing of the admin's is lost
    elif [ -e "$CONF" ]; then
        echo "keeping $CONF (edited); PURGE=1 removes it and $STATEDIR"
    fi
    rmdir "$CONF.d" "$ROOT$SYSCONFDIR/tagstat" 2>/dev/null || true
    rm -f "$UNIT" "$SYSUSERS" "$RULES" "$ROOT$BINDIR/tagstat" "$ROOT$BINDIR/tagstatd"
    rm -rf "$ROOT$PREFIX"
    if live; then
        systemctl daemon-reload
        if command -v udevadm >/dev/null; then udevadm control --reload-rules; fi
    fi
    [ "$PURGE" = 1 ] || [ ! -d "$ROOT$STATEDIR" ] || echo "kept $STATEDIR (collected data); PURGE=1 removes it"
    echo "the users tagstat and tagstat-admin stay (ids are never reused); remove them with userdel/groupdel if you wish"
}

case "${1:-}" in
    install) do_install ;;
    uninstall) do_uninstall ;;
    *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
