# Sourced by the hack scripts: one target folder under $HOME that CI and later runs reuse.
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}"
export BOSUN_CACHE="${BOSUN_CACHE:-$HOME/.cache/bosun}"
