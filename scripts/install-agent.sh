#!/usr/bin/env bash
# Installs the Cuttle agent as a systemd service on this machine, or removes it.
#
#   sudo scripts/install-agent.sh --server https://deploy.example.com:8443 --token cuttle1.… \
#        --name web-01 --roles web --environments Production [--labels zone=a,rack=r1]
#   sudo scripts/install-agent.sh --uninstall [--purge]
#
# It copies the built agent (dist/ and node_modules/ of this checkout; run `npm install` first) to --prefix, creates a
# dedicated system user, registers the machine with the token (the key is made here and never leaves the machine),
# and installs `cuttle-agent.service`: restarted on failure, not restarted when the agent says it cannot work
# (exit 78: revoked, or refused), stopped with SIGTERM so running scripts are stopped cleanly.
# Options: --user (cuttle-agent) --home (/var/lib/cuttle-agent) --work (HOME/work) --prefix (/opt/cuttle-agent)
#          --cache-mb (2048: the package cache's bound, least recently used out)
#          --unit-dir (/etc/systemd/system) --no-start (write everything, do not enable or start)
set -euo pipefail

user=cuttle-agent home=/var/lib/cuttle-agent work="" cache_mb=2048 prefix=/opt/cuttle-agent unit_dir=/etc/systemd/system
server="" token="" name="$(hostname)" roles="" environments="" labels="" uninstall=0 purge=0 start=1
unit=cuttle-agent.service
die() { echo "install-agent: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --server) server="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --roles) roles="$2"; shift 2 ;;
    --environments) environments="$2"; shift 2 ;;
    --labels) labels="$2"; shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --home) home="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --cache-mb) cache_mb="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --unit-dir) unit_dir="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$cache_mb" in ''|*[!0-9]*) die "--cache-mb must be a whole number of megabytes" ;; esac
[ "$(id -u)" = 0 ] || die "run as root (it creates a user and a systemd unit)"
have_systemd() { [ "$start" = 1 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

if [ "$uninstall" = 1 ]; then
  if have_systemd; then systemctl disable --now "$unit" 2>/dev/null || true; fi
  rm -f "$unit_dir/$unit"
  if have_systemd; then systemctl daemon-reload; fi
  rm -rf "$prefix"
  if [ "$purge" = 1 ]; then
    rm -rf "$home"
    if id "$user" >/dev/null 2>&1 && [ "$user" != root ]; then userdel "$user" 2>/dev/null || true; fi
    echo "cuttle agent removed, with its identity and work folder (revoke the machine on the server too)"
  else
    echo "cuttle agent removed; its identity and work folder stay in $home (--purge removes them)"
  fi
  exit 0
fi

[ -n "$server" ] || die "--server is required"
[ -n "$token" ] || [ -f "$home/identity.json" ] || die "--token is required for the first installation"
src="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "$src/dist/agent/src/main.js" ] || die "no built agent in $src/dist: run npm install first"
node_bin="$(command -v node)" || die "node (20 or newer) is required"

if ! id "$user" >/dev/null 2>&1; then
  useradd --system --home-dir "$home" --shell /usr/sbin/nologin "$user"
fi
mkdir -p "$prefix" "$home"
cp -r "$src/dist" "$src/node_modules" "$src/package.json" "$prefix/"
chown -R "$user" "$home"
chmod 700 "$home"
work="${work:-$home/work}"
mkdir -p "$work"; chown "$user" "$work"

if [ ! -f "$home/identity.json" ]; then
  args=(register --home "$home" --server "$server" --token "$token" --name "$name")
  [ -n "$roles" ] && args+=(--roles "$roles")
  [ -n "$environments" ] && args+=(--environments "$environments")
  [ -n "$labels" ] && args+=(--labels "$labels")
  if [ "$user" = root ]; then "$node_bin" "$prefix/dist/agent/src/main.js" "${args[@]}"
  else su -s /bin/sh "$user" -c "$(printf '%q ' "$node_bin" "$prefix/dist/agent/src/main.js" "${args[@]}")"; fi
elif [ -n "$labels" ]; then
  echo "install-agent: already registered: --labels applies at registration only (change labels with PATCH /api/machines/:id)" >&2
fi

mkdir -p "$unit_dir"
cat > "$unit_dir/$unit" <<UNIT
[Unit]
Description=Cuttle deployment agent ($name)
After=network-online.target
Wants=network-online.target

[Service]
User=$user
WorkingDirectory=$home
Environment=CUTTLE_LOG_FORMAT=json
ExecStart=$node_bin $prefix/dist/agent/src/main.js run --home $home --work $work --cache-mb $cache_mb
Restart=on-failure
RestartSec=5
# 78: the agent cannot work (revoked, refused by the server): restarting would not help.
RestartPreventExitStatus=78
# SIGTERM to the agent, which stops running scripts' process groups; whatever is left is killed after the timeout.
KillMode=mixed
TimeoutStopSec=30
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
UNIT

if have_systemd; then
  systemctl daemon-reload
  systemctl enable --now "$unit"
  echo "cuttle agent installed and started: systemctl status $unit, journalctl -u $unit"
else
  echo "cuttle agent installed in $prefix, identity in $home, unit $unit_dir/$unit (not started: no systemd here or --no-start)"
fi
