# ragops + Airflow 3 image for docker-compose.yaml (users' machines; not built in this repo's CI).
FROM python:3.11-slim

# libGL/glib for opencv (PDF layout imports), libmagic for unstructured's type checks
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libmagic1 \
 && rm -rf /var/lib/apt/lists/*

# torch==2.13.0 from the default index is the CUDA build on Linux (several GB). For a CPU-only
# image pass an index that serves the CPU wheel: --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index>
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    ANONYMIZED_TELEMETRY=False DO_NOT_TRACK=1 SCARF_NO_ANALYTICS=true \
    AIRFLOW_HOME=/opt/airflow

WORKDIR /opt/ragops
COPY requirements.txt pyproject.toml ./
# the lock is complete and resolved: --no-deps (see requirements.txt)
RUN pip install --no-cache-dir --no-deps -r requirements.txt
COPY rag_ops ./rag_ops
COPY sql ./sql
COPY dags ./dags
COPY plugins ./plugins
COPY samples ./samples
COPY scripts ./scripts
RUN pip install --no-cache-dir --no-deps -e .

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/ragops/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ragops/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
