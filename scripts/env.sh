# Shared by the scripts: where builds and tools live. Both sit outside the clone so that a
# machine that is reused (a developer's, or CI's) does not rebuild the AWS SDK from nothing.
cache_root="${EC2Q_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ec2-quarantine}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
# One virtualenv per version of the requirements, so a change to them builds a new one.
requirements_hash=$(cat "$root/requirements/test.txt" | sha256sum | cut -c1-12)
export EC2Q_VENV="${EC2Q_VENV:-$cache_root/venv-$requirements_hash}"
