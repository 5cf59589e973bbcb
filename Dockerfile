# The one image of every app service in docker-compose.yml (workers, beat, flower).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# torch first, pinned, from the CPU index: a bare `torch` pulls a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Only what the package and its YAML need (no .venv, var/ or tests in the image).
COPY pyproject.toml README.md ./
COPY timber_tasks ./timber_tasks
RUN pip install .
COPY model_configs ./model_configs
COPY workers ./workers
COPY beat_schedule.yaml ./

RUN useradd --create-home --uid 10001 timber && mkdir -p /app/var && chown timber /app/var
USER timber
