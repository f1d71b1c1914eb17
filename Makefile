# The README's commands. `make` builds, `make test` builds and runs every
# test, `make demo` runs the main job. Missing Debian packages are installed
# by scripts/install-deps.sh first.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)

.PHONY: all deps build test test-asan demo bench format clean

all: build

deps:
	@scripts/install-deps.sh --check || scripts/install-deps.sh

$(BUILD)/Makefile: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# (leak checking included); `make check` runs both.
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DNIC_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 NIC_SANITIZED=1 ctest --output-on-failure -j $(JOBS)

check: test test-asan

# The whole pipeline on a simulated cohort (nic demo): out/demo/report.md,
# the slide-level AUC on the last line. DEMO_ARGS passes options
# (e.g. DEMO_ARGS="--slides 200 --size 8192").
demo: build
	scripts/demo.sh $(BUILD)/nic $(DEMO_ARGS)

bench: build
	bench/run_encoder_bench.sh $(BUILD)/nic

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
