# The reconciler's image: Debian's Python in a venv holding the project's wheel, run as uid and
# gid 65532 on a read-only root filesystem; only /tmp (an emptyDir in the pod) is written.
# pygit2's wheel carries libgit2, so the image holds neither git nor a compiler.
#
#   docker build -t IMAGE .     # BuildKit (Docker 23+ by default): RUN --mount below
#   hack/build-image --tag IMAGE # podman, on machines without Docker (see the script)
ARG BASE_IMAGE=debian:bookworm-slim

# --- build: the project's wheel and its dependencies' wheels, made by the runtime's Python ---
FROM ${BASE_IMAGE} AS build
# The same line as the runtime stage's, so the two share the layer. ca-certificates: the public
# CAs, which libgit2 (through Python's default paths) and requests use for HTTPS.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
RUN python3 -m venv /opt/build
# A package index other than PyPI, and the CA file that proves it, when the build runs behind
# a mirror (hack/build-image passes the host's). Unset, pip uses PyPI and its own CA bundle.
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
ARG PIP_CERT=
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels . \
 && cd /wheels && sha256sum -- *.whl >SHA256SUMS

# --- runtime ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
RUN groupadd --gid 65532 reconciler \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin reconciler
# Exactly the wheels built above, from a mount that leaves no copy in a layer; pip itself is
# removed afterwards (nothing is installed at run time). Byte code is compiled here because
# the root filesystem is read-only in the pod. The checksums are copied first because podman
# keys a RUN's cache by its text, not by what its --mount brings: new wheels, new checksums,
# so the install runs again (and checks that the mount holds what was copied).
COPY --from=build /wheels/SHA256SUMS /opt/reconciler/wheels.sha256
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    (cd /wheels && sha256sum --check --quiet /opt/reconciler/wheels.sha256) \
 && python3 -m venv /opt/reconciler \
 && /opt/reconciler/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links /wheels gitops-reconciler \
 && /opt/reconciler/bin/pip uninstall --yes --disable-pip-version-check pip setuptools
ENV PATH=/opt/reconciler/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
ARG VERSION=dev
ARG SOURCE=https://github.com/example/gitops-reconciler
LABEL org.opencontainers.image.title="gitops-reconciler" \
      org.opencontainers.image.description="Progressive delivery whose only state store is the GitOps Env repo" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["reconciler"]
CMD ["run"]
