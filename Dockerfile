# syntax=docker/dockerfile:1
# APISIX with the kafkaupstream runner inside: APISIX spawns and supervises the runner itself,
# through `ext-plugin.cmd` in the copied examples/apisix/config.yaml.
#
#   docker build -t kafkaupstream:local .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/kafkaupstream:TAG .
#
# Multi-arch needs nothing special: the base images are published for amd64 and arm64, and
# every dependency is a pure-Python or manylinux_2_28 wheel (confluent-kafka bundles librdkafka
# with its own OpenSSL, zlib, zstd and SASL and needs only glibc >= 2.28). The one thing compiled
# is the runner's own core (Cython), in the `compile` stage: the full python image has a C
# compiler, the slim ones and the final image have none. Nothing here runs ldconfig or apt-get
# either, the two steps that break arm64 builds under QEMU or once a Debian release leaves the
# mirrors.
#
# The file also builds with the classic builder (the Docker SDK, which tests/e2e use, drives that
# one): no RUN --mount, no COPY --chmod, no heredocs.

# apache/apisix:3.17.0-debian is built on Debian 12 (bookworm), like every APISIX package from
# 3.17 on; the 3.x images before it (checked up to 3.13) were Debian 11 (bullseye), whose Python
# (3.9) is too old for us and which has left Debian's LTS. Both images must be built on the same
# Debian release (checked below): bump them together.
ARG APISIX_IMAGE=apache/apisix:3.17.0-debian
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The same CPython release with a compiler: builds the runner's wheel with its compiled core.
ARG PYTHON_COMPILE_IMAGE=python:3.11-bookworm

# --- compile: the runner's wheel, its per-request modules compiled by Cython -----------------
FROM ${PYTHON_COMPILE_IMAGE} AS compile
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /src
# setup.py would install pure Python if compiling failed; an image must not do so silently.
RUN set -eux; \
    pip wheel --no-deps --wheel-dir /wheels /src; \
    python -c "import glob, sys, zipfile; \
names = zipfile.ZipFile(glob.glob('/wheels/kafkaupstream-*.whl')[0]).namelist(); \
sys.exit(0 if any(n.startswith('kafkaupstream/server/lane.') and n.endswith('.so') \
for n in names) else 'the wheel has no compiled core')"

# --- build: CPython and the runner's virtualenv, both under /opt ------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# The official image links /usr/local/bin/python3.11 with RPATH $ORIGIN/../lib, and CPython finds
# its standard library relative to its executable: a copy of bin/, the stdlib and libpython under
# /opt/python runs as is, with no ldconfig and no LD_LIBRARY_PATH (which nginx would clear anyway).
# The image deletes the stdlib's .pyc files; compiling them here spares every runner (re)spawn
# the work, since the runner cannot write to /opt as the apisix user.
RUN set -eux; \
    mkdir -p /opt/python/bin /opt/python/lib; \
    cp -a /usr/local/bin/python3.11 /opt/python/bin/; \
    ln -s python3.11 /opt/python/bin/python3; \
    cp -a /usr/local/lib/python3.11 /usr/local/lib/libpython3.11.so* /opt/python/lib/; \
    rm -rf /opt/python/lib/python3.11/site-packages/*; \
    /opt/python/bin/python3.11 -m compileall -q -j 0 \
        -x 'bad_coding|badsyntax|lib2to3/tests/data' /opt/python/lib/python3.11; \
    . /etc/os-release; \
    echo "${VERSION_CODENAME}" > /opt/python/DEBIAN_CODENAME
# A symlinked venv (the default): its bin/python resolves to /opt/python/bin/python3.11, so the
# RPATH above still finds libpython; `--copies` would break that.
RUN /opt/python/bin/python3.11 -m venv /opt/kafkaupstream
COPY --from=compile /wheels /wheels
# --only-binary: a platform without a confluent-kafka (or uvloop) wheel must fail here, loudly,
# rather than try to compile librdkafka (or libuv) in an image that has no compiler. pip and
# setuptools are not needed at run time. The context has no harness/ (.dockerignore): the
# distribution's kafkaupstream-harness script would point at nothing, so it goes too.
RUN set -eux; \
    /opt/kafkaupstream/bin/pip install --only-binary=confluent-kafka,uvloop /wheels/kafkaupstream-*.whl; \
    rm -rf /wheels; \
    /opt/kafkaupstream/bin/pip uninstall -y pip setuptools; \
    rm -f /opt/kafkaupstream/bin/kafkaupstream-harness; \
    if /opt/kafkaupstream/bin/python -c "import harness" 2>/dev/null; then \
        echo "the harness package must not be in the image" >&2; exit 1; \
    fi; \
    /opt/kafkaupstream/bin/kafkaupstream --version | grep "compiled core"

# --- the runtime image ------------------------------------------------------------------------
FROM ${APISIX_IMAGE}
USER root
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/kafkaupstream /opt/kafkaupstream
# Fail the build, not the first request: a Python built on another Debian release may need a
# newer glibc or a library soname this image lacks. Then import every runner module (each
# stdlib extension they load must find its shared libraries here) and librdkafka.
RUN set -eu; \
    . /etc/os-release; \
    built_on="$(cat /opt/python/DEBIAN_CODENAME)"; \
    if [ "${built_on}" != "${VERSION_CODENAME}" ]; then \
        echo "PYTHON_IMAGE is built on Debian ${built_on} but APISIX_IMAGE on ${VERSION_CODENAME}:" \
             "use --build-arg PYTHON_IMAGE=python:3.11-slim-${VERSION_CODENAME}" >&2; \
        exit 1; \
    fi; \
    /opt/kafkaupstream/bin/python -c "import importlib, pkgutil, kafkaupstream, confluent_kafka; \
[importlib.import_module(m.name) for m in pkgutil.walk_packages(kafkaupstream.__path__, 'kafkaupstream.') \
 if not m.name.endswith('__main__')]; \
print('confluent-kafka', confluent_kafka.version(), 'librdkafka', confluent_kafka.libversion()[0])"; \
    /opt/kafkaupstream/bin/kafkaupstream --version | grep "compiled core"
COPY --chown=apisix:apisix examples/apisix/config.yaml /usr/local/apisix/conf/config.yaml

# The base image's own user (uid 636). nginx's master, its privileged agent and therefore the
# runner all run as apisix; the runner's socket goes to ./conf/apisix-<master pid>.sock relative
# to the working directory /usr/local/apisix (apisix-1.sock here: the entrypoint execs openresty
# as pid 1), a directory apisix owns. The workers connect to it as apisix too.
USER apisix

# Healthy = APISIX accepts connections on 9080 and the runner accepts them on its socket.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD \
    ["/opt/kafkaupstream/bin/python", "-c", "import glob, socket; socket.create_connection(('127.0.0.1', 9080), 2).close(); s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(glob.glob('/usr/local/apisix/conf/apisix-*.sock')[0]); s.close()"]
