# Shared by the scripts: where builds and tools live. Both sit outside the clone so that a
# machine that is reused (a developer's, or CI's) does not rebuild the AWS SDK from nothing.
cache_root="${EC2Q_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ec2-quarantine}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
# One virtualenv per version of the requirements, so a change to them builds a new one.
requirements_hash=$(cat "$root/requirements/test.txt" | sha256sum | cut -c1-12)
export EC2Q_VENV="${EC2Q_VENV:-$cache_root/venv-$requirements_hash}"
# This checkout's copy of the debug binary, for the scripts that run it. The target directory is
# outside the clone, so other checkouts may share it, and their builds put their own binary at
# the same path: copy it out right after cargo has linked it.
copy_binary() {
  local dir
  dir="$cache_root/bin-$(printf %s "$root" | sha256sum | cut -c1-12)"
  mkdir -p "$dir"
  cp "$CARGO_TARGET_DIR/debug/ec2-quarantine" "$dir/ec2-quarantine.$$"
  # A rename, not a copy over it: a running copy must not be rewritten under its feet.
  mv -f "$dir/ec2-quarantine.$$" "$dir/ec2-quarantine"
  printf '%s\n' "$dir/ec2-quarantine"
}
