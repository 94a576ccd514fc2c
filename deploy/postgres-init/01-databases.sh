#!/bin/sh
# Runs once, when the postgres container starts on an empty volume (docker-entrypoint-initdb.d).
# One server, separate databases: the MLflow backend store, the MLflow basic-auth users
# (only used with MLFLOW_APP_NAME=basic-auth) and the Optuna storage shared by all workers.
set -eu
for db in mlflow mlflow_auth optuna; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -c "CREATE DATABASE $db OWNER \"$POSTGRES_USER\""
done
