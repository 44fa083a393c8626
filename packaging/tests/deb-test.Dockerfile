# florete/deb-test:bookworm — a Debian bookworm to install flor's .deb in
# (packaging/tests/test-deb.sh): the debootstrap base (ci/debian-image.sh) plus
# systemd, whose systemd-analyze verifies the package's unit. systemd is not PID 1
# here; the test runs the unit's ExecStart itself. With FOREIGN_ARCH (arm64,
# armhf) the Raspberry Pi's architecture is added and its libc6 installed, so
# that architecture's .deb installs as on Raspberry Pi OS; its binaries then run
# through the host's binfmt_misc (qemu-user-static). The first RUN is shared.
ARG BASE=debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ARG FOREIGN_ARCH=
RUN if [ -n "$FOREIGN_ARCH" ]; then \
      dpkg --add-architecture "$FOREIGN_ARCH" \
   && apt-get update \
   && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "libc6:$FOREIGN_ARCH" \
   && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
