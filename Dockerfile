# Multi-stage build: a static binary on a distroless base, running as non-root.
#   docker build -t mxguard .
#   docker run -p 127.0.0.1:8891:8891 -v $PWD/mxguard.yaml:/etc/mxguard/mxguard.yaml mxguard
# Inside a container the milter must listen beyond the container's loopback:
# set milter.listen to inet:0.0.0.0:8891 (and metrics.listen to 0.0.0.0:9891
# for /metrics) in the mounted file, and publish the ports on the host's
# loopback only: the milter protocol has no authentication.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mxguard ./cmd/mxguard \
 && /out/mxguard validate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mxguard /usr/local/bin/mxguard
COPY configs/mxguard.yaml /etc/mxguard/mxguard.yaml
USER nonroot:nonroot
EXPOSE 8891 9891
ENTRYPOINT ["/usr/local/bin/mxguard"]
CMD ["serve", "--config", "/etc/mxguard/mxguard.yaml"]
