#!/bin/sh
# Installs riskmon from this source tree into a new virtual environment at PREFIX:
#
#     deploy/install.sh PREFIX          # e.g. /opt/riskmon; then PREFIX/bin/riskmon
#
# This is the only install step of the container image (the Dockerfile's build stage
# runs exactly this script), and tests/test_deploy.py runs it into a fresh temporary
# environment, so what the image gets is what the tests check.
#
# The environment gets riskmon and its runtime dependencies and nothing else: it is
# created without pip or setuptools (the pip of the Python that runs this script installs
# into it with --python), the wheel is built from this tree in pip's isolated build
# environment, and nothing is cached (--no-cache-dir).
#
# PYTHON picks the interpreter (default: python3); it needs pip 22.3 or later.
set -eu

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
prefix=$1
python=${PYTHON:-python3}
source_dir=$(cd "$(dirname "$0")/.." && pwd)

"$python" -m venv --without-pip "$prefix"
"$python" -m pip --python "$prefix/bin/python" install \
    --no-cache-dir --no-input --disable-pip-version-check --root-user-action=ignore \
    "$source_dir"
"$prefix/bin/riskmon" --version
