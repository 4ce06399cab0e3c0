#!/bin/sh
# Runs once, when the postgres data volume is empty (/docker-entrypoint-initdb.d).
# Temporal and the read model get their own roles; neither can open the other's databases.
# The temporal role owns its databases so that auto-setup can load the schema (including
# the trusted btree_gin extension) without superuser rights.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v temporal_pw="$TEMPORAL_DB_PASSWORD" -v casework_pw="$CASEWORK_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN PASSWORD :'temporal_pw';
CREATE ROLE casework LOGIN PASSWORD :'casework_pw';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
CREATE DATABASE casework OWNER casework;
REVOKE ALL ON DATABASE temporal, temporal_visibility, casework FROM PUBLIC;
SQL
