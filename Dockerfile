# The reconciler's image: a slim Python base, the project installed as a wheel, a non-root user.
# (pygit2's wheel carries libgit2, so the image needs neither git nor a compiler.)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gitops-reconciler" \
      org.opencontainers.image.description="Progressive delivery whose only state store is the GitOps Env repo" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 65532 reconciler \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reconciler
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["reconciler"]
# `reconciler run` (the production loop) lands with its issue; until then the image runs the demo.
CMD ["demo"]
