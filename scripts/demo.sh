#!/usr/bin/env bash
# `make demo`: starts VMware's simulator (standalone ESXi model) on a free loopback port and
# applies examples/data-sources/ceso_endpoint with the real Terraform CLI and the provider just
# built, then stops the simulator. Nothing outside the repository is touched.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tb="$root/.testbed"
work="$(mktemp -d)"
trap 'kill "$sim_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$tb/bin/vcsim" -esx -l 127.0.0.1:0 -url-file "$work/url.txt" >/dev/null 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do [ -s "$work/url.txt" ] && break; sleep 0.05; done
url="$(sed -E 's#//[^@/]*@#//#' "$work/url.txt")"
echo "demo: simulator (standalone ESXi) at $url"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
mirror="$work/mirror/registry.terraform.io/choiceomg/ceso/$version/linux_amd64"
mkdir -p "$mirror"
cp "$root/target/debug/terraform-provider-ceso" "$mirror/terraform-provider-ceso_v$version"
cat >"$work/terraformrc" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$work/mirror"
    include = ["registry.terraform.io/choiceomg/ceso"]
  }
  direct { exclude = ["registry.terraform.io/choiceomg/ceso"] }
}
disable_checkpoint = true
RC
cp "$root"/examples/data-sources/ceso_endpoint/*.tf "$work/"
export TF_CLI_CONFIG_FILE="$work/terraformrc" CHECKPOINT_DISABLE=1
export CESO_URL="$url" CESO_USER=user CESO_PASSWORD=pass CESO_ALLOW_UNVERIFIED_SSL=true
cd "$work"
"$tb/bin/terraform" init -input=false -no-color >/dev/null
"$tb/bin/terraform" apply -auto-approve -input=false -no-color
echo "demo: done; the simulator stops now."
