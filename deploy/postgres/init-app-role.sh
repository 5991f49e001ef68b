#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume (as POSTGRES_USER, the
# owner): creates the login role the application connects as. It is no superuser and owns
# nothing; the migrate job grants it its privileges table by table (db_grant_app_role).
set -eu
: "${POSTGRES_APP_USER:?set POSTGRES_APP_USER}"
: "${POSTGRES_APP_PASSWORD:?set POSTGRES_APP_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_user="$POSTGRES_APP_USER" -v app_password="$POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
-- PostgreSQL 15 no longer lets PUBLIC create in the public schema; say it anyway.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
