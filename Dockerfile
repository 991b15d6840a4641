# cnpg-teleport controller image: a static binary on distroless static, non-root.
# (docker build does not run here: no container engine; TestDockerfileBuildStage builds
# this stage from its own context, and `make image`
# builds the same content without one, see README "The image".)
#
#   docker build --build-arg VERSION=v0.1.0 -t cnpg-teleport .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download && go mod verify
# The project's own packages the binary needs (go list -deps ./cmd/cnpg-teleport).
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY teleport/ teleport/
COPY certs/ certs/
COPY clusterspec/ clusterspec/
COPY dbspec/ dbspec/
COPY pgrules/ pgrules/
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/cnpg-teleport ./cmd/cnpg-teleport

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cnpg-teleport /cnpg-teleport
USER 65532:65532
ENTRYPOINT ["/cnpg-teleport"]
