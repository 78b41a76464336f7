# freshet: stream workers, topic admin and the synthetic traffic generator.
#   docker build -t freshet:local .
#   docker run --rm -e FRESHET_KAFKA_BOOTSTRAP=kafka:9092 freshet:local            # worker
#   docker run --rm freshet:local freshet generate --to kafka --rate 500          # traffic
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Everything the wheel needs comes from PyPI as manylinux wheels (confluent-kafka
# bundles librdkafka, rocksdict bundles RocksDB), so no compiler is installed.
COPY . /src
RUN pip install /src \
    && rm -rf /src \
    && useradd --system --create-home --home-dir /var/lib/freshet --shell /usr/sbin/nologin freshet

# Runtime state (table stores, local files) lives in the working directory.
USER freshet
WORKDIR /var/lib/freshet

# The worker's web port (feature reads, health).
EXPOSE 6066

CMD ["freshet", "worker"]
