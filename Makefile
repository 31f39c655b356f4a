# Shortcuts; each target is one script or command that README describes.
.PHONY: demo test lint release

# The local run: no AWS account, no Docker. Builds the function, contains an instance in the AWS
# emulator through the real binary, prints the instance before and after.
demo:
	scripts/demo.sh

# The whole suite on a fresh machine: Python tools, the AWS emulator, cargo test, template checks.
test:
	scripts/test.sh

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

# The Lambda package (arm64, release): slow (12 to 25 minutes here), so not part of CI.
release:
	scripts/release.sh
