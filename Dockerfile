# The worker image used by docker-compose.kafka.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
RUN pip install --no-cache-dir .
ENV KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
    APPSERVICE_STREAMS_DATA_DIR=/data
VOLUME ["/data", "/registrations"]
ENTRYPOINT ["appservice-streams"]
CMD ["worker", "--registrations", "/registrations"]
