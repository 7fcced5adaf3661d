#!/usr/bin/env bash
# `make image`: the NovaNet node image, built on this machine from the registries it reaches.
# `make image-base` (build.sh --base): step 1 only.
#   1. base root filesystem: mmdebstrap (minbase + contrib/image/packages.txt) from the Debian
#      mirror apt uses here, imported with `podman import` as localhost/novanet-base:<hash of the
#      package list and mirror> (skipped when that image exists: re-running is cheap);
#   2. wheels of NovaNet, its plugins (not the lab) and their dependencies, made here;
#   3. contrib/Containerfile on the base with those wheels (no network inside the build;
#      podman's layer cache skips unchanged steps) -> localhost/novanet:<version>.
# podman runs with a containers.conf of its own (runc, cgroupfs, ulimits that fit under this
# machine's: root here lacks CAP_SYS_RESOURCE) and an image store of this checkout's own
# (build/image/storage.conf: graphroot build/image/storage), so the machine's podman setup and
# images are left as they are, and two checkouts never overwrite each other's localhost/novanet.
# Use that store with: CONTAINERS_STORAGE_CONF=build/image/storage.conf podman images
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${NOVANET_IMAGE:-localhost/novanet:$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
OUT=build/image
mkdir -p "$OUT"
cat > "$OUT/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$PWD/$OUT/containers.conf"
# runroot: podman's locks and mount state, on tmpfs; named for this checkout.
RUNROOT=/run/novanet-image-$(printf '%s' "$PWD" | sha256sum | cut -c1-12)
cat > "$OUT/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PWD/$OUT/storage"
runroot = "$RUNROOT"
CONF
export CONTAINERS_STORAGE_CONF="$PWD/$OUT/storage.conf"
T0=$SECONDS
PKGS=$(grep -v '^#' contrib/image/packages.txt | xargs)
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE=localhost/novanet-base:$(printf '%s\n%s\n' "$PKGS" "$MIRROR" | sha256sum | cut -c1-16)
if ! podman image exists "$BASE"; then
  echo "base root filesystem: mmdebstrap bookworm from $MIRROR ($PKGS)"
  mmdebstrap --quiet --variant=minbase --include="${PKGS// /,}" bookworm "$OUT/rootfs.tar" "$MIRROR"
  podman import --quiet "$OUT/rootfs.tar" "$BASE" >/dev/null
  rm -f "$OUT/rootfs.tar"
  echo "base $BASE made in $((SECONDS - T0)) s"
fi
# --base: only the base (make image-base), which needs neither the venv nor the CNI binary, so
# make test builds it while the venv is being made.
if [ "${1:-}" = "--base" ]; then exit 0; fi
# The whole image is keyed by the content of what goes into it: nothing changed, nothing to do.
SRC=$( (find pyproject.toml README.md novanet_core plugins contrib/Containerfile contrib/image build/novanet-cni \
          -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -path 'plugins/*/build/*' ! -path 'plugins/lab/*' -print0 \
        | sort -z | xargs -0 sha256sum; echo "$BASE") | sha256sum | cut -c1-16)
if [ "$(podman image inspect --format '{{ index .Labels "novanet.source" }}' "$TAG" 2>/dev/null)" = "$SRC" ]; then
  echo "$TAG is up to date (source $SRC)"
  exit 0
fi
# Python wheels are made here with the project's pip (it reaches PyPI through this machine's
# configuration) and installed in the image without network access.
PLUGINS=$(ls -d plugins/*/ | grep -v '^plugins/lab/$')
rm -rf "$OUT/wheels"
.venv/bin/pip wheel --quiet --disable-pip-version-check -w "$OUT/wheels" ".[kubernetes]" $PLUGINS
rm -rf plugins/*/build build/lib build/bdist.*  # setuptools' in-tree build dirs
podman build --quiet --network none --label "novanet.source=$SRC" --build-arg "BASE=$BASE" -f contrib/Containerfile -t "$TAG" . >/dev/null
# The previous build of the tag is now untagged; the store is this checkout's, so drop it.
podman image prune -f >/dev/null
echo "$TAG (source $SRC, on $BASE) in $((SECONDS - T0)) s"
