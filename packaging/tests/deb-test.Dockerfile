# florete/deb-test:bookworm — a Debian bookworm to install flor's .deb in
# (packaging/tests/test-deb.sh): the debootstrap base (ci/debian-image.sh) plus
# systemd, whose systemd-analyze verifies the package's unit. systemd is not PID 1
# here; the test runs the unit's ExecStart itself.
ARG BASE=debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
