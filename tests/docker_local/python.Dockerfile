# Stand-in for python:3.12-slim where no registry can be reached: Debian's Python 3.11 in a
# venv on PATH, so `pip install` behaves as in the official image.
FROM local/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The host's CA bundle: package downloads pass the same TLS inspection as on the host.
COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /usr/local/py
ENV PATH=/usr/local/py/bin:$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt
