# syntax=docker/dockerfile:1
# APISIX with the kafkaupstream runner inside: APISIX spawns it through `ext-plugin.cmd`.
#
#   docker build -t kafkaupstream:local .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/kafkaupstream:TAG .
#
# Multi-arch needs nothing special: confluent-kafka ships manylinux wheels (librdkafka bundled)
# for x86_64 and aarch64, so nothing is compiled and nothing is tied to one platform.

# Same tag as examples/docker-compose.yml.
ARG APISIX_IMAGE=apache/apisix:3.11.0-debian
# The apache/apisix Debian images are built on Debian 11 (bullseye), whose python3 is 3.9;
# kafkaupstream needs Python >= 3.11. The official Python image built on the same Debian release
# (same glibc, same library sonames) provides the interpreter, moved to /opt/python.
ARG PYTHON_IMAGE=python:3.11-slim-bullseye

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# CPython finds its standard library relative to its executable, so a copy under /opt/python
# works as is; only libpython needs the loader path (an ld.so.conf entry, not LD_LIBRARY_PATH,
# because nginx clears the environment of the processes it spawns).
RUN set -eux; \
    mkdir -p /opt/python/bin /opt/python/lib; \
    cp -a /usr/local/bin/python3.11 /opt/python/bin/; \
    ln -s python3.11 /opt/python/bin/python3; \
    cp -a /usr/local/lib/python3.11 /usr/local/lib/libpython3.11.so* /opt/python/lib/; \
    rm -rf /opt/python/lib/python3.11/test /opt/python/lib/python3.11/site-packages/*; \
    echo /opt/python/lib > /etc/ld.so.conf.d/opt-python.conf; \
    ldconfig; \
    /opt/python/bin/python3.11 -m venv /opt/kafkaupstream
COPY . /src
RUN set -eux; \
    /opt/kafkaupstream/bin/pip install /src; \
    /opt/kafkaupstream/bin/kafkaupstream --version; \
    /opt/kafkaupstream/bin/python -c "import confluent_kafka; print(confluent_kafka.libversion())"

FROM ${APISIX_IMAGE}
USER root
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/kafkaupstream /opt/kafkaupstream
# No apt-get here: the runner needs only glibc (confluent-kafka's wheel bundles librdkafka with its
# own OpenSSL, zlib and zstd), and bullseye's archive may move. The import below fails the build
# if that ever stops being true.
RUN set -eux; \
    echo /opt/python/lib > /etc/ld.so.conf.d/opt-python.conf; \
    ldconfig; \
    /opt/kafkaupstream/bin/python -c "import asyncio, json, logging, confluent_kafka, jmespath, flatbuffers, kafkaupstream.cli"; \
    /opt/kafkaupstream/bin/kafkaupstream --version
COPY --chown=apisix:apisix examples/apisix/config.yaml /usr/local/apisix/conf/config.yaml

# The base image's user (uid 636). The runner runs as nginx's master user, i.e. apisix too,
# and creates its socket in /usr/local/apisix/conf, which apisix owns.
USER apisix

# Healthy = APISIX accepts connections on 9080 and the runner's socket accepts connections.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD \
    ["/opt/kafkaupstream/bin/python", "-c", "import glob, socket; socket.create_connection(('127.0.0.1', 9080), 2).close(); s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(glob.glob('/usr/local/apisix/conf/apisix-*.sock')[0]); s.close()"]
