#!/usr/bin/env bash
# Builds the stack's images on a machine with no container registry (`make image`): the
# base from Debian packages (docker/build-base.sh), the wheels downloaded here with this
# machine's pip configuration (its index or mirror; a CPU torch where it serves one), then
# docker/Dockerfile with no index inside the build, and PostgreSQL from Debian's packages
# on the same base (docker/postgres/Dockerfile). Every step is cached: a second run only
# rebuilds the layers whose files changed.
#   docker/build-image.sh [IMAGE]
# Settings (environment): BASE_IMAGE (kd-search-base:debian), PYTHON (the pip that
# downloads), POSTGRES_IMAGE (kd-search-postgres:15), TORCH_INDEX_URL (an extra index for
# torch's wheels, e.g. https://download.pytorch.org/whl/cu128 for CUDA 12.8 on a GPU host).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-kd-search:0.1.0}
base=${BASE_IMAGE:-kd-search-base:debian}
python=${PYTHON:-python3}
postgres_image=${POSTGRES_IMAGE:-kd-search-postgres:15}
torch_index=()
[ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--extra-index-url "$TORCH_INDEX_URL")

docker/build-base.sh "$base"
# The wheels must match the base image's Python, not necessarily this machine's.
py_version=$(docker run --rm "$base" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$python" -m pip download --quiet --dest docker/wheels --only-binary=:all: --python-version "$py_version" \
    "${torch_index[@]}" -r docker/requirements.txt
"$python" -m pip download --quiet --dest docker/wheels --only-binary=:all: --python-version "$py_version" \
    --no-deps -r docker/requirements-no-deps.txt
docker build --build-arg BASE_IMAGE="$base" --build-arg PIP_NO_INDEX=1 -f docker/Dockerfile -t "$image" .
docker build --build-arg BASE_IMAGE="$base" -f docker/postgres/Dockerfile -t "$postgres_image" docker/postgres
