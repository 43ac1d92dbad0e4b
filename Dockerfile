# Ordo's images. `server` holds only the ordo binary; `worker-python` adds
# Python with scikit-learn, pandas, psycopg2 and matplotlib for the example ML pipeline.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/ordo ./cmd/ordo

FROM debian:bookworm-slim AS server
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ordo \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/ordo ordo
COPY --from=build /out/ordo /usr/local/bin/ordo
# numeric, so that Kubernetes' runAsNonRoot can check it
USER 10001
WORKDIR /var/lib/ordo
EXPOSE 4200
ENTRYPOINT ["ordo"]
CMD ["server", "--migrate"]

FROM server AS worker-python
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-sklearn python3-pandas python3-psycopg2 python3-matplotlib \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/ordo/workspace && chown ordo /var/lib/ordo/workspace
COPY --chown=ordo examples /app/examples
# the interpreter that has the libraries runs the tasks' python3
ENV ORDO_PYTHON=/usr/bin/python3
WORKDIR /app
USER 10001
CMD ["worker", "-q", "ml"]
