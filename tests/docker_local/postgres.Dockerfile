# Stand-in for the official postgres image (same environment variables, data directory,
# pg_isready) where no registry can be reached: Debian's PostgreSQL 15, already in the
# local Debian base that tests/engine.py makes with mmdebstrap, so this build needs no network.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# /var/lib/postgresql is already the postgres user's; the socket directory is made at boot
# on a Debian host, so not in the base's root filesystem.
RUN mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
