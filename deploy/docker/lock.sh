#!/usr/bin/env bash
# Regenerates the lock files the Docker image installs from, with exact versions and the
# sha256 of every file PyPI has for each release (pip-compile --generate-hashes):
#
#   deploy/docker/requirements.lock        runtime: [project].dependencies of pyproject.toml
#                                          (no extras: test, plot and bench stay out of the image)
#   deploy/docker/build-requirements.lock  the build backend: [build-system].requires
#
# Resolution follows the interpreter that runs pip-compile, so run this with CPython 3.11 on
# linux x86_64 (the image: python:3.11.x-slim-bookworm), from anywhere in the repository:
#
#   deploy/docker/lock.sh                 # keep existing pins that still satisfy pyproject.toml
#   deploy/docker/lock.sh --upgrade       # move every pin to the newest allowed release
#   PYTHON=/path/to/python3.11 deploy/docker/lock.sh
#
# or, from any machine with Docker:
#
#   docker run --rm -v "$PWD":/src -w /src python:3.11.10-slim-bookworm deploy/docker/lock.sh
#
# pip-tools runs in a throwaway virtualenv, so nothing is installed into the project's.
# tests/repo/test_deploy_compose.py checks that the lock covers every dependency of pyproject.toml
# and that each pin satisfies its specifier: run it after changing dependencies.
set -euo pipefail

PIP_TOOLS_VERSION=7.6.2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3.11}"

if ! "$python" -c 'import sys, platform; sys.exit(not (sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"))' 2>/dev/null; then
  echo "lock.sh: need CPython 3.11 on linux x86_64 (the image's platform); got: $("$python" -c 'import sys, platform; print(sys.version.split()[0], sys.platform, platform.machine())' 2>&1)" >&2
  echo "lock.sh: set PYTHON=/path/to/python3.11, or run it in python:3.11.10-slim-bookworm (see the header)" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"

# A local wheel directory (PIP_FIND_LINKS) would add hashes of files that are not on the index.
unset PIP_FIND_LINKS
export CUSTOM_COMPILE_COMMAND="deploy/docker/lock.sh"
common=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url
        --no-emit-find-links --no-emit-trusted-host)

cd "$root"
"$tmp/venv/bin/pip-compile" "${common[@]}" "$@" \
  --output-file deploy/docker/requirements.lock pyproject.toml
"$tmp/venv/bin/pip-compile" "${common[@]}" "$@" --only-build-deps --build-deps-for=wheel \
  --output-file deploy/docker/build-requirements.lock pyproject.toml
echo "lock.sh: wrote deploy/docker/requirements.lock and deploy/docker/build-requirements.lock" >&2
