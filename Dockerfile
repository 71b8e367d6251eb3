FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 WINNOW_VAR_DIR=/var/lib/winnow
WORKDIR /app
COPY pyproject.toml README.md ./
COPY winnow ./winnow
COPY curation ./curation
COPY sampling ./sampling
COPY templates ./templates
COPY static ./static
COPY manage.py ./
RUN pip install --no-cache-dir ".[server,model]" && mkdir -p /var/lib/winnow
EXPOSE 8000
# Workers, threads, timeouts and the connection check: winnow/gunicorn.conf.py, from the environment.
CMD ["gunicorn", "-c", "winnow/gunicorn.conf.py", "winnow.wsgi:application"]
