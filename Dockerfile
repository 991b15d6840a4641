# cnpg-teleport controller image: a static binary on distroless, non-root.
# (Not built in CI here: the development machines have no Docker engine.)
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY teleport/ teleport/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/cnpg-teleport ./cmd/cnpg-teleport

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cnpg-teleport /cnpg-teleport
USER 65532:65532
ENTRYPOINT ["/cnpg-teleport"]
