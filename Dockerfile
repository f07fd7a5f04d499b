# The reconciler's image: Debian's Python in a venv holding the project's wheel, run as uid and
# gid 65532 on a read-only root filesystem; only /tmp (an emptyDir in the pod) is written.
# pygit2's wheel carries libgit2, so the image holds neither git nor a compiler.
#
#   docker build -t IMAGE .
#   hack/build-image --tag IMAGE # podman, on machines without Docker (see the script)
ARG BASE_IMAGE=debian:bookworm-slim

# --- debian-python: Debian's Python on the base; the build and the image both start here ---
FROM ${BASE_IMAGE} AS debian-python
# ca-certificates: the public CAs, which libgit2 (through Python's default paths) and requests
# use for HTTPS. openssh-client: ssh-keygen, which checks the SSH signatures of approvals
# (spec.approval.requireSigned) as git verify-commit does; the package's other programs (the
# ssh client, agent, scp, sftp, the setuid ssh-keysign) are never run, and go in the same layer.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates openssh-client python3 \
 && rm /usr/bin/ssh /usr/bin/slogin /usr/bin/scp /usr/bin/sftp /usr/bin/ssh-add \
        /usr/bin/ssh-agent /usr/bin/ssh-keyscan /usr/bin/ssh-argv0 /usr/bin/ssh-copy-id \
        /usr/lib/openssh/ssh-keysign /usr/lib/openssh/ssh-pkcs11-helper \
        /usr/lib/openssh/ssh-sk-helper \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log

# --- build: the wheels, then the image's venv, made here and copied whole into the image ----
FROM debian-python AS build
# python3-venv: pip, for the build only. binutils: strip, for the debug information that some
# wheels' extension modules carry.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        binutils python3-venv \
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
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .
# The venv holds no pip: the build's pip installs into it (--python). Then it loses what the
# reconciler never imports, nor anything it imports (hack/image-test imports every module of
# the package, talks to an API server through the Kubernetes client and runs the demo, all in
# the image, to prove it):
# - kubernetes/aio, the asyncio client that kubernetes bundles (66 MB in 37.0), and the
#   packages only it needs: aiohttp, aiohttp-retry, aiosignal, aiohappyeyeballs, frozenlist,
#   multidict, yarl, propcache, attrs;
# - pycparser: cffi parses C declarations with it; pygit2's compiled module has none to parse;
# - kubernetes' own tests, and the debug information in extension modules (strip);
# - Apprise's plugins but those of the targets the README documents (JSON, form and XML
#   webhooks, Slack, Microsoft Teams workflows, Discord, Google Chat, e-mail), its
#   translations and its theme images: Apprise finds plugins by listing its folder, so the
#   others are simply unknown schemes (13 MB of 15);
# - markdown-it-py and mdurl: rich needs them for rich.markdown only, which nothing imports;
# - Pygments' lexers but Python's: rich draws a traceback (structlog's console renderer) with
#   the lexer that Pygments picks by file name, and only Python's matches *.py (7 MB of 8);
# - the generated API classes of kubernetes.client (CoreV1Api...): the reconciler sends every
#   request through ApiClient and uses none of them (11 MB).
# Byte code is compiled here, as the root filesystem is read-only in the pod. The ~850
# generated model modules of kubernetes.client (19 MB of source) are kept as byte code only
# (14 MB, compileall -b, the sourceless layout Python imports as it is): kubernetes loads
# them lazily, on first use, and the reconciler uses none, so they cost no start-up time, and
# still load should anything ask for one.
RUN python3 -m venv --without-pip /opt/reconciler \
 && pip="/opt/build/bin/pip --python /opt/reconciler/bin/python --disable-pip-version-check" \
 && $pip install --no-cache-dir --no-index --no-compile --find-links /wheels gitops-reconciler \
 && $pip uninstall --yes aiohttp aiohttp-retry aiosignal aiohappyeyeballs frozenlist multidict \
        yarl propcache attrs pycparser markdown-it-py mdurl \
 && cd /opt/reconciler/lib/python3*/site-packages \
 && rm -r kubernetes/aio \
 && find kubernetes -name '*_test.py' -delete \
 && find apprise/plugins -mindepth 1 -maxdepth 1 ! -name __init__.py ! -name base.py \
        ! -name custom_json.py ! -name custom_form.py ! -name custom_xml.py ! -name slack.py \
        ! -name workflows.py ! -name discord.py ! -name google_chat.py ! -name email \
        -exec rm -r {} + \
 && find apprise/i18n -mindepth 1 -maxdepth 1 ! -name '__init__.py' -exec rm -r {} + \
 && rm -r apprise/assets/themes \
 && find pygments/lexers -mindepth 1 -maxdepth 1 ! -name __init__.py ! -name _mapping.py \
        ! -name python.py ! -name special.py -exec rm -r {} + \
 && find kubernetes/client/api -mindepth 1 -maxdepth 1 ! -name __init__.py -exec rm -r {} + \
 && find . -name '*.so' -type f -exec sh -c 'for f; do \
        if readelf -S "$f" | grep -q "\.debug_"; then strip --strip-debug "$f" || exit; fi; \
    done' sh {} + \
 && python3 -m compileall -q -j 0 -x '/kubernetes/client/models/(?!__init__\.py$)' . \
 && python3 -m compileall -q -j 0 -b -x '/__init__\.py$' kubernetes/client/models \
 && find kubernetes/client/models -maxdepth 1 -name '*.py' ! -name __init__.py -delete

# --- runtime ---------------------------------------------------------------------------------
FROM debian-python
RUN groupadd --gid 65532 reconciler \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin reconciler
COPY --from=build /opt/reconciler /opt/reconciler
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
