# Two images from one file (docker-compose.yml builds both):
#   tracking  python:3.11-slim + MLflow (with its basic-auth extra), optuna-dashboard, psycopg2, boto3
#   worker    the official TensorFlow GPU image + this project (`ablate worker ...`)
# Versions match the project's tested set; change them together.

FROM python:3.11-slim AS tracking
RUN pip install --no-cache-dir --disable-pip-version-check \
        "mlflow[auth]==3.17.2" "optuna==5.0.0" "optuna-dashboard==0.21.0" "psycopg2-binary==2.9.13" "boto3>=1.34,<2"
RUN useradd --create-home --uid 1000 mlflow && mkdir -p /mlartifacts && chown mlflow /mlartifacts
USER mlflow
EXPOSE 5000 8080

# tensorflow/tensorflow:<version>-gpu: Ubuntu, Python 3.11, CUDA and cuDNN; needs only the NVIDIA
# driver and the NVIDIA container toolkit on the host.
FROM tensorflow/tensorflow:2.21.0-gpu AS worker
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TF_CPP_MIN_LOG_LEVEL=1
WORKDIR /app
COPY pyproject.toml README* ./
COPY core ./core
COPY ablations ./ablations
COPY studies ./studies
# The base image's TensorFlow satisfies the project's tensorflow range, so pip keeps it.
RUN pip install '.[team]' && useradd --create-home --uid 1000 ablate && mkdir -p /app/mlruns && chown -R ablate /app
USER ablate
CMD ["ablate", "--help"]
