# make run   — set up this machine and start nubo with its embedded defaults
# make test  — set up this machine and run every test (what CI runs)
# make bench — the benchmark against peers (see docs/performance.md)
.PHONY: build run test bench
export CGO_ENABLED=0

build:
	go build -o bin/nubo ./cmd/nubo

run: build
	bash scripts/deps.sh
	./bin/nubo serve --listen 127.0.0.1:9000 --data-dir $${NUBO_DATA_DIR:-$$HOME/.nubo}

test:
	bash scripts/test.sh
