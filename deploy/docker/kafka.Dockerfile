# A single-node Apache Kafka broker (KRaft) from the same Maven Central jars the project's own
# local broker runs (deploy/local/kafka/pom.xml), for hosts where Docker Hub's apache/kafka
# cannot be pulled. Built by scripts/compose-images.sh; docker-compose.local.yml selects
# it. The entrypoint reads the apache/kafka image's environment convention (KAFKA_NODE_ID ->
# node.id, ...), so the service definition of docker-compose.yml works unchanged.
# Build context: libs/ (the jars) and kafka/ (this folder's kafka/ files).
ARG BASE_IMAGE=eclipse-temurin:17-jre
FROM ${BASE_IMAGE}
ARG KAFKA_VERSION=unknown
LABEL org.opencontainers.image.title="streamlearn-kafka" \
      org.opencontainers.image.description="Apache Kafka ${KAFKA_VERSION} (KRaft, one node) from Maven Central jars" \
      org.opencontainers.image.version="${KAFKA_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /opt/kafka kafka \
    && mkdir -p /var/lib/kafka/data /opt/kafka/config \
    && chown kafka:kafka /var/lib/kafka/data
COPY libs/ /opt/kafka/libs/
COPY kafka/entrypoint.sh kafka/healthcheck.sh /opt/kafka/bin/
COPY kafka/log4j2.properties /opt/kafka/config/
ENV KAFKA_HEAP_OPTS="-Xms512m -Xmx512m" CLUSTER_ID=5L6g3nShT-eMCtK--X86sw
USER 1000:1000
WORKDIR /opt/kafka
ENTRYPOINT ["/opt/kafka/bin/entrypoint.sh"]
