# Ordo's developer commands. Every target that needs PostgreSQL runs under
# internal/localpg/withpg, which starts a private throw-away server unless
# DATABASE_URL or ORDO_DATABASE_URL is set, so `make test` works on a machine
# with nothing but Go and the PostgreSQL server package installed.
#
#   make test                               vet, then every test
#   make test PKGS=./eventstore/... TESTFLAGS='-run Append -v'
#   make bench                              every benchmark scenario (docs/BENCHMARKS.md)
#   make bench BENCH=Clone PKGS=./internal/pgtest

GO        ?= go
PKGS      ?= ./...
TESTFLAGS ?=
BENCH     ?=
BENCHFLAGS ?=
WITHPG     = $(GO) run ./internal/localpg/withpg --

.PHONY: deps test vet build dev lint bench

# deps installs PostgreSQL's server binaries (and make) when missing.
deps:
	@scripts/install-deps

# scripts/test-go runs every package but the chaos tests first, as many at
# once as there are CPUs (each package clones its own databases from one
# template), then the chaos tests alone, since they need the machine to
# themselves.
test: deps vet
	$(WITHPG) env GO=$(GO) scripts/test-go '$(PKGS)' $(TESTFLAGS)

vet:
	$(GO) vet $(PKGS)

build:
	$(GO) build -o bin/ordo ./cmd/ordo

# ordo dev starts its own local PostgreSQL when no database URL is set. The
# binary is built and exec'd rather than `go run`, so that ordo is make's
# child: a SIGTERM to make (which passes it on) or to ordo, or a Ctrl-C,
# stops the server, the worker and that PostgreSQL.
dev: deps
	$(GO) build -o bin/ordo ./cmd/ordo
	exec bin/ordo dev

lint: vet
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$unformatted"; exit 1; \
	fi

# Benchmarks. Without BENCH: every scenario of `ordo bench` (about 15
# minutes), on a private PostgreSQL with production durability settings
# (fsync on) that it starts and removes, or on ORDO_DATABASE_URL's server;
# the table is printed and written to artifacts/bench/ as Markdown, JSON and
# SVG:
#   make bench
#   make bench BENCHFLAGS='--only append,replay'     some scenarios
#   make bench BENCHFLAGS=--quick                    all of them, scaled down
# With BENCH: Go benchmarks on such a server, the same scenarios one at a
# time, to profile them:
#   make bench BENCH=BenchmarkAppend PKGS=./eventstore BENCHFLAGS=-cpuprofile=cpu.out
bench: deps
ifeq ($(BENCH),)
	$(GO) build -o bin/ordo ./cmd/ordo
	mkdir -p artifacts/bench
	bin/ordo bench --markdown artifacts/bench/bench.md --json artifacts/bench/bench.json --svg artifacts/bench/bench.svg $(BENCHFLAGS)
else
	ORDO_PG_DURABLE=1 $(WITHPG) $(GO) test -count=1 -run '^$$' -bench '$(BENCH)' -benchmem $(BENCHFLAGS) $(PKGS)
endif
