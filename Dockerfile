# kubelock operator and CLI image: `docker build -t kubelock:0.1.0 .`
# Build stage: compiles TypeScript and the native ZooKeeper client, then drops dev dependencies.
FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY hack/bundle.mjs ./hack/
# dist/kubelock.js: the CLI in one file, @kubernetes/client-node bundled in (see hack/bundle.mjs).
RUN npx tsc -p tsconfig.build.json \
 && node hack/bundle.mjs \
 && npm prune --omit=dev --no-audit --no-fund

# Runtime stage: production dependencies and compiled code only, as a non-root user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/kubelock.js ./dist/
COPY crds ./crds
# 65532: the conventional "nonroot" user; the root filesystem can be mounted read-only.
USER 65532:65532
# Memory over a little CPU: a 4 MiB young-generation semi-space (Node's default grows to 16) and an old generation
# grown by 30 % of what a full collection left live (V8 otherwise lets it grow to about twice that).
ENTRYPOINT ["node", "--max-semi-space-size=4", "--heap-growing-percent=30", "/app/dist/kubelock.js"]
CMD ["--help"]
