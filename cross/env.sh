# Sourced by ci/cross.sh and the cross images: puts the toolchain that
# cross/setup.sh installed first on PATH (Debian's rustc-web 1.96, its cargo,
# zig, cargo-zigbuild), so no rustup proxy can swap in another compiler.
# RUSTC_BOOTSTRAP=1 lets this stable compiler take -Z build-std and the
# size options the boards use; it is set only here, for cross builds.
FLOR_CROSS_HOME=${FLOR_CROSS_HOME:-/opt/florete-cross}
export PATH="$FLOR_CROSS_HOME/bin:$PATH"
export RUSTC="$FLOR_CROSS_HOME/bin/rustc"
export RUSTDOC="$FLOR_CROSS_HOME/bin/rustdoc"
export RUSTC_BOOTSTRAP=1
