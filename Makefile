# make run   — set up this machine and start nubo with its embedded defaults
# make test  — set up this machine and run every test (what CI runs)
# make bench — the benchmark against peers (see docs/performance.md)
.PHONY: build run test bench
export CGO_ENABLED=0

build:
	bash scripts/build.sh bin/nubo

run: build
	bash scripts/deps.sh
	./bin/nubo serve --listen 127.0.0.1:9000 --data-dir $${NUBO_DATA_DIR:-$$HOME/.nubo}

test:
	bash scripts/test.sh

# BENCH_FLAGS passes options through, e.g. make bench BENCH_FLAGS=--quick
# or BENCH_FLAGS='--figures 1,3'.
RIE_MODULE = github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@latest
bench:
	bash scripts/deps.sh --bench
	bash scripts/build.sh bin/nubo
	GOBIN=$(CURDIR)/bench/.bin go install $(RIE_MODULE)
	go build -trimpath -ldflags='-s -w' -o bench/.bin/echo-bootstrap ./bench/echo
	go build -trimpath -ldflags='-s -w' -o bench/.bin/timing-bootstrap ./bench/timing
	go build -o bench/.bin/nubo-bench ./bench/cmd/nubo-bench
	go build -o bench/.bin/hopfloor ./bench/cmd/hopfloor
	./bench/.bin/nubo-bench --nubo bin/nubo --rie bench/.bin/aws-lambda-rie \
		--echo bench/.bin/echo-bootstrap --timing bench/.bin/timing-bootstrap --functions bench/functions --out bench/results $(BENCH_FLAGS)
