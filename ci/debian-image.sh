# Sourced by ci/cross.sh --docker and packaging/tests/test-deb.sh: the Debian base
# image they build on. The machines reach no image registry, so it is made from
# Debian's own archive: debootstrap a minbase bookworm, then `docker import` it
# (47 s here, once; later runs find the image and reuse it).
# shellcheck shell=bash

# The base image's tag.
DEBIAN_BASE_IMAGE=debian:bookworm

# debian_base_image: makes $DEBIAN_BASE_IMAGE unless docker has it already.
# Prints "time: debootstrap <s>s" and "time: docker-import <s>s" when it builds.
debian_base_image() {
  if docker image inspect "$DEBIAN_BASE_IMAGE" >/dev/null 2>&1; then
    echo "have $DEBIAN_BASE_IMAGE"
    return 0
  fi
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  local rootfs t0
  rootfs=$(mktemp -d /tmp/flor-bookworm-rootfs.XXXXXX)
  t0=$(date +%s)
  nice -n 19 debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  echo "time: debootstrap $(($(date +%s) - t0))s"
  t0=$(date +%s)
  tar -C "$rootfs" -c . | docker import - "$DEBIAN_BASE_IMAGE" >/dev/null
  echo "time: docker-import $(($(date +%s) - t0))s"
  rm -rf "$rootfs"
}
