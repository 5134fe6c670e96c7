# kbackup's image, for those who build with Docker (docker build -t ghcr.io/kbackup/kbackup:$(git describe --tags) .).
# CI builds the same image without a container runtime: make image (deploy/image),
# whose test checks that this file installs the same things at the same paths.
# A static binary, CA certificates and a passwd naming the non-root user 65532 on
# scratch: no shell, no package manager.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/kbackup/kbackup/cmd/kbackup/cli.Version=${VERSION}" \
      -o /out/kbackup ./cmd/kbackup \
 && mkdir -p /out/home/nonroot /out/tmp && chmod 0700 /out/home/nonroot && chmod 1777 /out/tmp \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /out/group

FROM scratch
ARG VERSION=dev
ARG REVISION=""
ARG CREATED=1970-01-01T00:00:00Z
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
COPY --from=build --chown=65532:65532 /out/home/nonroot /home/nonroot
COPY --from=build /out/tmp /tmp
COPY --from=build /out/kbackup /kbackup
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PATH=/
USER 65532:65532
WORKDIR /home/nonroot
EXPOSE 9464
LABEL org.opencontainers.image.title=kbackup \
      org.opencontainers.image.description="Backs up, restores and replays Apache Kafka" \
      org.opencontainers.image.source=https://github.com/kbackup/kbackup \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION} \
      org.opencontainers.image.created=${CREATED}
ENTRYPOINT ["/kbackup"]
CMD ["--help"]
